#!/usr/bin/env bash
# What a session with a lent GPU measures, in one command, stage by stage:
#   bash bench/gpu_session.sh OUT_DIR [STAGE...]      (default: every stage but variants)
# Issue 13 (the persistent path; ~5 min expected, 9.3 min at every stage's limit; the plan in
# bench/RESULTS.md):
#   bash bench/gpu_session.sh gpu-results gridsync persistent persistent_tests study tests
# The first run after the GEMM-core rewrite (issue 12; the plan in bench/RESULTS.md, ~6 min):
#   KERNEL_TILES=64 BENCH_DEVICES=cuda EAGER_BATCH=none \
#       bash bench/gpu_session.sh gpu-results tests kernels dev bench
# Stages (each under its own time limit; each writes OUT_DIR/<stage>.txt, and one line with its
# exit code and seconds to OUT_DIR/stages.txt, so a stage that fails or runs out of time costs
# only itself):
#   tests    the CUDA tests on the real GPU (full-size kernels, CPU-vs-CUDA parity on 512 images,
#            CUDA-graph replay vs eager, the gpu-marked NaN checks)
#   kernels  GPU time of each of the step's five launches, per batch and hidden size
#            (bench/cuda_kernel_times.py): the kernels before the GEMM-core rewrite (the one-file
#            kernels/cuda.py of commit KERNELS_BEFORE, default effbbb7, from git) and today's,
#            for the block tiles in KERNEL_TILES (default 64 32)
#   dev      the variants in dev/cuda: their bit-for-bit checks on the GPU, then their GPU times
#            against production (register prefetch in the main loops; the two weight updates
#            in one launch)
#   bench    `aecore bench --device cpu,cuda` (the README's table; BENCH_DEVICES=cuda for the GPU
#            rows alone) and the CUDA rows again with graphs off (--cuda-path eager; batches
#            EAGER_BATCH, "none" to skip): their ratio is the graphs' effect; and the CUDA rows
#            of the persistent kernel, one run alone in its launch (--cuda-path persistent;
#            batch 64; PERSISTENT_BENCH=none to skip)
#   variants `aecore bench --device cuda --batch 64` once per kernel variant, PyTorch timed in
#            the same process (so each row's x torch is a same-run ratio). BENCH_VARIANTS: a
#            space-separated list, each a comma-separated list of settings (fixed at import,
#            so one process each); default: the 32x32 tile
#   pybench  the CUDA pytest-benchmarks (kernels vs CuPy; 200 steps and epochs vs PyTorch CUDA
#            eager and the cuBLAS floor)
#   gridsync grid-wide barrier cost (bench/grid_sync.py): cooperative grid.sync() vs an
#            atomic-counter barrier at 32 blocks, the SM count and the cooperative maximum;
#            decides the persistent kernel's design (issue #13)
#   persistent the persistent multi-run kernel (bench/persistent.py, issue #13): registers and
#            the cooperative grid, grid 1 vs full grid and each run vs CudaEngine alone (bitwise),
#            then us per step per run at batch 64 (4 runs h 64-512 in one launch, each alone,
#            and the CUDA-graph path); ~45 s, most of it compiling
#   persistent_tests  the persistent path's tests on the GPU: the kernel vs CudaEngine
#            (tests/test_cuda_persistent.py; its PTX test is deselected: it needs no GPU and ran
#            on the CPU), the runs of a group trained through the trainer vs each alone,
#            Ctrl-C and resume (tests/test_engine_persistent.py), and every lr schedule and
#            warm-up vs the eager path, stopped and resumed (tests/test_persistent_schedules.py)
#   study    the 4-size x STUDY_EPOCHS (200) study (Adam, the defaults: since #18 the onecycle
#            schedule, which the persistent path trains; the 102 s graphs figure below and the
#            CPU study's test MSEs are of the constant rate, so compare the MSEs with a study of
#            the same schedule, or give STUDY_ARGS="--lr-schedule constant") on the GPU, end to end
#            (compilation, estimate, training, report), once per CUDA path in STUDY_PATHS
#            (default "persistent": all four runs in one launch per chunk; the graphs path took
#            102 s on 2026-11-27; "persistent graphs" times both), the graphs / eager paths
#            with STUDY_JOBS runs at once (default 4); set AECORE_CUDA_TILE for another tile
# Assumes aecore is installed (`pip install -e ".[test,cuda13]"`, torch for the PyTorch rows)
# and the data where aecore finds it (AECORE_DATA).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-gpu-results}"
shift || true
STAGES="${*:-tests gridsync persistent persistent_tests study kernels dev bench pybench}"
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
        run_stage tests 120 "$PY" -m pytest -q -n 0 -p no:cacheprovider tests/test_kernels_cuda.py \
            tests/test_engine_cuda.py tests/test_cuda_golden.py tests/test_cuda_dev_variants.py ;;
    kernels)
        before="$OUT/kernels_before.py"
        if git show "${KERNELS_BEFORE:-effbbb7}:kernels/cuda.py" > "$before" 2>/dev/null; then
            run_stage kernels_before 60 "$PY" bench/cuda_kernel_times.py --kernels "$before" \
                --json "$OUT/kernels_before.json"
        else
            echo "kernels_before skipped: no git history here" | tee -a "$OUT/stages.txt"
        fi
        for t in ${KERNEL_TILES:-64 32}; do
            AECORE_CUDA_TILE=$t run_stage "kernels$t" 60 \
                "$PY" bench/cuda_kernel_times.py --json "$OUT/kernels$t.json"
        done ;;
    dev)
        run_stage dev_prefetch 75 "$PY" dev/cuda/prefetch.py --check --time
        run_stage dev_pair 45 "$PY" dev/cuda/weight_step_pair.py --check --time ;;
    bench)
        run_stage bench 130 aecore bench --device "${BENCH_DEVICES:-cpu,cuda}" \
            --hidden 64,128,256,512 --batch 64,256 --repeats 3 --out "$OUT"
        if [ "${EAGER_BATCH:-64,256}" != none ]; then
            run_stage bench_eager 50 aecore bench --device cuda --cuda-path eager \
                --hidden 64,128,256,512 --batch "${EAGER_BATCH:-64,256}" --repeats 3 \
                --no-torch --out "$OUT/eager"
        fi
        if [ "${PERSISTENT_BENCH:-64}" != none ]; then
            run_stage bench_persistent 60 aecore bench --device cuda --cuda-path persistent \
                --hidden 64,128,256,512 --batch "${PERSISTENT_BENCH:-64}" --repeats 3 \
                --no-torch --out "$OUT/persistent_bench"
        fi ;;
    variants)
        for v in ${BENCH_VARIANTS:-AECORE_CUDA_TILE=32}; do
            name=$(echo "$v" | sed 's/AECORE_CUDA_//g; s/=/-/g; s/,/+/g')
            (
                IFS=, read -ra settings <<< "$v"
                for kv in "${settings[@]}"; do export "${kv?}"; done
                run_stage "bench_$name" 90 aecore bench --device cuda \
                    --hidden 64,128,256,512 --batch 64 --repeats 3 --out "$OUT/variant_$name"
            )
        done ;;
    gridsync)
        run_stage gridsync 60 "$PY" bench/grid_sync.py --rounds 20000 --json "$OUT/grid_sync.json" ;;
    persistent)
        # PERSISTENT_ARGS="--max-registers 128": also the kernel at 2 blocks per SM (+~20 s)
        # shellcheck disable=SC2086
        run_stage persistent 75 "$PY" bench/persistent.py --images 8192 \
            --json "$OUT/persistent.json" ${PERSISTENT_ARGS:-} ;;
    persistent_tests)
        run_stage persistent_tests 150 "$PY" -m pytest -q -n 0 -p no:cacheprovider -k "not ptx" \
            tests/test_cuda_persistent.py tests/test_engine_persistent.py \
            tests/test_persistent_schedules.py ;;
    pybench)
        AECORE_BENCH_RATIOS="$OUT/ratios.json" run_stage pybench 200 "$PY" -m pytest bench \
            -k cuda --benchmark-only --benchmark-json="$OUT/cuda_bench.json" -q \
            -p no:cacheprovider ;;
    study)
        for p in ${STUDY_PATHS:-persistent}; do
            for j in ${STUDY_JOBS:-4}; do
                # shellcheck disable=SC2086
                run_stage "study_${p}_jobs$j" 150 aecore study --device cuda --optimizers adam \
                    --yes --cuda-path "$p" --jobs "$j" --epochs "${STUDY_EPOCHS:-200}" \
                    --out "$OUT/study_${p}_jobs$j" ${STUDY_ARGS:-}
                [ "$p" = persistent ] && break  # --jobs does not apply: one launch for all
            done
        done ;;
    *) echo "unknown stage $stage" >&2 ;;
    esac
done
echo "=== stages"; cat "$OUT/stages.txt"
