#!/usr/bin/env bash
# Installs what building and testing clamsentry needs on Debian 12 (run as root).
# The test suite compares clamsentry with the real clamd 1.4.6 and real clients,
# so those are installed too.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
# Keep package scripts from starting services (clamd, freshclam) on this machine.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"
  chmod +x "$policy"
  created_policy=1
fi
apt-get update -q
apt-get install -y -q --no-install-recommends \
  build-essential pkg-config libclang-dev libclamav-dev \
  clamav clamav-daemon clamdscan clamav-testfiles \
  python3 python3-pyclamd libclamav-client-perl perl \
  systemd util-linux procps tmux \
  debootstrap systemd-container lintian dpkg-dev binutils \
  check python3-pytest python3-pytest-timeout
if [ "$created_policy" = 1 ]; then rm -f "$policy"; fi
# python `clamd` 1.0.2 from PyPI, for the interpreter the tests call as python3.
python3 -m pip install --quiet --disable-pip-version-check clamd==1.0.2 2>/dev/null \
  || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages clamd==1.0.2
# check (libcheck) and pytest: scripts/upstream-clamd-tests.sh compiles
# ClamAV's check_clamd.c and runs its clamd_test.py with Debian's python3.
# The Debian package is built with cargo-deb (tests/e2e_deb.rs builds it,
# then boots it in a Debian 12 container with systemd-nspawn).
CARGO_DEB_VERSION=3.8.0
if ! cargo deb --version 2>/dev/null | grep -qx "cargo-deb $CARGO_DEB_VERSION"; then
  cargo install --locked --quiet "cargo-deb@$CARGO_DEB_VERSION"
fi
