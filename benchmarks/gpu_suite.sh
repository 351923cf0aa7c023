#!/usr/bin/env bash
# One prepared GPU session: the CUDA tests, then fps at batch 1 and 8 for exact fp32 and
# fused fp32/bf16 (with and without CUDA graphs) next to the published A100 figures
# (T 52.4, S 42.3, B 35.2, L 22.9 fps), with the GPU named.
#
#   bash benchmarks/gpu_suite.sh              # on a machine with a CUDA GPU
#   bash benchmarks/gpu_suite.sh --dry-run    # prints the commands and checks they parse (any machine)
#   PYTHON=.venv/bin/python VARIANTS=t,b bash benchmarks/gpu_suite.sh
#
# Every step is bounded by `timeout` so that a lent machine's minutes are not lost to a hang;
# a failed step is reported and the next one still runs; the exit code is that of the
# first failure.
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python}
VARIANTS=${VARIANTS:-t,s,b,l}
STEP_TIMEOUT=${STEP_TIMEOUT:-240}
DRY_RUN=0
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY_RUN=1 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "gpu_suite.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
    esac
done

status=0
run() {  # run NAME CMD...: bounded, reported, never aborts the suite
    local name=$1; shift
    echo "== $name: $*"
    if [ "$DRY_RUN" = 1 ]; then
        return 0
    fi
    timeout "$STEP_TIMEOUT" "$@"
    local rc=$?
    if [ $rc -ne 0 ]; then
        echo "== $name failed (exit $rc)"
        [ $status -eq 0 ] && status=$rc
    fi
}

if [ "$DRY_RUN" = 1 ]; then
    # The Python entry points must at least parse their arguments here.
    "$PYTHON" benchmarks/bench_model.py --help >/dev/null || { echo "bench_model.py --help failed" >&2; exit 1; }
    "$PYTHON" -m pytest --collect-only -q -k "cuda or gpu" tests/models >/dev/null \
        || { echo "pytest collection failed" >&2; exit 1; }
    echo "== dry run: no GPU used; commands below are what a GPU run executes"
else
    "$PYTHON" - <<'EOF' || { echo "gpu_suite.sh: no CUDA device visible to $PYTHON" >&2; exit 2; }
import torch
assert torch.cuda.is_available()
p = torch.cuda.get_device_properties(0)
print(f"== GPU: {torch.cuda.get_device_name(0)}, {p.total_memory / 2**30:.0f} GiB, "
      f"capability {p.major}.{p.minor}; torch {torch.__version__}, CUDA {torch.version.cuda}")
EOF
fi

run "CUDA tests" "$PYTHON" -m pytest -q -x -k "cuda or gpu" tests/models
run "fps, eager" "$PYTHON" benchmarks/bench_model.py --gpu --variants "$VARIANTS" --gpu-batches 1,8
run "fps, CUDA graphs" "$PYTHON" benchmarks/bench_model.py --gpu --cuda-graphs --variants "$VARIANTS" --gpu-batches 1,8
exit $status
