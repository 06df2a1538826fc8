"""SLURM (`sbatch`, `squeue`)."""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from imginav_lib.launch.schedulers.base import QueueJob, env_job_id, expand_ranges, mem, query, quoted

if TYPE_CHECKING:
    from imginav_lib.config.schema import Cluster, ClusterResources


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
            d.append(f"--mem-per-cpu={mem(res.mem_per_core_gb, 'G', 'M')}")
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
        out = query(["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(sorted(job_ids))])
        if out is None:
            return None
        if out.returncode != 0 and not out.stdout.strip():
            # squeue -j fails once every listed job has left the queue: all of them ended
            return {} if "Invalid job id" in out.stderr or "not found" in out.stderr else None
        return self.parse_states(out.stdout)

    def jobs(self, job_ids: set[str]) -> dict[tuple[str, int], QueueJob] | None:
        """`states` as QueueJobs: squeue is asked for the state only."""
        states = self.states(job_ids)
        return None if states is None else {k: QueueJob(v) for k, v in states.items()}

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

    def queue_load(self, queues: list[str | None]) -> list[str]:
        """Not asked on SLURM (sinfo/squeue could tell; issue 22 is about LSF): nothing printed."""
        return []

    def job_id_from_env(self) -> str | None:
        return env_job_id(*self.job_env) or env_job_id("SLURM_JOB_ID", None)  # a job outside an array
