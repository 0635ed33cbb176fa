#!/usr/bin/env bash
# Package acceptance test (issue 7): static build, .deb install, unit checks, runs of the
# installed binary, upgrade with data and conffile edits kept, backup/restore, a hostile
# nsswitch.conf, remove vs purge. Needs root (apt, users, mount namespaces); skips otherwise.
# The static release binary is built once and packaged twice (versions N and N+1).
# Prints "N passed, M failed" last; exits 1 on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "test-package: SKIPPED (needs root: installs the .deb, adds a system user, uses mount namespaces)"
  exit 0
fi
started=$(date +%s)
passed=0
failed=0
pids=""
ok() { passed=$((passed + 1)); echo "ok   - $1"; }
bad() { failed=$((failed + 1)); echo "FAIL - $1"; }
check() { local what=$1; shift; if "$@" >/dev/null 2>&1; then ok "$what"; else bad "$what"; fi; }
finish() {
  for p in $pids; do kill "$p" 2>/dev/null; done
  echo "test-package: $(( $(date +%s) - started ))s"
  echo "$passed passed, $failed failed"
  [ "$failed" = 0 ]
  exit $?
}
trap 'for p in $pids; do kill "$p" 2>/dev/null; done' EXIT
export DEBIAN_FRONTEND=noninteractive CARGO_TERM_COLOR=never
TRIPLE=x86_64-unknown-linux-gnu
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN=$TARGET_DIR/$TRIPLE/dist/mediabot
WORK=$(mktemp -d /tmp/mediabot-pkg.XXXXXX)
chmod 755 "$WORK"
CFG=/etc/mediabot/config.toml
DATA=/var/lib/mediabot
PORT=$((20000 + RANDOM % 20000))
DRIVE="python3 $PWD/packaging/test-drive.py"
# The packaged config listens on 127.0.0.1:8080; another process on a shared CI machine may
# hold that port, so the service runs (and healthcheck probes) on a random one instead.
export MEDIABOT_WEB__LISTEN=127.0.0.1:$((PORT + 5))
# Commands as root from /, so no ./mediabot.toml in the checkout is picked up.
mb() { (cd / && /usr/bin/mediabot "$@"); }

# 0. Tools the test needs.
apt_missing=""
command -v systemd-analyze >/dev/null || apt_missing="$apt_missing systemd"
command -v curl >/dev/null || apt_missing="$apt_missing curl"
command -v python3 >/dev/null || apt_missing="$apt_missing python3"
command -v setpriv >/dev/null || apt_missing="$apt_missing util-linux"
if [ -n "$apt_missing" ]; then
  echo "installing:$apt_missing"
  apt-get update -qq && apt-get install -y -qq $apt_missing >/dev/null
fi
if ! command -v cargo-deb >/dev/null; then
  echo "installing cargo-deb (cargo install --locked cargo-deb)"
  cargo install --locked --quiet cargo-deb || { bad "cargo install cargo-deb"; finish; }
fi

# 1. Static release binary (once) and packages N and N+1 (same binary, bumped version).
t0=$(date +%s)
# .ci/test may have started this build already; cargo then waits for it on its lock.
bash packaging/build-dist.sh || { bad "static release build"; finish; }
ok "static release build ($(( $(date +%s) - t0 ))s)"
echo "ldd: $(ldd "$BIN" 2>&1 | head -n 1 | sed 's/^[[:space:]]*//')"
check "binary is static (ldd)" sh -c "ldd '$BIN' 2>&1 | grep -Eq 'not a dynamic executable|statically linked'"
check "no openssl in the release tree" sh -c "! cargo tree --locked -e normal --target $TRIPLE -i openssl-sys 2>/dev/null | grep -q openssl"
size=$(stat -c %s "$BIN")
echo "binary size: $size bytes"
check "binary size <= 25 MB" test "$size" -le 26214400
cargo deb --no-build --profile dist --target $TRIPLE --deb-version 0.1.0-ci1 -o "$WORK/mediabot_N.deb" >/dev/null || { bad "cargo deb N"; finish; }
cargo deb --no-build --profile dist --target $TRIPLE --deb-version 0.1.1-ci2 -o "$WORK/mediabot_N1.deb" >/dev/null || { bad "cargo deb N+1"; finish; }
ok "packages built (.deb $(stat -c %s "$WORK/mediabot_N.deb") bytes)"
check "one #DEBHELPER# per script" sh -c '[ "$(grep -c "^#DEBHELPER#" packaging/postinst)" = 1 ] && [ "$(grep -c "^#DEBHELPER#" packaging/postrm)" = 1 ]'

# 2. Install N on a clean system.
apt-get purge -y -qq mediabot >/dev/null 2>&1 || true
rm -rf /etc/mediabot $DATA
apt-get install -y -qq "$WORK/mediabot_N.deb" > "$WORK/install.log" 2>&1 && ok "apt-get install N" \
  || { bad "apt-get install N"; cat "$WORK/install.log"; finish; }
UNIT=$(dpkg -L mediabot | grep '/systemd/system/mediabot.service$' | head -n 1)
check "postinst names the admin password file" grep -q "$DATA/admin-password" "$WORK/install.log"
check "system user mediabot" getent passwd mediabot
check "group mediabot" getent group mediabot
check "user has no login shell" sh -c "getent passwd mediabot | grep -Eq '(nologin|false)$'"
check "/usr/bin/mediabot 755 root" sh -c "[ \"\$(stat -c %a:%U /usr/bin/mediabot)\" = 755:root ]"
check "/etc/mediabot 750 root:mediabot" sh -c "[ \"\$(stat -c %a:%U:%G /etc/mediabot)\" = 750:root:mediabot ]"
check "config 640 root:mediabot" sh -c "[ \"\$(stat -c %a:%U:%G $CFG)\" = 640:root:mediabot ]"
check "env 600 root:root" sh -c "[ \"\$(stat -c %a:%U:%G /etc/mediabot/env)\" = 600:root:root ]"
check "config is a conffile" sh -c "dpkg-query -W -f='\${Conffiles}' mediabot | grep -q ' $CFG '"
check "env is a conffile" sh -c "dpkg-query -W -f='\${Conffiles}' mediabot | grep -q ' /etc/mediabot/env '"
check "unit installed" test -f "$UNIT"
check "README installed" test -f /usr/share/doc/mediabot/README.md
check "unit enabled" test -L /etc/systemd/system/multi-user.target.wants/mediabot.service
check "every config key is commented (but data_dir)" sh -c "! grep -Ev '^(#|\[|$|data_dir)' $CFG | grep -q ."
check "mediabot --version" sh -c "/usr/bin/mediabot --version | grep -q '^mediabot '"
check "check-config on the packaged config" sh -c "cd / && /usr/bin/mediabot check-config | grep -q 'config OK'"
check "unit stops restarting a broken install (StartLimit* in [Unit])" sh -c "sed -n '/^\[Unit\]/,/^\[/p' $UNIT | grep -q '^StartLimitIntervalSec=' && sed -n '/^\[Unit\]/,/^\[/p' $UNIT | grep -q '^StartLimitBurst='"
check "unit raises LimitNOFILE" grep -q '^LimitNOFILE=' "$UNIT"
systemd-analyze verify "$UNIT" > "$WORK/verify.out" 2> "$WORK/verify.err"
if [ -s "$WORK/verify.err" ]; then bad "systemd-analyze verify (stderr empty)"; cat "$WORK/verify.err"; else ok "systemd-analyze verify (stderr empty)"; fi
echo "security: $(systemd-analyze security --offline=true "$UNIT" 2>/dev/null | tail -n 1)"

# 3. Run the installed binary as the service would (systemd is not PID 1 here): as mediabot,
# in its state directory, with the packaged config and no token -> admin panel only.
install -d -o mediabot -g mediabot -m 750 $DATA
# Only ever run in the background (`as_service … &`): it execs, so $! is the service's pid.
as_service() { cd $DATA || exit 1; exec setpriv --reuid=mediabot --regid=mediabot --init-groups "$@"; }
wait_healthy() { for _ in $(seq 1 150); do mb healthcheck >/dev/null 2>&1 && return 0; sleep 0.2; done; return 1; }
wait_http() { for _ in $(seq 1 150); do curl -sf "$1/healthz" >/dev/null && return 0; sleep 0.2; done; return 1; }
stop() { kill -TERM "$1"; wait "$1"; }  # returns the process's exit code
as_service /usr/bin/mediabot --config $CFG serve > "$WORK/serve.log" 2>&1 &
svc=$!; pids="$svc"
check "serve without token: /healthz answers" wait_healthy
sleep 1
check "serve without token: still running (no crash loop)" kill -0 $svc
check "serve without token: logs what to configure" grep -q "MEDIABOT_TELEGRAM__TOKEN" "$WORK/serve.log"
check "admin password file 600 mediabot" sh -c "[ \"\$(stat -c %a:%U $DATA/admin-password)\" = 600:mediabot ]"
check "control socket 600 mediabot" sh -c "[ \"\$(stat -c %a:%U $DATA/control.sock)\" = 600:mediabot ]"
check "admin through the running service" sh -c "cd / && /usr/bin/mediabot admin verify-ledger | grep -q 'ledger OK'"
check "other users reach neither the database nor the control socket" sh -c "! setpriv --reuid=nobody --regid=nogroup --clear-groups /usr/bin/mediabot --config /dev/null admin --data-dir $DATA list-users"
stop $svc; rc=$?; pids=""
check "serve stops cleanly on SIGTERM (exit $rc)" test $rc = 0
check "healthcheck fails when stopped" sh -c "cd / && ! /usr/bin/mediabot healthcheck"

# 4. Data with N installed. (a) The installed binary with the packaged config and a token
# against a Bot API emulator (`mediabot emulator`: no bot of its own) registers a user.
EMU=http://127.0.0.1:$((PORT + 1))
"$BIN" emulator 127.0.0.1:$((PORT + 1)) > "$WORK/emu.log" 2>&1 &
emu=$!; pids="$emu"
check "emulator up" wait_http "$EMU"
as_service env MEDIABOT_TELEGRAM__TOKEN=123:CI MEDIABOT_TELEGRAM__API_URL=$EMU \
  /usr/bin/mediabot --config $CFG serve > "$WORK/serve-emu.log" 2>&1 &
svc=$!; pids="$emu $svc"
check "serve against the emulator: /healthz answers" wait_healthy
curl -sf "$EMU/emulator/control/updates" -H 'content-type: application/json' \
  -d '{"user":{"id":4242,"first_name":"Ann","language_code":"en"},"text":"/start"}' >/dev/null
for _ in $(seq 1 100); do mb admin list-users 2>/dev/null | grep -q '^4242' && break; sleep 0.2; done
check "user registered through the Bot API" sh -c "cd / && /usr/bin/mediabot admin list-users | grep -q '^4242'"
check "add-balance through the running service" sh -c "cd / && /usr/bin/mediabot admin add-balance 4242 25 --reason ci | grep -q 'balance now 125'"
stop $svc; rc=$?; pids=""
check "serve against the emulator: exit 0 on SIGTERM (exit $rc)" test $rc = 0
kill $emu; wait $emu
# (b) The installed binary in sandbox mode (built-in emulator, demo renderer) on the packaged
# data dir: a finished job leaves library items and media files; a backup while it runs.
SBX=http://127.0.0.1:$PORT
as_service /usr/bin/mediabot --config $CFG sandbox --listen 127.0.0.1:$PORT > "$WORK/sandbox.log" 2>&1 &
svc=$!; pids="$svc"
check "sandbox on the packaged data dir: up" wait_http "$SBX"
# The bot remembers handled update ids (Telegram re-delivers); this emulator numbers its
# updates from 1 again, and id 1 was handled in (a), so burn it before the real flow.
curl -sf "$SBX/emulator/control/updates" -H 'content-type: application/json' \
  -d '{"user":{"id":4998,"first_name":"Burn","language_code":"en"},"text":"/help"}' >/dev/null
check "a job finishes (library item)" sh -c "$DRIVE job $SBX 4343 'a lighthouse at dusk' --wait-photo > $WORK/drive-4343.log 2>&1"
check "backup while running" sh -c "cd / && /usr/bin/mediabot backup $WORK/backup"
stop $svc; pids=""
mb admin list-users > "$WORK/users-N.txt"
mb admin verify-media > "$WORK/media-N.txt"
check "data created: users 4242 and 4343, media OK" sh -c "grep -q '^4242' $WORK/users-N.txt && grep -q '^4343' $WORK/users-N.txt && grep -q 'media OK: [1-9]' $WORK/media-N.txt"

# 5. Upgrade to N+1 with a local conffile edit.
sed -i 's/^# signup_bonus = 100$/signup_bonus = 150/' $CFG
check "conffile edited" grep -q '^signup_bonus = 150$' $CFG
apt-get install -y -qq "$WORK/mediabot_N1.deb" > "$WORK/upgrade.log" 2>&1 && ok "upgrade to N+1" \
  || { bad "upgrade to N+1"; cat "$WORK/upgrade.log"; }
check "version is N+1" sh -c "dpkg-query -W -f='\${Version}' mediabot | grep -qx 0.1.1-ci2"
check "conffile edit preserved" grep -q '^signup_bonus = 150$' $CFG
check "config still 640 root:mediabot" sh -c "[ \"\$(stat -c %a:%U:%G $CFG)\" = 640:root:mediabot ]"
check "no first-install message on upgrade" sh -c "! grep -q 'is installed and starts without a bot token' $WORK/upgrade.log"
check "users and balances intact" sh -c "cd / && /usr/bin/mediabot admin list-users | cmp -s - $WORK/users-N.txt"
check "library media intact" sh -c "cd / && /usr/bin/mediabot admin verify-media | cmp -s - $WORK/media-N.txt"
check "verify-ledger clean after upgrade" mb admin verify-ledger
as_service /usr/bin/mediabot --config $CFG serve > "$WORK/serve-N1.log" 2>&1 &
svc=$!; pids="$svc"
check "N+1 starts on the upgraded data (migrations, /healthz)" wait_healthy
stop $svc; pids=""

# 6. Restore the backup into a fresh data dir.
check "restore into a fresh data dir" mb --config $CFG restore "$WORK/backup" --data-dir "$WORK/fresh"
check "restored ledger clean" mb --config $CFG admin --data-dir "$WORK/fresh" verify-ledger
check "restored media present with the right sha256" mb --config $CFG admin --data-dir "$WORK/fresh" verify-media
check "restored users present" sh -c "cd / && /usr/bin/mediabot admin --data-dir '$WORK/fresh' list-users | grep -q '^4343'"

# 7. Hostile resolver: an nsswitch.conf naming NSS modules (a static glibc binary that resolved
# through NSS would crash in getaddrinfo). In a private mount namespace, the Bot API URL uses a
# name from /etc/hosts and the provider URL a *.localhost name; both must resolve (hickory).
EMU=http://127.0.0.1:$((PORT + 4))
"$BIN" emulator 127.0.0.1:$((PORT + 4)) > "$WORK/emu2.log" 2>&1 &
emu=$!; pids="$emu"
check "second emulator up" wait_http "$EMU"
cp /etc/hosts "$WORK/hosts"; echo "127.0.0.1 botapi.mediabot-ci.test" >> "$WORK/hosts"
echo "hosts: files myhostname mdns4_minimal [NOTFOUND=return] dns" > "$WORK/nsswitch.conf"
$DRIVE provider $((PORT + 3)) "$WORK/provider.log" &
prov=$!; pids="$emu $prov"
cat > "$WORK/hostile.toml" <<TOML
[telegram]
api_url = "http://botapi.mediabot-ci.test:$((PORT + 4))"
poll_timeout_secs = 1
[web]
listen = "127.0.0.1:$((PORT + 2))"
[storage]
data_dir = "$WORK/hostile"
[jobs]
retry_base_ms = 100
[[providers]]
id = "fal"
kind = "fal"
base_url = "http://fal.mediabot-ci.localhost:$((PORT + 3))"
api_key = "ci"
[[models]]
id = "hostile"
provider = "fal"
display_name = "Hostile fal"
endpoint = "fal-ai/flux/dev"
price = 10
TOML
unshare -m sh -c "mount --bind '$WORK/nsswitch.conf' /etc/nsswitch.conf && mount --bind '$WORK/hosts' /etc/hosts && \
  exec env -u MEDIABOT_WEB__LISTEN MEDIABOT_TELEGRAM__TOKEN=123:CI timeout -s TERM 25 '$BIN' --config '$WORK/hostile.toml' serve" > "$WORK/hostile.log" 2>&1 &
hostile=$!; pids="$emu $prov $hostile"
check "hostile nsswitch: job submitted through the Bot API" $DRIVE job "$EMU" 4444 "a red fox"
for _ in $(seq 1 100); do [ -s "$WORK/provider.log" ] && break; sleep 0.2; done
check "hostile nsswitch: provider reached by its *.localhost name" grep -q "fal.mediabot-ci.localhost" "$WORK/provider.log"
check "hostile nsswitch: Bot API reached by its /etc/hosts name (getUpdates)" sh -c "curl -sf $EMU/emulator/control/calls | grep -qi getupdates"
check "hostile nsswitch: still running" kill -0 $hostile
kill -TERM $hostile 2>/dev/null; wait $hostile; rc=$?
check "hostile nsswitch: clean exit, no crash (exit $rc)" test "$rc" = 0 -o "$rc" = 124
grep -q "SIGSEGV\|Segmentation" "$WORK/hostile.log" && bad "hostile nsswitch: segfault in the log"
kill $prov $emu 2>/dev/null; wait $prov $emu 2>/dev/null; pids=""

# 8. Remove keeps config and data; purge deletes both.
apt-get remove -y -qq mediabot >/dev/null 2>&1 && ok "apt-get remove" || bad "apt-get remove"
check "remove: binary gone" test ! -e /usr/bin/mediabot
check "remove keeps /etc/mediabot (with the edit)" grep -q '^signup_bonus = 150$' $CFG
check "remove keeps /var/lib/mediabot" test -f $DATA/mediabot.redb
apt-get purge -y -qq mediabot >/dev/null 2>&1 && ok "apt-get purge" || bad "apt-get purge"
check "purge removes /etc/mediabot" test ! -e /etc/mediabot
check "purge removes /var/lib/mediabot" test ! -e $DATA
[ "$failed" = 0 ] && rm -rf "$WORK" || echo "logs kept in $WORK"
finish
