#!/usr/bin/env bash
# The whole suite under load: `.ci/run` on a clean clone of this repository's HEAD while one
# busy process per core (`yes`, pinned with taskset, at normal priority) competes with it.
#
#   benchmarks/loaded_suite.sh [RUNS]      # RUNS in a row (default 1); stops at a failure
#
# Prints, per run, the commit, the exit status, the wall time and pytest's last line, and
# writes the full logs and the load average (once a minute) under $OUT (default: a new
# folder in /tmp). Not part of CI: a run takes one to two hours on two cores.
set -euo pipefail
runs="${1:-1}"
out="${OUT:-$(mktemp -d /tmp/loaded-suite-XXXX)}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
cores="$(nproc)"
hogs=()
stop_hogs() { ((${#hogs[@]})) && kill "${hogs[@]}" 2>/dev/null; hogs=(); }
trap stop_hogs EXIT
for ((i = 1; i <= runs; i++)); do
    clone="$out/clone$i"
    git clone -q "$repo" "$clone"
    for ((core = 0; core < cores; core++)); do
        taskset -c "$core" yes >/dev/null &
        hogs+=($!)
    done
    (while sleep 60; do echo "$(date +%T) $(cut -d' ' -f1-3 /proc/loadavg)"; done) \
        >"$out/load$i.txt" &
    hogs+=($!)
    start=$(date +%s)
    status=0
    (cd "$clone" && .ci/run) >"$out/ci$i.log" 2>&1 || status=$?
    stop_hogs
    echo "run $i: $(git -C "$clone" rev-parse --short HEAD) exit $status in" \
        "$(($(date +%s) - start)) s; $(tail -1 "$out/ci$i.log")"
    rm -rf "$clone"
    ((status == 0)) || exit "$status"
done
echo "logs: $out"
