"""Launching a phase: the index every backend executes, one run through papermill, the local pool.

`imginav run PARAMS` (`run_phase`) validates the params and writes `<runs root>/<phase>/index.json`
(`write_index`), then either decodes the phase's images once (`prepare_phase_data`) and runs the entries here,
N at a time (`--backend local`), or hands them to a cluster scheduler (`--backend lsf|slurm`: jobs.py writes a
prepare job that decodes the images when the cache does not exist yet, one job-array script per group of runs with
the same resources that waits for it, and a report job that waits for all of them; schedulers.py knows each
scheduler). Array index i is entry i of the index, so every backend runs exactly the same experiments.

`imginav run-one INDEX i` (`run_one`) is what every backend executes for one entry: papermill runs
`notebooks/train.ipynb` into the run folder; a run that was asked to stop (signal or STOP file) exits with
`cluster.requeue_exit_code` so the scheduler requeues it, and the requeued job resumes from its checkpoint.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from imginav_lib import resources
from imginav_lib.runs import runfolder as rf
from imginav_lib.errors import InputError
from imginav_lib.files import check_output_dir, check_output_file
from imginav_lib.launch.jobs import plan_jobs, ranges, submit_jobs
from imginav_lib.data.cache import default_workers
from imginav_lib.config.paths import expand_path, unset_variables
from imginav_lib.config.params import load_params, params_hash, run_config, runs_of
from imginav_lib.config.schema import Phase, RunConfig
from imginav_lib.runs.runfolder import record_path, recorded_path
from imginav_lib.runs.runfolder import read_index
from imginav_lib.runs.runlock import FolderLock
from imginav_lib.config.schema import BACKENDS
from imginav_lib.launch.schedulers import SCHEDULERS, job_id_from_env
from imginav_lib.launch.status import busy_runs
from imginav_lib.text import fmt_duration, plural, text_table
from imginav_lib.train.stopping import StopFileWriter, block_stop_signals, restore_stop_signals

NOTEBOOK_ENV = "IMGINAV_TRAIN_NOTEBOOK"  # override of the training notebook (tests, a researcher's variant)


# ---------------------------------------------------------------------------------------------------------
# Small helpers


def train_notebook(override: str | Path | None = None) -> Path:
    """The training notebook: the argument, else $IMGINAV_TRAIN_NOTEBOOK, else the repository's notebook."""
    path = Path(override or os.environ.get(NOTEBOOK_ENV) or resources.notebook("train.ipynb"))
    if not path.is_file():
        raise InputError(f"training notebook not found: {path}")
    return path


def _expand(value: str, base: Path, what: str, dry_run: bool = False) -> Path:
    """A cluster path (config/paths.py). A dry run on a machine without the variable shows the path as written."""
    path = expand_path(value, base)
    if path is None:
        if dry_run:
            return Path(value)
        raise InputError(f"{what}: environment variable {unset_variables(value)[0]} is not set (in {value!r})")
    return path


# ---------------------------------------------------------------------------------------------------------
# Data and index


def prepare_phase_data(phase: Phase, workers: int | None = None) -> Path:
    """Decode the phase's images once, before any run starts; every run then only memory-maps the cache.

    `workers` decoding processes: the argument, else `data.workers`, else the job's cores."""
    from imginav_lib.data.cache import prepare_cache
    from imginav_lib.data.dataset import read_manifest

    d = phase.data
    manifest = read_manifest(d.manifest, d.filters)
    return prepare_cache(manifest, d.image_size, d.cache_dir, d.on_bad_image, d.mask_tolerance, workers=workers or d.workers)


def cached_phase_data(phase: Phase) -> Path | None:
    """The phase's finished cache, or None: reads the manifest and stats its files, decodes nothing."""
    from imginav_lib.data.cache import finished_cache
    from imginav_lib.data.dataset import read_manifest

    d = phase.data
    return finished_cache(read_manifest(d.manifest, d.filters), d.image_size, d.cache_dir, d.mask_tolerance)


def write_index(phase: Phase, params_file: str | Path, runs_root: str | Path, overrides: list[str] | tuple = ()) -> Path:
    """Write `<runs_root>/<phase>/index.json` (the experiment x seed list and the --set overrides every run applies)
    and copy the params file beside it."""
    params_file = Path(params_file).resolve()
    index = {
        "phase": phase.phase,
        "params_file": record_path(params_file),  # relative to the working folder when inside it (runfolder.record_path)
        "params_hash": params_hash(params_file, overrides),
        "overrides": list(overrides),
        "runs": runs_of(phase, str(Path(runs_root).resolve())),
    }
    return rf.write_index(Path(runs_root).resolve() / phase.phase, index, params_file.read_text())


# ---------------------------------------------------------------------------------------------------------
# One run


def _mark_failed(run_dir: Path, entry: dict, phase: str, error: str) -> None:
    """The trainer could not record its own end (kernel killed, notebook failed before training): say so."""
    folder = rf.RunFolder(run_dir)
    try:
        info = folder.read_info()
    except InputError:  # a damaged run.json: replaced by the record of this failure
        info = {}
    info.update(phase=phase, experiment=entry["experiment"], seed=entry["seed"], status=rf.RunStatus.FAILED,
                error=error, ended=rf.now(), updated=rf.now())  # fmt: skip
    folder.write_info(info)


def _check_submitted(index_file: Path, params_file: Path, cfg: RunConfig) -> None:
    """A queued job runs what was submitted: the params file may have been edited since index.json was written
    (a comment, more seeds, more epochs), but not in a way that changes this run (the same field-level rule)."""
    copy = index_file.parent / rf.PARAMS_COPY
    if not copy.is_file():
        raise InputError(f"{params_file} changed since {index_file} was written: run `imginav run` again")
    then = run_config(load_params(copy, check_files=False, base=params_file.parent, overrides=cfg.overrides), copy,
                      cfg.experiment, cfg.seed, str(Path(cfg.run_dir).parents[2]), cfg.overrides).model_dump()  # fmt: skip
    changes = rf.config_changes(then, cfg.model_dump())
    if changes:
        raise InputError(f"{params_file} changed since {index_file} was written: experiment {cfg.experiment} seed "
                         f"{cfg.seed}: {', '.join(changes)} would mix two runs: run `imginav run` again")  # fmt: skip


def run_one(index_file: str | Path, i: int, notebook: str | Path | None = None) -> int:
    """Execute entry i (1-based) of a phase index through papermill; return the process exit code.

    0: the run is done; `cluster.requeue_exit_code`: it checkpointed on a stop request and should be requeued;
    1: it failed or diverged (run.json says why; the report lists it); 2 (InputError): bad index or params, or
    the run folder is in use by another process (RunLocked: nothing touched).
    SIGUSR2/SIGTERM are stop requests from the start (stopping.py), for this process and the kernel it starts.
    """
    saved = block_stop_signals()
    try:
        return _run_one(Path(index_file).resolve(), i, notebook)
    finally:
        restore_stop_signals(saved)


def _run_one(index_file: Path, i: int, notebook: str | Path | None) -> int:
    index = read_index(index_file)
    runs = index["runs"]
    if not 1 <= i <= len(runs):
        raise InputError(f"{index_file}: entry {i} out of range 1..{len(runs)}")
    entry = runs[i - 1]
    params_file = recorded_path(index["params_file"])  # in this checkout when recorded relative to it
    if not params_file.is_file():
        raise InputError(f"{index_file}: params file not found: {params_file}")
    overrides = index.get("overrides") or []
    phase = load_params(params_file, overrides=overrides)
    run_dir = Path(entry["run_dir"])
    cfg = run_config(phase, params_file, entry["experiment"], entry["seed"], str(run_dir.parents[2]), overrides)
    if cfg.training.device != "cpu":
        from imginav_lib.train.device import check_gpu_kernels  # imports torch: only in a job

        check_gpu_kernels()  # in the job's first second: a torch without kernels for this GPU is one line, exit 2
    if params_hash(params_file, overrides) != index["params_hash"]:
        _check_submitted(index_file, params_file, cfg)
    folder = rf.RunFolder(run_dir)
    rf.check_same_run(folder, cfg.model_dump())
    name = f"{entry['experiment']} seed {entry['seed']}"
    if folder.finished(cfg.training.epochs):
        # Skip papermill too: re-executing would overwrite train.ipynb, the record of the finished run.
        print(f"imginav: {name}: already done ({run_dir})", flush=True)
        return 0
    nb = train_notebook(notebook)
    # Held until the end of the attempt is recorded; papermill's kernel trains under it (its token in the environment).
    job_id = job_id_from_env()
    with FolderLock(run_dir, f"run-one {index_file} {i}", job_id=job_id) as lock, lock.shared_with_children():
        if folder.finished(cfg.training.epochs):  # finished since the check above
            print(f"imginav: {name}: already done ({run_dir})", flush=True)
            return 0
        return _execute(nb, folder, cfg, params_file, phase, name, job_id)


def _execute(nb: Path, folder: rf.RunFolder, cfg: RunConfig, params_file: Path, phase: Phase, name: str,
             job_id: str | None) -> int:  # fmt: skip
    """run_one under the run folder's lock: papermill, then the exit code from the status the run recorded."""
    run_dir = folder.path
    stop_file = folder.stop_file
    stop_file.unlink(missing_ok=True)  # a STOP of the previous attempt was served by its checkpoint
    import papermill  # slow import: only here

    from imginav_lib.kernel import IPCKernelManager

    # --log-output equivalent: the notebook's output goes to this process's stdout, i.e. the job's log.
    log = logging.getLogger("papermill")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    print(f"imginav: {name}: {nb} -> {folder.notebook}", flush=True)
    error = None
    with StopFileWriter(stop_file, name):
        try:
            papermill.execute_notebook(
                resources.clean_notebook(nb),  # no output or widget state a Jupyter save left in the template
                str(folder.notebook),
                # The config resolved and checked above, handed down: the notebook does not resolve it again.
                # Every parameter is injected: the template's defaults (a parameters cell edited in Jupyter) never apply.
                parameters={"params_file": str(params_file), "experiment": cfg.experiment, "seed": cfg.seed,
                            "runs_root": str(run_dir.parents[2]), "overrides": cfg.overrides,
                            "progress": True, "config": cfg.model_dump(mode="json"), "job_id": job_id},  # fmt: skip
                kernel_name="python3",
                log_output=True,
                progress_bar=False,
                cwd=str(nb.parent),
                kernel_manager_class=IPCKernelManager,  # no "running over TCP without encryption" warning
            )
        except Exception as e:  # PapermillExecutionError (a cell raised) or a dead/unstartable kernel
            error = f"{e.ename}: {e.evalue}" if hasattr(e, "ename") else f"{type(e).__name__}: {str(e).strip()[:500]}"
    status = folder.status()
    if status == rf.RunStatus.PREEMPTED:
        print(f"imginav: {name}: checkpointed and stopped; exit {phase.cluster.requeue_exit_code} (requeue)", flush=True)
        return phase.cluster.requeue_exit_code
    if status == rf.RunStatus.DONE:
        # The result is recorded; a stop request or a failed cell after that (the executed notebook shows it)
        # does not make the run any less done.
        stop_file.unlink(missing_ok=True)
        print(f"imginav: {name}: done" + (f" (a later cell failed: {error})" if error else ""), flush=True)
        return 0
    if status in (None, rf.RunStatus.RUNNING):
        why = error or "the notebook ended without recording the end of the run"
        _mark_failed(run_dir, {"experiment": cfg.experiment, "seed": cfg.seed}, cfg.phase, f"papermill: {why}")
        status = rf.RunStatus.FAILED
    print(f"imginav: {name}: {status}: {error or ''}", file=sys.stderr, flush=True)
    return 1


# ---------------------------------------------------------------------------------------------------------
# Local backend


def _run_local(index_file: Path, runs: list[dict], entries: list[int], jobs: int, logs: Path) -> dict[int, tuple[int, float]]:
    """`imginav run-one INDEX i` for each entry, `jobs` at a time; returns {i: (exit code, seconds)}."""
    threads = max(1, default_workers() // jobs)  # the job's cores (or the machine's), shared by the runs
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    logs.mkdir(parents=True, exist_ok=True)
    todo, running, results = list(entries), {}, {}
    print(f"running {plural(len(entries), 'run')}, {jobs} at a time, {plural(threads, 'CPU thread')} each; logs in {logs}")
    try:
        while todo or running:
            while todo and len(running) < jobs:
                i = todo.pop(0)
                r = runs[i - 1]
                log = logs / f"{r['experiment']}_seed{r['seed']}.log"
                with open(log, "a") as f:
                    # Own session: Ctrl-C reaches only this process, which then stops the runs cleanly (below).
                    p = subprocess.Popen([sys.executable, "-m", "imginav_lib.cli", "run-one", str(index_file), str(i)],
                                         stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)  # fmt: skip
                running[i] = (p, time.monotonic())
                print(f"[{i}/{len(runs)}] started {r['experiment']} seed {r['seed']}", flush=True)
            time.sleep(0.5)
            for i, (p, t0) in list(running.items()):
                if p.poll() is not None:
                    del running[i]
                    results[i] = (p.returncode, time.monotonic() - t0)
                    r = runs[i - 1]
                    status = rf.RunFolder(r["run_dir"]).status() or rf.RunStatus.FAILED
                    print(f"[{i}/{len(runs)}] {r['experiment']} seed {r['seed']}: {status} (exit {p.returncode}, "
                          f"{fmt_duration(results[i][1])})", flush=True)  # fmt: skip
    except KeyboardInterrupt:
        # Each run checkpoints at its next step (run-one turns SIGTERM into the STOP file) and can resume.
        print("\ninterrupted: asking the running runs to checkpoint and stop...", file=sys.stderr, flush=True)
        for p, _ in running.values():
            p.terminate()
        for p, _ in running.values():
            try:
                p.wait(timeout=300)
            except subprocess.TimeoutExpired:
                p.kill()
        print("stopped; run the same command again to resume", file=sys.stderr)
        raise
    return results


def _summary(runs: list[dict], entries: list[int], results: dict[int, tuple[int, float]]) -> str:
    rows = []
    for i in entries:
        r = runs[i - 1]
        info = rf.RunFolder(r["run_dir"]).read_info()
        best = info.get("best_val_mse")
        rows.append([r["experiment"], r["seed"], info.get("status", "-"), f"{info.get('epoch', 0)}/{info.get('epochs', '?')}",
                     f"{best:.5g}" if best is not None else "-", fmt_duration(results.get(i, (0, None))[1])])  # fmt: skip
    return text_table(["experiment", "seed", "status", "epochs", "best val MSE", "wall time"], rows)


# ---------------------------------------------------------------------------------------------------------
# imginav run


def _unset_variables(phase: Phase, runs_root: str | None) -> dict[str, list[str]]:
    """Environment variables that the phase's paths name but this shell has not set: variable -> fields."""
    fields = {"--runs-root": runs_root, "runs_root": phase.runs_root, "data.manifest": phase.data.manifest,
              "data.cache_dir": phase.data.cache_dir, "cluster.runs_root": phase.cluster.runs_root,
              "cluster.logs_dir": phase.cluster.logs_dir}  # fmt: skip
    unset: dict[str, list[str]] = {}
    for field, value in fields.items():
        for var in unset_variables(value):
            unset.setdefault(var, []).append(field)
    return unset


def _check_phase(phase: Phase, params_file: Path, runs: list[dict], overrides: list[str]) -> list[RunConfig]:
    """Each run's config under these params (a RunConfig per index entry). A run folder that holds a run of another
    config is refused, field by field, before anything is written: adding seeds or experiments, raising epochs,
    editing notes, comments, decision rules or cluster settings pass; a loss or architecture change does not."""
    configs, refused = [], []
    for r in runs:
        cfg = run_config(phase, params_file, r["experiment"], r["seed"], str(Path(r["run_dir"]).parents[2]), overrides)
        try:
            rf.check_same_run(rf.RunFolder(r["run_dir"]), cfg.model_dump())
        except InputError as e:
            refused.append(str(e))
        configs.append(cfg)
    if refused:
        more = f" (and {plural(len(refused) - 1, 'more run')} like it)" if len(refused) > 1 else ""
        raise InputError(refused[0] + more)
    return configs


def _runs_root(phase: Phase, params_file: Path, backend: str, runs_root: str | None, dry_run: bool) -> Path:
    base = params_file.resolve().parent
    if runs_root:
        return _expand(runs_root, Path.cwd(), "--runs-root", dry_run)
    if backend != "local" and phase.cluster.runs_root:
        return _expand(phase.cluster.runs_root, base, f"{params_file}: cluster.runs_root", dry_run)
    return Path(phase.runs_root)


def run_phase(params_file: str | Path, backend: str | None = None, jobs: int = 1, only: list[str] | None = None,
              dry_run: bool = False, runs_root: str | None = None, force: bool = False, report: bool = True,
              overrides: list[str] | tuple = (), build_report: Callable[[Path, Path], bool] | None = None) -> int:  # fmt: skip
    """Validate, prepare the data once, write the index, then run (local) or submit (lsf, slurm) the runs that are
    not finished. Returns the exit code.

    The report: a cluster submission adds a report job when `report`; local runs end with
    `build_report(phase_dir, params_file)` (False: it failed) when `report` and a builder is given. The command
    line passes its builder: the launch layer does not import the report layer.

    Refused while any selected run is queued or running, unless `force` (a second writer of a run folder then
    exits at once on its lock)."""
    params_file = Path(params_file)
    # A dry run may show a cluster's params on a laptop that lacks the data: do not require the manifest.
    overrides = list(overrides)
    phase = load_params(params_file, check_files=not dry_run, overrides=overrides)
    backend = backend or phase.cluster.backend
    if backend not in BACKENDS:
        raise InputError(f"--backend: invalid backend {backend!r} ({', '.join(BACKENDS[:-1])} or {BACKENDS[-1]})")
    if jobs < 1:
        raise InputError(f"--jobs: must be at least 1, got {jobs}")
    unknown = [n for n in (only or []) if n not in phase.experiments]
    if unknown:
        raise InputError(f"--only: no experiment {unknown[0]!r} in {params_file} (have: {', '.join(phase.experiments)})")
    if not dry_run or Path(phase.data.manifest).is_file():  # a dry run may show a cluster's params without the data
        from imginav_lib.data.dataset import check_split

        check_split(phase.data, phase.seeds)  # every run gets a training and a validation image: before any write
    if dry_run:
        for var, fields in _unset_variables(phase, runs_root).items():
            print(f"imginav: warning: environment variable {var} is not set ({', '.join(fields)}): the paths below "
                  f"show ${{{var}}} as written; set it before running for real", file=sys.stderr)  # fmt: skip
    root = _runs_root(phase, params_file, backend, runs_root, dry_run)
    phase_dir = root / phase.phase
    base = params_file.resolve().parent
    logs = _expand(phase.cluster.logs_dir, base, f"{params_file}: cluster.logs_dir", dry_run) if phase.cluster.logs_dir else phase_dir / rf.LOGS
    # Before anything is read there or the cache is built. A dry run may show cluster paths that do not exist
    # here: only a file where a folder must go is an error then.
    where = "--runs-root" if runs_root else f"{params_file}: {'cluster.' if root != Path(phase.runs_root) else ''}runs_root"
    check_output_dir(phase_dir, where, writable=not dry_run)
    check_output_dir(logs, f"{params_file}: cluster.logs_dir" if phase.cluster.logs_dir else "logs folder", writable=not dry_run)
    if backend == "local" and not dry_run and report:  # the report is written into the phase folder once every run has ended
        check_output_file(phase_dir / "report.html", "report")
    runs = runs_of(phase, str(root))
    configs = _check_phase(phase, params_file, runs, overrides)
    selected = [i for i, r in enumerate(runs, 1) if only is None or r["experiment"] in only]
    # A finished run is skipped (a run whose planned epochs were raised is not finished: it resumes).
    finished = [i for i in selected if rf.RunFolder(runs[i - 1]["run_dir"]).finished(configs[i - 1].training.epochs)]
    entries = [i for i in selected if i not in finished]
    if finished:
        print(f"skipping {plural(len(finished), 'finished run')}: entries {ranges(finished)}")
    busy = [] if force else busy_runs(phase_dir, runs, entries)
    if busy:
        raise InputError(f"{phase_dir}: {plural(len(busy), 'run')} already queued or running ({'; '.join(busy[:2])}"
                         f"{'; ...' if len(busy) > 2 else ''}): see imginav status {phase_dir}, or pass --force")  # fmt: skip
    if not dry_run:
        train_notebook()  # the jobs run the repository's notebook: fail here, not in every job
        if backend != "local":
            tool = SCHEDULERS[backend].submit_tool
            if shutil.which(tool) is None:
                raise InputError(f"--backend {backend}: {tool} not found on PATH (run on a login node, or use --dry-run)")

    if backend == "local":
        if dry_run:
            index = phase_dir / rf.INDEX
            print(f"dry run: would write {index} and run {plural(len(entries), 'run')}, {jobs} at a time:")
            for i in entries:
                print(f"  imginav run-one {shlex.quote(str(index))} {i}   # {runs[i - 1]['experiment']} seed {runs[i - 1]['seed']}")
            return 0
        print(f"cache: {prepare_phase_data(phase)}")
        index = write_index(phase, params_file, root, overrides)
        rf.record_submission(phase_dir, {"backend": "local", "submitted": rf.now(), "entries": entries, "jobs": [], "logs": str(logs)})
        # Held while this pool has runs queued: a second `imginav run` of the phase sees them (busy_runs).
        with contextlib.nullcontext() if force else FolderLock(phase_dir, "imginav run --backend local", rf.PHASE_LOCK, job_id_from_env()):
            results = _run_local(index, runs, entries, jobs, logs) if entries else {}
        print("\n" + _summary(runs, entries, results) if entries else "nothing to run: every selected run is finished")
        ok = all(rc == 0 for rc, _ in results.values())
        if not report or build_report is None:
            print(f"report skipped{' (--no-report)' if not report else ''}; build it with: imginav report {phase_dir}")
            return 0 if ok else 1
        return 0 if build_report(phase_dir, params_file) and ok else 1

    if not entries:
        print(f"nothing to submit: every selected run is finished (report: imginav report {phase_dir})")
        return 0
    # The decode is a job of its own (cluster.prepare) unless the cache is there: the login node only validates
    # and writes the index. A dry run without the data shows the job.
    cache = None if dry_run and not Path(phase.data.manifest).is_file() else cached_phase_data(phase)
    if cache is not None:
        print(f"cache: {cache} (exists: no prepare job)")
    plan = plan_jobs(phase, params_file.resolve(), backend, runs, entries, phase_dir, logs, prepare=cache is None, report=report)
    if not dry_run:
        write_index(phase, params_file, root, overrides)
    return submit_jobs(plan, phase, dry_run)
