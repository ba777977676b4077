#!/usr/bin/env bash
# Installs what clamsentry needs on Debian 12, asking nothing; quick when
# everything is there already (no apt-get update then).
#
#   scripts/install-deps.sh build   what building needs (demo/run.sh calls this)
#   scripts/install-deps.sh         also what the tests need (scripts/test.sh):
#                                   the real clamd 1.4.6, real clients, the
#                                   tools of the package's end-to-end test
#
# Run as root, or as a user who may `sudo` without a password.
set -euo pipefail
profile=${1:-test}

build_packages=(build-essential pkg-config libclang-dev libclamav-dev clamdscan clamav-testfiles)
test_packages=(
  clamav clamav-daemon clamdscan clamav-testfiles clamav-milter miltertest
  python3 python3-pip python3-pyclamd libclamav-client-perl perl
  systemd util-linux procps tmux bzip2
  debootstrap systemd-container lintian dpkg-dev binutils
  check python3-pytest python3-pytest-timeout
  prometheus chromium chromium-driver python3-selenium
)
case "$profile" in
  build) packages=("${build_packages[@]}") ;;
  test) packages=("${build_packages[@]}" "${test_packages[@]}") ;;
  *) echo "usage: $0 [build|test]" >&2; exit 2 ;;
esac

as_root() {
  if [ "$(id -u)" = 0 ]; then
    "$@"
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo -n "$@"
  else
    echo "install-deps: need root to run: $*" >&2
    echo "install-deps: run this script as root, or allow this user sudo without a password" >&2
    exit 1
  fi
}

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  # Keep package scripts from starting services (clamd, freshclam, the
  # milter) on this machine: tests/milter.rs starts its own milter.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [ ! -e "$policy" ]; then
    as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod +x $policy"
    created_policy=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  if [ "$created_policy" = 1 ]; then as_root rm -f "$policy"; fi
fi

# Rust: Debian 12's rustc is too old; rustup's stable is what the crate is
# built with.
if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null; then
  echo "install-deps: installing Rust (stable) with rustup into $HOME/.cargo"
  if ! command -v curl >/dev/null; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends curl ca-certificates
  fi
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
  export PATH="$HOME/.cargo/bin:$PATH"
fi

[ "$profile" = build ] && exit 0

# python `clamd` 1.0.2 from PyPI, for the interpreter the tests call as python3.
if ! python3 -c 'import clamd, sys; sys.exit(0 if clamd.__version__ == "1.0.2" else 1)' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check clamd==1.0.2 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages clamd==1.0.2
fi
# The Debian package is built with cargo-deb (tests/e2e_deb.rs builds it,
# then boots it in a Debian 12 container with systemd-nspawn).
CARGO_DEB_VERSION=3.8.0
if ! cargo deb --version 2>/dev/null | grep -qx "cargo-deb $CARGO_DEB_VERSION"; then
  cargo install --locked --quiet "cargo-deb@$CARGO_DEB_VERSION"
fi
# The user test daemons run their workers as (tests/common: SERVICE_USER),
# a dedicated one as in production, so that test clients running as nobody
# are never the service user.
if ! id clamsentry-test >/dev/null 2>&1; then
  as_root useradd --system --user-group --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin clamsentry-test
fi
