"""SLURM backend against a real single-node SLURM (started by .ci/run with hpc/local_slurm/start.sh).

One submission of a tiny phase (F1, its identical twin F1b, F3: one array of 3 tasks) plus the dependent report
job. While it runs, the warning signal goes to the twin's batch shell (`scancel --signal=USR2 --batch`, what
`--signal=B:USR2@..` does before the walltime): the task checkpoints, requeues itself and resumes; it must end
with F1's metrics. Skipped with a reason where SLURM is absent, unless IMGINAV_REQUIRE_SLURM=1 (set by .ci/run).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from imginav_lib.launch import read_index, run_phase
from imginav_lib.status import status_rows

TIMING = ["epoch_time_s", "train_images_per_s"]  # wall-clock columns: differ between any two runs
EPOCHS = 6


def _slurm_missing() -> str | None:
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "SLURM not installed (sinfo/sbatch not on PATH): start it with `bash hpc/local_slurm/start.sh` (root)"
    r = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30)
    states = r.stdout.split()
    if r.returncode != 0 or not any(s.rstrip("*") in ("idle", "mix", "alloc") for s in states):
        return f"no SLURM node up (sinfo: {r.stdout.strip() or r.stderr.strip()}): run `bash hpc/local_slurm/start.sh`"
    return None


@pytest.fixture(scope="module")
def slurm():
    reason = _slurm_missing()
    if reason:
        if os.environ.get("IMGINAV_REQUIRE_SLURM") == "1":
            pytest.fail(f"IMGINAV_REQUIRE_SLURM=1 but {reason}")
        pytest.skip(reason)


def sh(*cmd: str) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout


def squeue_state(job: str) -> str | None:
    """State of one job or array task (e.g. '12_2'), None once it has left the queue."""
    out = sh("squeue", "-h", "-r", "-o", "%i %T").split("\n")
    return next((line.split()[1] for line in out if line.split() and line.split()[0] == job), None)


def scontrol_field(job: str, name: str) -> str | None:
    m = re.search(rf"\b{name}=(\S+)", sh("scontrol", "show", "job", job))
    return m.group(1) if m else None


def wait(cond, timeout: float, what: str, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(poll)
    return value


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


@pytest.fixture(scope="module")
def phase_run(slurm, tmp_path_factory):
    """Submit, signal the twin mid-training, let it requeue and resume, wait for everything (bounded)."""
    from imginav_lib.layouts import make_layouts

    tmp = tmp_path_factory.mktemp("slurm")
    manifest = make_layouts(tmp / "layouts", n=64, size=32, seed=0)
    res = {"cores": 1, "mem_per_core_gb": 0.5, "gpus": 0, "walltime": "0:30"}
    params = {
        "phase": "t",
        "runs_root": str(tmp / "runs"),
        "data": {"manifest": str(manifest), "image_size": 32, "cache_dir": str(tmp / "cache"), "num_samples": 2},
        "architecture": {"latent_channels": 4, "base_channels": 8, "downsampling_steps": 2},
        "training": {"epochs": EPOCHS, "batch_size": 4, "log_every": 2, "lr": 1e-3, "heartbeat_s": 1},
        "seeds": [1],
        # F1b has no overrides: the same computation as F1, so F1 is the uninterrupted run to compare it with.
        "experiments": {"F1": {}, "F1b": {}, "F3": {"loss": {"seg": 0.05, "cls": 0.01}}},
        "cluster": {
            "defaults": res,
            "report": res,
            "setup": [f'export PATH="{Path(sys.executable).parent}:$PATH"'],  # this test's environment
            "warning_minutes": 1,
        },
    }
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    phase_dir = tmp / "runs" / "t"
    cwd = os.getcwd()
    os.chdir(tmp)  # sbatch's working directory: the report job writes reports/<phase>.html here
    try:
        t0 = time.monotonic()
        assert run_phase(path, backend="slurm") == 0
    finally:
        os.chdir(cwd)
    sub = json.loads((phase_dir / "submission.json").read_text())["submissions"][-1]
    array, report = sub["jobs"][0]["job_id"], sub["report"]["job_id"]
    twin = f"{array}_2"
    index = read_index(phase_dir / "index.json")
    twin_dir = Path(index["runs"][1]["run_dir"])
    snapshots = {"submitted": [r["state"] for r in status_rows(phase_dir, 600)]}

    wait(lambda: read_json(twin_dir / "run.json").get("status") == "running" and read_json(twin_dir / "run.json").get("epoch", 0) >= 1,
         240, "the twin's first epoch")  # fmt: skip
    snapshots["training"] = [r["state"] for r in status_rows(phase_dir, 600)]
    signalled = time.monotonic()
    subprocess.run(["scancel", "--signal=USR2", "--batch", twin], capture_output=True, text=True, timeout=60)
    wait(lambda: read_json(twin_dir / "run.json").get("status") == "preempted", 120, "the twin's checkpoint")
    stopped = time.monotonic()
    wait(lambda: squeue_state(twin) == "PENDING" and scontrol_field(twin, "Restarts") == "1", 60, "the twin's requeue")
    snapshots["requeued"] = [r["state"] for r in status_rows(phase_dir, 600)]
    # SLURM holds a requeued job before it is eligible again (BeginTime); measure the hold, then skip it.
    hold = (dt.datetime.fromisoformat(scontrol_field(twin, "EligibleTime")) - dt.datetime.fromisoformat(scontrol_field(twin, "SubmitTime"))).total_seconds()  # fmt: skip
    sh("scontrol", "update", f"jobid={twin}", "StartTime=now")
    wait(lambda: squeue_state(array.split("_")[0] + "_1") is None and squeue_state(twin) is None
         and squeue_state(f"{array}_3") is None and squeue_state(report) is None, 420, "all jobs to end", poll=1)  # fmt: skip
    wall = time.monotonic() - t0
    snapshots["after"] = [r["state"] for r in status_rows(phase_dir, 600)]
    return {"tmp": tmp, "phase_dir": phase_dir, "index": index, "array": array, "report": report, "twin_dir": twin_dir,
            "snapshots": snapshots, "hold_s": hold, "stop_latency_s": stopped - signalled, "wall_s": wall}  # fmt: skip


def log_times(log: Path) -> list[tuple[dt.datetime, dt.datetime | None]]:
    """(start, end) of each attempt of one task from its appended .out log (the job script's own lines)."""
    attempts = []
    for line in log.read_text().splitlines():
        if m := re.match(r"imginav: job \S+ \(restart \d+\) on \S+, (\S+)$", line):
            attempts.append([dt.datetime.fromisoformat(m.group(1).replace("Z", "+00:00")), None])
        elif (m := re.match(r"imginav: run-one exited \d+, (\S+)$", line)) and attempts:
            attempts[-1][1] = dt.datetime.fromisoformat(m.group(1).replace("Z", "+00:00"))
    return [tuple(a) for a in attempts]


def test_array_and_dependent_report_finish(phase_run):
    index, phase_dir = phase_run["index"], phase_run["phase_dir"]
    for i, r in enumerate(index["runs"], 1):
        info = read_json(Path(r["run_dir"]) / "run.json")
        assert info["status"] == "done" and info["epoch"] == EPOCHS, (r, info)
        assert info["job_id"] == f"{phase_run['array']}[{i}]"
        assert len(pd.read_csv(Path(r["run_dir"]) / "metrics.csv")) == EPOCHS
        assert (phase_dir / "logs" / f"t-default_{phase_run['array']}_{i}.out").is_file()
    out = (phase_dir / "logs" / f"t-report_{phase_run['report']}.out").read_text()
    err = (phase_dir / "logs" / f"t-report_{phase_run['report']}.err").read_text()
    m = re.search(r"^report: (.+)$", out, flags=re.M)
    assert m, f"the report job did not print its report: {out[-2000:]} {err[-2000:]}"
    assert (phase_run["tmp"] / m.group(1)).is_file()
    assert scontrol_field(phase_run["report"], "JobState") in ("COMPLETED", None)  # None: already purged


def test_requeued_task_resumes_with_the_metrics_of_an_uninterrupted_run(phase_run):
    index, twin_dir = phase_run["index"], phase_run["twin_dir"]
    info = read_json(twin_dir / "run.json")
    assert info["attempts"] == 2
    log = (phase_run["phase_dir"] / "logs" / f"t-default_{phase_run['array']}_2.out").read_text()
    assert "SIGUSR2: asked F1b seed 1 to checkpoint and stop" in log
    assert f"requeueing {phase_run['array']}_2" in log and "(restart 1)" in log and "resuming from" in log
    first = pd.read_csv(Path(index["runs"][0]["run_dir"]) / "metrics.csv")
    twin = pd.read_csv(twin_dir / "metrics.csv")
    assert list(twin["epoch"]) == list(range(1, EPOCHS + 1))  # no epoch lost or counted twice
    pd.testing.assert_frame_equal(first.drop(columns=TIMING), twin.drop(columns=TIMING))
    assert pd.read_csv(twin_dir / "steps.csv")["global_step"].is_unique

    # What the requeue cost, from the job script's own timestamps (1 s resolution).
    (s0, e0), = log_times(phase_run["phase_dir"] / "logs" / f"t-default_{phase_run['array']}_1.out")
    (s1, e1), (s2, e2) = log_times(phase_run["phase_dir"] / "logs" / f"t-default_{phase_run['array']}_2.out")
    e1 = e1 or s2  # `scontrol requeue` may end the first attempt before it logs its end
    extra = (e1 - s1).total_seconds() + (e2 - s2).total_seconds() - (e0 - s0).total_seconds()
    print(f"\nSLURM requeue cost: uninterrupted task {(e0 - s0).total_seconds():.0f} s; interrupted task "
          f"{(e1 - s1).total_seconds():.0f} s + {(e2 - s2).total_seconds():.0f} s; extra compute {extra:.0f} s; "
          f"signal -> checkpoint {phase_run['stop_latency_s']:.1f} s; SLURM's requeue hold {phase_run['hold_s']:.0f} s "
          f"(skipped here with scontrol update StartTime=now); whole test {phase_run['wall_s']:.0f} s")


def test_status_states_during_and_after(phase_run, capsys):
    s = phase_run["snapshots"]
    assert set(s["submitted"]) <= {"queued", "running"}
    assert s["training"][1] == "running"
    assert s["requeued"][1] == "requeued"
    assert s["after"] == ["done", "done", "done"]
    from imginav_lib.cli import main

    assert main(["status", str(phase_run["phase_dir"])]) == 0
    out = capsys.readouterr().out
    assert "3 done" in out and f"{phase_run['array']}[2]" in out
