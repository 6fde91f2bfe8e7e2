#!/usr/bin/env bash
# The one prepared script of a GPU session: install, the GPU tests, then every benchmark.
#
#   OUT=/some/folder bash benchmarks/gpu_check.sh      # from anywhere; runs in the repository root
#   PYTHON=python3.12 OUT=... bash benchmarks/gpu_check.sh
#
# Writes at most 5 files into $OUT (default: benchmarks/results/gpu-check-<date>), so that all come
# back from a device session (which returns 8 at most):
#   env.txt         nvidia-smi, the install log and pip freeze
#   gpu_tests.log   python -m pytest -m gpu
#   bench.log       the benchmark's progress and table
#   bench.json      the results (commit as benchmarks/results/<machine.slug>.json, named inside)
#   status.txt      each step's exit status
# Budget: the step timeouts below, kill grace included, add up to 415 s (< 7 minutes); expected on one
# H100 ~4-5 minutes. The benchmark starts a torch.compile row only when it can finish inside its own
# --max-seconds, which ends 30 s before its step's timeout. A failing step is recorded and the next
# still runs (the benchmarks run even when GPU tests fail). Exit status: that of the first failing
# test or benchmark step (a timeout is 124), else 0; nvidia-smi and pip freeze never fail the run.
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
OUT="${OUT:-benchmarks/results/gpu-check-$(date -u +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
unset TRITON_INTERPRET  # the tests' conftest sets it only without CUDA; an inherited 1 would benchmark the interpreter
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
STATUS="$OUT/status.txt"
: > "$STATUS"
KILL_GRACE=5

step() {  # step NAME SECONDS LOG CMD...: run CMD under a timeout, append its output to LOG, record its status
    local name=$1 seconds=$2 log=$3 rc=0
    shift 3
    echo "== $name (timeout ${seconds}s)" | tee -a "$log" >&2
    timeout --kill-after="$KILL_GRACE" "$seconds" "$@" >> "$log" 2>&1 || rc=$?
    echo "$name $rc" >> "$STATUS"
    tail -n 40 "$log" >&2
    echo "== $name: exit $rc" >&2
    return 0
}

step nvidia-smi 15 "$OUT/env.txt" nvidia-smi                                                    # 20 s
step install 60 "$OUT/env.txt" "$PYTHON" -m pip install --no-deps --no-build-isolation -e .      # 65 s
step pip-freeze 15 "$OUT/env.txt" "$PYTHON" -m pip freeze                                        # 20 s
step gpu-tests 130 "$OUT/gpu_tests.log" "$PYTHON" -m pytest -m gpu -q tests/                     # 135 s
step benchmarks 170 "$OUT/bench.log" "$PYTHON" -m benchmarks.run --device cuda --max-seconds 140 \
    --out "$OUT/bench.json"                                                                      # 175 s

cat "$STATUS" >&2
first_failure=$(awk '$2 != 0 && ($1 == "install" || $1 == "gpu-tests" || $1 == "benchmarks") {print $2; exit}' \
    "$STATUS")
exit "${first_failure:-0}"
