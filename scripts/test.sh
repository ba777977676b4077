#!/usr/bin/env bash
# The README's test command: installs what the tests need (asking nothing;
# quick when it is all there), then runs the whole suite. Arguments go to
# `cargo test` (for example `scripts/test.sh --test dos`). Run it as root,
# as CI does, so that the privilege-separation tests run for real; as
# another user they say SKIPPED.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh test
export PATH="$HOME/.cargo/bin:$PATH"
exec cargo test "$@"
