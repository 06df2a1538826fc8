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
    ("101", 9): "exited",  # EXIT: failed; LSF lists it for a while (CLEAN_PERIOD) and says why
    ("101", 10): "suspended",  # SSUSP: suspended by LSF while running; it keeps its slot
    ("103", 0): "running",
}  # DONE (8) ended well: run.json says the rest


@pytest.mark.parametrize("fixture", ["plain_ids.txt", "indexed_ids.txt"])
def test_bjobs_states_are_read_in_both_job_id_styles(fixture):
    assert Lsf.parse_states((FIXTURES / fixture).read_text()) == EXPECTED


def iso_ago(seconds: float) -> str:
    return (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=seconds)).isoformat(timespec="seconds")


def write_phase_params(tmp_path: Path, **cluster) -> Path:
    """A 10-run phase (seeds 1-10 of one experiment) on 8 tiny layouts; `cluster`: more cluster fields."""
    from imginav_lib.demo.layouts import make_layouts

    manifest = make_layouts(tmp_path / "layouts", n=8, size=32, seed=0)
    params = {"phase": "t", "runs_root": str(tmp_path / "runs my scratch"), "seeds": list(range(1, 11)),
              "data": {"manifest": str(manifest), "image_size": 32, "cache_dir": str(tmp_path / "cache")},
              "experiments": {"F1": {}},
              "cluster": {"defaults": {"walltime": "1:00"}, "warning_minutes": 10, **cluster}}  # fmt: skip
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.fixture
def lsf_phase(tmp_path, monkeypatch):
    """A phase folder of 10 runs submitted to LSF as array 101; run.json files as the runs left them; a `bjobs`
    stand-in (tests only) that prints a recorded output."""
    path = write_phase_params(tmp_path)
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
                    8: "done", 9: "failed", 10: "suspended"}  # fmt: skip
    logs = phase_dir / "logs"
    assert f"log: {logs / 't-default_101_1.log'}" in out and f"log: {logs / 't-default_101_9.log'}" in out
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


# ---- issue 22: every bjobs answer, through `imginav status`.
# tests/fixtures/bjobs/o_fields.txt is what `bjobs -noheader -o "jobid stat jobindex exit_code exit_reason
# estimated_start_time pend_reason delimiter='|'" <ids>` prints, written from IBM LSF 10.1's documentation, not
# captured on a cluster: the -o field names and "-" for a field without a value ("bjobs -o"), the termination
# reasons TERM_MEMLIMIT (exit 137: SIGKILL) and TERM_RUNLIMIT (exit 140: SIGUSR2, LSF's default for a run limit) as
# IBM's "Termination reasons" table words them, and the pending reasons quoted in issue 22 from the researchers'
# `bjobs -l` and IBM's `bjobs -p` page ("The job array has reached its job slot limit."). The exact text of the
# exit_reason and estimated_start_time columns is not verified against a live LSF: status reads the TERM_ name (or
# the table's phrase) and shows the estimated start as printed.


def fake_bjobs(bin_dir: Path, stdout: str = "", stderr: str = "", rc: int = 0) -> None:
    (bin_dir / "bjobs.out").write_text(stdout)
    (bin_dir / "bjobs.err").write_text(stderr)
    (bin_dir / "bjobs").write_text(f"#!/bin/sh\ncat '{bin_dir / 'bjobs.out'}'\ncat '{bin_dir / 'bjobs.err'}' >&2\nexit {rc}\n")
    (bin_dir / "bjobs").chmod(0o755)


def status_of(phase_dir: Path, capsys) -> tuple[dict[int, str], str]:
    capsys.readouterr()
    assert main(["status", str(phase_dir)]) == 0
    out = capsys.readouterr().out
    return {int(line.split()[0]): line.split()[3] for line in out.splitlines() if re.match(r"\d+ +F1 ", line)}, out


def test_an_empty_or_unreadable_bjobs_answer_means_cannot_tell_like_no_bjobs(lsf_phase, capsys):
    """Case 1: bjobs printing nothing (exit 0) on a busy cluster is not "every job has left the queue": a requeued
    element (run.json preempted) stays `requeued`, as when bjobs is missing; only "not found" for each job is."""
    phase_dir, bin_dir = lsf_phase
    set_runs(phase_dir, {1: {"status": "preempted", "epoch": 4}, 2: {"status": "running", "epoch": 1}})
    no_bjobs, _ = status_of(phase_dir, capsys)
    assert no_bjobs[1] == "requeued" and no_bjobs[2] == "running" and no_bjobs[3] == "queued"
    for stdout, rc in (("", 0), ("\n", 0), ("bjobs: a line that is not a job\n", 0), ("", 255)):
        fake_bjobs(bin_dir, stdout, rc=rc)
        assert status_of(phase_dir, capsys)[0] == no_bjobs, (stdout, rc)
    fake_bjobs(bin_dir, "", "Job <101> is not found\n", rc=255)  # gone from the queue: the checkpoint decides
    assert status_of(phase_dir, capsys)[0][1] == "preempted"


def test_what_lsf_says_about_exited_suspended_and_pending_elements(lsf_phase, capsys):
    """Cases 2-5: EXIT after run.json -> failed with LSF's reason and exit code; EXIT before run.json -> failed
    before training, with the log; USUSP/SSUSP -> suspended, with bresume for the one its owner stopped; PEND ->
    queued with LSF's pending reason and estimated start."""
    phase_dir, bin_dir = lsf_phase
    fake_bjobs(bin_dir, (FIXTURES / "o_fields.txt").read_text())
    set_runs(phase_dir, {1: {"status": "running", "epoch": 2}, 2: {"status": "running", "epoch": 7},
                         4: {"status": "running", "epoch": 3}, 5: {"status": "running", "epoch": 3},
                         9: {"status": "done", "epoch": 10}, 10: {"status": "running", "epoch": 5}})  # fmt: skip
    rows, out = status_of(phase_dir, capsys)
    assert rows == {1: "failed", 2: "failed", 3: "failed", 4: "suspended", 5: "suspended", 6: "queued", 7: "queued",
                    8: "queued", 9: "done", 10: "running"}  # fmt: skip
    logs = phase_dir / "logs"
    assert ("F1 seed 1: failed: killed: over its memory reservation, raise mem_per_core_gb (LSF: TERM_MEMLIMIT: job "
            "killed after reaching LSF memory usage limit, exit 137)") in out  # fmt: skip
    assert "F1 seed 2: failed: killed: walltime reached, raise walltime" in out and "exit 140)" in out
    assert "F1 seed 3: failed before training (no run.json): ended with exit code 1 (LSF: exit 1)" in out
    assert f"F1 seed 3: log: {logs / 't-default_101_3.log'}" in out
    assert "F1 seed 4: suspended by its owner or an admin (USUSP, bstop): resume with: bresume '101[4]'" in out
    assert "F1 seed 5: suspended by LSF (SSUSP: host load or preemption); LSF resumes it by itself" in out
    assert ("F1 seed 6: waits: LSF says: Job's requirements for reserving resource (ngpus_physical) not satisfied: "
            "3 hosts; estimated start Nov  4 10:00") in out  # fmt: skip
    assert "F1 seed 7: waits: LSF says: The job array has reached its job slot limit" in out
    assert "F1 seed 8: waits" not in out and "F1 seed 10: failed" not in out


@pytest.mark.parametrize("reason, code, words", [
    ("TERM_MEMLIMIT: job killed after reaching LSF memory usage limit", 137, "killed: over its memory reservation"),
    ("job killed after reaching LSF memory usage limit", 137, "killed: over its memory reservation"),  # no TERM_ name
    ("TERM_RUNLIMIT: job killed after reaching LSF run time limit", 140, "killed: walltime reached"),
    ("TERM_OWNER: job killed by owner", 130, "killed by its owner (bkill)"),
    (None, 2, "ended with exit code 2"),
    (None, None, "ended with an error"),
])
def test_lsf_exit_reasons_in_a_persons_words(reason, code, words):
    from imginav_lib.launch.schedulers.base import QueueJob

    said = Lsf.exit_words(QueueJob("exited", "EXIT", code, reason))
    assert said.startswith(words)
    assert (reason or "EXIT, no reason given" if code is None else str(code)) in said


def test_an_lsf_without_the_newer_o_fields_is_asked_again_with_the_basic_ones(tmp_path, monkeypatch):
    """bjobs rejects an -o field it does not know (an older LSF 10.1 fix pack; the wording of its error here is a
    stand-in, status does not read it): states are still read, from `jobid stat jobindex`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "bjobs").write_text('#!/bin/sh\ncase "$*" in *exit_reason*) echo "exit_reason: Illegal field name" >&2; exit 255;; esac\n'
                                   "printf '101|RUN|1\\n101|USUSP|2\\n'\n")  # fmt: skip
    (bin_dir / "bjobs").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert Lsf().states({"101"}) == {("101", 1): "running", ("101", 2): "suspended"}


def test_a_run_whose_lock_is_free_is_not_running_whatever_its_heartbeat(lsf_phase, capsys):
    """Case 9: a local run killed with kill -9 leaves run.json `running` with a fresh heartbeat; the kernel dropped
    its run lock, so status says `stopped` at once. While a process holds the lock the run is `running`."""
    import signal
    import subprocess
    import sys

    phase_dir, _ = lsf_phase
    (phase_dir / "submission.json").write_text(json.dumps({"submissions": [  # the local pool's record
        {"backend": "local", "entries": list(range(1, 11)), "jobs": [], "logs": str(phase_dir / "logs")}]}))  # fmt: skip
    set_runs(phase_dir, {1: {"status": "running", "epoch": 2}, 2: {"status": "running", "epoch": 2}})
    run_dir = Path(json.loads((phase_dir / "index.json").read_text())["runs"][0]["run_dir"])
    trainer = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom imginav_lib.runs.runlock import FolderLock\n"
                                "with FolderLock(sys.argv[1], 'training'):\n    print('locked', flush=True)\n    time.sleep(120)\n",
                                str(run_dir)], stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert trainer.stdout.readline().strip() == "locked"
        rows, _ = status_of(phase_dir, capsys)
        assert rows[1] == "running"
        assert rows[2] == "running"  # never locked on this host (no run.lock): the heartbeat decides, as before
        trainer.send_signal(signal.SIGKILL)
        trainer.wait(timeout=30)
        rows, out = status_of(phase_dir, capsys)
        assert rows[1] == "stopped" and rows[2] == "running"
        assert "F1 seed 1: its run lock is free: no process trains it (killed?); run `imginav run` again to resume it" in out
    finally:
        trainer.kill()
        trainer.wait()


def test_the_lock_is_asked_only_when_the_scheduler_says_nothing():
    from imginav_lib.launch.status import run_state

    fresh = {"status": "running", "updated": iso_ago(5)}
    assert run_state(fresh, True, "local", None, False, 600, lock_free=True) == "stopped"
    assert run_state(fresh, True, "local", None, False, 600, lock_free=False) == "running"
    # LSF says RUN: a requeued element's new process may not have taken the lock yet
    assert run_state(fresh, True, "lsf", "running", True, 600, lock_free=True) == "running"
    assert run_state(fresh, True, "lsf", "exited", True, 600) == "failed"
    assert run_state({"status": "preempted"}, True, "lsf", "exited", True, 600) == "preempted"  # not requeued
    assert run_state({}, True, "lsf", "exited", True, 600) == "failed"
    assert run_state({"status": "done"}, True, "lsf", "exited", True, 600) == "done"  # run.json wins once it ended


# ---- issue 22 case 6: a submission rides out a busy scheduler. The failure lines are bsub's messages as ert's and
# Toil's LSF drivers match them (and issue 22 quotes them); "No such queue" and "Request aborted by esub" are
# bsub's rejections as LSF 10.1's documentation words them. The exact lines around them are stand-ins.

FLAKY_BSUB = """#!/bin/sh
cat >/dev/null
echo "$*" >> "$0.calls"
n=$(wc -l < "$0.calls")
if [ "$n" -le {fails} ]; then echo "{message}" >&2; exit 255; fi
id=$((100 + n - {fails}))
echo "Job <$id> is submitted to queue <normal>."
"""


@pytest.fixture
def flaky(tmp_path, monkeypatch):
    """(params file, bin folder, pauses): a phase whose cache exists (so bsub is called for the array, then the
    report), and a recorder in place of the pause between tries."""
    path = write_phase_params(tmp_path)
    assert main(["prepare", str(path)]) == 0
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    pauses: list[float] = []
    monkeypatch.setattr(Lsf, "pause", staticmethod(pauses.append))
    return path, bin_dir, pauses


def flaky_bsub(bin_dir: Path, fails: int, message: str) -> Path:
    (bin_dir / "bsub").write_text(FLAKY_BSUB.format(fails=fails, message=message))
    (bin_dir / "bsub").chmod(0o755)
    return bin_dir / "bsub.calls"


@pytest.mark.parametrize("message", [
    "LSF is processing your request. Please wait ...",
    "Cannot connect to LSF. Please wait ...",
    "Request from non-LSF host rejected",
    "lsb_init: Failed in an LSF library call",
])
def test_a_transient_bsub_failure_is_tried_again_after_a_pause(flaky, capsys, message):
    path, bin_dir, pauses = flaky
    calls = flaky_bsub(bin_dir, 2, message)
    capsys.readouterr()
    assert main(["run", str(path), "--backend", "lsf"]) == 0
    out = capsys.readouterr().out
    assert len(calls.read_text().splitlines()) == 4  # the array: 2 failures and a success; the report: 1
    assert pauses == list(Lsf.retry_pauses_s[:2])
    assert f"imginav: bsub: LSF says: {message}; trying again in 10 s (2/4)" in out
    assert "submitted t-default: job 101" in out and "submitted report: job 102" in out
    sub = json.loads((path.parent / "runs my scratch" / "t" / "submission.json").read_text())["submissions"][-1]
    assert [j["job_id"] for j in sub["jobs"]] == ["101"] and "error" not in sub


@pytest.mark.parametrize("message", ["normal: No such queue. Job not submitted.",
                                     "Request aborted by esub. Job not submitted."])
def test_a_real_rejection_is_not_tried_again_and_the_error_says_lsfs_words(flaky, capsys, message):
    path, bin_dir, pauses = flaky
    calls = flaky_bsub(bin_dir, 1, message)
    capsys.readouterr()
    assert main(["run", str(path), "--backend", "lsf"]) == 1
    err = capsys.readouterr().err
    assert len(calls.read_text().splitlines()) == 1 and pauses == []
    assert f"failed (exit 255), LSF says: {message}" in err and "imginav: error: bsub" in err


def test_a_scheduler_busy_for_every_try_fails_after_the_last(flaky, capsys):
    path, bin_dir, pauses = flaky
    calls = flaky_bsub(bin_dir, 99, "Cannot connect to LSF. Please wait ...")
    capsys.readouterr()
    assert main(["run", str(path), "--backend", "lsf"]) == 1
    err = capsys.readouterr().err
    assert len(calls.read_text().splitlines()) == len(Lsf.retry_pauses_s) + 1 and pauses == list(Lsf.retry_pauses_s)
    assert "failed after 4 tries (exit 255), LSF says: Cannot connect to LSF. Please wait ..." in err


# ---- issue 22: the queues' load before submitting. What `bqueues <queue>` prints, laid out as in IBM LSF 10.1's
# bqueues page (QUEUE_NAME PRIO STATUS MAX JL/U JL/P JL/H NJOBS PEND RUN SUSP), written from it, not captured.
BQUEUES = """#!/bin/sh
echo "$*" > "$0.args"
echo "QUEUE_NAME      PRIO STATUS          MAX JL/U JL/P JL/H NJOBS  PEND   RUN  SUSP"
echo "gpuv100          50  Open:Active       -    -    -    -   412   301   111     0"
"""


@pytest.mark.parametrize("dry_run", [True, False])
def test_the_dry_run_and_the_submission_show_each_queues_pending_and_running_jobs(tmp_path, monkeypatch, capsys, dry_run):
    path = write_phase_params(tmp_path, defaults={"walltime": "1:00", "queue": "gpuv100"})
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "bqueues").write_text(BQUEUES)
    (bin_dir / "bsub").write_text("#!/bin/sh\ncat >/dev/null\necho 'Job <7> is submitted to queue <gpuv100>.'\n")
    for tool in ("bqueues", "bsub"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert main(["run", str(path), "--backend", "lsf"] + (["--dry-run"] if dry_run else [])) == 0
    out = capsys.readouterr().out
    line = "queue gpuv100: 301 pending, 111 running jobs (Open:Active; bqueues)"
    assert (f"# {line}" if dry_run else f"\n{line}\n") in out
    assert (bin_dir / "bqueues.args").read_text().split() == ["gpuv100"]  # the queues used, by name
    assert "the site's default queue (no queue set) not asked" in out  # the prepare and report jobs set none
    if not dry_run:
        assert out.index(line) < out.index("submitted ")  # before the first bsub


def test_without_bqueues_the_submission_says_so_and_goes_on(tmp_path, monkeypatch, capsys):
    path = write_phase_params(tmp_path, defaults={"walltime": "1:00", "queue": "gpuv100"})
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert main(["run", str(path), "--backend", "lsf", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "# queue load: bqueues not found on PATH (not asked)" in out and "bsub -w" in out
