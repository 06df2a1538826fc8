"""`imginav status`: one row per experiment x seed of a phase folder, from the run folders, the submission record
and (when it can be asked) the scheduler's queue.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path

from . import runfolder as rf
from .errors import InputError
from .runfolder import RunStatus, read_index
from .runlock import holder
from .schedulers import SCHEDULERS


def fmt_duration(s: float | None) -> str:
    if s is None:
        return "-"
    s = int(round(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def _scheduler_states(backend: str, job_ids: set[str]) -> dict[tuple[str, int], str] | None:
    """{(array job id, index): 'pending' | 'running'} for our jobs still in the queue; None if not asked/available."""
    if not job_ids or backend not in SCHEDULERS:
        return None
    return SCHEDULERS[backend].states(job_ids)


def _age(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        t = dt.datetime.fromisoformat(iso)
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return (dt.datetime.now(dt.timezone.utc) - t).total_seconds()


def run_state(info: dict, launched: bool, backend: str | None, sched: str | None, sched_known: bool,
              stale_after_s: float) -> str:  # fmt: skip
    """The state shown by `imginav status` from run.json, the submission and (if known) the scheduler's view."""
    status = info.get("status")
    if status is None:
        if sched == "running":
            return "running"  # started; the trainer has not written run.json yet
        return "queued" if (sched == "pending" or launched) else "-"
    if status == RunStatus.RUNNING:
        if sched == "pending":
            return "requeued"  # killed without a checkpoint request, requeued by the scheduler
        age = _age(info.get("updated"))
        return "stale" if age is not None and age > stale_after_s else "running"
    if status == RunStatus.PREEMPTED:
        if backend in SCHEDULERS and (sched is not None or not sched_known):
            return "requeued"
        return "preempted"
    return status


def _phase_dirs(runs_dir: Path) -> list[Path]:
    if (runs_dir / rf.INDEX).is_file():
        return [runs_dir]
    found = sorted(p.parent for p in runs_dir.glob(f"*/{rf.INDEX}"))
    if not found:
        raise InputError(f"{runs_dir}: no index.json here or in its subfolders (pass <runs root>/<phase>)")
    return found


def _queue(phase_dir: Path) -> tuple[dict[int, tuple[dict, str | None]], dict[str, dict | None]]:
    """({entry: (its latest submission, array job id)}, {backend: the scheduler's states of our jobs, or None})."""
    subs = rf.read_submissions(phase_dir)
    latest: dict[int, tuple[dict, str | None]] = {}  # entry -> (submission, array job id)
    for s in subs:
        for i in s.get("entries", []):
            latest[i] = (s, None)
        for j in s.get("jobs", []):
            for i in j["entries"]:
                latest[i] = (s, j["job_id"])
    by_backend: dict[str, set[str]] = {}
    for s, jid in latest.values():
        if jid:
            by_backend.setdefault(s["backend"], set()).add(jid)
    return latest, {b: _scheduler_states(b, ids) for b, ids in by_backend.items()}


def busy_runs(phase_dir: Path, runs: list[dict], entries: list[int]) -> list[str]:
    """The entries (1-based) of `runs` that are queued or running, one line each: running when a process holds the
    run folder's lock, queued when the scheduler lists the entry's job; a local pool holding the phase lock says
    all of its runs are queued or running."""
    pool = holder(phase_dir, rf.PHASE_LOCK)
    busy = [f"a local pool: {pool}"] if pool else []
    latest, sched = _queue(phase_dir) if phase_dir.is_dir() else ({}, {})
    for i in entries:
        r = runs[i - 1]
        who = holder(r["run_dir"])
        sub, jid = latest.get(i, (None, None))
        state = (sched.get(sub["backend"]) or {}).get((jid, i)) if jid else None
        if who or state:
            busy.append(f"{r['experiment']} seed {r['seed']}: " + (f"running, {who}" if who else f"{'queued' if state == 'pending' else state} (job {jid}[{i}])"))
    return busy


def status_rows(phase_dir: Path, stale_after_s: float) -> list[dict]:
    """One dict per experiment x seed of a phase folder (what `imginav status` prints)."""
    index = read_index(phase_dir / rf.INDEX)
    latest, sched = _queue(phase_dir)
    rows = []
    for i, r in enumerate(index["runs"], 1):
        info = rf.RunFolder(r["run_dir"]).read_info()
        sub, jid = latest.get(i, (None, None))
        backend = sub["backend"] if sub else None
        states = sched.get(backend) if backend else None
        s = states.get((jid, i)) if states is not None and jid else None
        state = run_state(info, sub is not None, backend, s, states is not None, stale_after_s)
        epoch, epochs, t = info.get("epoch") or 0, info.get("epochs"), info.get("epoch_time_s")
        eta = (epochs - epoch) * t if state in ("running", "requeued", "stale") and t and epochs else None
        job = info.get("job_id") or (f"{jid}[{i}]" if jid else None)
        rows.append({"i": i, "experiment": r["experiment"], "seed": r["seed"], "state": state, "epoch": epoch,
                     "epochs": epochs, "best_val_mse": info.get("best_val_mse"), "updated": info.get("updated"),
                     "age_s": _age(info.get("updated")), "job_id": job, "eta_s": eta, "attempts": info.get("attempts"),
                     "error": info.get("error") if state in ("failed", "diverged", "stale") else None})  # fmt: skip
    return rows


def print_status(runs_dir: str | Path, stale_after_s: float = 600) -> int:
    for phase_dir in _phase_dirs(Path(runs_dir)):
        rows = status_rows(phase_dir, stale_after_s)
        table = [[r["i"], r["experiment"], r["seed"], r["state"], f"{r['epoch']}/{r['epochs'] or '?'}",
                  f"{r['best_val_mse']:.5g}" if r["best_val_mse"] is not None else "-",
                  f"{r['updated'][11:19]} ({fmt_duration(r['age_s'])} ago)" if r["updated"] and r["age_s"] is not None else "-",
                  r["job_id"] or "-", r["attempts"] or "-", fmt_duration(r["eta_s"])] for r in rows]  # fmt: skip
        print(f"{phase_dir}")
        print(text_table(["#", "experiment", "seed", "state", "epoch", "best val MSE", "last update (UTC)", "job",
                      "attempts", "ETA"], table))  # fmt: skip
        counts: dict[str, int] = {}
        for r in rows:
            counts[r["state"]] = counts.get(r["state"], 0) + 1
        print(", ".join(f"{n} {s}" for s, n in counts.items()))
        for r in rows:
            if r["error"]:
                print(f"  {r['experiment']} seed {r['seed']}: {r['error'][:200]}")
        if any(r["state"] == RunStatus.DONE for r in rows):
            print(_more_seeds(phase_dir), end="")
    return 0


def _more_seeds(phase_dir: Path) -> str:
    """When the finished runs leave the verdict open for want of seeds: how many, the command, runs and GPU-hours."""
    from .analysis import analyse  # pandas and scipy: only for a phase with finished runs

    v = analyse(phase_dir).verdict
    if not v.more_seeds:
        return ""
    return f"Verdict so far: {v.winner} ({v.status}); it needs ≈{v.seeds_needed} seeds per experiment. {v.more_seeds}\n"
