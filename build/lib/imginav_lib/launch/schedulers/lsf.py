"""IBM LSF 10.1 (`bsub`, `bjobs`)."""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from imginav_lib.launch.schedulers.base import env_job_id, mem, query, quoted

if TYPE_CHECKING:
    from imginav_lib.config.schema import Cluster, ClusterResources


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
            d.append(f'-R "rusage[mem={mem(res.mem_per_core_gb, "GB", "MB")}{per}]"')
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
        out = query(["bjobs", "-noheader", "-o", "jobid stat jobindex delimiter='|'", *sorted(job_ids)])
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
        return env_job_id(*self.job_env)
