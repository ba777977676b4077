#!/bin/bash
# Runs as a oneshot service inside the booted Debian 12 container (see
# e2e.sh): installs the package the way docs/packaging.md says and checks
# what an administrator would. One line per check, then "N passed, M failed".
# The container's exit code is this script's.
exec > /out/result.txt 2>&1
set -u
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8
passed=0
failed=0
ok() {
    echo "ok   $*"
    passed=$((passed + 1))
}
bad() {
    echo "FAIL $*"
    failed=$((failed + 1))
}
# check "what" CONDITION...: runs the condition (at most 30 s), one line
# either way, and the condition's output when it failed.
check() {
    local what=$1
    shift
    if timeout 30 bash -c '"$@"' check "$@" >/tmp/check.out 2>&1; then ok "$what"; else
        bad "$what"
        sed 's/^/     | /' /tmp/check.out | tail -n 15
    fi
}
sock=/run/clamsentry/clamd.sock
conf=/etc/clamsentry/clamd.conf
svc() { systemctl show -p "$1" --value clamsentry.service; }
scan() { clamdscan --config-file=$conf --no-summary "$@"; }
# Polls (up to 20 s) until the command succeeds.
wait_for() {
    local _
    for _ in $(seq 200); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    "$@"
}
journal() {
    journalctl --sync
    journalctl -b --no-pager -u clamsentry "$@"
}
reloads() { svc StatusText | sed -n 's/.* \([0-9][0-9]*\) reloads.*/\1/p'; }
# Mirrors what freshclam's NotifyClamd does (freshclam/notify.c): connect
# to the LocalSocket of the named clamd.conf, send "RELOAD" with its NUL,
# expect "RELOADING". Run as freshclam's user.
freshclam_notify() {
    local socket
    socket=$(awk '$1 == "LocalSocket" { print $2 }' "$1")
    printf 'RELOAD\0' | setpriv --reuid=clamav --regid=clamav --init-groups \
        socat -t5 - "UNIX-CONNECT:$socket"
}

# --- the documented installation -------------------------------------------
export -f wait_for journal freshclam_notify svc
cd /src
install_deb() { apt install -y -q ./target/debian/clamsentry_*.deb; }
export -f install_deb
check "apt install ./target/debian/clamsentry_*.deb (offline: every dependency is in the root)" install_deb
check "package contents: binary, units in /lib/systemd/system, conffiles, man pages, docs" bash -c '
    set -e
    for f in /usr/bin/clamsentry /lib/systemd/system/clamsentry.service /lib/systemd/system/clamsentry.socket \
        /lib/systemd/system/clamsentry-metrics.socket /usr/share/clamsentry/prometheus/clamsentry-rules.yml \
        /usr/share/clamsentry/prometheus/clamsentry-rules.test.yml /usr/share/clamsentry/grafana/clamsentry-dashboard.json \
        /etc/clamsentry/clamsentry.toml /etc/clamsentry/clamd.conf /usr/share/man/man8/clamsentry.8.gz \
        /usr/share/man/man5/clamsentry.toml.5.gz /usr/share/doc/clamsentry/README.md \
        /usr/share/doc/clamsentry/copyright /usr/share/doc/clamsentry/changelog.Debian.gz; do
        dpkg -L clamsentry | grep -qx "$f" || { echo "not in the package: $f"; exit 1; }
    done
    c=$(dpkg-query -W -f="\${Conffiles}" clamsentry)
    echo "$c" | grep -q "/etc/clamsentry/clamsentry.toml " && echo "$c" | grep -q "/etc/clamsentry/clamd.conf "
    clamsentry check-config | grep -q "/etc/clamsentry/clamsentry.toml: configuration OK"'
check "dependencies: libclamav12 (>= 1.4), adduser, procps, clamav-base; recommends clamav-freshclam; suggests clamdscan" bash -c '
    d=$(dpkg-query -W -f="\${Depends}|\${Recommends}|\${Suggests}" clamsentry); echo "$d"
    echo "$d" | grep -Eq "libclamav12 \(>= 1\.4[^)]*\)" && echo "$d" | grep -q adduser && echo "$d" | grep -q procps \
        && echo "$d" | grep -q clamav-base && echo "$d" | grep -q "|clamav-freshclam|clamdscan$"'
for u in clamsentry clamsentry-event; do
check "user $u: system user and group, no login, no home" bash -c '
    IFS=: read -r _ _ uid gid _ home shell < <(getent passwd '"$u"')
    echo "uid=$uid gid=$gid home=$home shell=$shell"
    [ "$uid" -lt 1000 ] && [ "$(getent group '"$u"' | cut -d: -f3)" = "$gid" ] \
        && [ "$home" = /nonexistent ] && [ ! -e /nonexistent ] && [ "$shell" = /usr/sbin/nologin ]'
done
check "/var/lib/clamav untouched (clamav:clamav 755) and readable by clamsentry" bash -c '
    stat -c "%U:%G %a" /var/lib/clamav; [ "$(stat -c "%U:%G %a" /var/lib/clamav)" = "clamav:clamav 755" ] \
        && setpriv --reuid=clamsentry --regid=clamsentry --clear-groups ls /var/lib/clamav >/dev/null'
check "clamsentry.socket enabled and listening on $sock (clamav:clamav 0660)" bash -c "
    systemctl is-enabled clamsentry.socket && systemctl is-active clamsentry.socket \
        && [ \"\$(stat -c '%F %U:%G %a' $sock)\" = 'socket clamav:clamav 660' ]"
check "clamsentry-metrics.socket enabled and listening on 127.0.0.1:9906" bash -c "
    systemctl is-enabled clamsentry-metrics.socket && systemctl is-active clamsentry-metrics.socket"
check "clamsentry.service inactive and not enabled (socket activation)" bash -c '
    s=$(systemctl show -p ActiveState --value clamsentry.service); e=$(systemctl is-enabled clamsentry.service)
    echo "$s $e"; [ "$s" = inactive ] && [ "$e" = disabled ]'

# --- signatures: no downloads here, so a small database of our own ----------
# (as tests/common/mod.rs builds it): the MD5 of EICAR, and a body signature.
install -m 0644 -o clamav -g clamav /dev/null /var/lib/clamav/clamsentry-e2e.hdb
printf '44d88612fea8a8f36de82e1278abb02f:68:Win.Test.EICAR_HDB-1\n' > /var/lib/clamav/clamsentry-e2e.hdb
install -m 0644 -o clamav -g clamav /dev/null /var/lib/clamav/clamsentry-e2e.ndb
printf 'Clamsentry.Test.Marker-1:0:*:6d61726b65722d78797a\n' > /var/lib/clamav/clamsentry-e2e.ndb
# EICAR, assembled from pieces so that no file in the repository holds it.
mkdir -p /srv/e2e
{
    printf '%s' 'X5O!P%@AP[4\PZX54(P^)7CC)7}$'
    printf '%s' 'EICAR-STANDARD-ANTIVIRUS-'
    printf '%s' 'TEST-FILE!$H+H*'
} > /srv/e2e/eicar.com
printf 'a clean file\n' > /srv/e2e/clean.txt
chmod 0644 /srv/e2e/*

# --- clamd's clients, and activation ----------------------------------------
check "clamdscan --ping: PONG (the connection started the service)" bash -c "
    out=\$(clamdscan --config-file=$conf --ping 3); echo \"\$out\"; [ \"\$out\" = PONG ]"
check "clamsentry.service active after the first connection (Type=notify: READY=1)" \
    wait_for bash -c '[ "$(svc ActiveState)/$(svc SubState)" = active/running ]'
check "clamdscan FILE (path through the broker): EICAR found" bash -c "
    out=\$(clamdscan --config-file=$conf --no-summary /srv/e2e/eicar.com); rc=\$?; echo \"\$out\"
    [ \$rc = 1 ] && [ \"\$out\" = '/srv/e2e/eicar.com: Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND' ]"
check "clamdscan --stream (INSTREAM): EICAR found, clean file OK" bash -c "
    out=\$(clamdscan --config-file=$conf --no-summary --stream /srv/e2e/eicar.com /srv/e2e/clean.txt); echo \"\$out\"
    echo \"\$out\" | grep -qx '/srv/e2e/eicar.com: Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND' \
        && echo \"\$out\" | grep -qx '/srv/e2e/clean.txt: OK'"
check "clamdscan --fdpass (FILDES): EICAR found" bash -c "
    out=\$(clamdscan --config-file=$conf --no-summary --fdpass /srv/e2e/eicar.com); echo \"\$out\"
    [ \"\$out\" = '/srv/e2e/eicar.com: Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND' ]"
check "systemctl show -p StatusText: database details" bash -c '
    s=$(systemctl show -p StatusText --value clamsentry.service); echo "$s"
    echo "$s" | grep -Eq "^Serving: 2 signatures, database version [0-9]+, .*0 reloads"'
metrics() { printf 'GET /metrics HTTP/1.0\r\n\r\n' | socat -t5 - TCP:127.0.0.1:9906; }
export -f metrics
check "metrics on 127.0.0.1:9906 (systemd's socket, read by the observer): ready, self-test passed, scans counted" \
    wait_for bash -c 'm=$(metrics); echo "$m" | grep -qx "clamsentry_ready 1" \
        && echo "$m" | grep -q "^clamsentry_selftest_last_success_timestamp_seconds " \
        && echo "$m" | grep -q "^clamsentry_scans_total{command=\"INSTREAM\",listener=\"unix\",result=\"found\"} [1-9]"'
check "... the metrics socket came from systemd" bash -c '
    journal | grep -q "metrics listener on 127.0.0.1:9906 from systemd"'
check "... the observer runs as clamsentry, not dumpable (its /proc files belong to root)" bash -c '
    o=$(pgrep -x clamsentry-obs); echo "observer: $o"; [ -n "$o" ] \
        && [ "$(stat -c %U /proc/$o/status)" = root ] \
        && grep -Eq "^Uid:\s+$(id -u clamsentry)\s" /proc/$o/status'
check "users outside group clamav cannot connect (socket mode)" bash -c "
    ! setpriv --reuid=nobody --regid=nogroup --clear-groups socat -t3 - UNIX-CONNECT:$sock </dev/null"

# --- freshclam's notification and systemctl reload --------------------------
before=$(reloads)
check "freshclam's NotifyClamd (RELOAD as user clamav through $conf): RELOADING" bash -c "
    $(declare -f freshclam_notify); out=\$(freshclam_notify $conf | tr -d '\0'); echo \"\$out\"; [ \"\$out\" = RELOADING ]"
check "... the reload completes" wait_for bash -c "[ \"\$(systemctl show -p StatusText --value clamsentry.service | sed -n 's/.* \([0-9][0-9]*\) reloads.*/\1/p')\" = $((before + 1)) ]"
check "a non-administrator's RELOAD is refused" bash -c "
    out=\$(printf 'zRELOAD\0' | setpriv --reuid=nobody --regid=clamav --clear-groups socat -t5 - UNIX-CONNECT:$sock | tr -d '\0'); echo \"\$out\"
    echo \"\$out\" | grep -q 'RELOAD command requires an administrator'"
check "systemctl reload clamsentry" systemctl reload clamsentry
check "... the reload completes" wait_for bash -c "[ \"\$(systemctl show -p StatusText --value clamsentry.service | sed -n 's/.* \([0-9][0-9]*\) reloads.*/\1/p')\" = $((before + 2)) ]"
check "journal: both reloads (TRIGGER=RELOAD command, TRIGGER=SIGHUP)" bash -c "
    $(declare -f journal); journal -o json | grep 'reloading: a new engine holder loads the signatures' > /tmp/r.json; cat /tmp/r.json | cut -c1-300
    grep -q '\"TRIGGER\":\"RELOAD command\"' /tmp/r.json && grep -q '\"TRIGGER\":\"SIGHUP\"' /tmp/r.json"
check "still scanning after the reloads" bash -c "
    clamdscan --config-file=$conf --no-summary --stream /srv/e2e/eicar.com | grep -q 'FOUND$'"

# --- journald fields ----------------------------------------------------------
check "journalctl -u clamsentry SCAN_RESULT=found -o json: structured fields on every detection" bash -c '
    journalctl --sync; journalctl -b -u clamsentry SCAN_RESULT=found -o json --no-pager > /tmp/found.json
    n=$(wc -l < /tmp/found.json); echo "$n entries"; [ "$n" -ge 4 ] || exit 1
    grep -q "\"COMMAND\":\"INSTREAM\"" /tmp/found.json && grep -q "\"COMMAND\":\"FILDES\"" /tmp/found.json \
        && grep -Eq "\"COMMAND\":\"(SCAN|CONTSCAN|MULTISCAN)\"" /tmp/found.json || { echo "missing a command"; exit 1; }
    while read -r j; do
        for f in "\"SCAN_RESULT\":\"found\"" "\"VIRUS_NAME\":\"Win.Test.EICAR_HDB-1.UNOFFICIAL\"" "\"COMMAND\":\"" \
            "\"PEER\":\"unix uid=0 " "\"LISTENER\":\"unix\"" "\"DURATION_MS\":\"" "\"PRIORITY\":\"4\"" \
            "\"_SYSTEMD_UNIT\":\"clamsentry.service\""; do
            case "$j" in *"$f"*) ;; *) echo "missing $f in: $j" | cut -c1-900; exit 1 ;; esac
        done
    done < /tmp/found.json'

# --- privilege separation under systemd ---------------------------------------
check "engine holder, workers and observer run as clamsentry with no capabilities, no-new-privs, Landlock" bash -c '
    main=$(systemctl show -p MainPID --value clamsentry.service)
    u=$(id -u clamsentry); g=$(id -g clamsentry); zygotes=0; workers=0; observers=0
    for p in $(cat /proc/$main/task/*/children); do
        comm=$(cat /proc/$p/comm); echo "$p $comm"
        grep -E "^(Uid|Gid|Groups|Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp):" /proc/$p/status
        case $comm in
            clamsentry-eng) zygotes=$((zygotes + 1)) ;;
            clamsentry-work) workers=$((workers + 1)) ;;
            clamsentry-obs) observers=$((observers + 1)) ;;
            *) exit 1 ;;
        esac
        grep -Eq "^Uid:\s+$u\s+$u\s+$u\s+$u$" /proc/$p/status \
            && grep -Eq "^Gid:\s+$g\s+$g\s+$g\s+$g$" /proc/$p/status \
            && [ "$(grep -c -E "^Cap(Inh|Prm|Eff|Bnd|Amb):\s+0000000000000000$" /proc/$p/status)" = 5 ] \
            && grep -Eq "^NoNewPrivs:\s+1$" /proc/$p/status || exit 1
    done
    echo "$zygotes engine holder(s), $workers workers, $observers observer(s)"
    [ "$zygotes" = 1 ] && [ "$workers" -ge 2 ] && [ "$observers" = 1 ]'
check "status line: landlock=full, seccomp=on, workers serving" bash -c '
    s=$(systemctl show -p StatusText --value clamsentry.service); echo "$s"
    echo "$s" | grep -q "landlock=full" && echo "$s" | grep -q " seccomp=on " \
        && echo "$s" | grep -Eq "workers [1-9][0-9]* serving"'
check "seccomp filters: the engine holder and observer add one to the unit's, each worker one more, the launcher none (it runs commands)" bash -c '
    main=$(systemctl show -p MainPID --value clamsentry.service)
    own=$(awk "/^Seccomp_filters:/ {print \$2}" /proc/$main/status); echo "supervisor: $own filters"
    [ "$own" -ge 1 ] || exit 1
    for p in $(cat /proc/$main/task/*/children); do
        n=$(awk "/^Seccomp_filters:/ {print \$2}" /proc/$p/status); echo "$p $(cat /proc/$p/comm): $n"
        case $(cat /proc/$p/comm) in clamsentry-evt) want=$own ;; clamsentry-eng|clamsentry-obs) want=$((own + 1)) ;; *) want=$((own + 2)) ;; esac
        [ "$n" = "$want" ] || exit 1
    done'
check "sandbox-check under the unit's sandbox: every socket, connect and io_uring attempt denied" bash -c '
    out=$(systemd-run --wait --pipe -q -p SystemCallFilter="@system-service landlock_create_ruleset landlock_add_rule landlock_restrict_self seccomp" \
        -p SystemCallErrorNumber=EPERM -p RestrictAddressFamilies=AF_UNIX -p NoNewPrivileges=yes \
        /usr/bin/clamsentry sandbox-check 2>/dev/null); rc=$?
    echo "$out" | grep -E "engine holder|socket|connect|io_uring|unshare|UNEXPECTED"; echo "exit $rc"
    [ $rc = 0 ] && echo "$out" | grep -q " seccomp=on " \
        && echo "$out" | grep -q "denied   connect to /run/clamsentry/clamd.sock with a socket made before the sandbox" \
        && ! echo "$out" | grep -q UNEXPECTED'
check "a worker killed with SIGKILL is replaced by a fork, the engine holder stays" bash -c '
    main=$(systemctl show -p MainPID --value clamsentry.service)
    z=$(for p in $(cat /proc/$main/task/*/children); do [ "$(cat /proc/$p/comm)" = clamsentry-eng ] && echo $p; done)
    w=$(for p in $(cat /proc/$main/task/*/children); do [ "$(cat /proc/$p/comm)" = clamsentry-work ] && echo $p; done | head -n 1)
    kill -KILL $w
    for _ in $(seq 600); do
        now=$(for p in $(cat /proc/$main/task/*/children); do [ "$(cat /proc/$p/comm)" = clamsentry-work ] && echo $p; done)
        echo "$now" | grep -qx "$w" || [ "$(echo "$now" | wc -l)" -lt 2 ] || break; sleep 0.1
    done
    echo "workers now: $now"; echo "$now" | grep -qx "$w" && exit 1
    [ "$(systemctl show -p MainPID --value clamsentry.service)" = "$main" ] && kill -0 $z \
        && [ "$(clamdscan --config-file=/etc/clamsentry/clamd.conf --ping 3)" = PONG ]'
check "Landlock hidden by a seccomp filter: the daemon refuses to start and says why and which key relaxes it" bash -c '
    printf "[listen]\nunix = \"/run/ll-test.sock\"\n[database]\ndirectory = \"/var/lib/clamav\"\n" > /tmp/ll.toml
    out=$(systemd-run --wait --pipe -q -p SystemCallFilter="~landlock_create_ruleset landlock_add_rule landlock_restrict_self" \
        -p SystemCallErrorNumber=ENOSYS /usr/bin/clamsentry --config /tmp/ll.toml 2>&1); rc=$?
    echo "$out" | tail -n 3; echo "exit $rc"
    [ $rc != 0 ] && echo "$out" | grep -q "seccomp filter hides the Landlock system calls" \
        && echo "$out" | grep -Eq "sandbox.landlock = \\\\?\"best-effort"'
check "supervisor keeps only SETUID SETGID SETPCAP CHOWN DAC_READ_SEARCH KILL" bash -c '
    main=$(systemctl show -p MainPID --value clamsentry.service); grep -E "^Cap(Prm|Eff|Bnd):" /proc/$main/status
    # bits: KILL 5, SETGID 6, SETUID 7, SETPCAP 8, DAC_READ_SEARCH 2
    [ "$(grep -E "^Cap(Prm|Eff|Bnd):" /proc/$main/status | awk "{print \$2}" | sort -u)" = 00000000000001e5 ]'

# --- VirusEvent under the unit's hardening -------------------------------------
# A command configured in the shipped file: the launcher runs as
# clamsentry-event, confined, and the command's output reaches the journal
# through the supervisor. The shipped file is put back afterwards.
virus_event() {
    local toml=/etc/clamsentry/clamsentry.toml main p launcher="" u
    cp "$toml" /tmp/clamsentry.toml.orig
    sed -i 's|^command = ""$|command = "echo ran as $(id -un) for %v"|' "$toml"
    grep -q '^command = "echo ran as' "$toml" || { echo "no command line in $toml"; return 1; }
    systemctl restart clamsentry.service || return 1
    main=$(svc MainPID)
    for _ in $(seq 100); do
        for p in $(cat /proc/$main/task/*/children); do
            [ "$(cat /proc/$p/comm)" = clamsentry-evt ] && launcher=$p
        done
        [ -n "$launcher" ] && break; sleep 0.1
    done
    [ -n "$launcher" ] || { echo "no launcher"; return 1; }
    grep -E "^(Uid|Gid|CapEff|CapPrm|CapBnd|NoNewPrivs):" /proc/$launcher/status
    u=$(id -u clamsentry-event)
    grep -Eq "^Uid:\s+$u\s+$u\s+$u\s+$u$" /proc/$launcher/status \
        && [ "$(grep -c -E "^Cap(Inh|Prm|Eff|Bnd|Amb):\s+0000000000000000$" /proc/$launcher/status)" = 5 ] \
        && grep -Eq "^NoNewPrivs:\s+1$" /proc/$launcher/status \
        && [ "$(stat -c %u /proc/$launcher/environ)" = 0 ] || { echo "launcher not confined"; return 1; }
    clamdscan --config-file=/etc/clamsentry/clamd.conf --no-summary --stream /srv/e2e/eicar.com \
        | grep -q 'FOUND$' || return 1
    wait_for bash -c 'journal VIRUS_EVENT_STATUS=exited -o json | grep -q "\"VIRUS_EVENT_STDOUT\":\"ran as clamsentry-event for Win.Test.EICAR_HDB-1.UNOFFICIAL\""' \
        || { journal -n 20 -o cat; return 1; }
}
restore_config() {
    cp /tmp/clamsentry.toml.orig /etc/clamsentry/clamsentry.toml && systemctl restart clamsentry.service
}
export -f virus_event restore_config
check "VirusEvent: the launcher runs as clamsentry-event (no capabilities, non-dumpable), the command's output in the journal" virus_event
check "... the shipped configuration back, the service restarted" restore_config

# --- upgrade (same version again): a running service restarts -----------------
pid_before=$(svc MainPID)
check "upgrade (apt install --reinstall): the running service restarts on the new files" bash -c "
    cd /src && apt install -y -q --reinstall ./target/debian/clamsentry_*.deb >/tmp/reinstall.log 2>&1 || { cat /tmp/reinstall.log; exit 1; }
    s=\$(svc ActiveState); pid=\$(svc MainPID); echo \"MainPID before $pid_before, now \$pid (\$s)\"
    [ \"\$s\" = active ] && [ \"\$pid\" != $pid_before ] && [ \"\$(clamdscan --config-file=$conf --ping 3)\" = PONG ]"

# --- stop drains ---------------------------------------------------------------
check "systemctl stop clamsentry: a stream in flight still gets its answer, exit 0" bash -c '
    # The stream is half sent when the stop begins.
    { printf "zINSTREAM\0\0\0\0\104"; sleep 2; cat /srv/e2e/eicar.com; printf "\0\0\0\0"; } \
        | socat -t10 - UNIX-CONNECT:/run/clamsentry/clamd.sock > /tmp/inflight.out &
    sleep 1
    systemctl stop clamsentry.service || exit 1
    wait
    answer=$(tr -d "\0" < /tmp/inflight.out); echo "in-flight stream: $answer"
    [ "$answer" = "stream: Win.Test.EICAR_HDB-1.UNOFFICIAL FOUND" ] || exit 1
    r=$(svc ActiveState)/$(svc Result)/$(svc ExecMainStatus); echo "$r"
    journalctl --sync
    journalctl -b -u clamsentry --no-pager -o cat | tail -n 8
    [ "$r" = inactive/success/0 ] \
        && journalctl -b -u clamsentry --no-pager -o json | tail -n 20 | grep -q "\"MESSAGE\":\"stopping: draining workers\"" \
        && journalctl -b -u clamsentry --no-pager -o json | tail -n 20 | grep -q "\"MESSAGE\":\"stopped\""'
check "socket still listening after the service stopped; the next connection starts it" bash -c "
    systemctl is-active clamsentry.socket && [ \"\$(clamdscan --config-file=$conf --ping 3)\" = PONG ]"

# --- purge -------------------------------------------------------------------
uid=$(id -u clamsentry)
check "apt purge clamsentry" apt purge -y -q clamsentry
check "purge removed the user, group, units, config, socket and every trace; kept clamsentry-event" bash -c "
    getent passwd clamsentry && exit 1; getent group clamsentry && exit 1
    getent passwd clamsentry-event >/dev/null || exit 1
    for f in /etc/clamsentry /run/clamsentry /lib/systemd/system/clamsentry.service /lib/systemd/system/clamsentry.socket \
        /etc/systemd/system/sockets.target.wants/clamsentry.socket /usr/bin/clamsentry; do
        [ -e \$f ] || [ -L \$f ] && { echo \"left: \$f\"; exit 1; }
    done
    ls /var/lib/systemd/deb-systemd-helper-enabled /var/lib/systemd/deb-systemd-helper-masked 2>/dev/null | grep clamsentry && exit 1
    left=\$(find / -xdev -uid $uid 2>/dev/null | head); [ -z \"\$left\" ] || { echo \"owned by uid $uid: \$left\"; exit 1; }
    [ \"\$(systemctl show -p ActiveState --value clamsentry.socket)\" = inactive ] && [ -d /var/lib/clamav ]"

# --- reinstall -----------------------------------------------------------------
check "reinstall after purge: apt install ./target/debian/clamsentry_*.deb" install_deb
check "after reinstall: socket listening, PONG and a detection" bash -c "
    systemctl is-active clamsentry.socket && [ \"\$(clamdscan --config-file=$conf --ping 3)\" = PONG ] \
        && clamdscan --config-file=$conf --no-summary /srv/e2e/eicar.com | grep -q 'EICAR_HDB-1.UNOFFICIAL FOUND$'"

if [ "$failed" != 0 ]; then
    echo "--- journalctl -u clamsentry (last 40 lines)"
    journalctl -b -u clamsentry --no-pager -o short-monotonic | tail -n 40
fi
echo "inside the container: ${SECONDS} s"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
