#!/usr/bin/env bash
# CI's short fuzz run: builds every target, replays the committed seeds, then
# fuzzes each target briefly (FUZZ_CI_SECONDS each, default 15: about 60 s in
# all) so that a harness or decoder regression fails CI. Called from .ci/run:
#   bash fuzz/ci.sh
# Needs only what the main build needs (stable Rust, a C++ compiler, clang
# for bindgen); libfuzzer-sys comes from crates.io.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SECS="${FUZZ_CI_SECONDS:-15}"
"$HERE/run.sh" build
failed=0
for t in $("$HERE/run.sh" list); do
    echo "== fuzz $t: ${SECS}s"
    log="$(mktemp)"
    # A fresh corpus per run, so CI does not depend on earlier runs.
    work="$(mktemp -d)"
    if FUZZ_NO_BUILD=1 FUZZ_CORPUS="$work/corpus" FUZZ_ARTIFACTS="$work/artifacts" \
        "$HERE/run.sh" "$t" "$SECS" >"$log" 2>&1; then
        grep -E '^#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units' "$log" || true
    else
        echo "fuzz target $t FAILED:"; tail -40 "$log"; failed=1
    fi
    rm -rf "$log" "$work"
done
[[ $failed -eq 0 ]] || exit 1
echo "fuzz: all targets ran without a crash or property failure"
