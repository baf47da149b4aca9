#!/usr/bin/env bash
# The GPU test suite and every GPU benchmark on one host with two GPUs, in two calls of under ten
# minutes each (the device tool's limit). Logs and JSON go to $OUT (default ./out).
#   bash bench/run_gpu.sh tests   GPU 0: the GPU test suite; GPU 1: bench_lowering --quick (issue 12);
#                                 then both GPUs: the two-GPU tests, bench_cp (issue 15)
#   bash bench/run_gpu.sh benches GPU 0: bench_runtime, bench_grids; GPU 1: bench_hf_prefill,
#                                 bench_decode, bench_triton long lines as chunks against whole
#   bash bench/run_gpu.sh tma     GPU 0: the GPU test suite, then grids; GPU 1: the causal window with and
#                                 without tensor-descriptor loads (bench_triton --tma 0,1), then
#                                 bench_lowering --quick; then both GPUs: the two-GPU tests, bench_cp's window and dense
#                                 causal, each rank's step profiled
#   bash bench/run_gpu.sh next    what bench/NOTES.md's first section lists as not yet measured:
#                                 GPU 0: the GPU test suite; GPU 1: host time of a call (host_time.py),
#                                 then window, Longformer and BigBird at n = 32768, the lowering cases
#                                 strided, StreamingLLM and dilated, the three at n = 131072 (every
#                                 candidate's time); then both GPUs: the two-GPU tests
#   bash bench/run_gpu.sh graphs  one GPU: the CUDA-graph tests, then the cases that looked bound by
#                                 the host, with their times replayed from CUDA graphs (bench_triton's
#                                 graph_times, on with MASKC_BENCH_GRAPHS=1): strided, profiled; run-time
#                                 document-causal, documents with a window, top-k; NATTEN 2-D row-major
#                                 and tiled; each in a process of its own. The 13 graph tests take
#                                 some 300 s: give the phase 540 s, or run GRAPH_TESTS=0 as its own call
#   bash bench/run_gpu.sh gluon   one GPU: the dK/dV's forward+backward against the Triton dK/dV on the
#                                 window (probe_forward_ws.py --kernel dkdv), the Gluon kernels' tests
#                                 (GLUON_TESTS: a -k selection), the same probe on documents and STA,
#                                 the window with the tuner's choices, and STA against non-causal
#                                 cuDNN (bench_grids case 3)
#   bash bench/run_gpu.sh ncu     one GPU: Nsight Compute on one launch each of the window's Gluon dK/dV
#                                 and dQ (stall reasons, pipe and shared-memory use)
#   bash bench/run_gpu.sh check   one GPU, after a change to the Gluon kernels: their whole test file,
#                                 then StreamingLLM and dilated (bench_lowering --quick, short rows)
#                                 and the causal window (bench_triton): `bash bench/run_gpu.sh check 540`
#   bash bench/run_gpu.sh stores  one GPU: window, Longformer and BigBird (bench_triton), dQ against the
#                                 Triton dQ (probe_forward_ws --kernel dq), StreamingLLM and dilated,
#                                 documents with a window's host time (a build in every call), and a
#                                 profiled documents forward+backward: `bash bench/run_gpu.sh stores 540`
#   bash bench/run_gpu.sh host    one GPU, after a change to the run-time build or the launches' set-up:
#                                 the compaction's GPU tests and the Gluon kernels' run-time-pattern tests,
#                                 host time of documents with a window (a build in every call) and of the
#                                 window, then document-causal and documents with a window (bench_runtime),
#                                 the latter also from CUDA graphs: `bash bench/run_gpu.sh host 540`
#   bash bench/run_gpu.sh chunkcheck one GPU: the GPU tests of token lists (Longformer's, the pages) and
#                                 of chunks, then BigBird and Longformer with long lines as chunks and
#                                 walked whole, in one process, each profiled once and timed from CUDA
#                                 graphs too (bench_triton.py --chunk-factor 2,0), then BigBird's host
#                                 time (host_time.py):
#                                 `bash bench/run_gpu.sh chunkcheck 540`
#   bash bench/run_gpu.sh inbounds one GPU: the Gluon kernels probed on Longformer and documents with a
#                                 window, then again with the predicate's bounds term left out
#                                 (bench/experiments/in-bounds-predicate.patch applied on the device)
#                                 after those kernels' tests: `bash bench/run_gpu.sh inbounds 540`
#   bash bench/run_gpu.sh slices one GPU: the GPU tests of long lines as chunks (merges and sums in
#                                 slices of columns), BigBird and Longformer profiled, then the host time
#                                 of four cases with Triton's launch path taken apart and the first
#                                 wait on the GPU sought: `bash bench/run_gpu.sh slices 540`
#   bash bench/run_gpu.sh checked  one GPU: the whole GPU suite but the Gluon kernels' file and the two-GPU
#                                 tests, every remembered launch checked (MASKC_FAST_LAUNCH=check), then
#                                 BigBird, Longformer and the window with and without the launch memory
#                                 (it replaces the launches phase of 2026-12-03, whose tests it includes):
#                                 `bash bench/run_gpu.sh checked 540`
#   bash bench/run_gpu.sh checkedws one GPU: the Gluon kernels' test file in check mode, then the run-time
#                                 documents and clusters (bench_runtime), the short-row and strided lowering
#                                 cases, all with the memory:
#                                 `bash bench/run_gpu.sh checkedws 540`
#   bash bench/run_gpu.sh clusterhost one GPU: the graph tests of per-document sinks, then the cluster cases'
#                                 host time with the first wait on the GPU sought (host_time.py --sync-debug),
#                                 then the cluster cases eager and from CUDA graphs (bench_runtime):
#                                 `bash bench/run_gpu.sh clusterhost 540`
# Every queue stops starting benchmarks when its time (second argument, seconds) is spent.
set -u
phase=${1:-tests}; budget=${2:-330}
out=${OUT:-out}; mkdir -p "$out"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
{ nvidia-smi -L; python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; date -u; } >"$out/machine.txt" 2>&1

pytest_gpu="python3 -m pytest -q -p no:cacheprovider"  # the tests' runner in every queue
ws_tests="tests|$pytest_gpu -n 14 -rfE --timeout 240 tests/gpu/test_forward_ws_gpu.py"  # the Gluon kernels' tests

queue() {  # gpu, log name, then "name|command" entries run one after another within $budget
    local gpu=$1 log="$out/$2.log" start=$SECONDS; shift 2
    for entry in "$@"; do
        local left=$(( budget - (SECONDS - start) ))
        [ "$left" -gt 30 ] || { echo "== ${entry%%|*}: no time left" >>"$log"; continue; }
        echo "== ${entry%%|*}" >>"$log"
        CUDA_VISIBLE_DEVICES=$gpu timeout "$left" bash -c "${entry#*|}" >>"$log" 2>&1 || echo "(exit $?)" >>"$log"
    done
}

summary() {  # a queue's test results: every failure named, and the counts
    grep -E "^(FAILED|ERROR)|passed|failed" "$out/$1.log" | tail -20
}

solo() {  # one queue on GPU 0 (name, then its entries), then its test results
    local name=$1; shift
    queue 0 "$name" "$@"
    summary "$name"
}

two_gpu_tests() {  # the suite's queue sees GPU 0 alone: its two-GPU tests run here, on both
    echo "== two-GPU tests" >>"$out/gpu_tests.log"
    timeout 150 $pytest_gpu -rfE tests/gpu/test_distributed_gpu.py -m gpu \
        >>"$out/gpu_tests.log" 2>&1 || echo "(exit $?)" >>"$out/gpu_tests.log"
}

if [ "$phase" = tests ]; then
    # Eight workers share GPU 0 (the suite is bound by Triton's compile time); every failure is named
    # in the log's summary (-rfE) and in the JUnit file, whatever part of the log comes back.
    queue 0 gpu_tests "tests|$pytest_gpu -n 8 -rfE --timeout 240 --junitxml=$out/gpu_tests.xml tests/gpu -m gpu" &
    queue 1 bench_a "lowering|python3 bench/bench_lowering.py --quick" &
    wait
    two_gpu_tests
    echo "== cp" >>"$out/bench_a.log"
    timeout 200 torchrun --standalone --nproc_per_node 2 bench/bench_cp.py --out "$out/bench_cp.json" >>"$out/bench_a.log" 2>&1 \
        || echo "(exit $?)" >>"$out/bench_a.log"
    summary gpu_tests
elif [ "$phase" = tma ]; then
    queue 0 gpu_tests "tests|$pytest_gpu -n 8 -rfE --timeout 240 --junitxml=$out/gpu_tests.xml tests/gpu -m gpu" \
        "grids|python3 bench/bench_grids.py --cases 0,1,3,4,6" &
    queue 1 bench_a "tma|python3 bench/bench_triton.py --ns 32768 --patterns mistral_swa --tma 0,1" \
        "lowering|python3 bench/bench_lowering.py --quick" &
    wait
    two_gpu_tests
    echo "== cp" >>"$out/bench_a.log"
    timeout 170 torchrun --standalone --nproc_per_node 2 bench/bench_cp.py --cases window,dense_causal --profile \
        --out "$out/bench_cp.json" >>"$out/bench_a.log" 2>&1 || echo "(exit $?)" >>"$out/bench_a.log"
    summary gpu_tests
elif [ "$phase" = next ]; then
    # On a one-GPU machine the two queues run one after the other on GPU 0 (never sharing it).
    if [ "$(nvidia-smi -L | wc -l)" -gt 1 ]; then second=1; else second=0; fi
    queue 0 gpu_tests "tests|$pytest_gpu -n 8 -rfE --timeout 240 --junitxml=$out/gpu_tests.xml tests/gpu -m gpu" &
    [ "$second" = 1 ] || wait
    queue "$second" bench_n1 "host|python3 bench/host_time.py" \
        "triton|python3 bench/bench_triton.py --ns 32768 --patterns ${NEXT_PATTERNS:-mistral_swa,longformer,bigbird}" \
        "lowering|python3 bench/bench_lowering.py --quick --patterns ${NEXT_LOWERING:-strided,streaming_llm,dilated_2}" \
        "triton_131k|python3 bench/bench_triton.py --ns 131072 --patterns ${NEXT_PATTERNS:-mistral_swa,longformer,bigbird}" &
    wait
    two_gpu_tests
    summary gpu_tests
elif [ "$phase" = gluon ]; then
    # the dK/dV probe's window first: a kernel that hangs shows at once, and costs 150 s, not the queue
    queue 0 gluon "dkdv window|timeout 150 python3 bench/probe_forward_ws.py --kernel dkdv --cases window" \
        "tests|$pytest_gpu -n 10 -rfE --timeout 240 -k '${GLUON_TESTS:-}' tests/gpu/test_forward_ws_gpu.py" \
        "dkdv|python3 bench/probe_forward_ws.py --kernel dkdv --cases documents,sta" \
        "window|python3 bench/bench_triton.py --ns 32768 --patterns mistral_swa" \
        "sta|python3 bench/bench_grids.py --cases 3"
    summary gluon
elif [ "$phase" = ncu ]; then
    # Nsight Compute (Firecracker machines read the counters; clocks left alone, METHOD.md) on the
    # window's Gluon dK/dV and, for comparison, the Gluon dQ: one launch each, where their warps stall
    # and how busy the tensor pipes and shared memory are (bench/NOTES.md, "The backward in Gluon")
    sections="--section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
        --section WarpStateStats --section LaunchStats"
    queue 0 ncu "ncu dkdv|ncu --clock-control none --kernel-name maskc_backward_dkdv_ws --launch-count 1 $sections \
        python3 bench/probe_forward_ws.py --kernel dkdv --cases window --once" \
        "ncu dq|ncu --clock-control none --kernel-name maskc_backward_dq_ws --launch-count 1 $sections \
        python3 bench/probe_forward_ws.py --kernel dq --cases window --once"
elif [ "$phase" = check ]; then
    solo check "$ws_tests" \
        "short rows|python3 bench/bench_lowering.py --quick --patterns streaming_llm,dilated_2" \
        "window|python3 bench/bench_triton.py --ns 32768 --patterns mistral_swa"
elif [ "$phase" = stores ]; then
    # what the bulk stores of every Gluon kernel (2026-12-03, third session) have not been measured on:
    # the static patterns whose forward stayed on the Triton kernel, dQ alone against the Triton dQ,
    # the short rows again, then the documents' host time with a build in every call and one profiled
    # forward+backward of the documents (their shared calls ran slower than the built ones)
    queue 0 stores "triton|python3 bench/bench_triton.py --ns 32768 --patterns mistral_swa,longformer,bigbird" \
        "dq|python3 bench/probe_forward_ws.py --kernel dq --cases window,documents,streaming" \
        "short rows|python3 bench/bench_lowering.py --quick --patterns streaming_llm,dilated_2" \
        "host|MASKC_REUSE_LAYOUT=0 python3 bench/host_time.py --cases docwindow" \
        "documents profiled|MASKC_BENCH_PROFILE=1 python3 bench/bench_runtime.py --cases documents"
elif [ "$phase" = host ]; then
    solo host "compaction tests|$pytest_gpu -n 8 -rfE --timeout 240 tests/gpu/test_select_compact_gpu.py" \
        "run-time tests|$pytest_gpu -n 8 -rfE --timeout 240 -k run_time tests/gpu/test_forward_ws_gpu.py" \
        "host|MASKC_REUSE_LAYOUT=0 python3 bench/host_time.py --cases docwindow,window" \
        "runtime|python3 bench/bench_runtime.py --cases documents,window,kmeans_held,lsh" \
        "runtime graphed|MASKC_BENCH_GRAPHS=1 python3 bench/bench_runtime.py --cases window"
elif [ "$phase" = chunkcheck ]; then
    tests="-k 'longformer or pages or as_chunks' tests/gpu/test_forward_ws_gpu.py tests/gpu/test_triton_gpu.py"
    bench="bench/bench_triton.py --ns 32768 --patterns bigbird,longformer --chunk-factor 2,0"
    solo chunkcheck "tests|$pytest_gpu -n 14 -rfE --timeout 240 $tests" \
        "bench|MASKC_BENCH_PROFILE=1 MASKC_BENCH_GRAPHS=1 python3 $bench" "host|python3 bench/host_time.py --cases bigbird"
elif [ "$phase" = slices ]; then
    solo slices "tests|$pytest_gpu -n 14 -rfE --timeout 240 tests/gpu/test_long_rows_gpu.py" \
        "ws tests|$pytest_gpu -n 14 -rfE --timeout 240 -k as_chunks tests/gpu/test_forward_ws_gpu.py" \
        "bench|MASKC_BENCH_PROFILE=1 python3 bench/bench_triton.py --ns 32768 --patterns bigbird,longformer" \
        "host|python3 bench/host_time.py --cases bigbird,longformer,window,docwindow --sync-debug"
elif [ "$phase" = checked ]; then
    others="--ignore tests/gpu/test_forward_ws_gpu.py --ignore tests/gpu/test_distributed_gpu.py"
    solo checked "tests|MASKC_FAST_LAUNCH=check $pytest_gpu -n 16 -rfE --timeout 240 --junitxml=$out/checked.xml tests/gpu -m gpu $others" \
        "bench|python3 bench/bench_triton.py --ns 32768 --patterns bigbird,longformer,mistral_swa --compare-launch"
elif [ "$phase" = checkedws ]; then
    solo checkedws "tests|MASKC_FAST_LAUNCH=check $pytest_gpu -n 14 -rfE --timeout 240 --junitxml=$out/checkedws.xml tests/gpu/test_forward_ws_gpu.py" \
        "runtime|python3 bench/bench_runtime.py --cases documents,window,kmeans_held,lsh" \
        "lowering|python3 bench/bench_lowering.py --quick --patterns streaming_llm,dilated_2,strided"
elif [ "$phase" = clusterhost ]; then
    solo clusterhost "graph tests|$pytest_gpu -n 4 -rfE --timeout 240 -m gpu -k 'per and document' tests/gpu/test_graphs_gpu.py" \
        "host|python3 bench/host_time.py --cases lsh,kmeans_held --sync-debug" \
        "runtime|MASKC_BENCH_GRAPHS=1 python3 bench/bench_runtime.py --cases kmeans_held,lsh --no-flex"
elif [ "$phase" = inbounds ]; then
    probes=()
    for kernel in forward dq dkdv; do
        probes+=("$kernel|python3 bench/probe_forward_ws.py --kernel $kernel --cases longformer,documents_window")
    done
    queue 0 inbounds "${probes[@]}" \
        "apply|git apply bench/experiments/in-bounds-predicate.patch || patch -p1 <bench/experiments/in-bounds-predicate.patch" \
        "tests|$pytest_gpu -n 14 -rfE --timeout 240 -k 'longformer or bigbird or documents or run_time' tests/gpu/test_forward_ws_gpu.py" \
        "${probes[@]}"
    summary inbounds
elif [ "$phase" = graphs ]; then
    export MASKC_BENCH_GRAPHS=1
    # each test and case in a process of its own: a capture that fails leaves CUDA's generator unusable
    entries=()
    if [ "${GRAPH_TESTS:-1}" = 1 ]; then
        mapfile -t tests < <(python3 -m pytest -q --collect-only -p no:cacheprovider -m gpu tests/gpu/test_graphs_gpu.py | grep ::)
        for t in "${tests[@]}"; do entries+=("graph test $t|$pytest_gpu -rfE -m gpu '$t'"); done
    fi
    entries+=("strided profiled|MASKC_BENCH_PROFILE=1 python3 bench/bench_lowering.py --quick --no-flex --patterns strided")
    for c in documents window topk; do entries+=("runtime $c|python3 bench/bench_runtime.py --cases $c"); done
    for c in 0 1; do entries+=("grids $c|python3 bench/bench_grids.py --cases $c"); done
    queue 0 graphs "${entries[@]}"
else
    queue 0 bench_b0 "runtime|python3 bench/bench_runtime.py" "grids|python3 bench/bench_grids.py" &
    queue 1 bench_b1 "hf_prefill|python3 bench/bench_hf_prefill.py" "decode|python3 bench/bench_decode.py" \
        "chunks|python3 bench/bench_triton.py --ns 32768 --patterns longformer,bigbird --chunk-factor 0" &
    wait
fi
