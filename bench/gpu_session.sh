#!/usr/bin/env bash
# One GPU session for the open issues' device checks, within about 9 minutes on one H100/H200.
# Steps run in priority order under one deadline; each step's log is appended to
# $OUT/session.log and its JSON result (if any) copied to $OUT. Run from the repository root:
#
#   OUT=/tmp/gpu bash bench/gpu_session.sh           # PY=python3 by default (the machine's torch)
#
# On a bare GPU machine with PyTorch but without calipers' other dependencies, bring wheels of
# pydantic, pydantic-core, annotated-types, typing-inspection, nibabel, monai, nilearn and
# nvidia-ml-py (without it the GPU monitor is off: no utilisation in gpu.json, issue 13)
# (pip download --no-deps ... -d .whl), install them with
#   pip install --no-index --no-deps --target /tmp/site .whl/*.whl
# and run with PYTHONPATH=/tmp/site:$PWD/src; copy ../shared/data/hippocampus-msd next to the
# repository and point CALIPERS_DATA at that folder (about 45 MB in all).
#
# Data for the hippocampus step: $CALIPERS_DATA/hippocampus-msd (default ../shared/data).
# Steps: 1 the CUDA tests (issues 11, 13: device paths of the engine, MC dropout, batched MLPs,
# permutation, the GPU monitor/finder); 2 `calipers gpu` and `calipers demo` on CUDA with the
# monitor and mixed precision (13); 3 the permutation engine on the GPU (17); 4 `calipers bench`:
# 4a the distance matrix and the CG solve, 4b every workload at full sizes (13); 5 the training
# loop before/after on digits (13); 6 the engine on CUDA (11);
# 7 executors and permutation chunks on CUDA (12); 8 the loop and the batch-size finder on the
# hippocampus U-Net (13).
set -u
OUT=${OUT:-/tmp/gpu}
PY=${PY:-python3}
BUDGET=${BUDGET:-540}
mkdir -p "$OUT"
LOG="$OUT/session.log"
START=$(date +%s)
export PYTHONUNBUFFERED=1 CALIPERS_DATA=${CALIPERS_DATA:-../shared/data}
left() { echo $(( BUDGET - ($(date +%s) - START) )); }
step() {  # step NAME CAP_SECONDS COMMAND...
    local name=$1 cap=$2; shift 2
    local t=$(left)
    [ "$t" -lt 20 ] && { echo "== $name: skipped (no time left)" | tee -a "$LOG"; return; }
    [ "$cap" -gt $(( t - 10 )) ] && cap=$(( t - 10 ))
    echo "== $name (cap ${cap}s, $(date -u +%T))" | tee -a "$LOG"
    local s=$(date +%s)
    timeout "$cap" "$@" >> "$LOG" 2>&1
    local rc=$?
    echo "== $name: rc=$rc in $(( $(date +%s) - s ))s" | tee -a "$LOG"
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$LOG"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'cudnn', torch.backends.cudnn.version(), torch.cuda.get_device_name())" | tee -a "$LOG"
$PY -c "import importlib.util as u; m = [n for n in ('pynvml', 'typer', 'rich', 'scipy', \
'sklearn', 'matplotlib', 'PIL', 'pydantic', 'nibabel', 'monai', 'nilearn') if not u.find_spec(n)]; \
print('missing modules:', m or 'none')" | tee -a "$LOG"

step "1 CUDA tests" 120 $PY -m pytest -q -p no:cacheprovider -rs \
    tests/permutation/test_permutation_engine.py tests/test_batched.py tests/test_determinism.py \
    tests/test_uncertainty.py tests/gpu
tail -n 3 "$LOG"

step "2a calipers gpu" 20 $PY -m calipers gpu
step "2b demo on CUDA (monitor, amp auto)" 100 $PY -m calipers demo --out /tmp/gs-demo
$PY - <<'EOF' 2>&1 | tee -a "$LOG"
import json
try:
    g = json.load(open("/tmp/gs-demo/gpu.json"))
    o = g.get("overall", {})
    print("demo gpu.json:", {k: o.get(k) for k in ("util_mean", "util_min", "mem_peak_mib",
                                                     "energy_j", "end_s")},
          "loop:", g.get("loop"), "advice:", g.get("advice"))
except Exception as exc:
    print("no demo gpu.json:", exc)
EOF
cp /tmp/gs-demo/gpu.json "$OUT/demo_gpu.json" 2>/dev/null

step "3 permutation on the GPU" 150 $PY bench/gpu_permutation_check.py
grep '^{' "$LOG" | tail -n 1 > "$OUT/permutation_gpu.json"

step "4a calipers bench: distances, CG" 45 $PY -m calipers bench --only pdist --only cg \
    --json "$OUT/bench_pdist_cg.json"   # the two the issue says the GPU must win, first
step "4b calipers bench" 120 $PY -m calipers bench --json "$OUT/bench.json" \
    --plot "$OUT/bench.png"
step "5 training loop, digits" 60 $PY bench/bench_gpu_loop.py --data digits --epochs 10 \
    --out "$OUT/loop_digits.json"
step "6 engine on CUDA" 45 $PY bench/engine_gpu_check.py --device cuda --out "$OUT/engine.json"
step "7 executors on CUDA" 60 $PY bench/check_executors_gpu.py "$OUT"  # writes executors_gpu.json
step "8 loop + finder, hippocampus" 90 $PY bench/bench_gpu_loop.py --data hippocampus \
    --epochs 5 --batch-size 8 --finder --out "$OUT/loop_hippocampus.json"
echo "== done in $(( $(date +%s) - START ))s" | tee -a "$LOG"
