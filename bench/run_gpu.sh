#!/usr/bin/env bash
# The GPU test suite and every GPU benchmark on one host with two GPUs, in one go.
# GPU 0 runs the test suite while GPU 1 runs the single-GPU benchmarks one after another; then the
# context-parallel benchmark takes both. Logs and JSON go to $OUT (default ./out).
# Usage: bash bench/run_gpu.sh [TEST_SECONDS] [BENCH_SECONDS]
set -u
out=${OUT:-out}; mkdir -p "$out"
tests_s=${1:-300}; bench_s=${2:-330}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
{ nvidia-smi -L; python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; date -u; } >"$out/machine.txt" 2>&1

# Eight workers share GPU 0 (the suite is bound by Triton's compile time, not the GPU); every failure
# is named in the log's summary (-rf) and in the JUnit file, whatever part of the log comes back.
CUDA_VISIBLE_DEVICES=0 timeout "$tests_s" python3 -m pytest -q -p no:cacheprovider -n 8 -rfE --timeout 240 \
    --junitxml="$out/gpu_tests.xml" tests/gpu -m gpu >"$out/gpu_tests.log" 2>&1 &
tests=$!

bench() {  # name, seconds, command...
    local name=$1 secs=$2; shift 2
    echo "== $name" >>"$out/bench.log"
    CUDA_VISIBLE_DEVICES=1 timeout "$secs" "$@" >>"$out/bench.log" 2>&1 || echo "(exit $?)" >>"$out/bench.log"
}
start=$SECONDS
left() { echo $(( bench_s - (SECONDS - start) )); }
bench triton "$(left)" python3 bench/bench_triton.py --ns 32768
[ "$(left)" -gt 30 ] && bench decode "$(left)" python3 bench/bench_decode.py
[ "$(left)" -gt 30 ] && bench runtime "$(left)" python3 bench/bench_runtime.py
[ "$(left)" -gt 30 ] && bench grids "$(left)" python3 bench/bench_grids.py
[ "$(left)" -gt 30 ] && bench hf_prefill "$(left)" python3 bench/bench_hf_prefill.py
[ "$(left)" -gt 30 ] && bench lowering "$(left)" python3 bench/bench_lowering.py --quick
wait "$tests"; echo "tests exit $?" >>"$out/gpu_tests.log"
echo "== cp" >>"$out/bench.log"
timeout 200 torchrun --standalone --nproc_per_node 2 bench/bench_cp.py --out "$out/bench_cp.json" >>"$out/bench.log" 2>&1 \
    || echo "(exit $?)" >>"$out/bench.log"
grep -E "^(FAILED|ERROR)|passed|failed" "$out/gpu_tests.log" | tail -20
