#!/bin/bash
# Builds (once) the Debian 12 root that the end-to-end test boots, and prints
# its path. The root is cached under $CLAMSENTRY_E2E_CACHE (default
# /var/cache/clamsentry-e2e) in a directory named after ROOT_VERSION: change
# the version (or the package list) and the next run builds a new one.
# The test boots it with --volatile=overlay, so it is never modified.
#
# It holds: debootstrap's minbase with systemd, plus everything the .deb
# depends on or recommends (apt installs it offline inside the container),
# plus the test's clients: clamdscan, and socat to speak the raw protocol
# (freshclam's RELOAD).
set -euo pipefail
ROOT_VERSION=1
PACKAGES="libclamav12 clamav-base clamav-freshclam clamdscan adduser procps socat"
cache=${CLAMSENTRY_E2E_CACHE:-/var/cache/clamsentry-e2e}
key="bookworm-v$ROOT_VERSION-$(printf '%s' "$PACKAGES" | md5sum | cut -c1-8)"
root="$cache/$key"
if [ -e "$root/.complete" ]; then
    echo "$root"
    exit 0
fi

# The Debian mirror this machine's apt uses (deb822 or one-line format).
mirror=${CLAMSENTRY_E2E_MIRROR:-}
if [ -z "$mirror" ]; then
    mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources \
        /etc/apt/sources.list.d/*.list 2>/dev/null \
        | grep -v '^\s*#' \
        | grep -oE '(https?|file)://[^ ]*/debian/?( |$)' | head -n 1 | tr -d ' ' || true)
    mirror=${mirror:-http://deb.debian.org/debian}
fi

mkdir -p "$cache"
tmp="$root.tmp.$$"
rm -rf "$tmp"
trap 'rm -rf "$tmp"' EXIT
echo "root.sh: building $root from $mirror (once, about 2 minutes)" >&2
debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,ca-certificates \
    bookworm "$tmp" "$mirror" >"$cache/$key.log" 2>&1 \
    || { tail -n 20 "$cache/$key.log" >&2; exit 1; }
# No service starts inside the chroot while packages install.
printf '#!/bin/sh\nexit 101\n' > "$tmp/usr/sbin/policy-rc.d"
chmod 0755 "$tmp/usr/sbin/policy-rc.d"
{
    chroot "$tmp" apt-get update -q
    DEBIAN_FRONTEND=noninteractive chroot "$tmp" \
        apt-get install -y -q --no-install-recommends $PACKAGES
    chroot "$tmp" apt-get clean
} >>"$cache/$key.log" 2>&1 || { tail -n 20 "$cache/$key.log" >&2; exit 1; }
rm -f "$tmp/usr/sbin/policy-rc.d"
# freshclam's daemon would try to download at every boot (there is no
# network inside); the test plays freshclam's notification itself.
chroot "$tmp" systemctl disable clamav-freshclam.service >>"$cache/$key.log" 2>&1 || true
touch "$tmp/.complete"
rm -rf "$root"
mv "$tmp" "$root"
trap - EXIT
echo "$root"
