#!/usr/bin/env bash
# The README's test command: installs what the tests need (asking nothing;
# quick when it is all there), then runs the whole suite (every test
# binary, even after one fails). Arguments go to `cargo test` (for example
# `scripts/test.sh --test dos`). Run it as root,
# as CI does: a test that needs root or a missing tool is skipped otherwise
# (and fails under CI=1 or CLAMSENTRY_REQUIRE_ALL=1; see
# tests/common/require.rs). The last line counts the skipped tests and the
# lines after it name them; the exit status is cargo's.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh test
export PATH="$HOME/.cargo/bin:$PATH"
target=$(cargo metadata --no-deps --format-version 1 \
  | grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)
export CLAMSENTRY_SKIP_FILE="$target/tmp/skipped-tests.txt"
mkdir -p "$target/tmp"
rm -f "$CLAMSENTRY_SKIP_FILE"
status=0
cargo test --no-fail-fast "$@" || status=$?
skipped=0
if [ -f "$CLAMSENTRY_SKIP_FILE" ]; then
  skipped=$(wc -l < "$CLAMSENTRY_SKIP_FILE")
fi
echo "skipped: $skipped"
if [ "$skipped" -gt 0 ]; then
  sed 's/^/  /' "$CLAMSENTRY_SKIP_FILE"
fi
exit "$status"
