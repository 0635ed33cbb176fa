#!/usr/bin/env bash
# Admin panel under load (BENCHMARKS.md "Admin panel on a large database"): seeds 100,000
# users and 1,000,000 ledger rows through the bot's write paths, starts `mediabot serve` (no bot
# token: the panel alone) on that database, logs in with curl like a browser, then loads the
# dashboard, a user search and a user page with wrk (50 connections) from this second process.
#
# Usage: benches/panel.sh [path/to/mediabot] [data dir]   (needs curl and wrk; the binary from
# `cargo build --release --features bench`: the seeding subcommand is not in the shipped one)
set -euo pipefail
bin=${1:-target/release/mediabot}
data=${2:-/tmp/mediabot-panel-bench}
addr=127.0.0.1:18089
duration=${DURATION:-20s}
if [ ! -f "$data/mediabot.redb" ]; then
  mkdir -p "$data"
  time "$bin" bench-panel-seed --data-dir "$data" --users 100000 --rows-per-user 10 --password bench-password
fi
RUST_LOG=warn "$bin" --config /dev/null serve --data-dir "$data" --listen "$addr" >"$data/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -fsS "http://$addr/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
jar=$(mktemp)
form=$(curl -fsS -c "$jar" "http://$addr/admin/login")
token=$(printf '%s' "$form" | sed -n 's/.*name="csrf" value="\([0-9a-f]*\)".*/\1/p' | head -1)
curl -fsS -b "$jar" -c "$jar" -o /dev/null --data "csrf=$token&password=bench-password" "http://$addr/admin/login"
session=$(awk '$6 == "mb_admin" { print $7 }' "$jar")
[ -n "$session" ] || { echo "login failed" >&2; exit 1; }
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for path in "/admin" "/admin/users?q=vera" "/admin/users?q=%40oleg_1219" "/admin/users/1054321"; do
  echo "== GET $path"
  curl -fsS -o /dev/null -w "status %{http_code}, %{size_download} bytes\n" -H "Cookie: mb_admin=$session" "http://$addr$path"
  wrk -t2 -c50 -d"$duration" --latency -H "Cookie: mb_admin=$session" "http://$addr$path" | grep -E "Requests/sec|Latency|50%|75%|90%|99%|requests in|Non-2xx"
  echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
done
