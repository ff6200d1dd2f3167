"""A real one-node SLURM cluster on localhost: ``tests/slurm/run_slurm_test.sh`` (make test-slurm).

Slow (minutes): starts munged, slurmctld and slurmd, runs a 4-fold cv and a 3-chunk permute
through ``--executor slurm`` and checks them against serial runs bit for bit, then stops the
daemons. Skipped unless run as root with submitit installed (``pip install 'calipers[slurm]'``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_calipers_on_a_one_node_slurm_cluster():
    if os.geteuid() != 0:
        pytest.skip("the SLURM test starts slurmd: run as root (make test-slurm)")
    pytest.importorskip("submitit", reason="pip install 'calipers[slurm]'")
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        pytest.skip("slurm-wlm is not installed and apt-get is not available")
    env = {**os.environ, "PYTHON": sys.executable}
    res = subprocess.run(["bash", str(ROOT / "tests" / "slurm" / "run_slurm_test.sh")], env=env,
                         capture_output=True, text=True, timeout=1800)
    print(res.stdout[-6000:])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "all SLURM checks passed" in res.stdout
