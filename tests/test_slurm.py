"""SLURM backend against a real single-node SLURM (started by .ci/run with hpc/local_slurm/start.sh).

One submission of a tiny phase into a runs folder whose name has a space, with no cache yet: the decode runs as a
job of its own, one array of 4 tasks waits for it (`afterok`), and the report waits for all. Each task gets a
stop request at one moment, sent to the batch shell as `--signal=B:USR2@..` does before the walltime: S at start-up (before the run folder is known), E in epoch 2's evaluation,
V in the final evaluation, F1 after `done`. (tests/test_lsf.py sends it to every process of the job, as LSF does.) S, E and V checkpoint, requeue themselves and
resume; they must end with F1's metrics. A second phase whose decode fails shows that its array never starts and
that `imginav status` says why. Skipped with a reason where SLURM is absent, unless IMGINAV_REQUIRE_SLURM=1 (set
by .ci/run).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from imginav_lib.launch.runner import NOTEBOOK_ENV, read_index, run_phase
from imginav_lib.launch.status import status_rows

TIMING = ["epoch_time_s", "train_images_per_s"]  # wall-clock columns: differ between any two runs


def eval_without_timing(path) -> dict:
    """eval.json less its one wall-clock field (what the latent statistics took, seconds)."""
    ev = json.loads(path.read_text())
    (ev.get("latent") or {}).pop("seconds", None)
    (ev.get("latent") or {}).pop("measured_on", None)  # names the run: experiments of one config compare equal
    return ev
EPOCHS = 3


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


def batch_shell(task: str) -> int:
    """The pid of an array task's batch shell, the process `--signal=B:USR2@..` signals. (`scancel --batch` would do
    the same, but this shared one-node cluster refused it for minutes at a time: "Job can not be altered now".)"""
    job = int(wait(lambda: next((x.split()[1] for x in sh("squeue", "-h", "-r", "-o", "%i %A").splitlines()
                                 if x.split()[:1] == [task]), None), 60, f"{task}'s job id"))  # fmt: skip
    script = f"/job{job:05d}/slurm_script"
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if cmdline.read_bytes().rstrip(b"\0").endswith(script.encode()):
                return int(cmdline.parent.name)
        except OSError:
            continue
    raise AssertionError(f"no batch shell of {task} (job {job}) on this machine")


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


MOMENTS = {"F1": "done", "S": "startup", "E": "between_epochs", "V": "final_evaluation"}


def tiny_phase(tmp: Path, manifest: Path, experiments: dict, **data) -> Path:
    res = {"cores": 1, "mem_per_core_gb": 0.5, "gpus": 0, "walltime": "0:30"}
    params = {
        "phase": "t",
        "runs_root": str(tmp / "my runs"),
        "data": {"manifest": str(manifest), "image_size": 32, "cache_dir": str(tmp / "cache"), "num_samples": 2, **data},
        "architecture": {"latent_channels": 4, "base_channels": 8, "downsampling_steps": 2},
        "training": {"epochs": EPOCHS, "batch_size": 4, "log_every": 2, "lr": 1e-3, "heartbeat_s": 1},
        "seeds": [1],
        "experiments": experiments,
        "cluster": {
            "defaults": res,
            "report": res,
            "prepare": {**res, "mem_per_core_gb": 1},
            "setup": [f'export PATH="{Path(sys.executable).parent}:$PATH"'],  # this test's environment
            "warning_minutes": 1,
        },
    }
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def submit(tmp: Path, path: Path, env: dict[str, str]) -> dict:
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # sbatch passes the submitting environment on to the jobs
    cwd = os.getcwd()
    os.chdir(tmp)  # sbatch's working directory: the report job writes reports/<phase>.html here
    try:
        assert run_phase(path, backend="slurm") == 0
    finally:
        os.chdir(cwd)
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    return json.loads((tmp / "my runs" / "t" / "submission.json").read_text())["submissions"][-1]


@pytest.fixture(scope="module")
def phase_run(slurm, tmp_path_factory):
    """Submit; stop each task at its moment; let S, E and V requeue and resume; wait for everything (bounded)."""
    from conftest import gate_reached, gated_notebook, open_gate
    from imginav_lib.demo.layouts import make_layouts

    tmp = tmp_path_factory.mktemp("slurm")
    manifest = make_layouts(tmp / "layouts", n=64, size=32, seed=0)
    notebook, gates = gated_notebook(tmp, MOMENTS, EPOCHS)
    path = tiny_phase(tmp, manifest, {e: {} for e in MOMENTS})  # all compute what F1 computes
    phase_dir = tmp / "my runs" / "t"
    t0 = time.monotonic()
    sub = submit(tmp, path, {NOTEBOOK_ENV: str(notebook)})
    prepare, array, report = sub["prepare"]["job_id"], sub["jobs"][0]["job_id"], sub["report"]["job_id"]
    index = read_index(phase_dir / "index.json")
    order = {r["experiment"]: i for i, r in enumerate(index["runs"], 1)}
    run_dirs = {r["experiment"]: Path(r["run_dir"]) for r in index["runs"]}
    snapshots = {"submitted": [r["state"] for r in status_rows(phase_dir, 600)]}

    pending, deadline = dict(MOMENTS), time.monotonic() + 300
    while pending:  # each task at its moment, in the order they get there
        for e, moment in [(e, m) for e, m in pending.items() if gate_reached(gates, e, m)]:
            if moment == "between_epochs":
                snapshots["training"] = [r["state"] for r in status_rows(phase_dir, 600)]
            os.kill(batch_shell(f"{array}_{order[e]}"), signal.SIGUSR2)
            wait(lambda: (run_dirs[e] / "STOP").exists(), 60, f"{e}'s STOP file", poll=0.05)
            open_gate(gates, e, moment)
            del pending[e]
        assert time.monotonic() < deadline, f"timed out waiting for {sorted(pending)} to reach their moment"
        time.sleep(0.05)
    requeued = {}
    for e in ("S", "E", "V"):
        task = f"{array}_{order[e]}"
        wait(lambda: squeue_state(task) == "PENDING" and scontrol_field(task, "Restarts") == "1", 120, f"{e}'s requeue")
        requeued[e] = read_json(run_dirs[e] / "run.json")
        # SLURM holds a requeued job before it is eligible again (BeginTime): shorten the hold to 2 s, not to 0.
        # slurmd refuses a launch in the same second as the requeue's kill ("Job credential revoked": the job
        # then FAILS with exit 1 and never resumes), which StartTime=now ran into whenever the machine was idle.
        sh("scontrol", "update", f"jobid={task}", "StartTime=now+2")
    snapshots["requeued"] = [r["state"] for r in status_rows(phase_dir, 600)]
    wait(lambda: all(squeue_state(f"{array}_{i}") is None for i in order.values()) and squeue_state(report) is None,
         420, "all jobs to end", poll=1)  # fmt: skip
    snapshots["after"] = [r["state"] for r in status_rows(phase_dir, 600)]
    return {"tmp": tmp, "phase_dir": phase_dir, "index": index, "prepare": prepare, "array": array, "report": report,
            "order": order, "run_dirs": run_dirs, "requeued": requeued, "snapshots": snapshots,
            "wall_s": time.monotonic() - t0}  # fmt: skip


def log_times(log: Path) -> list[tuple[dt.datetime, dt.datetime | None]]:
    """(start, end) of each attempt of one task from its appended .out log (the job script's own lines)."""
    attempts = []
    for line in log.read_text().splitlines():
        if m := re.match(r"imginav: job \S+ \(restart \d+\) on \S+, (\S+)$", line):
            attempts.append([dt.datetime.fromisoformat(m.group(1).replace("Z", "+00:00")), None])
        elif (m := re.match(r"imginav: run-one exited \d+, (\S+)$", line)) and attempts:
            attempts[-1][1] = dt.datetime.fromisoformat(m.group(1).replace("Z", "+00:00"))
    return [tuple(a) for a in attempts]


def test_prepare_array_and_dependent_report_finish(phase_run):
    index, phase_dir, array = phase_run["index"], phase_run["phase_dir"], phase_run["array"]
    logs = phase_dir / "logs"
    assert "cache: " in (logs / f"t-prepare_{phase_run['prepare']}.log").read_text()
    assert scontrol_field(phase_run["prepare"], "JobState") in ("COMPLETED", None)  # None: already purged
    for i, r in enumerate(index["runs"], 1):
        info = read_json(Path(r["run_dir"]) / "run.json")
        assert info["status"] == "done" and info["epoch"] == EPOCHS, (r, info)
        assert info["job_id"] == f"{array}[{i}]"
        assert len(pd.read_csv(Path(r["run_dir"]) / "metrics.csv")) == EPOCHS
        assert (logs / f"t-default_{array}_{i}.log").is_file()
    out = (logs / f"t-report_{phase_run['report']}.out").read_text()
    err = (logs / f"t-report_{phase_run['report']}.err").read_text()
    m = re.search(r"^report: (.+)$", out, flags=re.M)
    assert m, f"the report job did not print its report: {out[-2000:]} {err[-2000:]}"
    assert (phase_run["tmp"] / m.group(1)).is_file()
    assert scontrol_field(phase_run["report"], "JobState") in ("COMPLETED", None)


def test_a_stop_request_at_each_moment_requeues_and_resumes_with_the_metrics_of_an_uninterrupted_run(phase_run):
    run_dirs, logs, array, order = phase_run["run_dirs"], phase_run["phase_dir"] / "logs", phase_run["array"], phase_run["order"]
    requeued = phase_run["requeued"]
    assert requeued["S"]["status"] == "preempted" and requeued["S"]["epoch"] == 0  # after its first step
    assert requeued["E"]["status"] == "preempted" and requeued["E"]["epoch"] == 2
    assert requeued["V"]["status"] == "preempted" and requeued["V"]["epoch"] == EPOCHS
    first = pd.read_csv(run_dirs["F1"] / "metrics.csv").drop(columns=TIMING)
    final = eval_without_timing(run_dirs["F1"] / "eval.json")
    for e in ("S", "E", "V"):
        assert read_json(run_dirs[e] / "run.json")["attempts"] == 2
        log = (logs / f"t-default_{array}_{order[e]}.log").read_text()
        assert f"requeueing {array}_{order[e]}" in log and "(restart 1)" in log and "resuming from" in log, log[-3000:]
        twin = pd.read_csv(run_dirs[e] / "metrics.csv")
        assert list(twin["epoch"]) == list(range(1, EPOCHS + 1))  # no epoch lost or counted twice
        pd.testing.assert_frame_equal(first, twin.drop(columns=TIMING))
        assert eval_without_timing(run_dirs[e] / "eval.json") == final
        assert pd.read_csv(run_dirs[e] / "steps.csv")["global_step"].is_unique
    f1 = read_json(run_dirs["F1"] / "run.json")
    assert f1["attempts"] == 1 and not (run_dirs["F1"] / "STOP").exists()
    assert "last cell ran" in (run_dirs["F1"] / "train.ipynb").read_text()  # the kernel outlived the signal

    # What a requeue cost, from the job script's own timestamps (1 s resolution).
    (s0, e0), = log_times(logs / f"t-default_{array}_{order['F1']}.log")
    (s1, e1), (s2, e2) = log_times(logs / f"t-default_{array}_{order['E']}.log")
    e1 = e1 or s2  # `scontrol requeue` may end the first attempt before it logs its end
    extra = (e1 - s1).total_seconds() + (e2 - s2).total_seconds() - (e0 - s0).total_seconds()
    print(f"\nSLURM requeue cost (E): uninterrupted task {(e0 - s0).total_seconds():.0f} s; interrupted task "
          f"{(e1 - s1).total_seconds():.0f} s + {(e2 - s2).total_seconds():.0f} s (gates included); extra {extra:.0f} s; "
          f"whole test {phase_run['wall_s']:.0f} s")


def test_status_states_during_and_after(phase_run, capsys):
    s = phase_run["snapshots"]
    assert set(s["submitted"]) <= {"queued", "running"}
    assert s["training"][phase_run["order"]["E"] - 1] == "running"
    assert s["requeued"] == ["done", "requeued", "requeued", "requeued"]
    assert s["after"] == ["done"] * 4
    from imginav_lib.cli import main

    assert main(["status", str(phase_run["phase_dir"])]) == 0
    out = capsys.readouterr().out
    assert "4 done" in out and f"{phase_run['array']}[2]" in out


def test_a_failed_prepare_job_keeps_the_array_from_starting_and_status_says_why(slurm, tmp_path, capsys):
    from imginav_lib.cli import main
    from imginav_lib.demo.layouts import make_layouts

    manifest = make_layouts(tmp_path / "layouts", n=8, size=32, seed=0)
    broken = manifest.parent / pd.read_csv(manifest)["layout_path"].iloc[0]
    broken.write_bytes(b"not a png")  # the login node does not decode: the prepare job meets it
    path = tiny_phase(tmp_path, manifest, {"F1": {}}, on_bad_image="error")
    sub = submit(tmp_path, path, {})
    prepare, array, report = sub["prepare"]["job_id"], sub["jobs"][0]["job_id"], sub["report"]["job_id"]
    wait(lambda: all(squeue_state(j) is None for j in (prepare, f"{array}_1", report)), 180, "the jobs to leave the queue", poll=0.5)
    phase_dir = tmp_path / "my runs" / "t"
    assert not (phase_dir / "F1" / "seed1" / "run.json").exists()  # the array never started
    assert not list((phase_dir / "logs").glob("t-default_*"))
    capsys.readouterr()
    assert main(["status", str(phase_dir)]) == 0
    out = capsys.readouterr().out
    assert f"prepare job {prepare} failed" in out and "unreadable image" in out, out
    assert f"t-prepare_{prepare}.log" in out
