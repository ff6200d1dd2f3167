#!/usr/bin/env bash
# The GPU checks the open issues still owe, as one script for a lent GPU machine (about 10 min
# on one H100). Run from the repository root with the .venv built; results go to $OUT (or
# bench/results). Real data: CALIPERS_DATA (default ../shared/data); copy the hippocampus and
# ISBI folders (33 MB) next to the repository if the machine has no ../shared.
#
#   OUT=/tmp/gpu bash bench/gpu_checks.sh a    # steps 1-2 (about 4 min)
#   OUT=/tmp/gpu bash bench/gpu_checks.sh b    # steps 3-4 (about 8 min)
#   OUT=/tmp/gpu bash bench/gpu_checks.sh c    # step 5 (about 10 min; random bytes stay on the CPU)
#   OUT=/tmp/gpu bash bench/gpu_checks.sh d    # step 6 (about 7 min)
#   OUT=/tmp/gpu bash bench/gpu_checks.sh e    # step 7 (about 2 min)
#   OUT=/tmp/gpu bash bench/gpu_checks.sh h    # step 8 (at most 9 min; per-fold results kept)
#   OUT=/tmp/gpu bash bench/gpu_checks.sh p    # step 9 (under 3 min)
#
# 1. issue 4: MC-dropout memory of the 3-D U-Net, chunked vs naive (max_memory_allocated)
# 2. issue 6: batched vs one-by-one vs calipers.evaluation.train.fit training, UCI yacht and kin8nm
# 3. issue 4: hippocampus, 5-fold 3-D U-Net, 60 epochs (the full protocol)
# 4. issue 4: ISBI 2012, 5 contiguous folds, 2-D U-Net, 80 epochs
# 5. issue 6: UCI kin8nm with the full 2018 protocol (4000 epochs; 61 min on one CPU thread, the
#    slowest of the five data sets): the GPU's wall time for docs/uci.md
# 6. issue 13: `calipers gpu`; `calipers demo` on CUDA with the monitor and bf16 (gpu.json,
#    advice); the training loop before/after on digits and on the hippocampus U-Net (NVML
#    utilisation), the batch-size finder on that U-Net; `calipers bench` at full sizes (the
#    4,500 x 120 distance matrix and the CG solve must show the GPU ahead); tests/gpu.
# 7. issue 12: executors on CUDA: cv serial vs --executor local, permutation 1 vs 3 chunks
# 8. issue 14: hippocampus with the CPU recipe of `make validate-seg` (whole volumes, batch 2,
#    augmentation, cosine LR), HIPPO_EPOCHS (default 60) epochs: folds finished within
#    the time limit are kept in $OUT/seg_runs and their metrics.json files come back
# 9. issue 17: permutation engine, whole brain: 10,000 sign flips max-T (goal <= 0.1 s compute),
#    1,000 TFCE permutations (goal <= 5 s), p-maps equal to the CPU's; one JSON line
set -u
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
PY=${PY:-.venv/bin/python}
export CALIPERS_DEVICE=cuda
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
$PY -m calipers env > "$OUT/env.txt" 2>&1 || true

if [ "${1:-a}" = a ]; then
    timeout 90 $PY bench/bench_seg_mc.py --device cuda > "$OUT/seg_mc_cuda.log" 2>&1
    cp bench/results/seg_mc_cuda.json "$OUT/" 2>/dev/null
    timeout 150 $PY bench/bench_batched.py --device cuda --datasets yacht kin8nm --epochs 20 --repeats 1 \
        --out "$OUT/batched_cuda.json" > "$OUT/batched_cuda.log" 2>&1
elif [ "${1:-a}" = e ]; then
    timeout 300 $PY bench/check_executors_gpu.py "$OUT" > "$OUT/executors_gpu.log" 2>&1
elif [ "${1:-a}" = d ]; then
    $PY -m calipers gpu 2>&1 | tee "$OUT/calipers_gpu.txt"
    timeout 150 $PY -m calipers demo --out "$OUT/demo" > "$OUT/demo_cuda.log" 2>&1
    $PY -c "import json, sys; g = json.load(open(sys.argv[1])); o = g['overall']; \
print('demo on', g['name'], 'busy', round(o['util_mean']), '% (min', o['util_min'], ')', \
'peak', round(o['mem_peak_mib']), 'MiB', round(o['energy_j']), 'J; loop', g.get('loop')); \
print('advice:', g.get('advice'))" "$OUT/demo/gpu.json" 2>&1 | tee "$OUT/demo_gpu_summary.txt"
    timeout 120 $PY bench/bench_gpu_loop.py --data digits --epochs 10 \
        --out "$OUT/gpu_loop_digits.json" > "$OUT/gpu_loop_digits.log" 2>&1
    timeout 180 $PY bench/bench_gpu_loop.py --data hippocampus --epochs 10 --batch-size 8 --finder \
        --out "$OUT/gpu_loop_hippocampus.json" > "$OUT/gpu_loop_hippocampus.log" 2>&1
    timeout 300 $PY -m calipers bench --json "$OUT/bench.json" --plot "$OUT/bench.png" \
        > "$OUT/bench.log" 2>&1
    timeout 90 $PY -m pytest -q -p no:cacheprovider tests/gpu > "$OUT/tests_gpu.log" 2>&1
    cat "$OUT/gpu_loop_digits.log" "$OUT/gpu_loop_hippocampus.log" "$OUT/bench.log"
elif [ "${1:-a}" = h ]; then
    CALIPERS_HIPPO_EPOCHS=${HIPPO_EPOCHS:-60} CALIPERS_SEG_RUN_DIR="$OUT/seg_runs" \
        timeout 540 $PY -m pytest -q -s -m slow validate/test_segmentation.py -k hippocampus \
        > "$OUT/seg_hippocampus_recipe.log" 2>&1
    cat "$OUT"/seg_runs/hippocampus/unet/fold-*/metrics.json > "$OUT/hippocampus_folds.json" \
        2>/dev/null
elif [ "${1:-a}" = p ]; then
    timeout 180 $PY bench/gpu_permutation_check.py > "$OUT/permutation_gpu.json" 2> "$OUT/permutation_gpu.log"
    cat "$OUT/permutation_gpu.json"
elif [ "${1:-a}" = c ]; then
    CALIPERS_UCI_DATASETS=kin8nm timeout 580 $PY -m pytest -q -s -m slow validate/test_uci.py \
        > "$OUT/uci_kin8nm.log" 2>&1
    cp bench/results/batched_uci_kin8nm.json "$OUT/" 2>/dev/null
else
    timeout 300 $PY -m pytest -q -s -m slow validate/test_segmentation.py -k hippocampus \
        > "$OUT/seg_hippocampus.log" 2>&1
    timeout 240 $PY -m pytest -q -s -m slow validate/test_segmentation.py -k isbi \
        > "$OUT/seg_isbi.log" 2>&1
    cp bench/results/seg_validation_*.json "$OUT/" 2>/dev/null
fi
tail -n 3 "$OUT"/*.log
