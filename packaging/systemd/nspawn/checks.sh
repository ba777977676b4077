#!/bin/bash
# Runs inside the container (see run.sh); every check that fails exits 1.
exec > /out/result.txt 2>&1
set -u
fail() { echo "FAIL: $*"; journalctl -b -u clamsentry --no-pager | tail -n 40; exit 1; }
ok() { echo "ok: $*"; }
install -m 0755 /t/clamsentry /usr/bin/clamsentry
cp /t/clamsentry.socket /t/clamsentry.service /etc/systemd/system/
mkdir -p /etc/systemd/system/clamsentry.service.d /etc/clamsentry /var/lib/clamav
printf '[Service]\nWatchdogSec=2\n' > /etc/systemd/system/clamsentry.service.d/test.conf
printf '[database]\nself-check = 1\n[service]\nexit-when-idle = 4\n' > /etc/clamsentry/clamsentry.toml
printf '44d88612fea8a8f36de82e1278abb02f:68:Win.Test.EICAR_HDB-1\n' > /var/lib/clamav/test.hdb
systemctl daemon-reload
systemctl start clamsentry.socket || fail "socket unit starts"
sock=/run/clamsentry/clamd.sock
prop() { systemctl show -p "$1" --value clamsentry.service; }
talk() { socat -t10 - UNIX-CONNECT:$sock | tr '\0' '\n'; }

[ "$(stat -c '%a %U %G' $sock)" = "660 clamav clamav" ] && ok "socket 0660 clamav:clamav" || fail "socket mode"
[ "$(prop ActiveState)" = inactive ] && ok "service waits for the first connection" || fail "service started early"
[ "$(printf 'zPING\0' | talk)" = PONG ] && ok "PING through activation" || fail PING
[ "$(prop ActiveState)" = active ] || fail "service active after PING"
prop StatusText | grep -q '^Serving: 1 signatures' && ok "status: $(prop StatusText)" || fail "status line"
setpriv --reuid=65534 --regid=65534 --clear-groups socat -t5 - UNIX-CONNECT:$sock < /dev/null 2>/dev/null \
    && fail "user nobody could connect" || ok "other users are refused"

# The EICAR test string, assembled here so that no file holds it whole.
E='X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR''-STANDARD-ANTIVIRUS''-TEST-FILE!$H+H*'
found=$({ printf 'zINSTREAM\0\0\0\0\104'; printf '%s' "$E"; printf '\0\0\0\0'; } | talk)
[ "$found" = "stream: Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND" ] && ok "EICAR found" || fail "INSTREAM: $found"

systemctl reload clamsentry.service || fail "systemctl reload"
for _ in $(seq 100); do prop StatusText | grep -q '1 reloads' && break; sleep 0.1; done
prop StatusText | grep -q '1 reloads' && ok "reload: $(prop StatusText)" || fail "reload not reported"

printf 'Test.Marker-1:0:*:6d61726b65722d78797a\n' > /var/lib/clamav/m.ndb
for _ in $(seq 100); do
    r=$(printf 'zINSTREAM\0\0\0\0\012marker-xyz\0\0\0\0' | talk)
    [ "$r" = "stream: Test.Marker-1.UNOFFICIAL FOUND" ] && break
    sleep 0.2
done
[ "$r" = "stream: Test.Marker-1.UNOFFICIAL FOUND" ] && ok "new signature file loaded without a signal" || fail "self-check: $r"

sleep 3
[ "$(prop ActiveState)" = active ] && ok "watchdog pings keep it running (WatchdogSec=2)" || fail "killed while healthy"
for _ in $(seq 100); do [ "$(prop ActiveState)" = inactive ] && break; sleep 0.1; done
[ "$(prop ActiveState)/$(prop Result)" = inactive/success ] && ok "exit-when-idle: clean exit" || fail "idle exit"
[ "$(printf 'zPING\0' | talk)" = PONG ] && ok "re-activated by the next connection" || fail "re-activation"

kill -STOP "$(prop MainPID)"
for _ in $(seq 100); do [ "$(prop Result)" = watchdog ] && break; sleep 0.1; done
[ "$(prop Result)" = watchdog ] && ok "a process that stops pinging is killed by the watchdog" || fail "watchdog"
[ "$(printf 'zPING\0' | talk)" = PONG ] && ok "and restarted" || fail "restart after watchdog"

journalctl --sync
j=$(journalctl -b -u clamsentry -o json SCAN_RESULT=found --no-pager | head -n 1)
for f in '"COMMAND":"INSTREAM"' '"LISTENER":"unix"' '"PEER":"unix uid=0' '"VIRUS_NAME":"Win.Test.EICAR_HDB-1.UNOFFICIAL"' '"BYTES":"68"' '"DURATION_MS":' '"_SYSTEMD_UNIT":"clamsentry.service"'; do
    case "$j" in *"$f"*) ;; *) fail "journal entry lacks $f: $j" ;; esac
done
ok "journalctl -u clamsentry SCAN_RESULT=found has the structured fields"
echo "ALL OK"
