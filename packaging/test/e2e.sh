#!/bin/bash
# End-to-end test of the Debian package under a real systemd (PID 1 in a
# systemd-nspawn container; see shared/reference/systemd-testing.md):
#
#   1. cargo deb                       -> target/debian/clamsentry_*.deb
#   2. lintian on the .deb             (tags that are not explained in
#                                       docs/packaging.md fail the test)
#   3. a cached Debian 12 root         (packaging/test/root.sh)
#   4. boot it with the .deb inside; packaging/test/inside.sh installs it
#      with apt and checks activation, clamdscan, reloads, journald, the
#      sandboxed worker, stop, upgrade, purge and reinstall.
#
# Output: one line per check, then "N passed, M failed". Exit 0 only if all
# passed. Needs root, cargo-deb, debootstrap, systemd-container, lintian
# (scripts/install-deps.sh installs them). tests/e2e_deb.rs runs it.
#
#   packaging/test/e2e.sh            # build the .deb and test it
#   CLAMSENTRY_E2E_DEB=x.deb packaging/test/e2e.sh   # test a given .deb
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"
t0=$(date +%s)
stamp() { echo "[$(($(date +%s) - t0)) s] $*"; }

missing=""
[ "$(id -u)" = 0 ] || missing="$missing root"
for tool in debootstrap systemd-nspawn lintian; do
    command -v $tool >/dev/null || missing="$missing $tool"
done
[ -n "${CLAMSENTRY_E2E_DEB:-}" ] || cargo deb --version >/dev/null 2>&1 || missing="$missing cargo-deb"
if [ -n "$missing" ]; then
    echo "e2e: missing:$missing (run scripts/install-deps.sh as root)"
    exit 77
fi

passed=0
failed=0
ok() { echo "ok   $*"; passed=$((passed + 1)); }
bad() { echo "FAIL $*"; failed=$((failed + 1)); }
finish() {
    stamp "total"
    echo "$passed passed, $failed failed"
    [ "$failed" = 0 ]
    exit
}

# 1. The package, with the documented command.
work=$(mktemp -d /tmp/clamsentry-e2e.XXXXXX)
cgroup=clamsentry-e2e-$$
cleanup() {
    rm -rf "$work"
    # nspawn's leftovers for this machine only (another run may be booting).
    rm -rf "/run/systemd/nspawn/propagate/cs-e2e-$$" "/run/systemd/nspawn/unix-export/cs-e2e-$$"
    rmdir /run/systemd/nspawn/propagate /run/systemd/nspawn/unix-export /run/systemd/nspawn/locks \
        /run/systemd/nspawn 2>/dev/null || true
    for h in unified systemd; do
        find /sys/fs/cgroup/$h/$cgroup -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
}
trap cleanup EXIT
mkdir -p "$work/src/target/debian" "$work/t" "$work/out"
if [ -n "${CLAMSENTRY_E2E_DEB:-}" ]; then
    deb=$CLAMSENTRY_E2E_DEB
    ok "using $deb"
else
    # cargo deb prints the .deb's path (under CARGO_TARGET_DIR if set).
    if cargo deb >"$work/cargo-deb.out" 2>"$work/cargo-deb.log"; then
        deb=$(grep '\.deb$' "$work/cargo-deb.out" | tail -n 1)
        ok "cargo deb: ${deb#"$repo"/}"
    else
        tail -n 20 "$work/cargo-deb.log" | sed 's/^/     | /'
        bad "cargo deb"
        finish
    fi
fi
# Under its canonical name: the documented `apt install` uses that glob.
canonical=$(dpkg-deb -f "$deb" Package)_$(dpkg-deb -f "$deb" Version)_$(dpkg-deb -f "$deb" Architecture).deb
cp "$deb" "$work/src/target/debian/$canonical"
stamp "package built"

# 2. lintian: every tag it still reports must be explained in the docs.
lintian --no-tag-display-limit --display-info "$deb" >"$work/lintian.txt" 2>&1 || true
unexplained=""
while read -r tag; do
    grep -q -- "\`$tag\`" docs/packaging.md || unexplained="$unexplained $tag"
done < <(grep -E '^[EWI]: ' "$work/lintian.txt" | awk '{print $3}' | sort -u)
if [ -z "$unexplained" ]; then
    ok "lintian: $(grep -cE '^[EWI]: ' "$work/lintian.txt") tags, each explained in docs/packaging.md"
else
    grep -E '^[EWI]: ' "$work/lintian.txt" | sed 's/^/     | /'
    bad "lintian tags not explained in docs/packaging.md:$unexplained"
fi
stamp "lintian done"

# 3. The cached root.
if ! root=$("$here/root.sh"); then
    bad "bookworm root (debootstrap)"
    finish
fi
ok "bookworm root: $root"
stamp "root ready"

# 4. Boot it. The test unit powers the container off with its result.
cp "$here/inside.sh" "$work/t/"
cat >"$work/t/e2e.service" <<'UNIT'
[Unit]
Description=clamsentry package end-to-end test
After=multi-user.target
SuccessAction=exit-force
FailureAction=exit-force
[Service]
Type=oneshot
ExecStart=/t/inside.sh
UNIT
# --keep-unit puts the container's cgroups under ours: boot from a private
# cgroup (the subshell moves itself there) so that runs do not collide.
rc=0
(
    for h in unified systemd; do
        if [ -d /sys/fs/cgroup/$h ]; then
            mkdir -p /sys/fs/cgroup/$h/$cgroup
            echo $BASHPID >/sys/fs/cgroup/$h/$cgroup/cgroup.procs
        fi
    done
    # nspawn's seccomp filter hides the Landlock system calls unless they
    # are added; the service requires Landlock (sandbox.landlock).
    exec timeout 300 systemd-nspawn -q -D "$root" -M "cs-e2e-$$" --register=no --keep-unit \
        --private-network --volatile=overlay --console=pipe \
        --system-call-filter='landlock_create_ruleset landlock_add_rule landlock_restrict_self' \
        --bind-ro="$work/t:/t" --bind="$work/out:/out" --bind-ro="$work/src:/src" \
        --bind-ro="$work/t/e2e.service:/etc/systemd/system/e2e.service" \
        -b systemd.wants=e2e.service
) >"$work/nspawn.log" 2>&1 </dev/null || rc=$?
if [ -s "$work/out/result.txt" ]; then
    # The container's own lines, then its counts folded into ours.
    grep -vE '^[0-9]+ passed, [0-9]+ failed$' "$work/out/result.txt"
    counts=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$work/out/result.txt" || true)
    if [ -n "$counts" ]; then
        passed=$((passed + $(echo "$counts" | awk '{print $1}')))
        failed=$((failed + $(echo "$counts" | awk '{print $3}')))
    else
        bad "the test inside the container did not finish"
    fi
else
    tail -n 40 "$work/nspawn.log" | sed 's/^/     | /'
    bad "the container ran no test"
fi
[ "$rc" = 0 ] && ok "container exited 0" || bad "container exited $rc"
finish
