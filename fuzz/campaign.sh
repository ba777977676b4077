#!/usr/bin/env bash
# The long runs recorded in docs/fuzzing.md: two targets at a time (the
# machine has 2 cores), each until it has used CPU_SECONDS of CPU time (not
# wall time: the machine is shared), then interrupted so libFuzzer prints
# its final statistics. Logs go to fuzz/logs/TARGET.log.
#   fuzz/campaign.sh CPU_SECONDS [targets...]
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CPU="${1:-660}"; shift || true
if [[ $# -gt 0 ]]; then TARGETS=("$@"); else TARGETS=(command instream session config); fi
mkdir -p "$HERE/logs"
"$HERE/run.sh" build
TICK="$(getconf CLK_TCK)"

cpu_of() { # user+system seconds of a process
    awk -v t="$TICK" '{ sub(/^.*\) /, ""); print int(($12 + $13) / t) }' "/proc/$1/stat" 2>/dev/null || echo 0
}

fuzz_one() {
    local t="$1" log="$HERE/logs/$1.log"
    FUZZ_NO_BUILD=1 "$HERE/run.sh" "$t" $((CPU * 10)) >"$log" 2>&1 &
    local pid=$! used=0
    while kill -0 "$pid" 2>/dev/null; do
        used="$(cpu_of "$pid")"
        if [[ "$used" -ge "$CPU" ]]; then kill -INT "$pid"; break; fi
        sleep 5
    done
    wait "$pid"
    echo "cpu_seconds=$used" >>"$log"
}

i=0
while [[ $i -lt ${#TARGETS[@]} ]]; do
    pids=()
    for t in "${TARGETS[@]:$i:2}"; do fuzz_one "$t" & pids+=($!); done
    wait "${pids[@]}"
    i=$((i + 2))
done
for t in "${TARGETS[@]}"; do
    echo "== $t"
    grep -E 'INITED|^#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|cpu_seconds|ERROR|panicked' \
        "$HERE/logs/$t.log"
    grep -E '^#[0-9]+[[:space:]]' "$HERE/logs/$t.log" | tail -1
done
