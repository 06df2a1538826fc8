"""The cluster schedulers: LSF (`bsub`) and SLURM (`sbatch`), each one class with the same few methods.

A scheduler turns resources into `#BSUB`/`#SBATCH` directives, says how a script is submitted and how a job waits
for others, asks the queue for the state of our array elements, and reads its job id from a job's environment.
`SCHEDULERS` is the one list of them; `BACKENDS` adds `local`. Adding a scheduler is one class here, one entry in
`SCHEDULERS` and its two job-script templates in `hpc/`.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .params import Cluster, ClusterResources


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


def _query(cmd: list[str]) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None


class Lsf:
    name = "lsf"
    submit_tool = "bsub"
    query_tool = "bjobs"
    job_env = ("LSB_JOBID", "LSB_JOBINDEX")  # job id, array index

    def directives(self, name: str, res: ClusterResources, logs: Path, log_stem: str, extra: list[str]) -> list[str]:
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

    def array_directives(self, name: str, spec: str, res: ClusterResources, logs: Path, c: Cluster) -> list[str]:
        """`spec`: "[1-3,7]%2" (elements, and at most that many at once)."""
        extra = ["-wa USR2", f"-wt {c.warning_minutes}", f'-Q "{c.requeue_exit_code}"']
        return self.directives(f'"{name}{spec}"', res, logs, f"{name}_%J_%I", extra)

    def report_directives(self, name: str, res: ClusterResources, logs: Path) -> list[str]:
        return self.directives(name, res, logs, f"{name}_%J", [])

    def submit_command(self, script: Path, after: list[str] | None = None) -> list[str]:
        # bsub reads #BSUB lines only from a script on stdin: `bsub < script` (stdin is passed separately).
        return ["bsub"] + (["-w", " && ".join(f"ended({j})" for j in after)] if after else [])

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
        """{(array job id, index): 'pending' | 'running'} for our jobs still in the queue; None if unavailable."""
        if not shutil.which(self.query_tool):
            return None
        out = _query(["bjobs", "-noheader", "-o", "jobid stat jobindex delimiter='|'", *sorted(job_ids)])
        if out is None:
            return None
        if out.returncode != 0 and not out.stdout.strip():
            return {} if "not found" in out.stderr else None  # every listed job has left the queue
        return self.parse_states(out.stdout)

    @staticmethod
    def parse_states(stdout: str) -> dict[tuple[str, int], str]:
        states = {}
        for line in stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) != 3:
                continue
            jid, st, index = parts
            kind = "running" if st in ("RUN", "USUSP", "SSUSP") else "pending" if st in ("PEND", "PSUSP") else None
            if kind and index.strip().isdigit():
                states[(jid.split("_")[0].strip(), int(index))] = kind
        return states

    def job_id_from_env(self) -> str | None:
        """"<job id>[<array index>]" inside a job (just the id outside an array), else None."""
        return _env_job_id(*self.job_env)


class Slurm:
    name = "slurm"
    submit_tool = "sbatch"
    query_tool = "squeue"
    job_env = ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID")

    def directives(self, name: str, res: ClusterResources, logs: Path, log_stem: str, extra: list[str]) -> list[str]:
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

    def array_directives(self, name: str, spec: str, res: ClusterResources, logs: Path, c: Cluster) -> list[str]:
        extra = [f"--array={spec[1:].replace(']', '')}", f"--signal=B:USR2@{c.warning_minutes * 60}",
                 "--requeue", "--open-mode=append"]  # fmt: skip
        return self.directives(name, res, logs, f"{name}_%A_%a", extra)

    def report_directives(self, name: str, res: ClusterResources, logs: Path) -> list[str]:
        return self.directives(name, res, logs, f"{name}_%j", [])

    def submit_command(self, script: Path, after: list[str] | None = None) -> list[str]:
        cmd = ["sbatch", "--parsable"]
        if after:
            cmd += [f"--dependency=afterany:{':'.join(after)}", "--kill-on-invalid-dep=yes"]
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

    @staticmethod
    def parse_states(stdout: str) -> dict[tuple[str, int], str]:
        states = {}
        for line in stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) != 2:
                continue
            jid, st = parts
            m = re.match(r"(\d+)_(\d+|\[[^\]]+\])$", jid)
            if not m:
                continue
            idx = expand_ranges(m.group(2).strip("[]")) if m.group(2).startswith("[") else [int(m.group(2))]
            kind = "running" if st in ("RUNNING", "COMPLETING", "CONFIGURING") else "pending" if st in (
                "PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED") else None  # fmt: skip
            for k in idx if kind else []:
                states[(jid.split("_")[0].strip(), k)] = kind
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
