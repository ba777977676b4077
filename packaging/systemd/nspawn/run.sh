#!/bin/bash
# Boots a Debian 12 container with systemd as PID 1 and checks the shipped
# units with the built binary: socket activation, socket permissions,
# readiness and status, reload, signature directory watching, exit-when-idle
# and re-activation, the watchdog, and journald fields. A manual check (and a
# starting point for the packaging issue's boot test); needs root,
# debootstrap and systemd-container. See shared/reference/systemd-testing.md.
#
#   packaging/systemd/nspawn/run.sh target/debug/clamsentry [ROOT]
#
# ROOT (default /var/tmp/clamsentry-nspawn-root) is built once (~75 s).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=$(realpath "${1:?usage: run.sh PATH/TO/clamsentry [ROOT]}")
root=${2:-/var/tmp/clamsentry-nspawn-root}
[ "$(id -u)" = 0 ] || { echo "run.sh: needs root" >&2; exit 2; }
for t in debootstrap systemd-nspawn; do
    command -v $t >/dev/null || { echo "run.sh: $t missing: apt-get install debootstrap systemd-container" >&2; exit 2; }
done
if [ ! -x "$root/usr/bin/socat" ]; then
    debootstrap --variant=minbase \
        --include=systemd,systemd-sysv,dbus,ca-certificates,libclamav12,clamav-base,socat,procps \
        bookworm "$root" http://deb.debian.org/debian
fi
work=$(mktemp -d)
cleanup() {
    rm -rf "$work" /run/systemd/nspawn
    for h in unified systemd; do
        find /sys/fs/cgroup/$h/cs-nspawn-$$ -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
}
trap cleanup EXIT
mkdir "$work/t" "$work/out"
cp "$bin" "$work/t/clamsentry"
cp "$here/../clamsentry.socket" "$here/../clamsentry.service" "$here/checks.sh" "$work/t/"
cat > "$work/t/e2e.service" <<'UNIT'
[Unit]
After=multi-user.target
SuccessAction=exit-force
FailureAction=exit-force
[Service]
Type=oneshot
ExecStart=/t/checks.sh
UNIT
# --keep-unit puts the container's cgroups under ours: boot from a private
# cgroup (a subshell moves itself there) so that runs do not collide.
rc=0
(
    for h in unified systemd; do
        if [ -d /sys/fs/cgroup/$h ]; then
            mkdir -p /sys/fs/cgroup/$h/cs-nspawn-$$
            echo $BASHPID > /sys/fs/cgroup/$h/cs-nspawn-$$/cgroup.procs
        fi
    done
    exec timeout 180 systemd-nspawn -q -D "$root" -M cs-nspawn-$$ --register=no --keep-unit \
        --private-network --volatile=overlay --console=pipe \
        --bind-ro="$work/t:/t" --bind="$work/out:/out" \
        --bind-ro="$work/t/e2e.service:/etc/systemd/system/e2e.service" \
        -b systemd.wants=e2e.service
) > "$work/nspawn.log" 2>&1 || rc=$?
cat "$work/out/result.txt" 2>/dev/null || cat "$work/nspawn.log"
exit $rc
