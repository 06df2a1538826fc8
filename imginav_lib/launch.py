"""Launching a phase: the index every backend executes, one run through papermill, and the backends.

`imginav run PARAMS` validates the params, decodes the phase's images once (`prepare_phase_data`), writes
`<runs root>/<phase>/index.json` (`write_index`) and then either runs the entries here, N at a time
(`--backend local`), or writes one job-array script per group of runs with the same resources from the templates
in `hpc/` and submits them with `bsub`/`sbatch`, plus a report job that waits for all of them (`--backend lsf|slurm`).
Array index i is entry i of the index, so all three backends run exactly the same experiments.

`imginav run-one INDEX i` (`run_one`) is what every backend executes for one entry: papermill runs
`notebooks/train.ipynb` into the run folder; a run that was asked to stop (signal or STOP file) exits with
`cluster.requeue_exit_code` so the scheduler requeues it, and the requeued job resumes from its checkpoint.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError
from . import runfolder as rf
from .files import atomic_write_text
from .runfolder import read_index
from .params import ClusterResources, Phase, load_phase, params_hash, runs_of

REPO = Path(__file__).resolve().parents[1]  # the package is installed editable from the repository
HPC = REPO / "hpc"
NOTEBOOK_ENV = "IMGINAV_TRAIN_NOTEBOOK"  # override of the training notebook (tests, a researcher's variant)


# ---------------------------------------------------------------------------------------------------------
# Small helpers


def train_notebook(override: str | Path | None = None) -> Path:
    """The training notebook: the argument, else $IMGINAV_TRAIN_NOTEBOOK, else the repository's notebook."""
    path = Path(override or os.environ.get(NOTEBOOK_ENV) or REPO / "notebooks" / "train.ipynb")
    if not path.is_file():
        raise InputError(f"training notebook not found: {path}")
    return path


def _expand(value: str, base: Path, what: str, dry_run: bool = False) -> Path:
    """A cluster path: $VARS and ~ expanded (so params need no user paths), relative to the params file.

    A dry run on a machine without the variable shows the path as written."""
    expanded = os.path.expanduser(os.path.expandvars(value))
    unset = re.search(r"\$\{?(\w+)", expanded)
    if unset:
        if dry_run:
            return Path(value)
        raise InputError(f"{what}: environment variable {unset.group(1)} is not set (in {value!r})")
    p = Path(expanded)
    return p if p.is_absolute() else (base / p).resolve()


def _ranges(indices: list[int]) -> str:
    """[1, 2, 3, 7, 9, 10] -> "1-3,7,9-10": array index syntax of both bsub -J and sbatch --array."""
    parts, start = [], None
    for k, i in enumerate(indices):
        if start is None:
            start = i
        if k + 1 == len(indices) or indices[k + 1] != i + 1:
            parts.append(f"{start}" if start == i else f"{start}-{i}")
            start = None
    return ",".join(parts)


def _expand_ranges(spec: str) -> list[int]:
    """"1-3,7" -> [1, 2, 3, 7] (squeue's compressed array tasks, without a %K suffix)."""
    out = []
    for part in spec.split("%")[0].split(","):
        if "-" in part:
            a, b = part.split("-")
            out.extend(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return out


# ---------------------------------------------------------------------------------------------------------
# Data and index


def prepare_phase_data(phase: Phase) -> Path:
    """Decode the phase's images once, before any run starts; every run then only memory-maps the cache."""
    from .data import prepare_cache, read_manifest

    d = phase.data
    manifest = read_manifest(d.manifest, d.filters)
    return prepare_cache(manifest, d.image_size, d.cache_dir, d.on_bad_image, d.mask_tolerance)


def write_index(phase: Phase, params_file: str | Path, runs_root: str | Path) -> Path:
    """Write `<runs_root>/<phase>/index.json` (the experiment x seed list) and copy the params file beside it."""
    params_file = Path(params_file).resolve()
    index = {
        "phase": phase.phase,
        "params_file": str(params_file),
        "params_hash": params_hash(params_file),
        "runs": runs_of(phase, str(Path(runs_root).resolve())),
    }
    return rf.write_index(Path(runs_root).resolve() / phase.phase, index, params_file.read_text())


# ---------------------------------------------------------------------------------------------------------
# One run


def _mark_failed(run_dir: Path, entry: dict, phase: str, error: str) -> None:
    """The trainer could not record its own end (kernel killed, notebook failed before training): say so."""
    folder = rf.RunFolder(run_dir)
    info = folder.read_info()
    info.update(phase=phase, experiment=entry["experiment"], seed=entry["seed"], status=rf.RunStatus.FAILED,
                error=error, ended=rf.now(), updated=rf.now())  # fmt: skip
    folder.write_info(info)


def run_one(index_file: str | Path, i: int, notebook: str | Path | None = None) -> int:
    """Execute entry i (1-based) of a phase index through papermill; return the process exit code.

    0: the run is done; `cluster.requeue_exit_code`: it checkpointed on a stop request and should be requeued;
    1: it failed or diverged (run.json says why; the report lists it); 2 (InputError): bad index or params.
    """
    index_file = Path(index_file).resolve()
    index = read_index(index_file)
    runs = index["runs"]
    if not 1 <= i <= len(runs):
        raise InputError(f"{index_file}: entry {i} out of range 1..{len(runs)}")
    entry = runs[i - 1]
    params_file = Path(index["params_file"])
    if not params_file.is_file():
        raise InputError(f"{index_file}: params file not found: {params_file}")
    if params_hash(params_file) != index["params_hash"]:
        # A queued job must run what was submitted; an edited file would silently change (or break) the config.
        raise InputError(f"{params_file} changed since {index_file} was written: run `imginav run` again")
    phase = load_phase(params_file)
    run_dir = Path(entry["run_dir"])
    folder = rf.RunFolder(run_dir)
    name = f"{entry['experiment']} seed {entry['seed']}"
    if folder.status() == rf.RunStatus.DONE:
        # Skip papermill too: re-executing would overwrite train.ipynb, the record of the finished run.
        print(f"imginav: {name}: already done ({run_dir})", flush=True)
        return 0
    nb = train_notebook(notebook)
    run_dir.mkdir(parents=True, exist_ok=True)
    stop_file = folder.stop_file
    stop_file.unlink(missing_ok=True)  # a STOP of the previous attempt was served by its checkpoint

    def request_stop(signum, frame):
        # Scheduler warning (USR2) or termination (TERM): ask the trainer, which polls this file every step,
        # to checkpoint and stop. The kernel may not get the signal itself (its own process group).
        stop_file.touch()
        # os.write, not print: the handler may interrupt a print of the notebook's output (reentrant buffer).
        msg = f"imginav: {signal.Signals(signum).name}: asked {name} to checkpoint and stop\n"
        with contextlib.suppress(OSError, ValueError, AttributeError):  # stdout without a descriptor
            os.write(sys.stdout.fileno(), msg.encode())

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGUSR2, signal.SIGTERM)}
    import papermill  # slow import: only here

    # --log-output equivalent: the notebook's output goes to this process's stdout, i.e. the scheduler's .out file.
    log = logging.getLogger("papermill")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    print(f"imginav: {name}: {nb} -> {folder.notebook}", flush=True)
    error = None
    try:
        papermill.execute_notebook(
            str(nb),
            str(folder.notebook),
            parameters={"params_file": str(params_file), "experiment": entry["experiment"], "seed": entry["seed"],
                        "runs_root": str(run_dir.parents[2])},  # fmt: skip
            kernel_name="python3",
            log_output=True,
            progress_bar=False,
            cwd=str(nb.parent),
        )
    except Exception as e:  # PapermillExecutionError (a cell raised) or a dead/unstartable kernel
        error = f"{e.ename}: {e.evalue}" if hasattr(e, "ename") else f"{type(e).__name__}: {str(e).strip()[:500]}"
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    status = folder.status()
    if status == rf.RunStatus.PREEMPTED:
        print(f"imginav: {name}: checkpointed and stopped; exit {phase.cluster.requeue_exit_code} (requeue)", flush=True)
        return phase.cluster.requeue_exit_code
    if status == rf.RunStatus.DONE and error is None:
        print(f"imginav: {name}: done", flush=True)
        return 0
    if status in (None, rf.RunStatus.RUNNING):
        why = error or "the notebook ended without recording the end of the run"
        _mark_failed(run_dir, entry, index["phase"], f"papermill: {why}")
        status = rf.RunStatus.FAILED
    print(f"imginav: {name}: {status}: {error or ''}", file=sys.stderr, flush=True)
    return 1


# ---------------------------------------------------------------------------------------------------------
# Job scripts


@dataclass
class Group:
    """Runs that share resources: one job array."""

    name: str
    resources: ClusterResources
    entries: list[int] = field(default_factory=list)  # 1-based index entries = array indices


def resources_for(phase: Phase, experiment: str) -> ClusterResources:
    """The defaults with the experiment's overrides (fields it sets) on top."""
    over = phase.cluster.experiments.get(experiment)
    merged = phase.cluster.defaults.model_dump()
    if over is not None:
        merged.update(over.model_dump(exclude_none=True))
    return ClusterResources.model_validate(merged)


def job_groups(phase: Phase, runs: list[dict], entries: list[int]) -> list[Group]:
    """Group the selected entries by their resources (e.g. F1+F2 on gpuv100, F3 on gpul40s), in index order."""
    groups: dict[tuple, Group] = {}
    for i in entries:
        res = resources_for(phase, runs[i - 1]["experiment"])
        key = tuple(res.model_dump().values())
        if key not in groups:
            base = f"{phase.phase}-{res.queue or 'default'}"
            taken = {g.name for g in groups.values()}
            name, k = base, 2
            while name in taken:
                name, k = f"{base}-{k}", k + 1
            groups[key] = Group(name, res)
        groups[key].entries.append(i)
    return list(groups.values())


def _mem(gb: float, unit_gb: str, unit_mb: str) -> str:
    return f"{gb:g}{unit_gb}" if float(gb).is_integer() else f"{round(gb * 1024)}{unit_mb}"


def _lsf_directives(name: str, res: ClusterResources, logs: Path, log_stem: str, extra: list[str]) -> list[str]:
    d = [f"-J {name}"]
    if res.queue:
        d.append(f"-q {res.queue}")
    if res.project:
        d.append(f"-P {res.project}")
    if res.cores:
        d += [f"-n {res.cores}", '-R "span[hosts=1]"']  # all slots on one host: one process uses them
    if res.mem_per_core_gb:
        d.append(f'-R "rusage[mem={_mem(res.mem_per_core_gb, "GB", "MB")}]"')  # per slot
    if res.gpus:
        d.append(f'-gpu "num={res.gpus}"')
    if res.walltime:
        d.append(f"-W {res.walltime}")
    d += extra
    d += [f"-o {logs / log_stem}.out", f"-e {logs / log_stem}.err"]  # -o appends: a requeued element keeps its log
    return [f"#BSUB {x}" for x in d]


def _slurm_directives(name: str, res: ClusterResources, logs: Path, log_stem: str, extra: list[str]) -> list[str]:
    d = [f"--job-name={name}"]
    if res.queue:
        d.append(f"--partition={res.queue}")
    if res.project:
        d.append(f"--account={res.project}")
    d.append("--ntasks=1")
    if res.cores:
        d.append(f"--cpus-per-task={res.cores}")
    if res.mem_per_core_gb:
        d.append(f"--mem-per-cpu={_mem(res.mem_per_core_gb, 'G', 'M')}")
    if res.gpus:
        d.append(f"--gres=gpu:{res.gpus}")
    if res.walltime:
        d.append(f"--time={res.walltime}:00")  # SLURM reads "6:00" as minutes:seconds
    d += extra
    d += [f"--output={logs / log_stem}.out", f"--error={logs / log_stem}.err"]
    return [f"#SBATCH {x}" for x in d]


def render(template: str, **values) -> str:
    """Fill `{{name}}` placeholders of a template in hpc/ (not ${..}: that is bash's); all must be filled."""
    text = (HPC / template).read_text()
    for k, v in values.items():
        text = text.replace("{{" + k + "}}", str(v))
    left = re.findall(r"\{\{\w+\}\}", text)
    if left:
        raise ValueError(f"hpc/{template}: no value for {left[0]}")
    return text


@dataclass
class JobPlan:
    """Everything a cluster submission writes and runs, computed before anything is written."""

    backend: str
    phase_dir: Path
    logs: Path
    arrays: list[tuple[Group, Path, str]]  # group, script path, script text
    report: tuple[Path, str]


def plan_jobs(phase: Phase, params_file: Path, backend: str, runs: list[dict], entries: list[int],
              phase_dir: Path, logs: Path) -> JobPlan:  # fmt: skip
    c = phase.cluster
    q = shlex.quote
    index = phase_dir / rf.INDEX
    jobs_dir = phase_dir / rf.JOBS
    setup = "\n".join(c.setup) if c.setup else "# (no cluster.setup lines)"
    common = dict(phase=phase.phase, params_file=q(str(params_file)), index=q(str(index)), setup=setup,
                  warning_minutes=c.warning_minutes, requeue_exit_code=c.requeue_exit_code)  # fmt: skip
    slots = f"%{c.max_parallel}" if c.max_parallel else ""
    arrays = []
    for g in job_groups(phase, runs, entries):
        script = jobs_dir / f"{g.name}.{backend}.sh"
        spec = f"[{_ranges(g.entries)}]{slots}"
        if backend == "lsf":
            extra = ["-wa USR2", f"-wt {c.warning_minutes}", f'-Q "{c.requeue_exit_code}"']
            directives = _lsf_directives(f'"{g.name}{spec}"', g.resources, logs, f"{g.name}_%J_%I", extra)
        else:
            extra = [f"--array={spec[1:].replace(']', '')}", f"--signal=B:USR2@{c.warning_minutes * 60}",
                     "--requeue", "--open-mode=append"]  # fmt: skip
            directives = _slurm_directives(g.name, g.resources, logs, f"{g.name}_%A_%a", extra)
        text = render(f"{backend}_array.sh.tmpl", directives="\n".join(directives), script=q(str(script)), **common)
        arrays.append((g, script, text))
    name = f"{phase.phase}-report"
    script = jobs_dir / f"report.{backend}.sh"
    if backend == "lsf":
        directives = _lsf_directives(name, c.report, logs, f"{name}_%J", [])
    else:
        directives = _slurm_directives(name, c.report, logs, f"{name}_%j", [])
    text = render(f"{backend}_report.sh.tmpl", directives="\n".join(directives), phase_dir=q(str(phase_dir)), **common)
    return JobPlan(backend, phase_dir, logs, arrays, (script, text))


def submit_command(backend: str, script: Path, after: list[str] | None = None) -> list[str]:
    """The exact argv of one submission; `after`: job ids the report waits for (ended, failed ones included)."""
    if backend == "lsf":
        # bsub reads #BSUB lines only from a script on stdin: `bsub < script` (stdin is passed separately).
        return ["bsub"] + (["-w", " && ".join(f"ended({j})" for j in after)] if after else [])
    cmd = ["sbatch", "--parsable"]
    if after:
        cmd += [f"--dependency=afterany:{':'.join(after)}", "--kill-on-invalid-dep=yes"]
    return cmd + [str(script)]


def _show(backend: str, cmd: list[str], script: Path) -> str:
    return shlex.join(cmd) + (f" < {shlex.quote(str(script))}" if backend == "lsf" else "")


def _submit(backend: str, cmd: list[str], script: Path) -> str:
    stdin = script.open() if backend == "lsf" else subprocess.DEVNULL
    try:
        out = subprocess.run(cmd, stdin=stdin, capture_output=True, text=True, timeout=120)
    finally:
        if backend == "lsf":
            stdin.close()
    m = re.search(r"Job <(\d+)>", out.stdout) if backend == "lsf" else re.match(r"(\d+)", out.stdout.strip())
    if out.returncode != 0 or not m:
        raise RuntimeError(f"{_show(backend, cmd, script)} failed (exit {out.returncode}): {(out.stderr or out.stdout).strip()}")
    return m.group(1)


def _submit_cluster(plan: JobPlan, phase: Phase, dry_run: bool) -> int:
    b = plan.backend
    if dry_run:
        for g, script, text in plan.arrays:
            print(f"# ---- {script} ({len(g.entries)} runs: {_ranges(g.entries)})\n{text}")
        print(f"# ---- {plan.report[0]}\n{plan.report[1]}")
        print("# ---- commands (dry run: nothing written, nothing submitted)")
        ids = [f"<JOBID_{g.name}>" for g, _, _ in plan.arrays]
        for (g, script, _), j in zip(plan.arrays, ids):
            print(_show(b, submit_command(b, script), script) + f"   # -> {j}")
        print(_show(b, submit_command(b, plan.report[0], after=ids), plan.report[0]))
        return 0
    plan.logs.mkdir(parents=True, exist_ok=True)  # neither scheduler creates the log folder
    for _, script, text in plan.arrays:
        atomic_write_text(script, text, executable=True)
    atomic_write_text(plan.report[0], plan.report[1], executable=True)
    record = {"backend": b, "submitted": rf.now(), "cwd": os.getcwd(), "jobs": [], "report": None,
              "entries": [i for g, _, _ in plan.arrays for i in g.entries]}  # fmt: skip
    try:
        for g, script, _ in plan.arrays:
            cmd = submit_command(b, script)
            job_id = _submit(b, cmd, script)
            record["jobs"].append({"name": g.name, "job_id": job_id, "entries": g.entries, "queue": g.resources.queue,
                                   "script": str(script), "command": _show(b, cmd, script)})  # fmt: skip
            print(f"submitted {g.name}: job {job_id}, {len(g.entries)} runs ({_ranges(g.entries)})   {_show(b, cmd, script)}")
        cmd = submit_command(b, plan.report[0], after=[j["job_id"] for j in record["jobs"]])
        job_id = _submit(b, cmd, plan.report[0])
        record["report"] = {"job_id": job_id, "script": str(plan.report[0]), "command": _show(b, cmd, plan.report[0])}
        print(f"submitted report: job {job_id}   {_show(b, cmd, plan.report[0])}")
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        rf.record_submission(plan.phase_dir, {**record, "error": str(e)})  # what did get submitted is on record
        print(f"imginav: error: {e}", file=sys.stderr)
        if record["jobs"]:
            print(f"imginav: already submitted: {', '.join(j['job_id'] for j in record['jobs'])} (see submission.json)", file=sys.stderr)
        return 1
    rf.record_submission(plan.phase_dir, record)
    print(f"recorded in {plan.phase_dir / rf.SUBMISSION}; logs in {plan.logs}; watch: imginav status {plan.phase_dir}")
    return 0


# ---------------------------------------------------------------------------------------------------------
# Local backend


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _fmt_s(s: float | None) -> str:
    if s is None:
        return "-"
    s = int(round(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def _run_local(index_file: Path, runs: list[dict], entries: list[int], jobs: int, logs: Path) -> dict[int, tuple[int, float]]:
    """`imginav run-one INDEX i` for each entry, `jobs` at a time; returns {i: (exit code, seconds)}."""
    threads = max(1, _cpu_count() // jobs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    logs.mkdir(parents=True, exist_ok=True)
    todo, running, results = list(entries), {}, {}
    print(f"running {len(entries)} runs, {jobs} at a time, {threads} CPU thread(s) each; logs in {logs}")
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
                          f"{_fmt_s(results[i][1])})", flush=True)  # fmt: skip
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
                     f"{best:.5g}" if best is not None else "-", _fmt_s(results.get(i, (0, None))[1])])  # fmt: skip
    return _table(["experiment", "seed", "status", "epochs", "best val MSE", "wall time"], rows)


# ---------------------------------------------------------------------------------------------------------
# imginav run


def run_phase(params_file: str | Path, backend: str | None = None, jobs: int = 1, only: list[str] | None = None,
              dry_run: bool = False, runs_root: str | None = None) -> int:  # fmt: skip
    """Validate, prepare the data once, write the index, then run (local) or submit (lsf, slurm). Returns the exit code."""
    params_file = Path(params_file)
    # A dry run may show a cluster's params on a laptop that lacks the data: do not require the manifest.
    phase = load_phase(params_file, check_files=not dry_run)
    base = params_file.resolve().parent
    backend = backend or phase.cluster.backend
    if backend not in ("local", "lsf", "slurm"):
        raise InputError(f"--backend: invalid backend {backend!r} (local, lsf or slurm)")
    if jobs < 1:
        raise InputError(f"--jobs: must be at least 1, got {jobs}")
    unknown = [n for n in (only or []) if n not in phase.experiments]
    if unknown:
        raise InputError(f"--only: no experiment {unknown[0]!r} in {params_file} (have: {', '.join(phase.experiments)})")
    if runs_root:
        root = _expand(runs_root, Path.cwd(), "--runs-root", dry_run)
    elif backend != "local" and phase.cluster.runs_root:
        root = _expand(phase.cluster.runs_root, base, f"{params_file}: cluster.runs_root", dry_run)
    else:
        root = Path(phase.runs_root)
    phase_dir = root / phase.phase
    logs = _expand(phase.cluster.logs_dir, base, f"{params_file}: cluster.logs_dir", dry_run) if phase.cluster.logs_dir else phase_dir / rf.LOGS
    runs = runs_of(phase, str(root))
    entries = [i for i, r in enumerate(runs, 1) if only is None or r["experiment"] in only]
    old = rf.read_json(phase_dir / rf.INDEX)
    if old and old.get("params_hash") != params_hash(params_file) and rf.holds_runs(phase_dir):
        raise InputError(f"{phase_dir} holds runs of another version of {params_file} (params hash "
                         f"{old.get('params_hash')}): pass another --runs-root or move those runs away")  # fmt: skip
    if not dry_run:
        train_notebook()  # the jobs run the repository's notebook: fail here, not in every job
        if backend != "local":
            tool = "bsub" if backend == "lsf" else "sbatch"
            if shutil.which(tool) is None:
                raise InputError(f"--backend {backend}: {tool} not found on PATH (run on a login node, or use --dry-run)")

    if backend == "local":
        if dry_run:
            index = phase_dir / rf.INDEX
            print(f"dry run: would write {index} and run, {jobs} at a time:")
            for i in entries:
                print(f"  imginav run-one {shlex.quote(str(index))} {i}   # {runs[i - 1]['experiment']} seed {runs[i - 1]['seed']}")
            return 0
        print(f"cache: {prepare_phase_data(phase)}")
        index = write_index(phase, params_file, root)
        rf.record_submission(phase_dir, {"backend": "local", "submitted": rf.now(), "entries": entries, "jobs": []})
        results = _run_local(index, runs, entries, jobs, logs)
        print("\n" + _summary(runs, entries, results))
        ok = all(rc == 0 for rc, _ in results.values())
        try:
            from .report import build_report

            print(f"report: {build_report(phase_dir, params_file=str(params_file.resolve()))}")
        except Exception as e:  # the runs stay; the report can be rebuilt with `imginav report`
            print(f"imginav: report failed: {type(e).__name__}: {e} (runs kept; retry: imginav report {phase_dir})", file=sys.stderr)
            return 1
        return 0 if ok else 1

    # A finished run would only occupy a GPU slot to say "already done": submit the others (e.g. after a failure).
    done = [i for i in entries if rf.RunFolder(runs[i - 1]["run_dir"]).status() == rf.RunStatus.DONE]
    if done:
        print(f"skipping {len(done)} run(s) already done: entries {_ranges(done)}")
        entries = [i for i in entries if i not in done]
    if not entries:
        print(f"nothing to submit: every selected run is done (report: imginav report {phase_dir})")
        return 0
    plan = plan_jobs(phase, params_file.resolve(), backend, runs, entries, phase_dir, logs)
    if not dry_run:
        print(f"cache: {prepare_phase_data(phase)}")
        write_index(phase, params_file, root)
    return _submit_cluster(plan, phase, dry_run)


# ---------------------------------------------------------------------------------------------------------
# imginav status


def _scheduler_states(backend: str, job_ids: set[str]) -> dict[tuple[str, int], str] | None:
    """{(array job id, index): 'pending' | 'running'} for our jobs still in the queue; None if not asked/available."""
    if not job_ids:
        return None
    if backend == "slurm" and shutil.which("squeue"):
        cmd = ["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(sorted(job_ids))]
    elif backend == "lsf" and shutil.which("bjobs"):
        cmd = ["bjobs", "-noheader", "-o", "jobid stat jobindex delimiter='|'", *sorted(job_ids)]
    else:
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 and not out.stdout.strip():
        # squeue -j fails once every listed job has left the queue: all of them ended
        return {} if "Invalid job id" in out.stderr or "not found" in out.stderr else None
    states = {}
    for line in out.stdout.splitlines():
        parts = line.strip().split("|")
        if backend == "slurm" and len(parts) == 2:
            jid, st = parts
            m = re.match(r"(\d+)_(\d+|\[[^\]]+\])$", jid)
            if not m:
                continue
            idx = _expand_ranges(m.group(2).strip("[]")) if m.group(2).startswith("[") else [int(m.group(2))]
            kind = "running" if st in ("RUNNING", "COMPLETING", "CONFIGURING") else "pending" if st in (
                "PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED") else None  # fmt: skip
        elif backend == "lsf" and len(parts) == 3:
            jid, st, index = parts
            idx = [int(index)] if index.strip().isdigit() else []
            kind = "running" if st in ("RUN", "USUSP", "SSUSP") else "pending" if st in ("PEND", "PSUSP") else None
        else:
            continue
        for k in idx:
            if kind:
                states[(jid.split("_")[0].strip(), k)] = kind
    return states


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
    if status == "running":
        if sched == "pending":
            return "requeued"  # killed without a checkpoint request, requeued by the scheduler
        age = _age(info.get("updated"))
        return "stale" if age is not None and age > stale_after_s else "running"
    if status == "preempted":
        if backend in ("lsf", "slurm") and (sched is not None or not sched_known):
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


def status_rows(phase_dir: Path, stale_after_s: float) -> list[dict]:
    """One dict per experiment x seed of a phase folder (what `imginav status` prints)."""
    index = read_index(phase_dir / rf.INDEX)
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
    sched = {b: _scheduler_states(b, ids) for b, ids in by_backend.items()}
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
                  f"{r['updated'][11:19]} ({_fmt_s(r['age_s'])} ago)" if r["updated"] and r["age_s"] is not None else "-",
                  r["job_id"] or "-", r["attempts"] or "-", _fmt_s(r["eta_s"])] for r in rows]  # fmt: skip
        print(f"{phase_dir}")
        print(_table(["#", "experiment", "seed", "state", "epoch", "best val MSE", "last update (UTC)", "job",
                      "attempts", "ETA"], table))  # fmt: skip
        counts: dict[str, int] = {}
        for r in rows:
            counts[r["state"]] = counts.get(r["state"], 0) + 1
        print(", ".join(f"{n} {s}" for s, n in counts.items()))
        for r in rows:
            if r["error"]:
                print(f"  {r['experiment']} seed {r['seed']}: {r['error'][:200]}")
    return 0
