"""`imginav status` without a scheduler or a training run: the state words of run_state and prepare_state branch by
branch, the notes, the ETA of a queued run, and the rows and the printed table of hand-built phase folders.

Fast (no subprocess, no training): the scheduler's answer is a stand-in for `SCHEDULERS[...].jobs`, and the clock
of status.py is frozen where a printed age or the stale boundary is checked. In `make mutate-runs`' selection.
"""
from __future__ import annotations

import datetime as dt
import json
import socket
import types
from pathlib import Path

import pytest

from imginav_lib.errors import InputError
from imginav_lib.launch import status as st
from imginav_lib.launch.schedulers import SCHEDULERS
from imginav_lib.launch.schedulers.base import QueueJob
from imginav_lib.runs.runlock import FolderLock
from imginav_lib.text import text_table

NOW = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.timezone.utc)


def iso_ago(seconds: float) -> str:
    return (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=seconds)).isoformat(timespec="seconds")


def at(seconds_before_now: float) -> str:
    """A timestamp `seconds_before_now` before the frozen NOW."""
    return (NOW - dt.timedelta(seconds=seconds_before_now)).isoformat(timespec="seconds")


@pytest.fixture
def frozen(monkeypatch):
    """status.py's clock stopped at NOW."""

    class Frozen(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return NOW.astimezone(tz)

    monkeypatch.setattr(st, "dt", types.SimpleNamespace(datetime=Frozen, timezone=dt.timezone))


# ---------------------------------------------------------------------------------------------------------
# run_state: every branch, (run.json, launched, backend, scheduler's state, scheduler answered, blocked, lock free)

FRESH, OLD = 5, 7200  # heartbeat ages in seconds, against stale_after_s = 600
R = [
    # no run.json yet
    (None, True, "lsf", "held", True, FRESH, False, False, "held"),
    (None, True, "lsf", "unknown", True, FRESH, False, False, "unknown"),
    (None, True, "lsf", "suspended", True, FRESH, False, False, "suspended"),
    (None, True, "lsf", "exited", True, FRESH, False, False, "failed"),
    (None, True, "lsf", "exited", True, FRESH, True, False, "failed"),  # exited wins over blocked
    (None, True, "lsf", "held", True, FRESH, True, False, "held"),
    (None, True, "lsf", "running", True, FRESH, False, False, "running"),
    (None, True, "lsf", "running", True, FRESH, True, False, "running"),  # running wins over blocked
    (None, True, "lsf", "pending", True, FRESH, True, False, "blocked"),
    (None, True, "lsf", None, True, FRESH, True, False, "blocked"),
    (None, False, "lsf", None, False, FRESH, True, False, "blocked"),
    (None, True, "lsf", "pending", True, FRESH, False, False, "queued"),
    (None, False, "lsf", "pending", True, FRESH, False, False, "queued"),
    (None, True, "lsf", None, True, FRESH, False, False, "queued"),
    (None, True, "local", None, False, FRESH, False, False, "queued"),
    (None, False, None, None, False, FRESH, False, False, "-"),
    (None, False, "lsf", None, True, FRESH, False, False, "-"),
    # run.json says running
    ("running", True, "lsf", "held", True, FRESH, False, False, "held"),
    ("running", True, "lsf", "unknown", True, OLD, False, True, "unknown"),
    ("running", True, "lsf", "suspended", True, OLD, False, False, "suspended"),
    ("running", True, "lsf", "exited", True, FRESH, False, True, "failed"),
    ("running", True, "lsf", "pending", True, FRESH, False, False, "requeued"),
    ("running", True, "lsf", "pending", True, OLD, False, True, "requeued"),  # requeue wins over stale and lock
    ("running", True, "local", None, False, FRESH, False, True, "stopped"),
    ("running", True, "local", None, False, OLD, False, True, "stopped"),  # stopped wins over stale
    ("running", True, "lsf", None, True, FRESH, False, True, "stopped"),
    ("running", True, "lsf", "running", True, FRESH, False, True, "running"),  # lock asked only when sched is None
    ("running", True, "lsf", "running", True, OLD, False, True, "stale"),
    ("running", True, "local", None, False, FRESH, False, False, "running"),
    ("running", True, "local", None, False, OLD, False, False, "stale"),
    ("running", False, None, None, False, OLD, False, False, "stale"),
    ("running", True, "lsf", "running", True, FRESH, True, False, "running"),  # blocked matters only before run.json
    # run.json says preempted
    ("preempted", True, "lsf", "held", True, OLD, False, False, "held"),
    ("preempted", True, "lsf", "unknown", True, FRESH, False, False, "unknown"),
    ("preempted", True, "lsf", "suspended", True, FRESH, False, False, "requeued"),
    ("preempted", True, "lsf", "pending", True, FRESH, False, False, "requeued"),
    ("preempted", True, "lsf", "running", True, FRESH, False, False, "requeued"),
    ("preempted", True, "slurm", "pending", True, FRESH, False, False, "requeued"),
    ("preempted", True, "lsf", None, True, FRESH, False, False, "preempted"),  # left the queue
    ("preempted", True, "lsf", "exited", True, FRESH, False, False, "preempted"),
    ("preempted", True, "lsf", None, False, FRESH, False, False, "requeued"),  # the scheduler cannot tell
    ("preempted", True, "slurm", None, False, FRESH, False, False, "requeued"),
    ("preempted", True, "lsf", "exited", False, FRESH, False, False, "requeued"),
    ("preempted", True, "local", None, False, FRESH, False, False, "preempted"),
    ("preempted", True, "local", "pending", True, FRESH, False, False, "preempted"),  # not a scheduler
    ("preempted", False, None, None, False, FRESH, False, False, "preempted"),
    # run.json ended: it says the rest, whatever the queue says
    ("done", True, "lsf", "held", True, OLD, False, True, "done"),
    ("done", True, "lsf", "unknown", True, FRESH, True, False, "done"),
    ("done", True, "lsf", "suspended", True, FRESH, False, False, "done"),
    ("done", True, "lsf", "exited", True, FRESH, False, False, "done"),
    ("done", True, "lsf", "pending", True, FRESH, False, False, "done"),
    ("done", True, "lsf", "running", True, FRESH, False, False, "done"),
    ("failed", True, "lsf", "held", True, FRESH, False, False, "failed"),
    ("failed", True, "lsf", "suspended", True, FRESH, False, False, "failed"),
    ("failed", True, "lsf", "pending", True, FRESH, False, False, "failed"),
    ("diverged", True, "lsf", "unknown", True, FRESH, False, False, "diverged"),
    ("diverged", True, "slurm", "running", True, FRESH, False, False, "diverged"),
]


@pytest.mark.parametrize("status, launched, backend, sched, known, age, blocked, free, want", R)
def test_run_state_branches(status, launched, backend, sched, known, age, blocked, free, want):
    info = {"updated": iso_ago(age), **({"status": status} if status else {})}
    assert st.run_state(info, launched, backend, sched, known, 600, blocked, free) == want


def test_run_state_defaults_are_not_blocked_and_lock_not_free():
    assert st.run_state({}, True, "lsf", None, True, 600) == "queued"
    assert st.run_state({"status": "running", "updated": iso_ago(5)}, True, "local", None, False, 600) == "running"


@pytest.mark.parametrize("updated, stale_after, want", [
    (600, 600, "running"), (601, 600, "stale"), (599, 600, "running"), (0, 0, "running"), (1, 0, "stale"),
    (30, 60, "running"), (90, 60, "stale")])  # fmt: skip
def test_stale_is_strictly_older_than_stale_after(frozen, updated, stale_after, want):
    info = {"status": "running", "updated": at(updated)}
    assert st.run_state(info, True, "local", None, False, stale_after) == want


@pytest.mark.parametrize("updated", [None, "", "not a time", "2026-13-45T99:00:00"])
def test_a_running_run_without_a_readable_heartbeat_is_running(updated):
    assert st.run_state({"status": "running", "updated": updated}, True, "local", None, False, 0) == "running"
    assert st.run_state({"status": "running"}, True, "local", None, False, 0) == "running"


# ---------------------------------------------------------------------------------------------------------
# _age, _typed, _scheduler_states


def test_age(frozen):
    assert st._age(None) is None
    assert st._age("") is None
    assert st._age("yesterday") is None
    assert st._age(at(90)) == 90.0
    assert st._age("2026-01-01T11:58:00") == 120.0  # no time zone: UTC
    assert st._age("2026-01-01T13:00:00+02:00") == 3600.0
    assert st._age("2026-01-01T12:00:30+00:00") == -30.0


def test_age_against_the_real_clock():
    assert 100 <= st._age(iso_ago(100)) < 110
    naive = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=50)).replace(tzinfo=None).isoformat()
    assert 50 <= st._age(naive) < 60


def test_typed_drops_a_value_of_another_type():
    info = {"status": "running", "epoch": 3, "epochs": 10, "best_val_mse": 1, "updated": "t", "epoch_time_s": 2.5,
            "checkpoint_s": 4, "attempts": 2, "error": "e", "job_id": "101[1]", "host": 7, "extra": True}
    assert st._typed(info) == info  # right types, and fields the table does not show, whatever their type
    assert st._typed({k: None for k in st._FIELDS}) == {k: None for k in st._FIELDS}
    wrong = {"status": 1, "epoch": "3", "epochs": 10.0, "best_val_mse": "0.1", "updated": 5, "epoch_time_s": "2",
             "checkpoint_s": [1], "attempts": 1.5, "error": {"x": 1}, "job_id": 101}
    assert st._typed(wrong) == {}
    bools = {k: True for k in st._FIELDS}
    assert st._typed(bools) == {}  # a bool is an int to Python, not to the table
    assert st._typed({"epoch": False, "best_val_mse": False, "epochs": 0, "other": False}) == {"epochs": 0, "other": False}


def test_scheduler_states_asks_the_scheduler_only_for_our_jobs(monkeypatch):
    asked = []

    def jobs(ids):
        asked.append(ids)
        return {("101", 1): QueueJob("running")}

    monkeypatch.setattr(SCHEDULERS["lsf"], "jobs", jobs)
    assert st._scheduler_states("lsf", set()) is None
    assert st._scheduler_states("local", {"101"}) is None
    assert asked == []
    assert st._scheduler_states("lsf", {"101", "102"}) == {("101", 1): QueueJob("running")}
    assert asked == [{"101", "102"}]


# ---------------------------------------------------------------------------------------------------------
# prepare_state


def sub_with_prepare(tmp_path: Path, backend: str = "lsf", report: bool = True) -> dict:
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    return {"backend": backend, "logs": str(logs), "prepare": {"job_id": "100", "name": "t-prepare"},
            "jobs": [{"name": "t-F1", "job_id": "101", "entries": [1, 2]}, {"name": "t-F2", "job_id": "103", "entries": [3]}],
            "report": {"job_id": "102"} if report else None}  # fmt: skip


def test_prepare_state_without_a_prepare_job(tmp_path):
    assert st.prepare_state({"backend": "lsf"}, None) == ("none", None)
    assert st.prepare_state({"backend": "lsf", "prepare": None}, {("100", 0): QueueJob("pending")}) == ("none", None)


@pytest.mark.parametrize("state", ["pending", "running", "held", "suspended", "unknown"])
def test_prepare_state_while_the_scheduler_lists_the_job(tmp_path, state):
    sub = sub_with_prepare(tmp_path)
    (tmp_path / "logs" / "t-prepare_100.log").write_text("imginav: prepare exited 1\n")  # the queue wins
    states = {("100", 0): QueueJob(state), ("101", 1): QueueJob("exited")}
    assert st.prepare_state(sub, states) == (
        "waiting", f"prepare job 100 is {state}; the arrays wait for it (log: {tmp_path}/logs/t-prepare_100.log)")


@pytest.mark.parametrize("text", ["imginav: prepare exited 0\n",
                                  "decoding\nimginav: prepare exited 3\nretry\nimginav: prepare exited 0\n"])  # fmt: skip
@pytest.mark.parametrize("states", [None, {}, {("100", 0): QueueJob("exited")}, {("100", 1): QueueJob("running")}])
def test_prepare_state_done(tmp_path, text, states):
    sub = sub_with_prepare(tmp_path)
    (tmp_path / "logs" / "t-prepare_100.log").write_text(text)
    assert st.prepare_state(sub, states) == ("done", None)


def test_prepare_state_unknown_without_an_end_and_a_scheduler(tmp_path):
    sub = sub_with_prepare(tmp_path)
    want = ("unknown", f"prepare job 100: no end in its log yet and no scheduler to ask (log: {tmp_path}/logs/t-prepare_100.log)")
    assert st.prepare_state(sub, None) == want  # no log yet
    (tmp_path / "logs" / "t-prepare_100.log").write_text("decoding 4 images\n  imginav: prepare exited 0\n")
    assert st.prepare_state(sub, None) == want  # the end line is a line of its own


def test_prepare_state_failed_with_its_exit_code_and_last_line(tmp_path):
    sub = sub_with_prepare(tmp_path)
    log = tmp_path / "logs" / "t-prepare_100.log"
    log.write_text("decoding\nimginav: prepare exited 0\nOSError: disk full\n\n   \nimginav: prepare exited 2\n")
    want = ("failed", "prepare job 100 failed (exit 2): OSError: disk full\n"
            f"  log: {log}\n  the arrays never start; the arrays and the report wait for ever: bkill 101 103 102; "
            "fix it, then run `imginav run` again")  # fmt: skip
    assert st.prepare_state(sub, None) == want
    assert st.prepare_state(sub, {}) == want
    assert st.prepare_state(sub, {("100", 0): QueueJob("exited")}) == want


def test_prepare_state_failed_on_slurm_without_a_report_job(tmp_path):
    sub = sub_with_prepare(tmp_path, backend="slurm", report=False)
    log = tmp_path / "logs" / "t-prepare_100.log"
    log.write_text("x" * 400 + "\nimginav: prepare exited 137\n")
    assert st.prepare_state(sub, {}) == (
        "failed", f"prepare job 100 failed (exit 137): {'x' * 300}\n  log: {log}\n  the arrays never start; "
        "SLURM cancelled the arrays and the report; fix it, then run `imginav run` again")  # fmt: skip


def test_prepare_state_failed_without_an_end_line(tmp_path):
    """The scheduler no longer lists the job and its log has no end: killed. No log: its .err is shown."""
    sub = sub_with_prepare(tmp_path, report=False)
    log = tmp_path / "logs" / "t-prepare_100.log"
    tail = "  the arrays never start; the arrays and the report wait for ever: bkill 101 103; fix it, then run `imginav run` again"
    assert st.prepare_state(sub, {}) == (
        "failed", "prepare job 100 failed (it ended without finishing: killed (walltime, memory)?): no output\n"
        f"  log: {tmp_path}/logs/t-prepare_100.err\n" + tail)  # fmt: skip
    log.write_text("decoding 1/4\ndecoding 2/4\n")
    assert st.prepare_state(sub, {("100", 0): QueueJob("exited")}) == (
        "failed", "prepare job 100 failed (it ended without finishing: killed (walltime, memory)?): decoding 2/4\n"
        f"  log: {log}\n" + tail)  # fmt: skip
    sub["jobs"] = []
    assert st.prepare_state(sub, {})[1].endswith("wait for ever: bkill ; fix it, then run `imginav run` again")


# ---------------------------------------------------------------------------------------------------------
# _notes


def test_notes_say_why_a_pending_run_waits():
    both = QueueJob("pending", "PEND", pend_reason="Job slot limit reached", start="Jan  1 13:00")
    assert st._notes("queued", "lsf", "101", 2, {}, None, both) == [
        "waits: LSF says: Job slot limit reached; estimated start Jan  1 13:00"]
    assert st._notes("queued", "lsf", "101", 2, {}, None, QueueJob("pending", pend_reason="r")) == ["waits: LSF says: r"]
    assert st._notes("queued", "lsf", "101", 2, {}, None, QueueJob("pending", start="soon")) == ["waits: estimated start soon"]
    assert st._notes("queued", "lsf", "101", 2, {}, None, QueueJob("pending")) == []
    assert st._notes("running", "lsf", "101", 2, {}, None, QueueJob("running", pend_reason="r", start="s")) == []
    assert st._notes("queued", "lsf", "101", 2, {}, None, None) == []


def test_notes_on_a_suspended_run():
    assert st._notes("suspended", "lsf", "101", 3, {}, None, QueueJob("suspended", "USUSP")) == [
        "suspended by its owner or an admin (USUSP, bstop): resume with: bresume '101[3]'"]
    assert st._notes("suspended", "lsf", "101", 3, {}, None, QueueJob("suspended", "SSUSP")) == [
        "suspended by LSF (SSUSP: host load or preemption); LSF resumes it by itself (bjobs -s 101 says why)"]
    assert st._notes("suspended", "lsf", "101", 3, {}, None, None) == []
    assert st._notes("running", "lsf", "101", 3, {}, None, QueueJob("suspended", "USUSP")) == []


def test_notes_on_a_run_the_scheduler_ended():
    mem = QueueJob("exited", "EXIT", 137, "TERM_MEMLIMIT: job killed after reaching LSF memory usage limit")
    words = ("killed: over its memory reservation, raise mem_per_core_gb (LSF: TERM_MEMLIMIT: job killed after reaching "
             "LSF memory usage limit, exit 137)")
    assert st._notes("failed", "lsf", "101", 9, {}, None, mem) == [f"failed before training (no run.json): {words}"]
    assert st._notes("failed", "lsf", "101", 9, {"status": None}, None, mem) == [f"failed before training (no run.json): {words}"]
    assert st._notes("failed", "lsf", "101", 9, {"status": "running"}, None, mem) == [f"failed: {words}"]
    assert st._notes("failed", "lsf", "101", 9, {}, None, QueueJob("exited")) == [
        "failed before training (no run.json): ended with an error (LSF: EXIT, no reason given)"]
    assert st._notes("failed", "lsf", "101", 9, {}, None, None) == []
    assert st._notes("failed", "lsf", "101", 9, {}, None, QueueJob("running")) == []
    assert st._notes("done", "lsf", "101", 9, {}, None, mem) == []


def test_notes_on_stopped_held_and_unknown_runs():
    assert st._notes("stopped", "local", None, 1, {}, None) == [
        "its run lock is free: no process trains it (killed?); run `imginav run` again to resume it"]
    assert st._notes("held", "lsf", "101", 3, {}, None) == [
        "held after too many requeues or by bstop: release with: bresume '101[3]' (the report waits for it)"]
    assert st._notes("held", "slurm", "7", 4, {}, None, QueueJob("held")) == [
        "held (REQUEUE_HOLD): release with: scontrol release 7_4 (the report waits for it)"]
    assert st._notes("unknown", "lsf", "101", 6, {}, None) == ["unknown to LSF (UNKWN/ZOMBI): ask the admins"]
    for state in ("running", "queued", "done", "-", "requeued", "stale", "preempted", "blocked"):
        assert st._notes(state, "lsf", "101", 1, {}, None) == [], state


SLOW = "a checkpoint takes 5:01, more than half of warning_minutes (10): the final kill may come before a stop " \
       "request is served; raise cluster.warning_minutes"  # fmt: skip


@pytest.mark.parametrize("state", ["running", "queued", "stale", "requeued", "stopped", "preempted", "suspended", "-"])
def test_notes_on_a_checkpoint_too_slow_for_the_warning(state):
    base = st._notes(state, "lsf", "101", 1, {}, 10)  # the state's own note (stopped), if any
    assert st._notes(state, "lsf", "101", 1, {"checkpoint_s": 301}, 10) == base + [SLOW]
    for info, warning in (({"checkpoint_s": 300}, 10), ({"checkpoint_s": 299.5}, 10), ({"checkpoint_s": 301}, None),
                          ({"checkpoint_s": 301}, 0), ({"checkpoint_s": None}, 10), ({"checkpoint_s": 0}, 10)):  # fmt: skip
        assert st._notes(state, "lsf", "101", 1, info, warning) == base, (info, warning)  # exactly half: in time
    assert st._notes(state, "lsf", "101", 1, {"checkpoint_s": 3601}, 1) == base + [
        "a checkpoint takes 1:00:01, more than half of warning_minutes (1): the final kill may come before a stop "
        "request is served; raise cluster.warning_minutes"]  # fmt: skip


@pytest.mark.parametrize("state", ["done", "failed", "diverged"])
def test_no_checkpoint_note_once_a_run_ended(state):
    assert st._notes(state, "lsf", "101", 1, {"checkpoint_s": 301}, 10) == []


def test_notes_come_in_order():
    job = QueueJob("pending", pend_reason="r")
    assert st._notes("held", "lsf", "101", 2, {"checkpoint_s": 301}, 10, job) == [
        "waits: LSF says: r",
        "held after too many requeues or by bstop: release with: bresume '101[2]' (the report waits for it)", SLOW]
    assert st._notes("unknown", "lsf", "101", 2, {"checkpoint_s": 301}, 10) == ["unknown to LSF (UNKWN/ZOMBI): ask the admins", SLOW]


# ---------------------------------------------------------------------------------------------------------
# _phase_dirs, _queued_eta


def test_phase_dirs(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "index.json").write_text("{}")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "index.json").write_text("{}")
    (tmp_path / "c" / "deeper").mkdir(parents=True)
    (tmp_path / "c" / "deeper" / "index.json").write_text("{}")  # two levels down: not a phase of this root
    (tmp_path / "d").mkdir()
    (tmp_path / "e").mkdir()
    assert st._phase_dirs(tmp_path) == [tmp_path / "a", tmp_path / "b"]
    assert st._phase_dirs(tmp_path / "c") == [tmp_path / "c" / "deeper"]
    assert st._phase_dirs(tmp_path / "b") == [tmp_path / "b"]
    (tmp_path / "index.json").write_text("{}")
    assert st._phase_dirs(tmp_path) == [tmp_path]  # a phase folder itself, whatever is under it
    with pytest.raises(InputError) as e:
        st._phase_dirs(tmp_path / "e")
    assert str(e.value) == f"{tmp_path / 'e'}: no index.json here or in its subfolders (pass <runs root>/<phase>)"
    (tmp_path / "d" / "index.json").mkdir()  # a folder named index.json is not an index
    with pytest.raises(InputError):
        st._phase_dirs(tmp_path / "d")


def test_queued_eta_without_finished_runs():
    runs = [{"experiment": "A"}, {"experiment": "B"}]
    assert st._queued_eta(runs, [{}, {}]) == {}
    assert st._queued_eta(runs, [{"status": "running", "epoch_time_s": 2.0, "epochs": 10}, {}]) == {}
    assert st._queued_eta(runs, [{"status": "done", "epoch_time_s": None, "epochs": 10},
                                 {"status": "done", "epoch_time_s": 2.0, "epochs": 0}]) == {}  # fmt: skip
    assert st._queued_eta(runs, [{"status": "done", "epochs": 10}, {"status": "done", "epoch_time_s": 2.0}]) == {}
    assert st._queued_eta(runs, [{"status": "failed", "epoch_time_s": 2.0, "epochs": 10}, {}]) == {}


def test_queued_eta_is_mean_epoch_time_times_mean_epochs():
    runs = [{"experiment": e} for e in ("A", "A", "A", "A", "B", "C", "C")]
    infos = [{"status": "done", "epoch_time_s": 2.0, "epochs": 10}, {"status": "done", "epoch_time_s": 4.0, "epochs": 20},
             {"status": "running", "epoch_time_s": 100.0, "epochs": 100}, {},
             {"status": "done", "epoch_time_s": 10.0, "epochs": 1},
             {"status": "done", "epoch_time_s": 0, "epochs": 50}, {"status": "done", "epoch_time_s": 7.0}]  # fmt: skip
    eta = st._queued_eta(runs, infos)
    assert set(eta) == {"A", "B", "C"}
    assert eta["A"] == 3.0 * 15.0  # not the mean of 2*10 and 4*20
    assert eta["B"] == 10.0
    # C has no finished run with both numbers: every experiment's, (2 + 4 + 10) / 3 s x (10 + 20 + 1) / 3 epochs
    assert eta["C"] == pytest.approx(16 / 3 * 31 / 3)


def test_queued_eta_of_a_single_finished_run():
    assert st._queued_eta([{"experiment": "A"}, {"experiment": "B"}],
                          [{"status": "done", "epoch_time_s": 2.5, "epochs": 4}, {}]) == {"A": 10.0, "B": 10.0}  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# status_rows and print_status on hand-built phase folders


def write_phase(phase_dir: Path, runs: list[tuple[str, int]], infos: dict[int, dict | str], subs: list[dict] | None = None,
                run_dirs_elsewhere: Path | None = None) -> Path:  # fmt: skip
    """index.json of `runs` (experiment, seed), run.json of each entry in `infos` (1-based; a str is written as it
    is) and submission.json of `subs`."""
    base = run_dirs_elsewhere or phase_dir
    entries = [{"experiment": e, "seed": s, "run_dir": str(base / e / f"seed{s}")} for e, s in runs]
    phase_dir.mkdir(parents=True, exist_ok=True)
    (phase_dir / "index.json").write_text(json.dumps({"phase": phase_dir.name, "params_file": "params.yaml",
                                                      "params_hash": "h", "runs": entries}))  # fmt: skip
    for i, info in infos.items():
        d = Path(entries[i - 1]["run_dir"])
        d.mkdir(parents=True, exist_ok=True)
        (d / "run.json").write_text(info if isinstance(info, str) else json.dumps(info))
    if subs is not None:
        (phase_dir / "submission.json").write_text(json.dumps({"submissions": subs}))
    return phase_dir


@pytest.fixture
def queue(monkeypatch):
    """The scheduler's answer, per backend: set `queue["lsf"] = {...}` (None: cannot tell); `queue.asked` records
    the job ids each backend was asked about."""
    answers: dict = {"lsf": {}, "slurm": {}}
    asked: list = []
    for name in ("lsf", "slurm"):
        monkeypatch.setattr(SCHEDULERS[name], "jobs", lambda ids, name=name: asked.append((name, set(ids))) or answers[name])
    return types.SimpleNamespace(answers=answers, asked=asked)


HEADER = ["#", "experiment", "seed", "state", "epoch", "best val MSE", "last update (UTC)", "job", "attempts", "ETA"]
DONE = {"status": "done", "epoch": 10, "epochs": 10, "epoch_time_s": 2.0, "best_val_mse": 0.00412345, "updated": at(3600),
        "attempts": 1, "job_id": "101[3]"}  # fmt: skip


@pytest.fixture
def lsf_phase(tmp_path, frozen, queue):
    """Seven runs submitted to LSF (array 101: entries 1-5, its prepare job 100 ended well, report 102), one run of
    another experiment never submitted; the queue lists entries 1, 2 and 7 of an array 104 submitted later."""
    logs = tmp_path / "p" / "logs"
    logs.mkdir(parents=True)
    (logs / "t-prepare_100.log").write_text("decoding\nimginav: prepare exited 0\n")
    subs = [{"backend": "lsf", "logs": str(logs), "warning_minutes": 10, "prepare": {"job_id": "100", "name": "t-prepare"},
             "jobs": [{"name": "t-F1", "job_id": "101", "entries": [1, 2, 3, 4, 5]}], "report": {"job_id": "102"},
             "entries": [1, 2, 3, 4, 5]},
            {"backend": "lsf", "logs": str(logs), "warning_minutes": 10, "prepare": None,
             "jobs": [{"name": "t-F2", "job_id": "104", "entries": [6, 7]}], "report": None, "entries": [6, 7]}]  # fmt: skip
    infos = {
        1: {"status": "running", "epoch": 2, "epochs": 10, "epoch_time_s": 3.0, "best_val_mse": 0.0123456,
            "updated": at(65), "attempts": 1, "checkpoint_s": 400.0},
        3: DONE,
        4: {"status": "running", "epoch": 4, "epochs": 10, "epoch_time_s": 5.0, "updated": at(7200), "attempts": 2,
            "error": "earlier attempt: OOM"},
        5: {"status": "failed", "epoch": 1, "epochs": 10, "error": "ValueError: x" * 50, "updated": at(60),
            "attempts": True},
        6: {"status": "preempted", "epoch": 5, "epochs": 8, "epoch_time_s": 4.0, "updated": at(30), "job_id": "99[6]"},
    }  # fmt: skip
    phase = write_phase(tmp_path / "p", [("F1", 1), ("F1", 2), ("F1", 3), ("F1", 4), ("F1", 5), ("F2", 1), ("F2", 2), ("F3", 1)],
                        infos, subs)  # fmt: skip
    queue.answers["lsf"] = {("101", 1): QueueJob("running", "RUN"),
                            ("101", 2): QueueJob("pending", "PEND", pend_reason="Job slot limit reached"),
                            ("104", 6): QueueJob("pending", "PEND"),
                            ("104", 7): QueueJob("exited", "EXIT", 1, None)}  # fmt: skip
    return phase


def test_status_rows_of_an_lsf_phase(lsf_phase, queue):
    rows = st.status_rows(lsf_phase, 600)
    logs = lsf_phase / "logs"
    assert queue.asked == [("lsf", {"100", "101", "104"})]
    assert [r["i"] for r in rows] == list(range(1, 9))
    assert [(r["experiment"], r["seed"]) for r in rows] == [("F1", 1), ("F1", 2), ("F1", 3), ("F1", 4), ("F1", 5),
                                                            ("F2", 1), ("F2", 2), ("F3", 1)]  # fmt: skip
    assert [r["state"] for r in rows] == ["running", "queued", "done", "stale", "failed", "requeued", "failed", "-"]
    assert [r["epoch"] for r in rows] == [2, 0, 10, 4, 1, 5, 0, 0]
    assert [r["epochs"] for r in rows] == [10, None, 10, 10, 10, 8, None, None]
    assert [r["best_val_mse"] for r in rows] == [0.0123456, None, 0.00412345, None, None, None, None, None]
    assert [r["updated"] for r in rows] == [at(65), None, at(3600), at(7200), at(60), at(30), None, None]
    assert [r["age_s"] for r in rows] == [65.0, None, 3600.0, 7200.0, 60.0, 30.0, None, None]
    assert [r["job_id"] for r in rows] == ["101[1]", "101[2]", "101[3]", "101[4]", "101[5]", "99[6]", "104[7]", None]
    # running: 8 epochs left x 3 s; queued: F1's finished run, 2 s x 10 epochs; stale: 6 x 5 s; requeued: 3 x 4 s
    assert [r["eta_s"] for r in rows] == [24.0, 20.0, None, 30.0, None, 12.0, None, None]
    assert [r["attempts"] for r in rows] == [1, None, 1, 2, None, None, None, None]  # a bool is not a count
    assert [r["error"] for r in rows] == [None, None, None, "earlier attempt: OOM", "ValueError: x" * 50, None, None, None]
    assert [r["log"] for r in rows] == [logs / "t-F1_101_1.log", None, None, logs / "t-F1_101_4.log",
                                        logs / "t-F1_101_5.log", None, logs / "t-F2_104_7.log", None]  # fmt: skip
    assert [r["notes"] for r in rows] == [
        ["a checkpoint takes 6:40, more than half of warning_minutes (10): the final kill may come before a stop "
         "request is served; raise cluster.warning_minutes"],
        ["waits: LSF says: Job slot limit reached"], [], [], [], [],
        ["failed before training (no run.json): ended with exit code 1 (LSF: exit 1)"], []]  # fmt: skip
    assert [r["prepare"] for r in rows] == [None] * 8  # prepare ended well; the second submission has none
    assert set(rows[0]) == {"i", "experiment", "seed", "state", "epoch", "epochs", "best_val_mse", "updated", "age_s",
                            "job_id", "eta_s", "attempts", "error", "log", "notes", "prepare"}  # fmt: skip


def test_print_status_of_an_lsf_phase(lsf_phase, capsys):
    calls = []
    assert st.print_status(lsf_phase, 600, verdict=lambda p: calls.append(p) or "Verdict so far: F1 (done)\n") == 0
    out = capsys.readouterr().out
    logs = lsf_phase / "logs"
    table = text_table(HEADER, [
        [1, "F1", 1, "running", "2/10", "0.012346", "11:58:55 (1:05 ago)", "101[1]", 1, "0:24"],
        [2, "F1", 2, "queued", "0/?", "-", "-", "101[2]", "-", "0:20"],
        [3, "F1", 3, "done", "10/10", "0.0041234", "11:00:00 (1:00:00 ago)", "101[3]", 1, "-"],
        [4, "F1", 4, "stale", "4/10", "-", "10:00:00 (2:00:00 ago)", "101[4]", 2, "0:30"],
        [5, "F1", 5, "failed", "1/10", "-", "11:59:00 (1:00 ago)", "101[5]", "-", "-"],
        [6, "F2", 1, "requeued", "5/8", "-", "11:59:30 (0:30 ago)", "99[6]", "-", "0:12"],
        [7, "F2", 2, "failed", "0/?", "-", "-", "104[7]", "-", "-"],
        [8, "F3", 1, "-", "0/?", "-", "-", "-", "-", "-"]])  # fmt: skip
    assert out == (
        f"{lsf_phase}\n{table}\n"
        "1 running, 1 queued, 1 done, 1 stale, 2 failed, 1 requeued, 1 -\n"
        f"  F1 seed 1: log: {logs / 't-F1_101_1.log'}\n"
        "  F1 seed 1: a checkpoint takes 6:40, more than half of warning_minutes (10): the final kill may come before "
        "a stop request is served; raise cluster.warning_minutes\n"
        "  F1 seed 2: waits: LSF says: Job slot limit reached\n"
        f"  F1 seed 4: log: {logs / 't-F1_101_4.log'}\n"
        "  F1 seed 4: earlier attempt: OOM\n"
        f"  F1 seed 5: log: {logs / 't-F1_101_5.log'}\n"
        f"  F1 seed 5: {('ValueError: x' * 50)[:400]}\n"
        f"  F2 seed 2: log: {logs / 't-F2_104_7.log'}\n"
        "  F2 seed 2: failed before training (no run.json): ended with exit code 1 (LSF: exit 1)\n"
        "Verdict so far: F1 (done)\n")  # fmt: skip
    assert calls == [lsf_phase]


def test_no_verdict_before_a_run_finished(tmp_path, frozen, queue, capsys):
    phase = write_phase(tmp_path / "p", [("F1", 1), ("F1", 2)], {1: {"status": "failed", "error": "E", "epochs": 10}})
    calls = []
    assert st.print_status(phase, verdict=lambda p: calls.append(p) or "never\n") == 0
    out = capsys.readouterr().out
    assert calls == [] and "never" not in out
    assert out == (f"{phase}\n" + text_table(HEADER, [[1, "F1", 1, "failed", "0/10", "-", "-", "-", "-", "-"],
                                                       [2, "F1", 2, "-", "0/?", "-", "-", "-", "-", "-"]])  # fmt: skip
                   + "\n1 failed, 1 -\n  F1 seed 1: E\n")
    phase2 = write_phase(tmp_path / "q", [("F1", 1)], {1: DONE})
    assert st.print_status(phase2) == 0  # no verdict callback: nothing more printed
    assert capsys.readouterr().out.endswith("\n1 done\n")


def test_a_failed_prepare_job_blocks_every_run_not_started(tmp_path, frozen, queue, capsys):
    logs = tmp_path / "p" / "logs"
    logs.mkdir(parents=True)
    (logs / "t-prepare_100.log").write_text("MemoryError\nimginav: prepare exited 1\n")
    sub = {"backend": "lsf", "logs": str(logs), "warning_minutes": 10, "prepare": {"job_id": "100", "name": "t-prepare"},
           "jobs": [{"name": "t-F1", "job_id": "101", "entries": [1, 2, 3]}], "report": {"job_id": "102"}, "entries": [1, 2, 3]}
    phase = write_phase(tmp_path / "p", [("F1", 1), ("F1", 2), ("F1", 3), ("F1", 4)], {3: DONE}, [sub])
    queue.answers["lsf"] = {("101", 1): QueueJob("pending", pend_reason="Dependency condition invalid or never satisfied")}
    rows = st.status_rows(phase, 600)
    assert [r["state"] for r in rows] == ["blocked", "blocked", "done", "-"]
    message = (f"prepare job 100 failed (exit 1): MemoryError\n  log: {logs / 't-prepare_100.log'}\n  the arrays never "
               "start; the arrays and the report wait for ever: bkill 101 102; fix it, then run `imginav run` again")  # fmt: skip
    assert [r["prepare"] for r in rows] == [message, message, message, None]
    assert rows[0]["notes"] == ["waits: LSF says: Dependency condition invalid or never satisfied"]
    assert [r["eta_s"] for r in rows] == [None, None, None, None]  # blocked: no ETA
    assert st.print_status(phase) == 0
    out = capsys.readouterr().out
    assert out.count(message) == 1  # once per submission
    assert out.endswith(f"2 blocked, 1 done, 1 -\n  {message}\n"
                        "  F1 seed 1: waits: LSF says: Dependency condition invalid or never satisfied\n")


def test_a_prepare_job_still_queued_is_told_once(tmp_path, frozen, queue, capsys):
    logs = tmp_path / "p" / "logs"
    sub = {"backend": "slurm", "logs": str(logs), "prepare": {"job_id": "7", "name": "t-prepare"},
           "jobs": [{"name": "t-F1", "job_id": "8", "entries": [1, 2]}], "report": None, "entries": [1, 2]}
    phase = write_phase(tmp_path / "p", [("F1", 1), ("F1", 2)], {}, [sub])
    queue.answers["slurm"] = {("7", 0): QueueJob("running"), ("8", 1): QueueJob("pending"), ("8", 2): QueueJob("held")}
    rows = st.status_rows(phase, 600)
    assert queue.asked == [("slurm", {"7", "8"})]
    assert [r["state"] for r in rows] == ["queued", "held"]
    message = f"prepare job 7 is running; the arrays wait for it (log: {logs / 't-prepare_7.log'})"
    assert [r["prepare"] for r in rows] == [message, message]
    assert rows[1]["notes"] == ["held (REQUEUE_HOLD): release with: scontrol release 8_2 (the report waits for it)"]
    st.print_status(phase)
    assert capsys.readouterr().out.endswith(
        f"1 queued, 1 held\n  {message}\n"
        "  F1 seed 2: held (REQUEUE_HOLD): release with: scontrol release 8_2 (the report waits for it)\n")


def test_the_scheduler_cannot_tell(tmp_path, frozen, queue):
    """bjobs gave no answer: a preempted run counts as requeued, a run not started as queued (it was launched)."""
    sub = {"backend": "lsf", "logs": str(tmp_path / "logs"), "jobs": [{"name": "t-F1", "job_id": "101", "entries": [1, 2, 3]}],
           "entries": [1, 2, 3]}  # fmt: skip
    phase = write_phase(tmp_path / "p", [("F1", 1), ("F1", 2), ("F1", 3)],
                        {1: {"status": "preempted", "epochs": 10, "epoch": 3, "epoch_time_s": 1.0, "updated": at(5)},
                         2: {"status": "running", "epochs": 10, "epoch": 3, "epoch_time_s": 1.0, "updated": at(5)}}, [sub])  # fmt: skip
    queue.answers["lsf"] = None
    rows = st.status_rows(phase, 600)
    assert [r["state"] for r in rows] == ["requeued", "running", "queued"]
    assert [r["eta_s"] for r in rows] == [7.0, 7.0, None]  # no finished run: no queued ETA
    queue.answers["lsf"] = {}  # every job left the queue
    assert [r["state"] for r in st.status_rows(phase, 600)] == ["preempted", "running", "queued"]


def test_a_later_submission_takes_over_its_entries(tmp_path, frozen, queue):
    logs = tmp_path / "logs"
    subs = [{"backend": "lsf", "logs": str(logs), "jobs": [{"name": "a", "job_id": "90", "entries": [1, 2]},
                                                           {"name": "b", "job_id": "91", "entries": [3]}]},
            {"backend": "lsf", "logs": str(logs), "entries": [2, 3], "jobs": [{"name": "c", "job_id": "95", "entries": [2]}]},
            {"backend": "slurm", "logs": str(logs), "jobs": [{"name": "d", "job_id": "80", "entries": [4]}]},
            {"backend": "slurm", "logs": str(logs), "jobs": [{"name": "e", "job_id": "81", "entries": [4]}]}]  # fmt: skip
    phase = write_phase(tmp_path / "p", [("F1", 1), ("F1", 2), ("F1", 3), ("F1", 4)], {}, subs)
    queue.answers["lsf"] = {("90", 1): QueueJob("pending"), ("90", 2): QueueJob("running"), ("95", 2): QueueJob("pending"),
                            ("91", 3): QueueJob("running")}  # fmt: skip
    queue.answers["slurm"] = {("80", 4): QueueJob("running"), ("81", 4): QueueJob("held")}
    rows = st.status_rows(phase, 600)
    assert sorted(queue.asked) == [("lsf", {"90", "91", "95"}), ("slurm", {"81"})]  # 80 is no entry's latest
    assert [r["job_id"] for r in rows] == ["90[1]", "95[2]", None, "81[4]"]
    # entry 3: the second submission lists it without a job (it failed before its array was submitted)
    assert [r["state"] for r in rows] == ["queued", "queued", "queued", "held"]
    assert rows[3]["notes"] == ["held (REQUEUE_HOLD): release with: scontrol release 81_4 (the report waits for it)"]


def test_local_runs_and_a_free_run_lock(tmp_path, frozen, queue, capsys):
    """A local pool's record: logs by experiment and seed; a run whose lock is free here is stopped."""
    logs = tmp_path / "p" / "logs"
    sub = {"backend": "local", "entries": [1, 2, 3, 4], "jobs": [], "logs": str(logs)}
    running = {"status": "running", "epoch": 1, "epochs": 4, "epoch_time_s": 10.0, "updated": at(20)}
    phase = write_phase(tmp_path / "p", [("F1", 1), ("F1", 2), ("F1", 3), ("F1", 4), ("F1", 5)],
                        {1: running, 2: running, 3: {**DONE, "job_id": None}, 4: {"status": "running", "epoch": 1, "updated": at(3000)}},
                        [sub])  # fmt: skip
    for i in (1, 3):
        with FolderLock(phase / "F1" / f"seed{i}", "training"):
            pass  # taken on this host and released: nobody trains there
    rows = st.status_rows(phase, 600)
    assert queue.asked == []
    assert [r["state"] for r in rows] == ["stopped", "running", "done", "stale", "-"]
    assert [r["eta_s"] for r in rows] == [None, 30.0, None, None, None]
    assert [r["log"] for r in rows] == [logs / "F1_seed1.log", logs / "F1_seed2.log", None, logs / "F1_seed4.log", None]
    assert [r["job_id"] for r in rows] == [None] * 5
    assert rows[0]["notes"] == ["its run lock is free: no process trains it (killed?); run `imginav run` again to resume it"]
    lock = json.loads((phase / "F1" / "seed1" / "run.lock").read_text())
    assert lock["host"] == socket.gethostname()
    st.print_status(phase)
    assert capsys.readouterr().out.endswith(
        "1 stopped, 1 running, 1 done, 1 stale, 1 -\n"
        f"  F1 seed 1: log: {logs / 'F1_seed1.log'}\n"
        "  F1 seed 1: its run lock is free: no process trains it (killed?); run `imginav run` again to resume it\n"
        f"  F1 seed 2: log: {logs / 'F1_seed2.log'}\n"
        f"  F1 seed 4: log: {logs / 'F1_seed4.log'}\n")


def test_a_submission_without_logs_shows_no_log(tmp_path, frozen, queue):
    phase = write_phase(tmp_path / "p", [("F1", 1)], {1: {"status": "running", "updated": at(1)}},
                        [{"backend": "local", "entries": [1], "jobs": []}])  # fmt: skip
    assert st.status_rows(phase, 600)[0]["log"] is None


def test_a_damaged_run_json_is_one_unreadable_row(tmp_path, frozen, queue, capsys):
    phase = write_phase(tmp_path / "p", [("F1", 1), ("F1", 2), ("F1", 3)],
                        {1: "[1, 2]", 2: DONE, 3: {"status": "running", "epoch": "two", "epochs": 10, "updated": 5}})  # fmt: skip
    rows = st.status_rows(phase, 600)
    damaged = f"{phase / 'F1' / 'seed1' / 'run.json'}: damaged record: a JSON list, not an object"
    assert [r["state"] for r in rows] == ["unreadable", "done", "running"]
    assert rows[0]["error"] == damaged
    assert (rows[2]["epoch"], rows[2]["updated"], rows[2]["age_s"]) == (0, None, None)  # hand-edited types left out
    st.print_status(phase)
    out = capsys.readouterr().out
    assert "\n1 unreadable, 1 done, 1 running\n" in out and out.endswith(f"  F1 seed 1: {damaged}\n")


def test_run_folders_elsewhere_and_next_to_the_index(tmp_path, frozen, queue):
    """index.json's run_dir is read when there is no folder next to index.json (a runs root elsewhere)."""
    elsewhere = tmp_path / "scratch"
    phase = write_phase(tmp_path / "p", [("F1", 1)], {1: DONE}, run_dirs_elsewhere=elsewhere)
    assert st.status_rows(phase, 600)[0]["state"] == "done"
    (phase / "F1" / "seed1").mkdir(parents=True)  # copied back: the folder next to index.json wins (no run.json yet)
    assert st.status_rows(phase, 600)[0]["state"] == "-"


def test_print_status_of_a_runs_root_prints_each_phase(tmp_path, frozen, queue, capsys):
    b = write_phase(tmp_path / "b", [("F1", 1)], {1: DONE})
    a = write_phase(tmp_path / "a", [("F2", 1)], {})
    calls = []
    assert st.print_status(str(tmp_path), verdict=lambda p: calls.append(p) or f"verdict of {p.name}\n") == 0
    out = capsys.readouterr().out
    assert calls == [b]
    assert out == (f"{a}\n" + text_table(HEADER, [[1, "F2", 1, "-", "0/?", "-", "-", "-", "-", "-"]]) + "\n1 -\n"
                   f"{b}\n" + text_table(HEADER, [[1, "F1", 1, "done", "10/10", "0.0041234", "11:00:00 (1:00:00 ago)",
                                                   "101[3]", 1, "-"]]) + "\n1 done\nverdict of b\n")  # fmt: skip


def test_print_status_of_a_folder_without_a_phase(tmp_path):
    with pytest.raises(InputError) as e:
        st.print_status(tmp_path)
    assert str(e.value) == f"{tmp_path}: no index.json here or in its subfolders (pass <runs root>/<phase>)"
    assert "\n" not in str(e.value)


def test_stale_after_reaches_the_rows(tmp_path, frozen, queue):
    phase = write_phase(tmp_path / "p", [("F1", 1)], {1: {"status": "running", "updated": at(100)}})
    assert st.status_rows(phase, 100)[0]["state"] == "running"
    assert st.status_rows(phase, 99)[0]["state"] == "stale"
    assert st.print_status(phase, 99) == 0


def test_a_heartbeat_that_is_no_time_shows_no_last_update(tmp_path, frozen, queue, capsys):
    phase = write_phase(tmp_path / "p", [("F1", 1)], {1: {"status": "running", "epoch": 1, "epochs": 2, "updated": "yesterday"}})
    row = st.status_rows(phase, 600)[0]
    assert (row["state"], row["updated"], row["age_s"]) == ("running", "yesterday", None)
    st.print_status(phase)
    assert capsys.readouterr().out == (f"{phase}\n" + text_table(HEADER, [[1, "F1", 1, "running", "1/2", "-", "-", "-", "-", "-"]])
                                       + "\n1 running\n")  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# busy_runs: what a second `imginav run` of the phase is told


def test_busy_runs(tmp_path, queue):
    from imginav_lib.runs import runfolder as rf
    from imginav_lib.runs.runlock import _describe

    sub = {"backend": "lsf", "logs": str(tmp_path / "logs"), "jobs": [{"name": "a", "job_id": "101", "entries": [1, 2, 3, 4, 5]}]}
    phase = write_phase(tmp_path / "p", [("F1", s) for s in range(1, 7)], {}, [sub])
    runs = json.loads((phase / "index.json").read_text())["runs"]
    queue.answers["lsf"] = {("101", 1): QueueJob("pending"), ("101", 2): QueueJob("running"), ("101", 3): QueueJob("exited"),
                            ("101", 5): QueueJob("held"), ("101", 6): QueueJob("running")}  # fmt: skip
    assert st.busy_runs(tmp_path / "nowhere", runs, [1, 2]) == []
    assert st.busy_runs(phase, runs, [1, 2, 3, 4, 5, 6]) == [
        "F1 seed 1: queued (job 101[1])", "F1 seed 2: running (job 101[2])", "F1 seed 5: held (job 101[5])"]  # fmt: skip
    assert st.busy_runs(phase, runs, [3, 6]) == []  # 3 exited; 6 is no job of ours
    with FolderLock(runs[3]["run_dir"], "training") as lock, FolderLock(phase, "a pool", name=rf.PHASE_LOCK) as pool:
        assert st.busy_runs(phase, runs, [4, 2]) == [
            f"a local pool: {_describe(pool.content)}", f"F1 seed 4: running, {_describe(lock.content)}",
            "F1 seed 2: running (job 101[2])"]  # fmt: skip
    queue.answers["lsf"] = None
    assert st.busy_runs(phase, runs, [1, 2]) == []


def test_a_prepare_log_that_is_not_utf8_is_still_read(tmp_path):
    sub = sub_with_prepare(tmp_path, report=False)
    log = tmp_path / "logs" / "t-prepare_100.log"
    log.write_bytes(b"\xff\xfe decoding\nimginav: prepare exited 4\n")
    state, message = st.prepare_state(sub, {})
    assert state == "failed" and message.startswith("prepare job 100 failed (exit 4): \ufffd\ufffd decoding\n")


def test_a_diverged_run_shows_its_error(tmp_path, frozen, queue, capsys):
    phase = write_phase(tmp_path / "p", [("F1", 1), ("F1", 2)],
                        {1: {"status": "diverged", "epoch": 3, "epochs": 10, "error": "non-finite loss at epoch 3"},
                         2: {"status": "running", "epoch": 3, "epochs": 10, "error": "left over", "updated": at(1)}})  # fmt: skip
    assert [r["error"] for r in st.status_rows(phase, 600)] == ["non-finite loss at epoch 3", None]  # running: not shown
    st.print_status(phase)
    assert capsys.readouterr().out.endswith("\n1 diverged, 1 running\n  F1 seed 1: non-finite loss at epoch 3\n")


@pytest.mark.parametrize("updated, want", [(600, "running"), (601, "stale")])
def test_print_status_calls_a_heartbeat_stale_after_ten_minutes(tmp_path, frozen, queue, capsys, updated, want):
    phase = write_phase(tmp_path / "p", [("F1", 1)], {1: {"status": "running", "updated": at(updated)}})
    st.print_status(phase)
    assert capsys.readouterr().out.endswith(f"\n1 {want}\n")
