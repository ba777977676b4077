#!/usr/bin/env bash
# Runs one fuzz target, coverage-guided, on the stable toolchain.
#
#   fuzz/run.sh TARGET SECONDS [libFuzzer options...]
#   fuzz/run.sh build                 # only build the targets
#   fuzz/run.sh list                  # names of the targets
#
# Targets: command, instream, session, config, messages, log_escape, logrec,
# clamd_conf, observe
# (see docs/fuzzing.md).
# The harness is libFuzzer (crate libfuzzer-sys, which builds libFuzzer from
# source with the system C++ compiler); coverage comes from LLVM's
# SanitizerCoverage pass, switched on with stable `-C` flags (no -Z, no
# nightly). The growing corpus lives in fuzz/corpus/TARGET (not committed);
# the committed seeds in fuzz/seeds/TARGET are read as a second corpus.
# A crash, failed property, timeout (>10 s per input) or OOM (>2 GiB) writes
# the input to fuzz/artifacts/TARGET/ and exits non-zero. Replay one with
#   fuzz/target/x86_64-unknown-linux-gnu/release/TARGET fuzz/artifacts/TARGET/crash-…
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TARGETS=(command instream session config messages log_escape logrec clamd_conf observe)
TRIPLE="$(rustc -vV | sed -n 's/^host: //p')"
BIN_DIR="$HERE/target/$TRIPLE/release"

# Instrumentation: SanitizerCoverage with 8-bit counters, the PC table and
# comparison tracing (what cargo-fuzz passes, minus the -Z sanitizer), plus
# debug assertions and overflow checks so arithmetic bugs trap.
export RUSTFLAGS="${FUZZ_RUSTFLAGS:-} -Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
--cfg fuzzing -Cdebug-assertions -Coverflow-checks -Ccodegen-units=1"

build() {
    # --target keeps the instrumentation out of build scripts and proc macros.
    local locked=()
    [[ -f "$HERE/Cargo.lock" ]] && locked=(--locked)
    cargo build --release "${locked[@]}" --manifest-path "$HERE/Cargo.toml" \
        --target "$TRIPLE" --bins
}

case "${1:-}" in
    list) printf '%s\n' "${TARGETS[@]}"; exit 0 ;;
    build) build; exit 0 ;;
    ""|-h|--help) sed -n '2,20p' "$0"; exit 2 ;;
esac

TARGET="$1"
SECONDS_TO_RUN="${2:?usage: fuzz/run.sh TARGET SECONDS [libFuzzer options...]}"
shift 2
if [[ ! " ${TARGETS[*]} " == *" $TARGET "* ]]; then
    echo "unknown target $TARGET; targets: ${TARGETS[*]}" >&2
    exit 2
fi
[[ -n "${FUZZ_NO_BUILD:-}" ]] || build

CORPUS="${FUZZ_CORPUS:-$HERE/corpus/$TARGET}"
ARTIFACTS="${FUZZ_ARTIFACTS:-$HERE/artifacts/$TARGET}"
mkdir -p "$CORPUS" "$ARTIFACTS"
DICT=()
[[ -f "$HERE/dict/$TARGET.dict" ]] && DICT=("-dict=$HERE/dict/$TARGET.dict")

exec "$BIN_DIR/$TARGET" \
    -max_total_time="$SECONDS_TO_RUN" \
    -timeout=10 \
    -rss_limit_mb=2048 \
    -max_len=8192 \
    -print_final_stats=1 \
    -artifact_prefix="$ARTIFACTS/" \
    "${DICT[@]}" \
    "$@" \
    "$CORPUS" "$HERE/seeds/$TARGET"
