#!/usr/bin/env bash
# The one prepared script of a GPU session: install, the GPU tests, then the whole benchmark suite.
#
#   OUT=/some/folder bash benchmarks/gpu_check.sh      # from anywhere; runs in the repository root
#   PYTHON=python3.12 OUT=... bash benchmarks/gpu_check.sh
#
# Writes at most 5 files into $OUT (default: benchmarks/results/gpu-check-<date>); a device call returns 8:
#   env.txt         nvidia-smi, the install log and pip freeze
#   gpu_tests.log   python -m pytest -m gpu: the graph engine and the reward first, then the kernels
#   bench.log       pytest benchmarks/: progress, the pytest-benchmark table, skip reasons
#   bench.json      the results (pytest-benchmark JSON: GPU, clocks, driver, versions in machine_info; one
#                   entry per row and variant); rewritten after every benchmark, so a run cut short keeps
#                   its rows ("complete": false). Commit it as benchmarks/results/<machine_info.gpu_slug>.json
#   status.txt      each step's exit status, written as the step ends
# Order: what a session most needs comes first, and every step leaves its results in $OUT as it ends, so a
# run cut short returns what it did: correctness of the graph engine and the reward (the GPU tests that
# capture), then the kernels' GPU tests, then the benchmarks in priority order (fused ops, shared-GAN unit
# and reward, the search iteration and its projection, derived training, torch.compile last).
# Budget: the step timeouts below, kill grace included, add up to 420 s; a machine start takes 1-2 minutes
# of a session's 15. The suite's own budget (--bench-budget-s) ends 30 s before its step's timeout: a
# variant starts only if its estimate fits, and a test still running 5 s past the budget is interrupted
# (recorded as skipped), so pytest writes bench.json before the timeout; should the timeout still hit,
# pytest takes its SIGTERM as Ctrl-C and writes bench.json with the rows done ("complete": false).
# Without CUDA the suite runs its smoke form (tiny shapes, untimed, no bench.json) and says so.
# A failing step is recorded and the next still runs (the benchmarks run even when GPU tests fail). Exit
# status: that of the first failing install / test / benchmark step (a timeout is 124), else 0;
# nvidia-smi and pip freeze never fail the run.
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

ENGINE_TESTS="tests/test_graph_engine.py tests/test_reward.py tests/test_search_cli.py"
step nvidia-smi 10 "$OUT/env.txt" nvidia-smi                                                    # 15 s
step install 40 "$OUT/env.txt" "$PYTHON" -m pip install --no-deps --no-build-isolation -e .      # 45 s
step pip-freeze 10 "$OUT/env.txt" "$PYTHON" -m pip freeze                                        # 15 s
# shellcheck disable=SC2086
step gpu-tests-engine 100 "$OUT/gpu_tests.log" "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider $ENGINE_TESTS  # 105 s
# shellcheck disable=SC2086
step gpu-tests-kernels 55 "$OUT/gpu_tests.log" "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider tests/ \
    $(printf -- '--ignore=%s ' $ENGINE_TESTS)                                                    # 60 s

device=$(timeout 60 "$PYTHON" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")' 2>/dev/null \
    | tail -n 1)
if [ "$device" = "cuda" ]; then
    step benchmarks 175 "$OUT/bench.log" "$PYTHON" -m pytest benchmarks -q -p no:cacheprovider \
        --benchmark-json "$OUT/bench.json" --bench-budget-s 145 --benchmark-columns=median,iqr,rounds  # 180 s
else
    echo "No CUDA device: running the benchmarks' CPU smoke form (tiny shapes, untimed); no bench.json." \
        | tee -a "$OUT/bench.log" >&2
    step benchmarks 175 "$OUT/bench.log" "$PYTHON" -m pytest benchmarks -q -p no:cacheprovider --benchmark-disable
fi

cat "$STATUS" >&2
first_failure=$(awk '$2 != 0 && ($1 == "install" || $1 ~ /^gpu-tests/ || $1 == "benchmarks") {print $2; exit}' \
    "$STATUS")
exit "${first_failure:-0}"
