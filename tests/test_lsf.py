"""LSF backend without LSF (not installable here): the generated scripts' #BSUB lines, the exact bsub command
lines (a stand-in `bsub` on PATH that records its argv and stdin), and the script bodies executed by bash with
the variables LSF sets, including a warning signal, the requeue exit code and the resumed run.
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

import pandas as pd
import pytest
import yaml

from imginav_lib.cli import main
from imginav_lib.launch import read_index, run_phase

REPO = Path(__file__).resolve().parents[1]
TIMING = ["epoch_time_s", "train_images_per_s"]  # wall-clock columns: differ between any two runs


def scripts_of(dry_run_output: str) -> dict[str, str]:
    """'# ---- <path> ...' headed sections of `imginav run --dry-run` -> {file name: text}."""
    parts = re.split(r"^# ---- (\S+).*$", dry_run_output, flags=re.M)
    return {Path(parts[k]).name: parts[k + 1] for k in range(1, len(parts) - 1, 2) if parts[k].endswith(".sh")}


def bsub_lines(script: str) -> list[str]:
    return [line.removeprefix("#BSUB ") for line in script.splitlines() if line.startswith("#BSUB ")]


def test_phase1_4_dry_run_groups_queues_and_chains_the_report(capsys, monkeypatch, tmp_path):
    """The acceptance command: F1+F2 in one gpuv100 array, F3 in a gpul40s array, the report after both."""
    for var in ("IMGINAV_DATA", "IMGINAV_SCRATCH"):
        monkeypatch.delenv(var, raising=False)  # a laptop without the cluster's variables
    assert main(["run", str(REPO / "params" / "phase1_4.yaml"), "--backend", "lsf", "--dry-run"]) == 0
    out = capsys.readouterr().out
    scripts = scripts_of(out)
    assert set(scripts) == {"phase1_4-gpuv100.lsf.sh", "phase1_4-gpul40s.lsf.sh", "report.lsf.sh"}
    v100, l40s = bsub_lines(scripts["phase1_4-gpuv100.lsf.sh"]), bsub_lines(scripts["phase1_4-gpul40s.lsf.sh"])
    # The index lists F1's seeds, then F2's, then F3's (5 seeds each): array index = index entry.
    assert v100[:2] == ['-J "phase1_4-gpuv100[1-10]%4"', "-q gpuv100"]
    assert l40s[:2] == ['-J "phase1_4-gpul40s[11-15]%4"', "-q gpul40s"]
    for lines, name in ((v100, "phase1_4-gpuv100"), (l40s, "phase1_4-gpul40s")):
        for expected in ["-n 8", '-R "span[hosts=1]"', '-R "rusage[mem=8GB]"', '-gpu "num=1"', "-W 6:00",
                         "-wa USR2", "-wt 10", '-Q "99"']:  # fmt: skip
            assert expected in lines, (expected, lines)
        assert any(re.fullmatch(rf"-o \S+/logs/{name}_%J_%I\.out", x) for x in lines), lines
        assert any(re.fullmatch(rf"-e \S+/logs/{name}_%J_%I\.err", x) for x in lines), lines
    report = bsub_lines(scripts["report.lsf.sh"])
    assert '-gpu "num=1"' not in report and "-n 1" in report
    commands = out.split("# ---- commands")[1].strip().splitlines()[1:]
    assert commands[0].startswith("bsub < ") and commands[0].split("#")[0].strip().endswith("phase1_4-gpuv100.lsf.sh'")
    assert commands[2].startswith("bsub -w 'ended(<JOBID_phase1_4-gpuv100>) && ended(<JOBID_phase1_4-gpul40s>)' < ")
    for name, text in scripts.items():
        assert "module load cuda/" in text and "conda activate imginav" in text
        assert "/home/" not in text and "/work3/" not in text  # no user paths
        (tmp_path / name).write_text(text)
        check = subprocess.run(["bash", "-n", str(tmp_path / name)], capture_output=True, text=True)
        assert check.returncode == 0, (name, check.stderr)
    assert not list(tmp_path.glob("**/index.json"))  # a dry run writes nothing


# ---------------------------------------------------------------------------------------------------------
# A submission through a recording `bsub`, then the scripts executed as LSF would


FAKE_BSUB = r"""#!/usr/bin/env python3
# Test double of LSF's bsub: records argv and stdin, answers like bsub.
import json, os, sys
log = os.environ["FAKE_BSUB_LOG"]
n = sum(1 for _ in open(log)) if os.path.exists(log) else 0
with open(log, "a") as f:
    f.write(json.dumps({"argv": sys.argv[1:], "stdin": sys.stdin.read()}) + "\n")
print(f"Job <{101 + n}> is submitted to queue <normal>.")
"""


@pytest.fixture(scope="module")
def submitted(tmp_path_factory):
    """A 3-run phase (F1, its identical twin F1b, F3 on another queue) submitted through the recording bsub."""
    from imginav_lib.layouts import make_layouts

    tmp = tmp_path_factory.mktemp("lsf")
    manifest = make_layouts(tmp / "layouts", n=64, size=32, seed=0)
    params = {
        "phase": "t",
        "runs_root": str(tmp / "runs"),
        "data": {"manifest": str(manifest), "image_size": 32, "cache_dir": str(tmp / "cache"), "num_samples": 2},
        "architecture": {"latent_channels": 4, "base_channels": 8, "downsampling_steps": 2},
        "training": {"epochs": 6, "batch_size": 4, "log_every": 2, "lr": 1e-3, "heartbeat_s": 1},
        "seeds": [1],
        # F1b has no overrides: the same computation as F1, so it is F1's uninterrupted twin in the requeue test.
        "experiments": {"F1": {}, "F1b": {}, "F3": {"loss": {"seg": 0.05, "cls": 0.01}}},
        "cluster": {
            "defaults": {"queue": "gpuv100", "cores": 1, "mem_per_core_gb": 0.5, "gpus": 0, "walltime": "0:30"},
            "experiments": {"F3": {"queue": "gpul40s"}},
            "setup": [f'export PATH="{Path(sys.executable).parent}:$PATH"'],  # this test's environment
            "warning_minutes": 1,
            "max_parallel": 2,
        },
    }
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    (bin_dir / "bsub").write_text(FAKE_BSUB.replace("python3", sys.executable, 1))
    (bin_dir / "bsub").chmod(0o755)
    log = tmp / "bsub.jsonl"
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_BSUB_LOG": str(log)}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        rc = run_phase(path, backend="lsf")
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    return rc, tmp, calls


def test_bsub_command_lines_and_submission_record(submitted):
    rc, tmp, calls = submitted
    phase_dir = tmp / "runs" / "t"
    jobs = phase_dir / "jobs"
    assert rc == 0
    assert [c["argv"] for c in calls] == [[], [], ["-w", "ended(101) && ended(102)"]]  # bsub < script, x3
    assert calls[0]["stdin"] == (jobs / "t-gpuv100.lsf.sh").read_text()
    assert calls[1]["stdin"] == (jobs / "t-gpul40s.lsf.sh").read_text()
    assert calls[2]["stdin"] == (jobs / "report.lsf.sh").read_text()
    assert '#BSUB -J "t-gpuv100[1-2]%2"' in calls[0]["stdin"] and '#BSUB -R "rusage[mem=512MB]"' in calls[0]["stdin"]
    assert '#BSUB -J "t-gpul40s[3]%2"' in calls[1]["stdin"]
    sub = json.loads((phase_dir / "submission.json").read_text())["submissions"][-1]
    assert sub["backend"] == "lsf" and [(j["job_id"], j["entries"]) for j in sub["jobs"]] == [("101", [1, 2]), ("102", [3])]
    assert sub["report"]["job_id"] == "103"
    assert sub["report"]["command"].startswith("bsub -w 'ended(101) && ended(102)' < ")
    assert all(os.access(p, os.X_OK) for p in jobs.iterdir())
    assert (phase_dir / "logs").is_dir()  # LSF does not create the -o folder


def wait_for_epoch(run_dir: Path, epoch: int, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            info = json.loads((run_dir / "run.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            info = {}
        if info.get("status") == "running" and (info.get("epoch") or 0) >= epoch:
            return
        assert proc.poll() is None, f"the job ended before epoch {epoch}: {proc.communicate()[0][-3000:]}"
        assert time.monotonic() < deadline, f"no epoch {epoch} in {timeout} s"
        time.sleep(0.1)


def test_script_bodies_run_each_index_and_a_warning_signal_requeues_and_resumes(submitted):
    """bash runs each array element with LSB_JOBID/LSB_JOBINDEX; USR2 to element 2 (what -wa sends) makes it exit
    with the -Q code; running it again (LSF's requeue) resumes and ends with the metrics of its uninterrupted twin."""
    _, tmp, _ = submitted
    jobs = tmp / "runs" / "t" / "jobs"
    index = read_index(tmp / "runs" / "t" / "index.json")

    def element(i: int) -> subprocess.Popen:
        script = jobs / ("t-gpul40s.lsf.sh" if i == 3 else "t-gpuv100.lsf.sh")
        env = {**os.environ, "LSB_JOBID": "101" if i < 3 else "102", "LSB_JOBINDEX": str(i)}
        return subprocess.Popen(["bash", str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    twin_dir = Path(index["runs"][1]["run_dir"])
    p1, p2 = element(1), element(2)
    wait_for_epoch(twin_dir, 1, p2)
    p2.send_signal(signal.SIGUSR2)  # to the batch shell only, as SLURM's B: does; LSF also signals the others
    out2, _ = p2.communicate(timeout=120)
    assert p2.returncode == 99, out2[-3000:]
    info = json.loads((twin_dir / "run.json").read_text())
    assert info["status"] == "preempted" and info["job_id"] == "101[2]"
    stopped_at = info["epoch"]
    assert stopped_at < 6, "the run finished before the signal: make the tiny training longer"
    p3 = element(3)
    p2 = element(2)  # the requeued element: same job id and index
    outs = {i: p.communicate(timeout=300)[0] for i, p in ((1, p1), (2, p2), (3, p3))}
    for i, p in ((1, p1), (2, p2), (3, p3)):
        assert p.returncode == 0, outs[i][-3000:]
    for r in index["runs"]:
        info = json.loads((Path(r["run_dir"]) / "run.json").read_text())
        assert info["status"] == "done" and info["epoch"] == 6, (r, info)
    assert "resuming from" in outs[2]
    twin_info = json.loads((twin_dir / "run.json").read_text())
    assert twin_info["attempts"] == 2
    first, twin = (pd.read_csv(Path(r["run_dir"]) / "metrics.csv") for r in index["runs"][:2])
    assert list(twin["epoch"]) == list(range(1, 7))  # no epoch lost or counted twice
    pd.testing.assert_frame_equal(first.drop(columns=TIMING), twin.drop(columns=TIMING))
    steps = pd.read_csv(twin_dir / "steps.csv")
    assert steps["global_step"].is_unique


def test_resubmitting_skips_runs_that_are_done(tmp_path, monkeypatch, capsys):
    from imginav_lib.layouts import make_layouts

    manifest = make_layouts(tmp_path / "layouts", n=8, size=32, seed=0)
    params = {"phase": "t", "runs_root": str(tmp_path / "runs"), "seeds": [1, 2],
              "data": {"manifest": str(manifest), "image_size": 32, "cache_dir": str(tmp_path / "cache")},
              "experiments": {"F1": {}}, "cluster": {"defaults": {"walltime": "1:00"}}}  # fmt: skip
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    done = tmp_path / "runs" / "t" / "F1" / "seed1"
    done.mkdir(parents=True)
    (done / "run.json").write_text(json.dumps({"status": "done"}))
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "bsub").write_text(FAKE_BSUB.replace("python3", sys.executable, 1))
    (tmp_path / "bin" / "bsub").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_BSUB_LOG", str(tmp_path / "bsub.jsonl"))
    assert run_phase(path, backend="lsf") == 0
    calls = [json.loads(line) for line in (tmp_path / "bsub.jsonl").read_text().splitlines()]
    assert '#BSUB -J "t-default[2]"' in calls[0]["stdin"] and len(calls) == 2
    assert "skipping 1 run(s) already done" in capsys.readouterr().out
    (done.parent / "seed2").mkdir()
    (done.parent / "seed2" / "run.json").write_text(json.dumps({"status": "done"}))
    assert run_phase(path, backend="lsf") == 0
    assert "nothing to submit" in capsys.readouterr().out
    assert len((tmp_path / "bsub.jsonl").read_text().splitlines()) == 2  # no new bsub
