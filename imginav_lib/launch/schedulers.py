"""The cluster schedulers: LSF (`bsub`) and SLURM (`sbatch`), each one class with the same few methods.

A scheduler turns resources into `#BSUB`/`#SBATCH` directives, says how a script is submitted and how a job waits
for others (`done`: the prepare job succeeded; `ended`: the arrays ended, failed or not), asks the queue for the
state of our jobs (pending, running, held, unknown), and reads its job id from a job's environment.
`SCHEDULERS` is the one list of them; `BACKENDS` adds `local`. Adding a scheduler is one class here, one entry in
`SCHEDULERS` and its three job-script templates in `hpc/` (array, prepare, report).
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from imginav_lib.errors import InputError

if TYPE_CHECKING:
    from imginav_lib.config.schema import Cluster, ClusterResources


def _mem(gb: float, unit_gb: str, unit_mb: str) -> str:
    return f"{gb:g}{unit_gb}" if float(gb).is_integer() else f"{round(gb * 1024)}{unit_mb}"


def expand_ranges(spec: str) -> list[int]:
    """"1-3,7" -> [1, 2, 3, 7] (squeue's compressed array tasks, without a %K suffix)."""
    out = []
    for part in spec.split("%")[0].split(","):
        if "-" in part:
            a, b = part.split("-")
            out.extend(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return out


def quoted(path: Path) -> str:
    """A path in a #BSUB/#SBATCH line, double-quoted: both read the line like a shell word, so spaces are kept."""
    if '"' in str(path):
        raise InputError(f'{path}: the scheduler cannot be given a log path with a " in it')
    return f'"{path}"'


def _query(cmd: list[str]) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None


class Lsf:
    """IBM LSF 10.1. States (bjobs): PROV (dispatched to a host being woken up) and WAIT (a chunk job member waiting
    its turn) are still queued; SSUSP/USUSP are suspended while running; PSUSP is held while pending (by the site
    after too many requeues, or by bstop); UNKWN (the host's sbatchd lost contact with mbatchd) and ZOMBI are for
    the admins. DONE/EXIT rows have ended."""

    name = "lsf"
    submit_tool = "bsub"
    query_tool = "bjobs"
    job_env = ("LSB_JOBID", "LSB_JOBINDEX")  # job id, array index
    STATES = {"PEND": "pending", "PROV": "pending", "WAIT": "pending", "RUN": "running", "SSUSP": "running",
              "USUSP": "running", "PSUSP": "held", "UNKWN": "unknown", "ZOMBI": "unknown"}  # fmt: skip
    release = "bresume '{job}[{i}]'"  # a held element
    held = "held after too many requeues or by bstop"

    def directives(self, name: str, res: ClusterResources, logs: Path, log_stem: str, extra: list[str],
                   c: Cluster) -> list[str]:  # fmt: skip
        d = [f"-J {name}"]
        if res.queue:
            d.append(f"-q {res.queue}")
        if res.project:
            d.append(f"-P {res.project}")
        if res.cores:
            d += [f"-n {res.cores}", '-R "span[hosts=1]"']  # all slots on one host: one process uses them
        if res.mem_per_core_gb:  # per slot where the site reserves per task (per_slot), or per task explicitly
            per = "/task" if c.mem_reserve == "per_task" else ""
            d.append(f'-R "rusage[mem={_mem(res.mem_per_core_gb, "GB", "MB")}{per}]"')
        if res.gpus:
            d.append(f'-gpu "num={res.gpus}:mode={c.gpu_mode}"')  # LSF's default mode is shared
        if res.walltime:
            d.append(f"-W {res.walltime}")
        d += extra
        # A fallback: LSF writes these when the job ends (unless LSB_STDOUT_DIRECT=Y) and drops them on a requeue;
        # the job script appends its own output to a .log in the same folder.
        d += [f"-o {quoted(logs / f'{log_stem}.out')}", f"-e {quoted(logs / f'{log_stem}.err')}"]
        return [f"#BSUB {x}" for x in d]

    def array_directives(self, name: str, spec: str, res: ClusterResources, logs: Path, c: Cluster) -> list[str]:
        """`spec`: "[1-3,7]%2" (elements, and at most that many at once)."""
        extra = ["-wa USR2", f"-wt {c.warning_minutes}", f'-Q "{c.requeue_exit_code}"']
        return self.directives(f'"{name}{spec}"', res, logs, f"{name}_%J_%I", extra, c)

    def job_directives(self, name: str, res: ClusterResources, logs: Path, c: Cluster) -> list[str]:
        """A job that is not an array: the prepare job, the report job."""
        return self.directives(name, res, logs, f"{name}_%J", [], c)

    def submit_command(self, script: Path, done: list[str] = (), ended: list[str] = ()) -> list[str]:
        """Waits for the jobs in `done` to succeed (the prepare job) and for those in `ended` to end, failed ones
        included (the arrays, for the report). A failed prepare job leaves the waiting jobs pending for ever."""
        # bsub reads #BSUB lines only from a script on stdin: `bsub < script` (stdin is passed separately).
        wait = [f"done({j})" for j in done] + [f"ended({j})" for j in ended]
        return ["bsub"] + (["-w", " && ".join(wait)] if wait else [])

    def show(self, cmd: list[str], script: Path) -> str:
        return shlex.join(cmd) + f" < {shlex.quote(str(script))}"

    def submit(self, cmd: list[str], script: Path) -> str:
        with script.open() as stdin:
            out = subprocess.run(cmd, stdin=stdin, capture_output=True, text=True, timeout=120)
        m = re.search(r"Job <(\d+)>", out.stdout)
        if out.returncode != 0 or not m:
            raise RuntimeError(f"{self.show(cmd, script)} failed (exit {out.returncode}): {(out.stderr or out.stdout).strip()}")
        return m.group(1)

    def states(self, job_ids: set[str]) -> dict[tuple[str, int], str] | None:
        """{(job id, index): 'pending' | 'running' | 'held' | 'unknown'} for our jobs still in the queue (index 0:
        a job that is not an array); None if unavailable."""
        if not shutil.which(self.query_tool):
            return None
        out = _query(["bjobs", "-noheader", "-o", "jobid stat jobindex delimiter='|'", *sorted(job_ids)])
        if out is None:
            return None
        if out.returncode != 0 and not out.stdout.strip():
            return {} if "not found" in out.stderr else None  # every listed job has left the queue
        return self.parse_states(out.stdout)

    @classmethod
    def parse_states(cls, stdout: str) -> dict[tuple[str, int], str]:
        """`bjobs -noheader -o "jobid stat jobindex delimiter='|'"`; sites with LSB_BJOBS_DISPLAY_ENH=Y print an
        element's id as `101[3]`, others as `101`."""
        states = {}
        for line in stdout.splitlines():
            parts = [p.strip() for p in line.split("|")]
            m = re.fullmatch(r"(\d+)(?:\[(\d+)\])?", parts[0]) if len(parts) == 3 else None
            if m and parts[1] in cls.STATES:
                index = int(parts[2]) if parts[2].isdigit() else int(m.group(2) or 0)
                states[(m.group(1), index)] = cls.STATES[parts[1]]
        return states

    def job_id_from_env(self) -> str | None:
        """"<job id>[<array index>]" inside a job (just the id outside an array), else None."""
        return _env_job_id(*self.job_env)


class Slurm:
    name = "slurm"
    submit_tool = "sbatch"
    query_tool = "squeue"
    job_env = ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID")
    STATES = {"PENDING": "pending", "REQUEUED": "pending", "REQUEUE_FED": "pending", "SUSPENDED": "pending",
              "CONFIGURING": "running", "RUNNING": "running", "COMPLETING": "running", "REQUEUE_HOLD": "held"}  # fmt: skip
    release = "scontrol release {job}_{i}"
    held = "held (REQUEUE_HOLD)"

    def directives(self, name: str, res: ClusterResources, logs: Path, log_stem: str, extra: list[str],
                   c: Cluster) -> list[str]:  # fmt: skip
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
        d += [f"--output={quoted(logs / f'{log_stem}.out')}", f"--error={quoted(logs / f'{log_stem}.err')}"]
        return [f"#SBATCH {x}" for x in d]

    def array_directives(self, name: str, spec: str, res: ClusterResources, logs: Path, c: Cluster) -> list[str]:
        extra = [f"--array={spec[1:].replace(']', '')}", f"--signal=B:USR2@{c.warning_minutes * 60}",
                 "--requeue", "--open-mode=append"]  # fmt: skip
        return self.directives(name, res, logs, f"{name}_%A_%a", extra, c)

    def job_directives(self, name: str, res: ClusterResources, logs: Path, c: Cluster) -> list[str]:
        return self.directives(name, res, logs, f"{name}_%j", [], c)

    def submit_command(self, script: Path, done: list[str] = (), ended: list[str] = ()) -> list[str]:
        """Like Lsf.submit_command; a failed prepare job cancels the jobs that wait for it (kill-on-invalid-dep)."""
        cmd = ["sbatch", "--parsable"]
        wait = ([f"afterok:{':'.join(done)}"] if done else []) + ([f"afterany:{':'.join(ended)}"] if ended else [])
        if wait:
            cmd += [f"--dependency={','.join(wait)}", "--kill-on-invalid-dep=yes"]
        return cmd + [str(script)]

    def show(self, cmd: list[str], script: Path) -> str:
        return shlex.join(cmd)

    def submit(self, cmd: list[str], script: Path) -> str:
        out = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
        m = re.match(r"(\d+)", out.stdout.strip())
        if out.returncode != 0 or not m:
            raise RuntimeError(f"{self.show(cmd, script)} failed (exit {out.returncode}): {(out.stderr or out.stdout).strip()}")
        return m.group(1)

    def states(self, job_ids: set[str]) -> dict[tuple[str, int], str] | None:
        if not shutil.which(self.query_tool):
            return None
        out = _query(["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(sorted(job_ids))])
        if out is None:
            return None
        if out.returncode != 0 and not out.stdout.strip():
            # squeue -j fails once every listed job has left the queue: all of them ended
            return {} if "Invalid job id" in out.stderr or "not found" in out.stderr else None
        return self.parse_states(out.stdout)

    @classmethod
    def parse_states(cls, stdout: str) -> dict[tuple[str, int], str]:
        """`squeue -h -r -o %i|%T`: `12_3` an array task, `12_[3-5%2]` pending ones, `12` a job (index 0)."""
        states = {}
        for line in stdout.splitlines():
            parts = [p.strip() for p in line.split("|")]
            m = re.fullmatch(r"(\d+)(?:_(\d+|\[[^\]]+\]))?", parts[0]) if len(parts) == 2 else None
            if not m or parts[1] not in cls.STATES:
                continue
            idx = m.group(2) or "0"
            for k in expand_ranges(idx.strip("[]")) if idx.startswith("[") else [int(idx)]:
                states[(m.group(1), k)] = cls.STATES[parts[1]]
        return states

    def job_id_from_env(self) -> str | None:
        return _env_job_id(*self.job_env) or _env_job_id("SLURM_JOB_ID", None)  # a job outside an array


def _env_job_id(job: str, index: str | None) -> str | None:
    if not os.environ.get(job):
        return None
    i = os.environ.get(index or "", "")
    return f"{os.environ[job]}[{i}]" if i and i != "0" else os.environ[job]


SCHEDULERS = {s.name: s for s in (Lsf(), Slurm())}
BACKENDS = ("local", *SCHEDULERS)  # what `--backend` and `cluster.backend` accept


def job_id_from_env() -> str | None:
    """The scheduler's job id of this process (run.json's `job_id`), None outside a job."""
    for s in SCHEDULERS.values():
        job = s.job_id_from_env()
        if job:
            return job
    return None
