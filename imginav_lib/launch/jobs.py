"""Cluster submission: the runs grouped by resources into job arrays, their scripts from the templates in `hpc/`,
the submission through a scheduler (schedulers.py) and its record in `submission.json`.

When the cache does not exist yet, a prepare job (`imginav prepare`, cluster.prepare resources) decodes the images
first and the arrays wait for it to succeed; the report job waits for it and for every array to end.

Array index i is entry i of the phase index, so a cluster runs exactly the experiments a local run does.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from imginav_lib import resources
from imginav_lib.runs import runfolder as rf
from imginav_lib.files import atomic_write_text
from imginav_lib.config.params import deep_merge
from imginav_lib.config.schema import ClusterResources, Phase
from imginav_lib.errors import InputError
from imginav_lib.launch.schedulers import SCHEDULERS
from imginav_lib.text import plural



def ranges(indices: list[int]) -> str:
    """[1, 2, 3, 7, 9, 10] -> "1-3,7,9-10": array index syntax of both bsub -J and sbatch --array."""
    parts, start = [], None
    for k, i in enumerate(indices):
        if start is None:
            start = i
        if k + 1 == len(indices) or indices[k + 1] != i + 1:
            parts.append(f"{start}" if start == i else f"{start}-{i}")
            start = None
    return ",".join(parts)


@dataclass
class Group:
    """Runs that share resources: one job array."""

    name: str
    resources: ClusterResources
    entries: list[int] = field(default_factory=list)  # 1-based index entries = array indices


def queue_of_seed(phase: Phase, seed: int) -> str:
    """cluster.assign by_seed: the seeds dealt round-robin over cluster.queues, in the order of `seeds` (a seed
    not in the list, e.g. of an older index, by its value)."""
    queues = phase.cluster.queues
    k = phase.seeds.index(seed) if seed in phase.seeds else seed
    return queues[k % len(queues)]


def resources_for(phase: Phase, experiment: str, seed: int | None = None) -> ClusterResources:
    """The defaults with the experiment's overrides (fields it sets) on top; under cluster.assign by_seed the
    queue is the seed's (queue_of_seed), so every experiment of a seed runs on one GPU type."""
    over = phase.cluster.experiments.get(experiment)
    merged = phase.cluster.defaults.model_dump()
    if over is not None:
        merged.update(over.model_dump(exclude_none=True))
    if phase.cluster.assign == "by_seed":
        if seed is None:
            raise ValueError("cluster.assign by_seed: the queue depends on the seed")
        merged["queue"] = queue_of_seed(phase, seed)
    return ClusterResources.model_validate(merged)


def job_groups(phase: Phase, runs: list[dict], entries: list[int]) -> list[Group]:
    """Group the selected entries by their resources (by_experiment: e.g. F1+F2 on gpuv100, F3 on gpul40s;
    by_seed: the seeds of each queue, every experiment of them), in index order."""
    groups: dict[tuple, Group] = {}
    for i in entries:
        res = resources_for(phase, runs[i - 1]["experiment"], runs[i - 1]["seed"])
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


def check_stated_precision(phase: Phase, groups: list[Group], params_file: Path) -> None:
    """A phase whose GPU runs go to more than one queue states its precision: `auto` resolves per GPU (bf16 from
    compute capability 8.0, fp16 below), so the runs of one phase would train in two precisions."""
    queues = sorted({g.resources.queue or "default" for g in groups if (g.resources.gpus or 0) > 0})
    if len(queues) < 2:
        return
    for name, over in phase.experiments.items():
        if deep_merge(phase.training.model_dump(), over.training).get("precision") == "auto":
            raise InputError(f"{params_file}: training.precision: auto (of {name}) on the queues {', '.join(queues)} would resolve per GPU "
                             f"(bf16 from compute capability 8.0, fp16 below): state fp16 or fp32 (or bf16 where every GPU has it)")  # fmt: skip


def render(template: str, **values) -> str:
    """Fill `{{name}}` placeholders of a template in hpc/ (not ${..}: that is bash's); all must be filled."""
    text = resources.job_template(template).read_text()
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
    prepare: tuple[Path, str] | None  # the decode job (script, text); None when the cache exists
    arrays: list[tuple[Group, Path, str]]  # group, script path, script text
    report: tuple[Path, str] | None  # None: no report job (--no-report)

    def scripts(self) -> list[tuple[Path, str]]:
        return ([self.prepare] if self.prepare else []) + [(s, t) for _, s, t in self.arrays] + ([self.report] if self.report else [])


def plan_jobs(phase: Phase, params_file: Path, backend: str, runs: list[dict], entries: list[int],
              phase_dir: Path, logs: Path, prepare: bool, report: bool = True) -> JobPlan:  # fmt: skip
    c = phase.cluster
    sched = SCHEDULERS[backend]
    q = shlex.quote
    index = phase_dir / rf.INDEX
    jobs_dir = phase_dir / rf.JOBS
    setup = "\n".join(c.setup) if c.setup else "# (no cluster.setup lines)"
    common = dict(phase=phase.phase, params_file=q(str(params_file)), index=q(str(index)), setup=setup,
                  warning_minutes=c.warning_minutes, requeue_exit_code=c.requeue_exit_code, logs=q(str(logs)))  # fmt: skip
    slots = f"%{c.max_parallel}" if c.max_parallel else ""
    arrays = []
    groups = job_groups(phase, runs, entries)
    check_stated_precision(phase, groups, params_file)
    for g in groups:
        script = jobs_dir / f"{g.name}.{backend}.sh"
        directives = sched.array_directives(g.name, f"[{ranges(g.entries)}]{slots}", g.resources, logs, c)
        text = render(f"{backend}_array.sh.tmpl", directives="\n".join(directives), script=q(str(script)), name=g.name,
                      n_runs=len(runs), **common)  # fmt: skip
        arrays.append((g, script, text))
    jobs = {}
    for job, res in (("prepare", c.prepare), ("report", c.report)):
        if (job == "prepare" and not prepare) or (job == "report" and not report):
            continue
        name, script = f"{phase.phase}-{job}", jobs_dir / f"{job}.{backend}.sh"
        directives = sched.job_directives(name, res, logs, c)
        jobs[job] = (script, render(f"{backend}_{job}.sh.tmpl", directives="\n".join(directives), script=q(str(script)),
                                    name=name, phase_dir=q(str(phase_dir)), **common))  # fmt: skip
    return JobPlan(backend, phase_dir, logs, jobs.get("prepare"), arrays, jobs.get("report"))


def _queues(plan: JobPlan, phase: Phase) -> list[str | None]:
    """The queues the plan's jobs are sent to (None: the scheduler's default queue)."""
    c = phase.cluster
    return ([c.prepare.queue] if plan.prepare else []) + [g.resources.queue for g, _, _ in plan.arrays] + (
        [c.report.queue] if plan.report else [])  # fmt: skip


def _print_dry_run(plan: JobPlan, load: list[str]) -> None:
    sched = SCHEDULERS[plan.backend]
    if plan.prepare:
        print(f"# ---- {plan.prepare[0]} (decode into the cache: the arrays wait for it)\n{plan.prepare[1]}")
    for g, script, text in plan.arrays:
        print(f"# ---- {script} ({plural(len(g.entries), 'run')}: {ranges(g.entries)})\n{text}")
    if plan.report:
        print(f"# ---- {plan.report[0]}\n{plan.report[1]}")
    if load:
        print("# ---- the queues now\n" + "\n".join(f"# {line}" for line in load))
    print("# ---- commands (dry run: nothing written, nothing submitted)")
    prep = ["<JOBID_prepare>"] if plan.prepare else []
    if plan.prepare:
        print(sched.show(sched.submit_command(plan.prepare[0]), plan.prepare[0]) + "   # -> <JOBID_prepare>")
    ids = [f"<JOBID_{g.name}>" for g, _, _ in plan.arrays]
    for (g, script, _), j in zip(plan.arrays, ids):
        print(sched.show(sched.submit_command(script, done=prep), script) + f"   # -> {j}")
    if plan.report:
        print(sched.show(sched.submit_command(plan.report[0], done=prep, ended=ids), plan.report[0]))


def submit_jobs(plan: JobPlan, phase: Phase, dry_run: bool) -> int:
    """Write the scripts; submit the prepare job (if any), the arrays that wait for it, then the report job that
    waits for all; record what was submitted."""
    sched = SCHEDULERS[plan.backend]
    load = sched.queue_load(_queues(plan, phase))  # pending and running jobs of each queue used, before submitting
    if dry_run:
        _print_dry_run(plan, load)
        return 0
    for line in load:
        print(line)
    plan.logs.mkdir(parents=True, exist_ok=True)  # neither scheduler creates the log folder
    for script, text in plan.scripts():
        atomic_write_text(script, text, executable=True)
    record = {"backend": plan.backend, "submitted": rf.now(), "cwd": os.getcwd(), "logs": str(plan.logs),
              "warning_minutes": phase.cluster.warning_minutes, "prepare": None, "jobs": [], "report": None,
              "entries": [i for g, _, _ in plan.arrays for i in g.entries]}  # fmt: skip
    try:
        prep = []
        if plan.prepare:
            script = plan.prepare[0]
            cmd = sched.submit_command(script)
            job_id = sched.submit(cmd, script)
            record["prepare"] = {"job_id": job_id, "name": f"{phase.phase}-prepare", "script": str(script),
                                 "command": sched.show(cmd, script)}  # fmt: skip
            print(f"submitted the decode into the cache: job {job_id}   {sched.show(cmd, script)}")
            prep = [job_id]
        for g, script, _ in plan.arrays:
            cmd = sched.submit_command(script, done=prep)
            job_id = sched.submit(cmd, script)
            record["jobs"].append({"name": g.name, "job_id": job_id, "entries": g.entries, "queue": g.resources.queue,
                                   "script": str(script), "command": sched.show(cmd, script)})  # fmt: skip
            print(f"submitted {g.name}: job {job_id}, {plural(len(g.entries), 'run')} ({ranges(g.entries)})   {sched.show(cmd, script)}")
        if plan.report is not None:
            cmd = sched.submit_command(plan.report[0], done=prep, ended=[j["job_id"] for j in record["jobs"]])
            job_id = sched.submit(cmd, plan.report[0])
            record["report"] = {"job_id": job_id, "script": str(plan.report[0]), "command": sched.show(cmd, plan.report[0])}
            print(f"submitted report: job {job_id}   {sched.show(cmd, plan.report[0])}")
        else:
            print(f"no report job (--no-report); build it later with: imginav report {plan.phase_dir}")
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        rf.record_submission(plan.phase_dir, {**record, "error": str(e)})  # what did get submitted is on record
        print(f"imginav: error: {e}", file=sys.stderr)
        done = ([record["prepare"]["job_id"]] if record["prepare"] else []) + [j["job_id"] for j in record["jobs"]]
        if done:
            print(f"imginav: already submitted: {', '.join(done)} (see {rf.SUBMISSION})", file=sys.stderr)
        return 1
    rf.record_submission(plan.phase_dir, record)
    print(f"recorded in {plan.phase_dir / rf.SUBMISSION}; logs in {plan.logs}; watch: imginav status {plan.phase_dir}")
    return 0
