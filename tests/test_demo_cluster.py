"""The demo params on a CPU-only SLURM cluster: no GPU asked for, so sbatch accepts the job scripts.

Before, the demo inherited `gpus: 1` and sbatch rejected it with "Invalid generic resource (gres) specification".
The scripts are checked with `sbatch --test-only` (validated by the real scheduler, nothing submitted) where SLURM
runs; the no-gres check itself needs no scheduler.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from imginav_lib.launch.jobs import plan_jobs
from imginav_lib.config.params import load_params, runs_of

from conftest import REPO


@pytest.mark.parametrize("name", ["phase1_3_demo.yaml", "phase1_4_demo.yaml"])
def test_demo_job_scripts_ask_for_no_gpu_and_sbatch_accepts_them(tmp_path, name):
    params = REPO / "params" / name
    phase = load_params(params, check_files=False)
    runs = runs_of(phase, str(tmp_path / "runs"))
    plan = plan_jobs(phase, params, "slurm", runs, list(range(1, len(runs) + 1)), tmp_path / "runs" / phase.phase, tmp_path / "logs",
                     prepare=True)  # fmt: skip
    scripts = plan.scripts()  # the prepare job, the arrays and the report job
    for _, text in scripts:
        assert not [line for line in text.splitlines() if line.startswith("#SBATCH") and ("gres" in line or "gpu" in line)]
    if shutil.which("sbatch") is None or subprocess.run(["sinfo", "-h"], capture_output=True, timeout=30).returncode != 0:
        if os.environ.get("IMGINAV_REQUIRE_SLURM") == "1":
            pytest.fail("IMGINAV_REQUIRE_SLURM=1 but SLURM is not running")
        pytest.skip("SLURM not running: the scripts were checked for --gres only")
    assert len(scripts) == len(plan.arrays) + 2  # the prepare job, the arrays and the report job: each one is tested
    for path, text in scripts:
        script = tmp_path / Path(path).name
        script.write_text(text)
        r = subprocess.run(["sbatch", "--test-only", str(script)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
