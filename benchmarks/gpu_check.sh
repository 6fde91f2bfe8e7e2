#!/usr/bin/env bash
# The one prepared script of a GPU session: install, the GPU tests, then every benchmark.
#
#   OUT=/some/folder bash benchmarks/gpu_check.sh      # from anywhere; runs in the repository root
#
# Writes into $OUT (default: benchmarks/results/gpu-check-<date>): nvidia-smi.txt, pip-freeze.txt,
# install.log, gpu_tests.log, bench.log, bench.json (+ a copy named after the GPU, the file to commit
# under benchmarks/results/) and status.txt (each step's exit status).
# Expected time on one H100: ~4-5 minutes (install < 1, GPU tests ~1, benchmarks ~2-3); the
# timeouts below bound it at ~8.5 minutes. A failing step is recorded and the next one still runs:
# the benchmarks run even when GPU tests fail. Exit status: the first non-zero step, else 0.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT="${OUT:-benchmarks/results/gpu-check-$(date -u +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
unset TRITON_INTERPRET  # the tests' conftest sets it only without CUDA; an inherited 1 would benchmark the interpreter
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
STATUS="$OUT/status.txt"
: > "$STATUS"

step() {  # step NAME SECONDS LOG CMD...: run CMD under a timeout, log to LOG, record its exit status
    local name=$1 seconds=$2 log=$3 rc=0
    shift 3
    echo "== $name (timeout ${seconds}s)" >&2
    timeout --kill-after=10 "$seconds" "$@" > "$log" 2>&1 || rc=$?
    echo "$name $rc" >> "$STATUS"
    tail -n 40 "$log" >&2
    echo "== $name: exit $rc" >&2
    return 0
}

step nvidia-smi 30 "$OUT/nvidia-smi.txt" nvidia-smi
step install 90 "$OUT/install.log" python -m pip install --no-deps --no-build-isolation -e .
python -m pip freeze > "$OUT/pip-freeze.txt" 2>&1 || true
step gpu-tests 150 "$OUT/gpu_tests.log" python -m pytest -m gpu -q tests/
step benchmarks 240 "$OUT/bench.log" python -m benchmarks.run --device cuda --out "$OUT/bench.json"

if [[ -f "$OUT/bench.json" ]]; then  # also under the GPU's name: the file to commit as benchmarks/results/<name>.json
    name=$(python -c 'import json, sys; print(json.load(open(sys.argv[1]))["machine"]["slug"])' "$OUT/bench.json") \
        && cp "$OUT/bench.json" "$OUT/$name.json" || echo "could not name the results after the GPU" >&2
fi

cat "$STATUS" >&2
first_failure=$(awk '$2 != 0 && $1 != "nvidia-smi" {print $2; exit}' "$STATUS")
exit "${first_failure:-0}"
