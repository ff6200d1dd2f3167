#!/usr/bin/env bash
# A real one-node SLURM cluster on localhost (munged, slurmctld, slurmd started here, no
# systemd), then calipers through --executor slurm: a 4-fold cv and a 3-chunk permute must equal
# the serial results bit for bit; --detach + calipers status + rerun; a partition SLURM rejects.
# Stops the daemons it started, by their pids, however it exits.
#
# Usage (as root, from the repository root):  make test-slurm
#   or:  PYTHON=.venv/bin/python tests/slurm/run_slurm_test.sh
# Needs Debian/Ubuntu packages slurm-wlm and munge (installed with apt-get when missing) and
# submitit (pip install 'calipers[slurm]').
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=$(command -v python3)
export PYTHONPATH=$REPO/src${PYTHONPATH:+:$PYTHONPATH}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1   # one thread per task: bit-identical to serial
CAL="$PYTHON -m calipers"
START=$(date +%s)

if [ "$(id -u)" != 0 ]; then echo "run_slurm_test.sh: needs root (it starts slurmd)"; exit 2; fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  echo "== installing slurm-wlm and munge"
  DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null
fi
"$PYTHON" -c "import submitit" 2>/dev/null || {
  echo "run_slurm_test.sh: submitit missing: pip install 'calipers[slurm]'"; exit 2; }

T=$(mktemp -d /tmp/calipers-slurm.XXXXXX)
PIDS=()
cleanup() {
  set +e
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  done
  echo "== daemons stopped (pids ${PIDS[*]:-none}); logs in $T"
}
trap cleanup EXIT

echo "== starting munged, slurmctld, slurmd in $T"
mkdir -p "$T/state" "$T/spool" "$T/munge"
chmod 700 "$T/munge"
dd if=/dev/urandom of="$T/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$T/munge/munge.key"
munged -F --force --key-file="$T/munge/munge.key" --socket="$T/munge/munge.sock" \
  --pid-file="$T/munge/munged.pid" --log-file="$T/munge/munged.log" \
  --seed-file="$T/munge/munged.seed" >"$T/munge/munged.out" 2>&1 & PIDS+=($!)
for _ in $(seq 50); do [ -S "$T/munge/munge.sock" ] && break; sleep 0.1; done

HOST=$(hostname -s)
NODE=$(slurmd -C | head -1 | sed "s/^NodeName=[^ ]*/NodeName=$HOST/")
cat > "$T/slurm.conf" <<CONF
ClusterName=calipers-test
SlurmctldHost=$HOST
AuthType=auth/munge
AuthInfo=socket=$T/munge/munge.sock
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
SlurmctldPort=16817
SlurmdPort=16818
StateSaveLocation=$T/state
SlurmdSpoolDir=$T/spool
SlurmctldPidFile=$T/slurmctld.pid
SlurmdPidFile=$T/slurmd.pid
SlurmctldLogFile=$T/slurmctld.log
SlurmdLogFile=$T/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
KillWait=2
$NODE State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$T/slurm.conf
slurmctld -D -i -f "$SLURM_CONF" >"$T/slurmctld.out" 2>&1 & PIDS+=($!)
sleep 1
slurmd -D -f "$SLURM_CONF" >"$T/slurmd.out" 2>&1 & PIDS+=($!)
for _ in $(seq 120); do
  state=$(sinfo -h -o %T 2>/dev/null | head -1 || true)
  [ "$state" = idle ] && break; sleep 0.5
done
sinfo
[ "$state" = idle ] || { echo "node not idle ($state)"; tail -20 "$T"/slurm*.log; exit 1; }

W="$T/work"; mkdir -p "$W"
cat > "$W/exp.toml" <<TOML
[data]
kind = "digits"
[cv]
folds = 4
[train]
epochs = 1
[mc]
samples = 5
[networks.A]
model = "calipers.models:CNN"
args = { channels = 8, dropout = 0.1 }
[executor]
kind = "slurm"
time = 10
cpus_per_task = 1
TOML
same() { cmp -s "$1" "$2" && echo "identical: $(basename "$1")" || { echo "DIFFER: $1 $2"; exit 1; }; }

if [ -z "${SLURM_TEST_ONLY_TASKS:-}" ]; then   # set it to check retries/requeue alone
echo "== cv: serial, then 4 folds as a SLURM job array"
t0=$(date +%s)
$CAL cv "$W/exp.toml" --out "$W/cv-serial" --executor serial --no-report >/dev/null
t1=$(date +%s)
$CAL cv "$W/exp.toml" --out "$W/cv-slurm" --no-report | grep -v "^[│┃┏┡└ ]" || true
t2=$(date +%s)
echo "cv wall: serial $((t1 - t0)) s, slurm $((t2 - t1)) s"
same "$W/cv-serial/metrics.csv" "$W/cv-slurm/metrics.csv"
same "$W/cv-serial/summary.json" "$W/cv-slurm/summary.json"
$CAL status "$W/cv-slurm"

echo "== cv --detach, calipers status while queued, rerun to combine"
$CAL cv "$W/exp.toml" --out "$W/cv-detach" --no-report --detach
$CAL status "$W/cv-detach"
jobs_before=$(grep -o '"job_id": "[0-9_]*"' "$W/cv-detach/executor.json" | sort | tr '\n' ' ')
# rerun while the jobs are still queued/running: it waits for them, submits nothing new
$CAL cv "$W/exp.toml" --out "$W/cv-detach" --no-report >/dev/null
jobs_after=$(grep -o '"job_id": "[0-9_]*"' "$W/cv-detach/executor.json" | sort | tr '\n' ' ')
[ "$jobs_before" = "$jobs_after" ] && echo "rerun adopted the detached jobs: $jobs_after" || {
  echo "rerun resubmitted: before $jobs_before after $jobs_after"; exit 1; }
$CAL status "$W/cv-detach"
same "$W/cv-serial/summary.json" "$W/cv-detach/summary.json"

echo "== permute: one run, then 3 chunks as a SLURM job array"
"$PYTHON" - "$W" <<'PY'
import sys
import nibabel as nib
import numpy as np
rng = np.random.default_rng(0)
y = rng.normal(0.3, 1.0, size=(10, 8, 8, 6)).astype(np.float32)
nib.save(nib.Nifti1Image(np.moveaxis(y, 0, -1), np.eye(4)), f"{sys.argv[1]}/all.nii.gz")
PY
ARGS=(-i "$W/all.nii.gz" -1 -T -x --uncorrp -n 1000 --seed 2 --device cpu -q)
t0=$(date +%s)
$CAL permute "${ARGS[@]}" -o "$W/p-one/r"
t1=$(date +%s)
$CAL permute "${ARGS[@]}" -o "$W/p-slurm/r" --executor slurm --chunks 3
t2=$(date +%s)
echo "permute wall: one run $((t1 - t0)) s, slurm 3 chunks $((t2 - t1)) s"
"$PYTHON" - "$W" <<'PY'
import sys
from pathlib import Path
import nibabel as nib
import numpy as np
w = Path(sys.argv[1])
names = sorted(p.name for p in (w / "p-one").glob("*.nii.gz"))
for name in names:
    a = np.asarray(nib.load(w / "p-one" / name).dataobj)
    b = np.asarray(nib.load(w / "p-slurm" / name).dataobj)
    assert np.array_equal(a, b), name
print(f"identical p-maps: {', '.join(names)}")
PY
$CAL status "$W/p-slurm/r_tasks"

echo "== a partition SLURM rejects"
sed 's/^kind = "slurm"/kind = "slurm"\npartition = "nosuch"/' "$W/exp.toml" > "$W/bad.toml"
set +e
$CAL cv "$W/bad.toml" --out "$W/cv-bad" --no-report 2>&1 | grep -v "^sbatch: error"
rc=${PIPESTATUS[0]}
set -e
[ $rc = 2 ] && echo "rejected as expected (exit 2)" || { echo "expected exit 2, got $rc"; exit 1; }

fi

echo "== retries of a failing task, requeue of a pre-empted job"
PYTHONPATH=$REPO/tests/slurm:$PYTHONPATH "$PYTHON" "$REPO/tests/slurm/slurm_tasks.py" "$W"

echo "== all SLURM checks passed in $(( $(date +%s) - START )) s"
