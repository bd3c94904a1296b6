#!/usr/bin/env bash
# Issue #11's GPU checks in one command of about 8 minutes, for a GPU machine with torch but without this project
# installed (README, "GPU checks"): bench_gpu.py's eager table and its compiled rows while the machine is quiet,
# then the CUDA tests and the layer's quick tests. Results go to $OUT (default benchmarks/gpu_results):
# environment.txt, bench.log, eager.md/.json, compile.md/.json, pytest.log. Each step has a time limit;
# bench_gpu.py rewrites its table after every row, so a step cut off at its limit keeps what it measured.
# Exit status 1 when any step failed or ran out of time.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/gpu_results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
started=$(date +%s)

if compgen -G ".whl/*.whl" >/dev/null; then  # packages the machine lacks (onnx-graphsurgeon), carried as wheels
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
else
    echo "no wheels in .whl/: without onnx-graphsurgeon the ONNX test modules fail to import (README, 'GPU checks')"
    export PYTHONPATH=$PWD
fi

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python3 -c "import torch, torchvision, triton; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'triton', triton.__version__, 'cuda', torch.cuda.is_available())"
} 2>&1 | tee "$OUT/environment.txt"

failed=()
step() {  # LIMIT_S LOG NAME COMMAND...: run COMMAND under a time limit, its output to the screen and to LOG
    local limit=$1 log=$2 name=$3
    shift 3
    echo "== $name: $* (at most ${limit} s)" | tee -a "$log"
    timeout "$limit" "$@" 2>&1 | tee -a "$log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit status $rc$([ "$rc" -eq 124 ] && echo ' (time limit)')" | tee -a "$log"
    [ "$rc" -eq 0 ] || failed+=("$name (exit status $rc)")
}

# Benchmarks: the eager table (every model, fp32 and bf16), then torch.compile on the issue's compile row.
step 240 "$OUT/bench.log" "bench eager" python3 benchmarks/bench_gpu.py --quick --out "$OUT"
step 120 "$OUT/bench.log" "bench compile" python3 benchmarks/bench_gpu.py --quick --compile --models resnet50 mobilenet_v2_1.0 \
    --kernel-nums 1 --modes inference --dtypes fp32 --out "$OUT"

# Tests: every file with CUDA tests (those and its quick tests) and the layer's quick tests (8 workers with xdist).
cuda_files=$(grep -l "mark.cuda" tests/test_*.py)
layer_files="tests/test_odconv.py tests/test_compile.py tests/test_autocast_training.py tests/test_reference_odconv.py tests/test_bench_gpu.py"
workers=""
python3 -c "import xdist" 2>/dev/null && workers="-n 8"  # pytest-xdist where the image has it
# shellcheck disable=SC2086
step 150 "$OUT/pytest.log" tests python3 -m pytest -p no:cacheprovider $workers -rfEs -m "cuda or not slow" $(echo $cuda_files $layer_files | tr ' ' '\n' | sort -u)

echo
echo "==================== summary ($(( $(date +%s) - started )) s) ===================="
grep -E "^(FAILED|ERROR)|[0-9]+ (passed|failed)" "$OUT/pytest.log" | tail -20
for table in eager compile; do
    [ -f "$OUT/$table.md" ] && cat "$OUT/$table.md"
done
if [ ${#failed[@]} -gt 0 ]; then
    printf 'failed: %s\n' "${failed[@]}"
    exit 1
fi
echo "all steps passed"
