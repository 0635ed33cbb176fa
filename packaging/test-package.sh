#!/usr/bin/env bash
# Package acceptance test (issue 7): static build, .deb install, unit checks, a run of the
# installed binary, upgrade with data and conffile edits kept, backup/restore, remove vs purge,
# and a hostile nsswitch.conf. Needs root (apt, users, mount namespaces); skips otherwise.
# Prints "N passed, M failed" last; exits 1 on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "test-package: skipped (needs root to install packages)"
  exit 0
fi
started=$(date +%s)
passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   - $1"; }
bad() { failed=$((failed + 1)); echo "FAIL - $1"; }
check() { local what=$1; shift; if "$@" >/dev/null 2>&1; then ok "$what"; else bad "$what"; fi; }
finish() {
  [ -n "${pids:-}" ] && kill $pids 2>/dev/null
  echo "test-package: $(( $(date +%s) - started ))s"
  echo "$passed passed, $failed failed"
  [ "$failed" = 0 ]
  exit $?
}
pids=""
export DEBIAN_FRONTEND=noninteractive CARGO_TERM_COLOR=never
TRIPLE=x86_64-unknown-linux-gnu
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN=$TARGET_DIR/$TRIPLE/release/mediabot
WORK=$(mktemp -d /tmp/mediabot-pkg.XXXXXX)
UNIT=/lib/systemd/system/mediabot.service
CFG=/etc/mediabot/config.toml
DATA=/var/lib/mediabot
PORT=18080

command -v systemd-analyze >/dev/null || { apt-get update -qq && apt-get install -y -qq systemd >/dev/null; }
command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --quiet

# 1. Static release binary and packages N and N+1 (same binary, bumped version).
RUSTFLAGS="-C target-feature=+crt-static" cargo build --locked --release --target $TRIPLE || { bad "static release build"; finish; }
ok "static release build"
check "binary is static (ldd)" sh -c "ldd '$BIN' 2>&1 | grep -Eq 'not a dynamic executable|statically linked'"
check "no openssl in the release tree" sh -c "! cargo tree --locked -e normal --target $TRIPLE -i openssl-sys 2>/dev/null | grep -q openssl"
echo "binary size: $(stat -c %s "$BIN") bytes"
cargo deb --no-build --target $TRIPLE --deb-version 0.1.0-ci1 -o "$WORK/mediabot_N.deb" >/dev/null || { bad "cargo deb N"; finish; }
cargo deb --no-build --target $TRIPLE --deb-version 0.1.1-ci2 -o "$WORK/mediabot_N1.deb" >/dev/null || { bad "cargo deb N+1"; finish; }
ok "packages built ($(stat -c %s "$WORK/mediabot_N.deb") bytes)"
check "one #DEBHELPER# per script" sh -c '[ "$(grep -c "^#DEBHELPER#" packaging/postinst)" = 1 ] && [ "$(grep -c "^#DEBHELPER#" packaging/postrm)" = 1 ]'

# 2. Install N.
apt-get purge -y -qq mediabot >/dev/null 2>&1 || true
rm -rf /etc/mediabot $DATA
apt-get install -y -qq "$WORK/mediabot_N.deb" > "$WORK/install.log" 2>&1 && ok "apt-get install N" || { bad "apt-get install N"; cat "$WORK/install.log"; finish; }
check "postinst names the admin password file" grep -q "$DATA/admin-password" "$WORK/install.log"
check "system user mediabot" getent passwd mediabot
check "user has no login shell" sh -c "getent passwd mediabot | grep -Eq '(nologin|false)$'"
check "/usr/bin/mediabot 755" sh -c "[ \"\$(stat -c %a /usr/bin/mediabot)\" = 755 ]"
check "config 640 root:mediabot" sh -c "[ \"\$(stat -c %a:%U:%G $CFG)\" = 640:root:mediabot ]"
check "env 600 root:root" sh -c "[ \"\$(stat -c %a:%U:%G /etc/mediabot/env)\" = 600:root:root ]"
check "config is a conffile" sh -c "dpkg-query -W -f='\${Conffiles}' mediabot | grep -q $CFG"
check "env is a conffile" sh -c "dpkg-query -W -f='\${Conffiles}' mediabot | grep -q /etc/mediabot/env"
check "unit installed" test -f $UNIT
check "unit enabled" test -L /etc/systemd/system/multi-user.target.wants/mediabot.service
check "every config key is commented" sh -c "! grep -Ev '^(#|\[|$|data_dir)' $CFG | grep -q ."
check "mediabot --version" sh -c "/usr/bin/mediabot --version | grep -q '^mediabot '"
check "check-config on the packaged config" sh -c "cd / && /usr/bin/mediabot check-config | grep -q 'config OK'"
systemd-analyze verify $UNIT > "$WORK/verify.out" 2> "$WORK/verify.err"
if [ -s "$WORK/verify.err" ]; then bad "systemd-analyze verify (stderr empty)"; cat "$WORK/verify.err"; else ok "systemd-analyze verify (stderr empty)"; fi
echo "security: $(systemd-analyze security --offline=true $UNIT 2>/dev/null | tail -n 1)"

# 3. Run the installed binary as the service would (systemd is not PID 1 here): as mediabot,
# in the state directory, with the packaged config and no token -> web listener only.
install -d -o mediabot -g mediabot -m 750 $DATA
run_as_service() { (cd $DATA && exec setpriv --reuid=mediabot --regid=mediabot --init-groups "$@"); }
wait_healthy() { for _ in $(seq 1 100); do /usr/bin/mediabot healthcheck >/dev/null 2>&1 && return 0; sleep 0.2; done; return 1; }
run_as_service /usr/bin/mediabot --config $CFG serve > "$WORK/serve.log" 2>&1 &
svc=$!; pids="$svc"
check "serve without token: /healthz answers" wait_healthy
check "serve without token: logs what to configure" grep -q "MEDIABOT_TELEGRAM__TOKEN" "$WORK/serve.log"
check "control socket is mode 600" sh -c "[ \"\$(stat -c %a $DATA/control.sock)\" = 600 ]"
check "admin through the running service" sh -c "cd / && /usr/bin/mediabot admin verify-ledger | grep -q 'ledger OK'"
kill -TERM $svc; wait $svc
check "serve stops cleanly on SIGTERM" sh -c "! kill -0 $svc 2>/dev/null"
check "healthcheck fails when stopped" sh -c "! /usr/bin/mediabot healthcheck"

# 4. Create data: a sandbox run (built-in emulator) on the packaged data dir, a user via /start,
# credits through the control socket, a backup taken while it runs.
run_as_service /usr/bin/mediabot --config $CFG sandbox --listen 127.0.0.1:$PORT > "$WORK/sandbox.log" 2>&1 &
svc=$!; pids="$svc"
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.2; done
curl -sf "http://127.0.0.1:$PORT/emulator/control/updates" -H 'content-type: application/json' \
  -d '{"user":{"id":4242,"first_name":"Ann","language_code":"en"},"text":"/start"}' >/dev/null
for _ in $(seq 1 50); do cd / && /usr/bin/mediabot admin list-users 2>/dev/null | grep -q '^4242' && break; sleep 0.2; done
check "user created through the bot" sh -c "cd / && /usr/bin/mediabot admin list-users | grep -q '^4242'"
check "add-balance through the running service" sh -c "cd / && /usr/bin/mediabot admin add-balance 4242 25 --reason ci | grep -q 'balance now'"
check "backup while running" sh -c "cd / && /usr/bin/mediabot backup $WORK/backup"
kill -TERM $svc; wait $svc; pids=""
balance=$(cd / && /usr/bin/mediabot admin list-users | awk -F'\t' '$1==4242 {print $4}')
check "admin opens the database directly when stopped" test -n "$balance"

# 5. Upgrade to N+1 with a local conffile edit.
echo "# local edit kept across upgrades" >> $CFG
apt-get install -y -qq "$WORK/mediabot_N1.deb" > "$WORK/upgrade.log" 2>&1 && ok "upgrade to N+1" || { bad "upgrade to N+1"; cat "$WORK/upgrade.log"; }
check "version is N+1" sh -c "dpkg-query -W -f='\${Version}' mediabot | grep -q 0.1.1-ci2"
check "conffile edit preserved" grep -q "local edit kept" $CFG
check "config still 640 root:mediabot" sh -c "[ \"\$(stat -c %a:%U:%G $CFG)\" = 640:root:mediabot ]"
check "data intact after upgrade" sh -c "cd / && /usr/bin/mediabot admin list-users | grep -q '$balance'"
check "verify-ledger clean after upgrade" sh -c "cd / && /usr/bin/mediabot admin verify-ledger"

# 6. Restore the backup into a fresh data dir.
check "restore into a fresh data dir" /usr/bin/mediabot --config $CFG restore "$WORK/backup" --data-dir "$WORK/fresh"
check "restored ledger clean" /usr/bin/mediabot --config $CFG admin --data-dir "$WORK/fresh" verify-ledger
check "restored user present" sh -c "/usr/bin/mediabot --config $CFG admin --data-dir '$WORK/fresh' list-users | grep -q '^4242'"

# 7. Hostile resolver: nsswitch.conf naming NSS modules (a static glibc binary would crash in
# getaddrinfo); the Bot API client must resolve a name from /etc/hosts through hickory.
cp /etc/hosts "$WORK/hosts"; echo "127.0.0.1 botapi.mediabot-ci.test" >> "$WORK/hosts"
echo "hosts: files myhostname mdns4_minimal [NOTFOUND=return] dns" > "$WORK/nsswitch.conf"
"$BIN" sandbox --listen 127.0.0.1:$((PORT + 1)) --data-dir "$WORK/emu" > "$WORK/emu.log" 2>&1 &
emu=$!; pids="$emu"
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$((PORT + 1))/healthz" >/dev/null && break; sleep 0.2; done
unshare -m sh -c "mount --bind '$WORK/nsswitch.conf' /etc/nsswitch.conf && mount --bind '$WORK/hosts' /etc/hosts && \
  MEDIABOT_TELEGRAM__TOKEN=123:CI MEDIABOT_TELEGRAM__API_URL=http://botapi.mediabot-ci.test:$((PORT + 1)) \
  timeout -s TERM 6 '$BIN' serve --listen 127.0.0.1:$((PORT + 2)) --data-dir '$WORK/hostile'" > "$WORK/hostile.log" 2>&1
rc=$?
check "hostile nsswitch: no crash (exit $rc)" sh -c "[ $rc = 0 ] || [ $rc = 124 ]"
check "hostile nsswitch: Bot API reached by name" sh -c "curl -sf http://127.0.0.1:$((PORT + 1))/emulator/control/calls | grep -qi getupdates"
kill $emu 2>/dev/null; wait $emu 2>/dev/null; pids=""

# 8. Remove keeps config and data; purge deletes both.
apt-get remove -y -qq mediabot >/dev/null 2>&1 && ok "apt-get remove" || bad "apt-get remove"
check "remove keeps /etc/mediabot" test -f $CFG
check "remove keeps /var/lib/mediabot" test -f $DATA/mediabot.redb
apt-get purge -y -qq mediabot >/dev/null 2>&1 && ok "apt-get purge" || bad "apt-get purge"
check "purge removes /etc/mediabot" test ! -e /etc/mediabot
check "purge removes /var/lib/mediabot" test ! -e $DATA
rm -rf "$WORK"
finish
