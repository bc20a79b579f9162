#!/usr/bin/env bash
# The Debian package end to end (run as root; .ci/run does): install it, check what it
# installed and its systemd unit (`systemd-analyze verify`), start the installed binary with
# the unit's own command line, environment and user, push and work jobs through it with the
# password the package generated, stop it with SIGTERM, purge the package.
set -euo pipefail
DEB=${1:?usage: test-deb.sh path/to/werk_VERSION_ARCH.deb}
[ "$(id -u)" = 0 ] || { echo "test-deb.sh: run as root (it installs a package)" >&2; exit 1; }
UNIT=/usr/lib/systemd/system/werk.service
fail() { echo "test-deb.sh: FAILED: $*" >&2; exit 1; }

dpkg -i "$DEB"
[ -x /usr/bin/werk ] || fail "no /usr/bin/werk"
getent passwd werk >/dev/null || fail "no werk user"
[ -s /etc/werk/password ] || fail "no generated password"
[ "$(stat -c '%U:%G %a' /etc/werk/password)" = "root:werk 640" ] || fail "password file mode"
[ "$(stat -c '%U:%G' /var/lib/werk)" = "werk:werk" ] || fail "data directory owner"
[ -f /usr/share/man/man1/werk-serve.1.gz ] || fail "no manual page"
[ -f /usr/share/bash-completion/completions/werk ] || fail "no bash completion"
dpkg-query -W -f='${Conffiles}\n' werk | grep -q /etc/werk/conf.d/werk.toml || fail "config is not a conffile"
systemd-analyze verify "$UNIT"

EXEC=$(sed -n 's/^ExecStart=//p' "$UNIT")
ENVIRONMENT=$(sed -n 's/^Environment=//p' "$UNIT")
USER_=$(sed -n 's/^User=//p' "$UNIT")
LOG=$(mktemp)
# shellcheck disable=SC2086 # the unit's command line, split as systemd splits it
runuser -u "$USER_" -- env $ENVIRONMENT $EXEC > "$LOG" 2>&1 &
PID=$!
for _ in $(seq 1 300); do
  grep -q "werk listening on" "$LOG" && break
  kill -0 "$PID" 2>/dev/null || { cat "$LOG"; fail "werk exited at start"; }
  sleep 0.1
done
grep -q "werk listening on 127.0.0.1:7419" "$LOG" || { cat "$LOG"; fail "not listening on 127.0.0.1:7419"; }

export FAKTORY_URL="tcp://:$(cat /etc/werk/password)@127.0.0.1:7419"
processed() {
  werk info --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["faktory"]["total_processed"])'
}
BEFORE=$(processed)
werk bench --mode mixed --jobs 500 --connections 4
AFTER=$(processed)
[ "$AFTER" -ge $((BEFORE + 500)) ] || fail "only $((AFTER - BEFORE)) of 500 jobs processed"
werk job push Packaged 1 --queue deb >/dev/null
werk queue list | grep -q '^deb ' || fail "pushed job not in its queue"
FAKTORY_URL=tcp://:wrong@127.0.0.1:7419 werk info >/dev/null 2>&1 && fail "a wrong password was accepted"

# SIGTERM to werk itself (as systemd sends it to the main process), not to runuser.
WERK_PID=$(pgrep -u "$USER_" -f "^/usr/bin/werk serve") || fail "no werk process"
kill -TERM "$WERK_PID"
wait "$PID" || fail "werk did not exit cleanly on SIGTERM"
[ -f /var/lib/werk/werk.db ] || fail "no store in /var/lib/werk"

dpkg --purge werk
[ ! -e /usr/bin/werk ] || fail "/usr/bin/werk left after purge"
[ ! -e /etc/werk/password ] || fail "password left after purge"
echo "test-deb.sh: the package installs, serves as its unit says, and purges cleanly"
