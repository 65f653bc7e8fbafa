#!/usr/bin/env bash
# Everything a session with a lent GPU should measure, in one command, within ~9 minutes:
#   bash bench/gpu_session.sh [OUT_DIR]
# 1. the CUDA tests on the real GPU (kernels at full size, CPU-vs-CUDA parity on 512 images,
#    the gpu-marked NaN checks); 2. `aecore bench --device cpu,cuda` (the table for the README);
# 3. the CUDA pytest-benchmarks (kernels vs CuPy, steps/epochs vs PyTorch CUDA and cuBLAS);
# 4. the whole study (4 sizes x 200 epochs) timed on the GPU.
# Assumes a virtual environment with `pip install -e ".[test,cuda12]"` (and torch for the
# PyTorch baseline). Results land in OUT_DIR (default: gpu-results/).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-gpu-results}"
mkdir -p "$OUT"
export NUMBA_ENABLE_CUDASIM=0 MPLBACKEND=Agg
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
aecore info > "$OUT/info.txt" 2>&1
timeout 240 python -m pytest -q tests/test_kernels_cuda.py tests/test_engine_cuda.py \
    tests/test_cuda_ptx.py 2>&1 | tail -30 > "$OUT/tests.txt"
timeout 180 aecore bench --device cpu,cuda --hidden 64,128,256,512 --batch 64,256 \
    --repeats 3 --out "$OUT" > "$OUT/bench_table.txt" 2>&1
AECORE_BENCH_RATIOS="$OUT/ratios.json" timeout 240 python -m pytest bench -k cuda \
    --benchmark-only --benchmark-json="$OUT/cuda_bench.json" -q 2>&1 | tail -60 > "$OUT/cuda_bench.txt"
( time timeout 300 aecore study --device cuda --yes --out "$OUT/study" ) > "$OUT/study.txt" 2>&1
tail -5 "$OUT"/*.txt
