#!/usr/bin/env bash
# What a session with a lent GPU measures, in one command, stage by stage:
#   bash bench/gpu_session.sh OUT_DIR [STAGE...]      (default: every stage, ~8 minutes)
# Stages (each under its own time limit; each writes OUT_DIR/<stage>.txt, and one line with its
# exit code and seconds to OUT_DIR/stages.txt, so a stage that fails or runs out of time costs
# only itself):
#   tests    the CUDA tests on the real GPU (full-size kernels, CPU-vs-CUDA parity on 512 images,
#            CUDA-graph replay vs eager, the gpu-marked NaN checks)
#   kernels  GPU time of each of the step's five launches, per batch and hidden size, for the
#            block tiles in KERNEL_TILES (default 64 32 16; bench/cuda_kernel_times.py)
#   bench    `aecore bench --device cpu,cuda` (the README's table; BENCH_DEVICES=cuda for the GPU
#            rows alone) and the CUDA rows again with graphs off (AECORE_CUDA_GRAPHS=0; batches
#            EAGER_BATCH): their ratio is the graphs' effect
#   tiles    `aecore bench --device cuda` again with each block tile in BENCH_TILES (default 32),
#            PyTorch timed in the same process: whole-epoch throughput per tile (the tile is
#            fixed at import, AECORE_CUDA_TILE, so one process per tile)
#   paired   `aecore bench --device cuda` with AECORE_CUDA_PAIRED_UPDATES=1 (the two weight
#            updates of a step in one launch), PyTorch in the same process
#   pybench  the CUDA pytest-benchmarks (kernels vs CuPy; 200 steps and epochs vs PyTorch CUDA
#            eager and the cuBLAS floor)
#   study    the 4-size x 200-epoch study (Adam, the defaults) on the GPU, timed (set
#            AECORE_CUDA_TILE / AECORE_CUDA_PAIRED_UPDATES for it to use those variants)
# Assumes aecore is installed (`pip install -e ".[test,cuda13]"`, torch for the PyTorch rows)
# and the data where aecore finds it (AECORE_DATA).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-gpu-results}"
shift || true
STAGES="${*:-tests kernels bench tiles paired pybench study}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
export NUMBA_ENABLE_CUDASIM=0 MPLBACKEND=Agg PYTHONUNBUFFERED=1

run_stage() {  # name limit_s command...
    local name=$1 limit=$2 t0 rc
    shift 2
    t0=$(date +%s)
    timeout "$limit" "$@" >> "$OUT/$name.txt" 2>&1
    rc=$?
    echo "$name rc=$rc $(( $(date +%s) - t0 )) s (limit $limit)" | tee -a "$OUT/stages.txt"
}

nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
"$PY" - > "$OUT/versions.txt" 2>&1 <<'EOF'
import importlib.metadata as m, platform
print("python", platform.python_version())
for p in ("numpy", "numba", "numba-cuda", "cuda-core", "cuda-bindings", "cupy-cuda13x",
          "cupy-cuda12x", "torch", "scipy", "safetensors", "click"):
    try:
        print(p, m.version(p))
    except m.PackageNotFoundError:
        print(p, "-")
EOF
cat "$OUT/versions.txt"

for stage in $STAGES; do
    case $stage in
    tests)
        run_stage tests 120 "$PY" -m pytest -q -p no:cacheprovider tests/test_kernels_cuda.py \
            tests/test_engine_cuda.py tests/test_cuda_ptx.py ;;
    kernels)
        for t in ${KERNEL_TILES:-64 32 16}; do
            AECORE_CUDA_TILE=$t run_stage "kernels$t" 35 "$PY" bench/cuda_kernel_times.py \
                --json "$OUT/kernels$t.json"
        done ;;
    bench)
        run_stage bench 130 aecore bench --device "${BENCH_DEVICES:-cpu,cuda}" \
            --hidden 64,128,256,512 --batch 64,256 --repeats 3 --out "$OUT"
        AECORE_CUDA_GRAPHS=0 run_stage bench_eager 50 aecore bench --device cuda \
            --hidden 64,128,256,512 --batch "${EAGER_BATCH:-64,256}" --repeats 3 --no-torch \
            --out "$OUT/eager" ;;
    tiles)
        for t in ${BENCH_TILES:-32}; do
            AECORE_CUDA_TILE=$t run_stage "bench_tile$t" 100 aecore bench --device cuda \
                --hidden 64,128,256,512 --batch 64,256 --repeats 3 --out "$OUT/tile$t"
        done ;;
    paired)
        AECORE_CUDA_PAIRED_UPDATES=1 run_stage bench_paired 100 aecore bench --device cuda \
            --hidden 64,128,256,512 --batch 64,256 --repeats 3 --out "$OUT/paired" ;;
    pybench)
        AECORE_BENCH_RATIOS="$OUT/ratios.json" run_stage pybench 200 "$PY" -m pytest bench \
            -k cuda --benchmark-only --benchmark-json="$OUT/cuda_bench.json" -q \
            -p no:cacheprovider ;;
    study)
        run_stage study 150 aecore study --device cuda --optimizers adam --yes \
            --out "$OUT/study" ;;
    *) echo "unknown stage $stage" >&2 ;;
    esac
done
echo "=== stages"; cat "$OUT/stages.txt"
