#!/usr/bin/env bash
# The shipped binary: static (glibc, crt-static), `dist` profile (Cargo.toml), for
# x86_64-unknown-linux-gnu, in ${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/dist/mediabot.
# cargo-deb then packages it with `--no-build --profile dist --target x86_64-unknown-linux-gnu`.
# Used by packaging/test-package.sh, and started early (at low priority) by .ci/test.
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTFLAGS="-C target-feature=+crt-static" exec cargo build --locked --profile dist \
  --target x86_64-unknown-linux-gnu --bin mediabot
