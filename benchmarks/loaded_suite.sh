#!/usr/bin/env bash
# The whole suite under load: `.ci/run` on a clean clone of this repository's HEAD while one
# busy process per core (`yes`, pinned with taskset, at normal priority) competes with it.
#
#   benchmarks/loaded_suite.sh [RUNS]             # RUNS in a row (default 1); stops at a failure
#   benchmarks/loaded_suite.sh --together RUNS    # RUNS at once, each in its own clone: every
#                                                 # run is loaded by the hogs and by the others
#
# Prints, per run, the commit, the exit status, the wall time and pytest's last line, and
# writes the full logs and the load average (once a minute) under $OUT (default: a new
# folder in /tmp). Not part of CI: a run takes one to two hours on two cores.
set -euo pipefail
together=0
if [[ "${1:-}" == --together ]]; then together=1; shift; fi
runs="${1:-1}"
out="${OUT:-$(mktemp -d /tmp/loaded-suite-XXXX)}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
cores="$(nproc)"
hogs=()
stop_hogs() { ((${#hogs[@]})) && kill "${hogs[@]}" 2>/dev/null; hogs=(); }
trap stop_hogs EXIT
# Ctrl-C or SIGTERM stops everything it started: the runs too (a script's `cmd &` ignores SIGINT)
trap 'trap - INT TERM EXIT; stop_hogs; kill -TERM 0' INT TERM

start_hogs() {  # $1: the load log's name
    for ((core = 0; core < cores; core++)); do
        taskset -c "$core" yes >/dev/null &
        hogs+=($!)
    done
    (while sleep 60; do echo "$(date +%T) $(cut -d' ' -f1-3 /proc/loadavg)"; done) \
        >"$out/load$1.txt" &
    hogs+=($!)
}

run_suite() {  # $1: the run's number; prints its line, returns .ci/run's exit status
    local clone="$out/clone$1" start status=0
    git clone -q "$repo" "$clone"
    start=$(date +%s)
    (cd "$clone" && .ci/run) >"$out/ci$1.log" 2>&1 || status=$?
    echo "run $1: $(git -C "$clone" rev-parse --short HEAD) exit $status in" \
        "$(($(date +%s) - start)) s; $(tail -1 "$out/ci$1.log")"
    rm -rf "$clone"
    return "$status"
}

if ((together)); then
    start_hogs ""
    pids=()
    for ((i = 1; i <= runs; i++)); do run_suite "$i" & pids+=($!); done
    failed=0
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    stop_hogs
    echo "logs: $out"
    exit "$failed"
fi
for ((i = 1; i <= runs; i++)); do
    start_hogs "$i"
    status=0
    run_suite "$i" || status=$?
    stop_hogs
    ((status == 0)) || exit "$status"
done
echo "logs: $out"
