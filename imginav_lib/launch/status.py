"""`imginav status`: one row per experiment x seed of a phase folder, from the run folders, the submission record
and (when it can be asked) the scheduler's queue.
"""
from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Callable

from imginav_lib.runs import runfolder as rf
from imginav_lib.errors import InputError
from imginav_lib.runs.runfolder import RunStatus, read_index
from imginav_lib.runs.runlock import holder, lock_is_free_here
from imginav_lib.launch.schedulers import SCHEDULERS, Lsf
from imginav_lib.launch.schedulers.base import QueueJob
from imginav_lib.text import fmt_duration, text_table


def _scheduler_states(backend: str, job_ids: set[str]) -> dict[tuple[str, int], QueueJob] | None:
    """{(job id, index): QueueJob} for our jobs the queue still lists (index 0: not an array); None: not asked, or
    the scheduler cannot tell (then the run folders decide)."""
    if not job_ids or backend not in SCHEDULERS:
        return None
    return SCHEDULERS[backend].jobs(job_ids)


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
              stale_after_s: float, blocked: bool = False, lock_free: bool = False) -> str:  # fmt: skip
    """The state shown by `imginav status` from run.json, the submission and (if known) the scheduler's view
    (`sched`: a QueueJob's state; `sched_known`: the scheduler answered). `blocked`: the submission's prepare job
    failed, so its arrays never start. `lock_free`: the run lock was last taken on this host and nobody holds it now,
    so no process trains the run, whatever its heartbeat says."""
    status = info.get("status")
    if status in (None, RunStatus.RUNNING, RunStatus.PREEMPTED) and sched in ("held", "unknown"):
        return sched
    if status in (None, RunStatus.RUNNING) and sched in ("suspended", "exited"):
        return "suspended" if sched == "suspended" else "failed"  # exited before run.json: failed before training
    if status is None:
        if sched == "running":
            return "running"  # started; the trainer has not written run.json yet
        if blocked:
            return "blocked"
        return "queued" if (sched == "pending" or launched) else "-"
    if status == RunStatus.RUNNING:
        if sched == "pending":
            return "requeued"  # killed without a checkpoint request, requeued by the scheduler
        if sched is None and lock_free:
            return "stopped"  # the process that held the lock is gone (killed: kill -9, the node went down)
        age = _age(info.get("updated"))
        return "stale" if age is not None and age > stale_after_s else "running"
    if status == RunStatus.PREEMPTED:
        if backend in SCHEDULERS and (sched not in (None, "exited") or not sched_known):
            return "requeued"
        return "preempted"
    return status


def prepare_state(sub: dict, states: dict | None) -> tuple[str, str | None]:
    """The prepare job of a submission: ('none' | 'waiting' | 'done' | 'failed' | 'unknown', what to tell).
    From the scheduler while the job is queued, then from the end of its log (the job script's last line)."""
    p = sub.get("prepare")
    if not p:
        return "none", None
    jid, log = p["job_id"], Path(sub["logs"]) / f"{p['name']}_{p['job_id']}.log"
    sched = states.get((jid, 0)) if states is not None else None
    if sched is not None and sched.state != "exited":
        return "waiting", f"prepare job {jid} is {sched.state}; the arrays wait for it (log: {log})"
    text = log.read_text(errors="replace") if log.is_file() else ""
    exits = re.findall(r"^imginav: prepare exited (\d+)", text, flags=re.M)
    if exits and exits[-1] == "0":
        return "done", None
    if not exits and states is None:
        return "unknown", f"prepare job {jid}: no end in its log yet and no scheduler to ask (log: {log})"
    lines = [x for x in text.splitlines() if x.strip() and not x.startswith("imginav: prepare exited")]
    why = f"exit {exits[-1]}" if exits else "it ended without finishing: killed (walltime, memory)?"
    waiting = [j["job_id"] for j in sub.get("jobs", [])] + ([sub["report"]["job_id"]] if sub.get("report") else [])
    after = ("SLURM cancelled the arrays and the report" if sub["backend"] == "slurm"
             else f"the arrays and the report wait for ever: bkill {' '.join(waiting)}")  # fmt: skip
    shown = log if log.is_file() else log.with_suffix(".err")
    return "failed", (f"prepare job {jid} failed ({why}): {lines[-1][:300] if lines else 'no output'}\n"
                      f"  log: {shown}\n  the arrays never start; {after}; fix it, then run `imginav run` again")  # fmt: skip


def _notes(state: str, backend: str | None, jid: str | None, i: int, info: dict, warning: int | None,
           job: QueueJob | None = None) -> list[str]:
    """What to do about a run: release a held element, resume a suspended one, why it waits or why the scheduler
    ended it, ask the admins, a checkpoint too slow for the warning."""
    notes = []
    if job is not None and job.state == "pending" and (job.pend_reason or job.start):
        notes.append("waits: " + "; ".join(x for x in (job.pend_reason and f"LSF says: {job.pend_reason}",
                                                      job.start and f"estimated start {job.start}") if x))  # fmt: skip
    if state == "suspended" and job is not None:
        if job.stat == "USUSP":
            notes.append(f"suspended by its owner or an admin (USUSP, bstop): resume with: bresume '{jid}[{i}]'")
        else:
            notes.append(f"suspended by LSF ({job.stat}: host load or preemption); LSF resumes it by itself "
                         f"(bjobs -s {jid} says why)")  # fmt: skip
    if state == "failed" and job is not None and job.state == "exited":
        before = " before training (no run.json)" if not info.get("status") else ""
        notes.append(f"failed{before}: {Lsf.exit_words(job)}")
    if state == "stopped":
        notes.append("its run lock is free: no process trains it (killed?); run `imginav run` again to resume it")
    if state == "held":
        sched = SCHEDULERS[backend]
        notes.append(f"{sched.held}: release with: {sched.release.format(job=jid, i=i)} (the report waits for it)")
    if state == "unknown":
        notes.append("unknown to LSF (UNKWN/ZOMBI): ask the admins")
    ckpt = info.get("checkpoint_s")
    if ckpt and warning and ckpt > warning * 60 / 2 and state not in ("done", "failed", "diverged"):
        notes.append(f"a checkpoint takes {fmt_duration(ckpt)}, more than half of warning_minutes ({warning}): the final "
                     "kill may come before a stop request is served; raise cluster.warning_minutes")  # fmt: skip
    return notes


def _phase_dirs(runs_dir: Path) -> list[Path]:
    if (runs_dir / rf.INDEX).is_file():
        return [runs_dir]
    found = sorted(p.parent for p in runs_dir.glob(f"*/{rf.INDEX}"))
    if not found:
        raise InputError(f"{runs_dir}: no index.json here or in its subfolders (pass <runs root>/<phase>)")
    return found


def _queued_eta(runs: list[dict], infos: list[dict]) -> dict[str, float]:
    """Experiment -> seconds a run that has not started will take: its planned epochs x the mean epoch time of the
    finished runs of that experiment (of every experiment when none of its own has finished)."""
    done = [(r["experiment"], info) for r, info in zip(runs, infos)
            if info.get("status") == rf.RunStatus.DONE and info.get("epoch_time_s") and info.get("epochs")]  # fmt: skip
    if not done:
        return {}
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    overall = (mean([i["epoch_time_s"] for _, i in done]), mean([i["epochs"] for _, i in done]))
    out = {}
    for x in {r["experiment"] for r in runs}:
        own = [i for e, i in done if e == x]
        t, n = (mean([i["epoch_time_s"] for i in own]), mean([i["epochs"] for i in own])) if own else overall
        out[x] = t * n
    return out


def _queue(phase_dir: Path):
    """The phase's submissions, {entry: (submission number, array job id, array name)}, {backend: the scheduler's
    states of our jobs, or None}, and {submission number: its prepare job's state and message}."""
    subs = rf.read_submissions(phase_dir)
    latest: dict[int, tuple[int, str | None, str | None]] = {}  # entry -> (submission, array job id, array name)
    for k, s in enumerate(subs):
        for i in s.get("entries", []):
            latest[i] = (k, None, None)
        for j in s.get("jobs", []):
            for i in j["entries"]:
                latest[i] = (k, j["job_id"], j.get("name"))
    used = {k for k, _, _ in latest.values()}
    by_backend: dict[str, set[str]] = {}
    for k in used:
        prep = [subs[k]["prepare"]["job_id"]] if subs[k].get("prepare") else []
        by_backend.setdefault(subs[k]["backend"], set()).update([j["job_id"] for j in subs[k].get("jobs", [])] + prep)
    sched = {b: _scheduler_states(b, ids) for b, ids in by_backend.items()}
    prepare = {k: prepare_state(subs[k], sched.get(subs[k]["backend"])) for k in used}
    return subs, latest, sched, prepare


def busy_runs(phase_dir: Path, runs: list[dict], entries: list[int]) -> list[str]:
    """The entries (1-based) of `runs` that are queued or running, one line each: running when a process holds the
    run folder's lock, queued when the scheduler lists the entry's job; a local pool holding the phase lock says
    all of its runs are queued or running."""
    pool = holder(phase_dir, rf.PHASE_LOCK)
    busy = [f"a local pool: {pool}"] if pool else []
    subs, latest, sched, _ = _queue(phase_dir) if phase_dir.is_dir() else ([], {}, {}, {})
    for i in entries:
        r = runs[i - 1]
        who = holder(r["run_dir"])
        k, jid, _ = latest.get(i, (None, None, None))
        queued = (sched.get(subs[k]["backend"]) or {}).get((jid, i)) if jid else None
        state = queued.state if queued and queued.state != "exited" else None
        if who or state:
            busy.append(f"{r['experiment']} seed {r['seed']}: " + (f"running, {who}" if who else f"{'queued' if state == 'pending' else state} (job {jid}[{i}])"))
    return busy


# The run.json fields the table shows, by type: a hand-edited value of another type is left out, not shown.
_FIELDS = {"status": str, "epoch": int, "epochs": int, "best_val_mse": (int, float), "updated": str,
           "epoch_time_s": (int, float), "checkpoint_s": (int, float), "attempts": int, "error": str, "job_id": str}


def _typed(info: dict) -> dict:
    return {k: v for k, v in info.items()
            if k not in _FIELDS or v is None or isinstance(v, _FIELDS[k]) and not isinstance(v, bool)}  # fmt: skip


def status_rows(phase_dir: Path, stale_after_s: float) -> list[dict]:
    """One dict per experiment x seed of a phase folder (what `imginav status` prints)."""
    index = read_index(phase_dir / rf.INDEX)
    subs, latest, sched, prepare = _queue(phase_dir)
    infos, damaged = [], {}
    for i, r in enumerate(index["runs"], 1):
        try:  # the folder next to index.json, like the report: a phase folder copied back from a cluster
            infos.append(_typed(rf.RunFolder(rf.resolve_run_dir(phase_dir, r)).read_info()))
        except InputError as e:  # a damaged run.json: this row is `unreadable` (the report's word), the others are shown
            infos.append({})
            damaged[i] = str(e)
    queued_eta = _queued_eta(index["runs"], infos)
    rows = []
    for i, (r, info) in enumerate(zip(index["runs"], infos), 1):
        k, jid, name = latest.get(i, (None, None, None))
        sub = subs[k] if k is not None else None
        backend = sub["backend"] if sub else None
        states = sched.get(backend) if backend else None
        job = states.get((jid, i)) if states is not None and jid else None
        s = job.state if job else None
        blocked = k is not None and prepare[k][0] == "failed"
        free = info.get("status") == RunStatus.RUNNING and lock_is_free_here(rf.resolve_run_dir(phase_dir, r))
        state = "unreadable" if i in damaged else run_state(info, sub is not None, backend, s, states is not None, stale_after_s, blocked, free)
        epoch, epochs, t = info.get("epoch") or 0, info.get("epochs"), info.get("epoch_time_s")
        eta = (epochs - epoch) * t if state in ("running", "requeued", "stale") and t and epochs else None
        if state == "queued":  # not started: the whole run, at the epoch time of the finished runs
            eta = queued_eta.get(r["experiment"])
        job_id = info.get("job_id") or (f"{jid}[{i}]" if jid else None)
        log = None  # the job script's own log (cluster), or the local runner's; a failed run's only before run.json
        if state in ("running", "stale", "stopped", "failed") and sub and sub.get("logs"):
            log = Path(sub["logs"]) / (f"{name}_{jid}_{i}.log" if jid else f"{r['experiment']}_seed{r['seed']}.log")
        rows.append({"i": i, "experiment": r["experiment"], "seed": r["seed"], "state": state, "epoch": epoch,
                     "epochs": epochs, "best_val_mse": info.get("best_val_mse"), "updated": info.get("updated"),
                     "age_s": _age(info.get("updated")), "job_id": job_id, "eta_s": eta, "attempts": info.get("attempts"),
                     "error": damaged.get(i) or (info.get("error") if state in ("failed", "diverged", "stale") else None), "log": log,
                     "notes": _notes(state, backend, jid, i, info, sub.get("warning_minutes") if sub else None, job),
                     "prepare": prepare[k][1] if k is not None else None})  # fmt: skip
    return rows


def print_status(runs_dir: str | Path, stale_after_s: float = 600, verdict: Callable[[Path], str] | None = None) -> int:
    """Print a table of every run of the phase folder(s) under `runs_dir`. `verdict(phase_dir)`: a line on the
    verdict so far, printed once runs have finished (the command line passes the analysis's; launch does not
    import the analysis layer)."""
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
        for message in dict.fromkeys(r["prepare"] for r in rows if r["prepare"]):  # once per submission
            print(f"  {message}")
        for r in rows:
            for line in ([f"log: {r['log']}"] if r["log"] else []) + r["notes"] + ([r["error"][:400]] if r["error"] else []):
                print(f"  {r['experiment']} seed {r['seed']}: {line}")
        if verdict is not None and any(r["state"] == RunStatus.DONE for r in rows):
            print(verdict(phase_dir), end="")
    return 0
