#!/usr/bin/env bash
# Issue 17: context parallelism on 4 and 8 GPUs of one host, forward+backward, bf16, H = 16, D = 128,
# with the one-GPU figure at n / P measured in the same run (bench/bench_cp.py), NVLink multicast off.
# Causal window 4096 and dense causal (zigzag; a ring past two ranks) at n = 1,048,576 on 4 GPUs and
# n = 2,097,152 on 8 GPUs; a case the kernels refuse at that n (maskc.limits) is recorded with its
# error, and dense causal is run again at DENSE_N (default 262144), where every kernel tile candidate
# stays under maskc.limits.MAX_STORED_TILES (at 524288 the dK/dV candidate 32 x 64 is over it, at
# 1,048,576 the forward's 128 x 64 as well).
# Usage: bash bench/run_cp_scaling.sh [GPUS...]   (default: 4 8, those the host has)
# Logs and JSON go to $OUT (default ./out). Each torchrun is cut at $CP_SECONDS (default 560).
set -u
out=${OUT:-out}; mkdir -p "$out"
secs=${CP_SECONDS:-560}
reps=${CP_REPS:-3}; warmup=${CP_WARMUP:-1}
dense_n=${DENSE_N:-262144}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
have=$(python3 -c "import torch; print(torch.cuda.device_count())")
{ nvidia-smi -L; python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; date -u; } >"$out/cp_machine.txt" 2>&1
for gpus in "${@:-4 8}"; do
    for g in $gpus; do
        if [ "$g" -gt "$have" ]; then echo "skip $g GPUs: the host has $have" | tee -a "$out/cp_scaling.log"; continue; fi
        n=$(( g == 4 ? 1048576 : 2097152 ))
        echo "== $g GPUs, n = $n" >>"$out/cp_scaling.log"
        timeout "$secs" torchrun --standalone --nproc_per_node "$g" bench/bench_cp.py --seq-len "$n" \
            --cases window,dense_causal --reps "$reps" --warmup "$warmup" --out "$out/cp_${g}gpu_n${n}.json" \
            >>"$out/cp_scaling.log" 2>&1 || echo "(exit $?)" >>"$out/cp_scaling.log"
        echo "== $g GPUs, dense causal at n = $dense_n" >>"$out/cp_scaling.log"
        timeout "$secs" torchrun --standalone --nproc_per_node "$g" bench/bench_cp.py --seq-len "$dense_n" \
            --cases dense_causal,dense_causal_halo --reps "$reps" --warmup "$warmup" --out "$out/cp_${g}gpu_dense_n${dense_n}.json" \
            >>"$out/cp_scaling.log" 2>&1 || echo "(exit $?)" >>"$out/cp_scaling.log"
    done
done
tail -40 "$out/cp_scaling.log"
