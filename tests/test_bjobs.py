"""`imginav status` on LSF: the `bjobs` output it parses, in both job-id styles, and what the states become.

The outputs in tests/fixtures/bjobs/ are what `bjobs -noheader -o "jobid stat jobindex delimiter='|'" <ids>`
prints: one element per line. They are written from LSF 10.1's documentation (the `-o` field list and delimiter;
the JOBID column as `101[3]` where the site sets LSB_BJOBS_DISPLAY_ENH=Y; JOBINDEX 0 for a job that is not an
array element; the states PEND, PROV, WAIT, RUN, SSUSP, PSUSP, UNKWN, ZOMBI, DONE, EXIT), not captured on a live
cluster: there is none here. plain_ids.txt and indexed_ids.txt list the same elements in the two styles.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path

import pytest
import yaml

from imginav_lib.cli import main
from imginav_lib.launch.schedulers import Lsf

FIXTURES = Path(__file__).parent / "fixtures" / "bjobs"
# Array 101 (elements 1-10) and one job that is not an array element (103, index 0).
EXPECTED = {
    ("101", 1): "running",
    ("101", 2): "pending",
    ("101", 3): "held",  # PSUSP: suspended while pending (the site's requeue limit, or bstop)
    ("101", 4): "pending",  # PROV: dispatched to a power-saved host that is starting
    ("101", 5): "pending",  # WAIT: a chunk job member waiting its turn
    ("101", 6): "unknown",  # UNKWN: the execution host's sbatchd lost contact with mbatchd
    ("101", 7): "unknown",  # ZOMBI
    ("101", 10): "running",  # SSUSP: suspended by LSF while running; it keeps its slot
    ("103", 0): "running",
}  # DONE (8) and EXIT (9) have ended: not in the queue


@pytest.mark.parametrize("fixture", ["plain_ids.txt", "indexed_ids.txt"])
def test_bjobs_states_are_read_in_both_job_id_styles(fixture):
    assert Lsf.parse_states((FIXTURES / fixture).read_text()) == EXPECTED


def iso_ago(seconds: float) -> str:
    return (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=seconds)).isoformat(timespec="seconds")


@pytest.fixture
def lsf_phase(tmp_path, monkeypatch):
    """A phase folder of 10 runs submitted to LSF as array 101; run.json files as the runs left them; a `bjobs`
    stand-in (tests only) that prints a recorded output."""
    from imginav_lib.demo.layouts import make_layouts

    manifest = make_layouts(tmp_path / "layouts", n=8, size=32, seed=0)
    params = {"phase": "t", "runs_root": str(tmp_path / "runs my scratch"), "seeds": list(range(1, 11)),
              "data": {"manifest": str(manifest), "image_size": 32, "cache_dir": str(tmp_path / "cache")},
              "experiments": {"F1": {}}, "cluster": {"defaults": {"walltime": "1:00"}, "warning_minutes": 10}}  # fmt: skip
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    bsub = bin_dir / "bsub"
    bsub.write_text("#!/bin/sh\ncat >/dev/null\nn=$(cat \"$0.n\" 2>/dev/null || echo 101)\necho $((n + 1)) >\"$0.n\"\n"
                    "echo \"Job <$n> is submitted to queue <normal>.\"\n")  # fmt: skip
    bsub.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert main(["prepare", str(path)]) == 0  # the cache exists: no prepare job, the array is job 101
    assert main(["run", str(path), "--backend", "lsf"]) == 0
    phase_dir = tmp_path / "runs my scratch" / "t"
    return phase_dir, bin_dir


def set_runs(phase_dir: Path, infos: dict[int, dict]) -> None:
    index = json.loads((phase_dir / "index.json").read_text())
    for i, info in infos.items():
        run_dir = Path(index["runs"][i - 1]["run_dir"])
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "run.json").write_text(json.dumps({"epochs": 10, "updated": iso_ago(5), **info}))


def test_status_shows_held_unknown_queued_and_the_log_of_each_running_run(lsf_phase, capsys):
    phase_dir, bin_dir = lsf_phase
    (bin_dir / "bjobs").write_text(f"#!/bin/sh\ncat '{FIXTURES / 'indexed_ids.txt'}'\n")
    (bin_dir / "bjobs").chmod(0o755)
    set_runs(phase_dir, {1: {"status": "running", "epoch": 2}, 3: {"status": "preempted", "epoch": 4},
                         6: {"status": "running", "epoch": 1}, 7: {"status": "running", "epoch": 1},
                         8: {"status": "done", "epoch": 10}, 9: {"status": "failed", "error": "ValueError: x"},
                         10: {"status": "running", "epoch": 5}})  # fmt: skip
    capsys.readouterr()
    assert main(["status", str(phase_dir)]) == 0
    out = capsys.readouterr().out
    rows = {int(line.split()[0]): line.split()[3] for line in out.splitlines() if re.match(r"\d+ +F1 ", line)}
    assert rows == {1: "running", 2: "queued", 3: "held", 4: "queued", 5: "queued", 6: "unknown", 7: "unknown",
                    8: "done", 9: "failed", 10: "running"}  # fmt: skip
    logs = phase_dir / "logs"
    assert f"log: {logs / 't-default_101_1.log'}" in out and f"log: {logs / 't-default_101_10.log'}" in out
    assert "t-default_101_2.log" not in out  # queued: no log yet
    assert "held after too many requeues or by bstop: release with: bresume '101[3]'" in out
    assert "unknown to LSF (UNKWN/ZOMBI): ask the admins" in out


def test_status_warns_when_a_checkpoint_takes_more_than_half_the_warning_time(lsf_phase, capsys):
    phase_dir, bin_dir = lsf_phase
    (bin_dir / "bjobs").write_text("#!/bin/sh\nprintf '101|RUN|1\\n101|RUN|2\\n'\n")
    (bin_dir / "bjobs").chmod(0o755)
    # warning_minutes 10: a 301 s checkpoint may not finish before the final kill; a 299 s one is still in time.
    set_runs(phase_dir, {1: {"status": "running", "checkpoint_s": 301.0}, 2: {"status": "running", "checkpoint_s": 299.0}})
    capsys.readouterr()
    assert main(["status", str(phase_dir)]) == 0
    out = capsys.readouterr().out
    assert "F1 seed 1: a checkpoint takes 5:01, more than half of warning_minutes (10)" in out
    assert "F1 seed 2: a checkpoint" not in out


def test_a_failed_prepare_job_blocks_the_arrays_and_status_says_why(tmp_path, monkeypatch, capsys):
    """No cache: the decode is job 101 and the array (102) waits for done(101). The decode failed; LSF keeps the
    array pending for ever (bjobs: PEND; the prepare job itself is gone: "not found")."""
    from imginav_lib.demo.layouts import make_layouts

    manifest = make_layouts(tmp_path / "layouts", n=8, size=32, seed=0)
    params = {"phase": "t", "runs_root": str(tmp_path / "runs"), "seeds": [1, 2],
              "data": {"manifest": str(manifest), "image_size": 32, "cache_dir": str(tmp_path / "cache")},
              "experiments": {"F1": {}}, "cluster": {"defaults": {"walltime": "1:00"}}}  # fmt: skip
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "bsub").write_text("#!/bin/sh\ncat >/dev/null\nn=$(cat \"$0.n\" 2>/dev/null || echo 101)\necho $((n + 1)) >\"$0.n\"\n"
                                  "echo \"Job <$n> is submitted to queue <normal>.\"\n")  # fmt: skip
    (bin_dir / "bjobs").write_text(f"#!/bin/sh\nprintf '102|PEND|1\\n102|PEND|2\\n103|PEND|0\\n'\ncat '{FIXTURES / 'not_found.stderr'}' >&2\n")
    for tool in ("bsub", "bjobs"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert main(["run", str(path), "--backend", "lsf"]) == 0
    phase_dir = tmp_path / "runs" / "t"
    (phase_dir / "logs" / "t-prepare_101.log").write_text(  # what the prepare job script wrote before it ended
        "imginav: job 101 on n-62-1, 2026-11-26T02:00:00Z\nimginav: error: 1 unreadable image(s): row 1: a.png: missing\n"
        "imginav: prepare exited 2, 2026-11-26T02:00:09Z\n")  # fmt: skip
    capsys.readouterr()
    assert main(["status", str(phase_dir)]) == 0
    out = capsys.readouterr().out
    assert "2 blocked" in out
    assert "prepare job 101 failed (exit 2): imginav: error: 1 unreadable image(s): row 1: a.png: missing" in out
    assert f"log: {phase_dir / 'logs' / 't-prepare_101.log'}" in out
    assert "the arrays and the report wait for ever: bkill 102 103" in out


@pytest.mark.parametrize("env, expected", [
    ({"LSB_JOBID": "101", "LSB_JOBINDEX": "3"}, "101[3]"),
    ({"LSB_JOBID": "101", "LSB_JOBINDEX": "0"}, "101"),  # LSF sets 0 for a job that is not an array element
    ({"LSB_JOBID": "101"}, "101"),
    ({}, None),
])
def test_lsf_job_id_from_the_environment(monkeypatch, env, expected):
    for var in ("LSB_JOBID", "LSB_JOBINDEX"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert Lsf().job_id_from_env() == expected
