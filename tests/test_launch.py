"""The launcher: index, bad input, run-one's exit codes and preemption path, the local runner, status states.

run-one's failure paths use small stand-in notebooks written into the test's tmp folder (through
$IMGINAV_TRAIN_NOTEBOOK) so each takes a second; the local runner test runs the real training notebook.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from imginav_lib.launch import runner as launch
from imginav_lib.cli import main, report_after_runs
from imginav_lib.errors import InputError
from imginav_lib.launch.runner import read_index, run_one, run_phase, write_index
from imginav_lib.launch.status import run_state, status_rows
from imginav_lib.config.params import load_params


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> Path:
    from imginav_lib.demo.layouts import make_layouts

    return make_layouts(tmp_path_factory.mktemp("layouts"), n=24, size=32, seed=0)


def write_params(tmp: Path, manifest: Path, experiments=None, seeds=(1,), **over) -> Path:
    params = {
        "phase": "t",
        "runs_root": str(tmp / "runs"),
        "data": {"manifest": str(manifest), "image_size": 32, "cache_dir": str(tmp / "cache"), "num_samples": 2},
        "architecture": {"latent_channels": 4, "base_channels": 8, "downsampling_steps": 2},
        "training": {"epochs": 2, "batch_size": 4, "log_every": 2, "lr": 1e-3},
        "seeds": list(seeds),
        "experiments": experiments or {"F1": {}, "F3": {"loss": {"seg": 0.05, "cls": 0.01}}},
        "cluster": {"defaults": {"cores": 1, "gpus": 0, "walltime": "0:30"}, "warning_minutes": 1},
    }
    params.update(over)
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


# ---------------------------------------------------------------------------------------------------------
# Index and validation


def test_write_index_lists_every_run_and_copies_params(tmp_path, layouts):
    p = write_params(tmp_path, layouts, seeds=(1, 2))
    index_file = write_index(load_params(p), p, tmp_path / "runs")
    index = read_index(index_file)
    assert index_file == tmp_path / "runs" / "t" / "index.json"
    assert index["phase"] == "t" and index["params_file"] == str(p.resolve())
    assert [(r["experiment"], r["seed"]) for r in index["runs"]] == [("F1", 1), ("F1", 2), ("F3", 1), ("F3", 2)]
    assert index["runs"][2]["run_dir"] == str(tmp_path / "runs" / "t" / "F3" / "seed1")
    assert (index_file.parent / "params.yaml").read_text() == p.read_text()
    assert sorted(x.name for x in index_file.parent.iterdir()) == ["index.json", "params.yaml", "params_versions"]  # no temp files


@pytest.mark.parametrize(
    "args, message",
    [
        (["--only", "F9"], "--only: no experiment 'F9'"),
        (["--jobs", "0"], "--jobs: must be at least 1"),
        (["--backend", "slurm", "--runs-root", "${IMGINAV_NOT_SET_FOR_TEST}/r"], "IMGINAV_NOT_SET_FOR_TEST is not set"),
    ],
)
def test_bad_run_arguments_fail_on_one_line_and_create_nothing(tmp_path, layouts, capsys, args, message):
    p = write_params(tmp_path, layouts)
    assert main(["run", str(p), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("imginav: error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize(
    "cluster, field",
    [
        ({"defaults": {"walltime": "6h"}}, "cluster.defaults.walltime"),
        ({"defaults": {"walltime": "0:05"}, "warning_minutes": 10}, "warning_minutes 10 is not shorter"),
        ({"experiments": {"F9": {"queue": "x"}}}, "cluster.experiments: 'F9'"),
        ({"defaults": {"cores": 0}}, "cluster.defaults.cores"),
        ({"queue": "gpuv100"}, "cluster.queue: unknown key"),
    ],
)
def test_bad_cluster_section_names_the_field(tmp_path, layouts, capsys, cluster, field):
    p = write_params(tmp_path, layouts, cluster=cluster)
    assert main(["run", str(p), "--backend", "lsf", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert field in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_slurm_dry_run_shows_the_prepare_job_and_the_arrays_waiting_for_it(capsys, monkeypatch):
    for var in ("IMGINAV_DATA", "IMGINAV_SCRATCH"):
        monkeypatch.delenv(var, raising=False)
    repo = Path(__file__).resolve().parents[1]
    assert main(["run", str(repo / "params" / "phase1_4.yaml"), "--backend", "slurm", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "prepare.slurm.sh (decode into the cache: the arrays wait for it)" in out
    assert "#SBATCH --job-name=phase1_4-prepare" in out and "imginav prepare " in out
    commands = out.split("# ---- commands")[1].strip().splitlines()[1:]
    assert commands[0].startswith("sbatch --parsable ") and commands[0].endswith("prepare.slurm.sh'   # -> <JOBID_prepare>")
    for line in commands[1:3]:
        assert line.startswith("sbatch --parsable '--dependency=afterok:<JOBID_prepare>' --kill-on-invalid-dep=yes ")
    assert commands[3].startswith("sbatch --parsable '--dependency=afterok:<JOBID_prepare>,"
                                  "afterany:<JOBID_phase1_4-gpuv100>:<JOBID_phase1_4-gpul40s>' --kill-on-invalid-dep=yes ")  # fmt: skip
    assert "#SBATCH --gres=gpu:1\n" in out and "exclusive_process" not in out  # a SLURM GPU is not shared


def test_params_changed_after_submission_are_refused_where_they_change_the_run(tmp_path, layouts):
    p = write_params(tmp_path, layouts)
    index_file = write_index(load_params(p), p, tmp_path / "runs")
    p.write_text(p.read_text().replace("lr: 0.001", "lr: 0.002") + "\n# edited while the jobs were queued\n")
    with pytest.raises(InputError, match=r"changed since .*: experiment F1 seed 1: training.lr 0.001 → 0.002 would mix two runs"):
        run_one(index_file, 1)
    with pytest.raises(InputError, match="out of range"):
        run_one(index_file, 3)


# ---------------------------------------------------------------------------------------------------------
# run-one: exit codes, preemption through the STOP file


def fake_notebook(tmp: Path, body: str, first: str | None = None) -> Path:
    """A stand-in for notebooks/train.ipynb (tests only): the same parameters, `body` instead of training; `first`:
    a cell before everything."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('params_file = ""\nexperiment = ""\nseed = 0\nruns_root = None\nprogress = True')
    params.metadata["tags"] = ["parameters"]
    setup = (
        "import json, os, time\nfrom pathlib import Path\nfrom imginav_lib.config.params import resolve_run\n"
        "run_dir = Path(resolve_run(params_file, experiment, seed, runs_root).run_dir)\n"
        "run_dir.mkdir(parents=True, exist_ok=True)\n"
        "def status(s, **kw):\n"
        "    (run_dir / 'run.json').write_text(json.dumps({'status': s, 'epoch': 0, 'epochs': 2, **kw}))\n"
    )
    nb.cells = [params, nbformat.v4.new_code_cell(setup), nbformat.v4.new_code_cell(body)]
    if first:
        nb.cells.insert(0, nbformat.v4.new_code_cell(first))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp / "fake_train.ipynb"
    nbformat.write(nb, path)
    return path


@pytest.fixture
def one_run(tmp_path, layouts):
    p = write_params(tmp_path, layouts, experiments={"F1": {}})
    return write_index(load_params(p), p, tmp_path / "runs"), tmp_path / "runs" / "t" / "F1" / "seed1"


@pytest.mark.parametrize(
    "body, code, status, error",
    [
        ("status('done')", 0, "done", None),
        ("status('done')\nraise RuntimeError('a plot failed')", 0, "done", None),  # done is done: the notebook says the rest
        ("status('diverged', error='non-finite loss')\nraise RuntimeError('diverged')", 1, "diverged", "non-finite"),
        ("status('preempted')\nraise RuntimeError('stop requested')", 99, "preempted", None),
        ("status('running')\nos._exit(1)", 1, "failed", "papermill: "),  # kernel died mid-run
        ("raise ValueError('no such thing')", 1, "failed", "ValueError: no such thing"),  # before the trainer
    ],
)
def test_run_one_exit_codes(tmp_path, one_run, body, code, status, error):
    index_file, run_dir = one_run
    assert run_one(index_file, 1, notebook=fake_notebook(tmp_path, body)) == code
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == status
    if error:
        assert error in info["error"]
    assert (run_dir / "train.ipynb").is_file()


def test_run_one_skips_a_done_run_without_touching_its_notebook(tmp_path, one_run):
    index_file, run_dir = one_run
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"status": "done", "epoch": 2, "epochs": 2}))  # the 2 planned epochs
    assert run_one(index_file, 1, notebook=tmp_path / "missing.ipynb") == 0
    assert not (run_dir / "train.ipynb").exists()


def test_sigusr2_to_run_one_stops_the_kernel_through_the_stop_file(tmp_path, one_run):
    """The kernel runs in its own process group and never sees the signal: only the STOP file can reach it."""
    index_file, run_dir = one_run
    body = (
        "status('running')\n"
        "for _ in range(600):\n"
        "    if (run_dir / 'STOP').exists():\n"
        "        status('preempted')\n"
        "        raise RuntimeError('stop requested')\n"
        "    time.sleep(0.1)\n"
        "status('done')\n"
    )
    env = {**os.environ, launch.NOTEBOOK_ENV: str(fake_notebook(tmp_path, body))}
    (run_dir).mkdir(parents=True)
    (run_dir / "STOP").touch()  # left over from an earlier attempt: must not stop this one
    p = subprocess.Popen([sys.executable, "-m", "imginav_lib.cli", "run-one", str(index_file), "1"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while json.loads((run_dir / "run.json").read_text()).get("status") != "running" if (run_dir / "run.json").is_file() else True:
        assert time.monotonic() < deadline and p.poll() is None, p.stdout.read() if p.poll() is not None else "timeout"
        time.sleep(0.1)
    p.send_signal(signal.SIGUSR2)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 99, out
    assert json.loads((run_dir / "run.json").read_text())["status"] == "preempted"
    assert "SIGUSR2: asked F1 seed 1 to checkpoint and stop" in out
    assert "IPKernelApp" not in out  # the kernel runs over IPC: no "running over TCP without encryption" warning


def test_a_signal_while_the_kernel_starts_waits_and_becomes_a_stop_request(tmp_path, one_run):
    """LSF signals every process of a job. run-one starts the kernel with USR2/TERM blocked, so one that arrives
    before the notebook's first cell (here: a slow start) waits instead of killing the kernel, and
    stop_on_signals() turns it into the STOP file."""
    index_file, run_dir = one_run
    pid_file = tmp_path / "kernel.pid"
    body = ("from imginav_lib.train.stopping import stop_on_signals\n"
            "stop_on_signals(run_dir)\n"
            "time.sleep(0.5)\n"
            "status('preempted' if (run_dir / 'STOP').exists() else 'done')\n"
            "raise RuntimeError('stop requested')\n")  # fmt: skip
    slow_start = f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(3)"
    nb = fake_notebook(tmp_path, body, first=slow_start)
    env = {**os.environ, launch.NOTEBOOK_ENV: str(nb)}
    p = subprocess.Popen([sys.executable, "-m", "imginav_lib.cli", "run-one", str(index_file), "1"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not pid_file.is_file() or not pid_file.read_text():
        assert time.monotonic() < deadline and p.poll() is None, p.stdout.read() if p.poll() is not None else "timeout"
        time.sleep(0.05)
    kernel = int(pid_file.read_text())
    os.kill(kernel, signal.SIGUSR2)  # before stop_on_signals(): would kill a kernel that has them unblocked
    os.kill(kernel, signal.SIGTERM)
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 99, out
    # The kernel lived on to its last cell, which found the STOP file that the waiting signals became.
    assert json.loads((run_dir / "run.json").read_text())["status"] == "preempted"


# ---------------------------------------------------------------------------------------------------------
# Local backend (the real notebook)


def test_local_backend_runs_every_entry_of_the_index(tmp_path, layouts, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the report goes to ./reports/
    p = write_params(tmp_path, layouts)
    rc = run_phase(p, backend="local", jobs=2, build_report=report_after_runs)  # as `imginav run` does
    out = capsys.readouterr().out
    index = read_index(tmp_path / "runs" / "t" / "index.json")
    for r in index["runs"]:
        info = json.loads((Path(r["run_dir"]) / "run.json").read_text())
        assert info["status"] == "done" and info["epoch"] == 2, info
        assert len(pd.read_csv(Path(r["run_dir"]) / "metrics.csv")) == 2
        assert (Path(r["run_dir"]) / "train.ipynb").is_file()
    assert "experiment  seed  status  epochs  best val MSE  wall time" in out
    assert re.search(r"running 2 runs, 2 at a time, (1 CPU thread|\d+ CPU threads) each", out)
    # The report is another engineer's module; the runs must be complete either way, and rc says if it worked.
    assert rc == (0 if "report: " in out else 1)
    # Re-running resumes nothing and re-executes nothing: done runs are skipped.
    mtime = (Path(index["runs"][0]["run_dir"]) / "train.ipynb").stat().st_mtime
    assert run_one(tmp_path / "runs" / "t" / "index.json", 1) == 0
    assert (Path(index["runs"][0]["run_dir"]) / "train.ipynb").stat().st_mtime == mtime


# ---------------------------------------------------------------------------------------------------------
# Status


def iso_ago(seconds: float) -> str:
    import datetime as dt

    return (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=seconds)).isoformat(timespec="seconds")


@pytest.mark.parametrize(
    "info, launched, backend, sched, known, state",
    [
        ({}, False, None, None, False, "-"),
        ({}, True, "slurm", "pending", True, "queued"),
        ({}, True, "lsf", None, False, "queued"),
        ({}, True, "slurm", "running", True, "running"),
        ({"status": "running", "updated": 5}, True, "slurm", "running", True, "running"),  # seconds ago
        ({"status": "running", "updated": 5000}, True, "local", None, False, "stale"),
        ({"status": "preempted"}, True, "slurm", "pending", True, "requeued"),
        ({"status": "preempted"}, True, "lsf", None, False, "requeued"),  # no bjobs here: trust the requeue
        ({"status": "preempted"}, True, "slurm", None, True, "preempted"),  # left the queue: not requeued
        ({"status": "preempted"}, True, "local", None, False, "preempted"),
        ({"status": "done"}, True, "slurm", None, True, "done"),
        ({"status": "failed"}, True, "slurm", None, True, "failed"),
        ({"status": "diverged"}, True, "slurm", None, True, "diverged"),
    ],
)
def test_run_state(info, launched, backend, sched, known, state):
    if "updated" in info:  # now, not at collection: a long suite would make "5 s ago" stale
        info = {**info, "updated": iso_ago(info["updated"])}
    assert run_state(info, launched, backend, sched, known, stale_after_s=600) == state


def test_status_reads_run_files_and_the_scheduler(tmp_path, layouts, capsys, monkeypatch):
    p = write_params(tmp_path, layouts, seeds=(1, 2))
    index = read_index(write_index(load_params(p), p, tmp_path / "runs"))
    phase_dir = tmp_path / "runs" / "t"
    runs = [Path(r["run_dir"]) for r in index["runs"]]
    states = [
        {"status": "running", "epoch": 3, "epochs": 10, "epoch_time_s": 60.0, "best_val_mse": 0.0123, "updated": iso_ago(10), "job_id": "7[1]"},
        {"status": "done", "epoch": 10, "epochs": 10, "epoch_time_s": 20.0, "best_val_mse": 0.01, "updated": iso_ago(100)},
        {"status": "preempted", "epoch": 4, "epochs": 10, "epoch_time_s": 30.0, "updated": iso_ago(50)},
    ]
    for d, s in zip(runs, states):
        d.mkdir(parents=True)
        (d / "run.json").write_text(json.dumps(s))
    (phase_dir / "submission.json").write_text(json.dumps({"submissions": [
        {"backend": "slurm", "entries": [1, 2, 3, 4], "jobs": [{"name": "t-default", "job_id": "7", "entries": [1, 2, 3, 4]}]}]}))  # fmt: skip
    # A squeue stand-in (tests only) that prints what `squeue -h -r -o %i|%T` prints for our array.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "squeue").write_text("#!/bin/sh\nprintf '7_1|RUNNING\\n7_3|PENDING\\n7_4|PENDING\\n'\n")
    (bin_dir / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    rows = status_rows(phase_dir, stale_after_s=600)
    assert [r["state"] for r in rows] == ["running", "done", "requeued", "queued"]
    assert rows[0]["eta_s"] == 7 * 60.0 and rows[0]["job_id"] == "7[1]" and rows[3]["job_id"] == "7[4]"
    assert rows[3]["eta_s"] == 10 * 20.0  # queued F3: 10 epochs at the finished run's 20 s (no F3 run has finished)
    assert main(["status", str(tmp_path / "runs")]) == 0  # the runs root: every phase folder under it
    out = capsys.readouterr().out
    assert "3/10" in out and "0.0123" in out and "7:00" in out and "1 running, 1 done, 1 requeued, 1 queued" in out


def test_status_without_index_is_one_line_error(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 2
    assert "no index.json" in capsys.readouterr().err
