"""What every cluster scheduler provides (`Scheduler`), and the small helpers LSF and SLURM share.

A scheduler turns resources into `#BSUB`/`#SBATCH` directives, says how a script is submitted and how a job waits
for others (`done`: the prepare job succeeded; `ended`: the arrays ended, failed or not), asks the queue for the
state of our jobs (pending, running, held, unknown), and reads its job id from a job's environment. Adding a
scheduler is one module beside lsf.py and slurm.py, one entry in `schedulers.SCHEDULERS`, a name in
`config.schema.SCHEDULER_NAMES` and its three job-script templates in `hpc/` (array, prepare, report).
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, NamedTuple, Protocol

from imginav_lib.errors import InputError

if TYPE_CHECKING:
    from imginav_lib.config.schema import Cluster, ClusterResources


class QueueJob(NamedTuple):
    """One of our jobs as the scheduler's queue shows it. `state`: 'pending' | 'running' | 'suspended' | 'held' |
    'unknown' | 'exited' (ended in failure, still listed); the rest is what the scheduler says about it, None where
    it says nothing."""

    state: str
    stat: str | None = None  # the scheduler's own word: USUSP, PEND
    exit_code: int | None = None
    exit_reason: str | None = None  # LSF's termination reason: "TERM_MEMLIMIT: job killed after ..."
    pend_reason: str | None = None  # why it waits
    start: str | None = None  # the scheduler's estimated start, as it prints it


class Scheduler(Protocol):
    name: ClassVar[str]  # the backend's name in params and on the command line
    submit_tool: ClassVar[str]  # bsub, sbatch
    query_tool: ClassVar[str]  # bjobs, squeue
    release: ClassVar[str]  # the command that releases a held element: "{job}" and "{i}" filled in
    held: ClassVar[str]  # why an element is held, in status's words

    def array_directives(self, name: str, spec: str, res: ClusterResources, logs: Path, c: Cluster) -> list[str]:
        """The directive lines of a job array; `spec`: "[1-3,7]%2" (elements, and at most that many at once)."""

    def job_directives(self, name: str, res: ClusterResources, logs: Path, c: Cluster) -> list[str]:
        """The directive lines of a job that is not an array (the prepare job, the report job)."""

    def submit_command(self, script: Path, done: list[str] = (), ended: list[str] = ()) -> list[str]:
        """The command that submits `script`, waiting for `done` to succeed and for `ended` to end."""

    def show(self, cmd: list[str], script: Path) -> str:
        """The submission as a shell line (dry run)."""

    def submit(self, cmd: list[str], script: Path) -> str:
        """Submit; the job id."""

    def states(self, job_ids: set[str]) -> dict[tuple[str, int], str] | None:
        """{(job id, index): 'pending' | 'running' | 'held' | 'unknown'} of our jobs in the queue; None if unknown."""

    def jobs(self, job_ids: set[str]) -> dict[tuple[str, int], QueueJob] | None:
        """Like `states`, with what the scheduler says about each job (reasons, exit codes); None: cannot tell."""

    def queue_load(self, queues: list[str | None]) -> list[str]:
        """Lines on how busy each queue is (None: the default queue), printed before submitting; [] if not asked."""

    def job_id_from_env(self) -> str | None:
        """"<job id>[<array index>]" inside a job of this scheduler, else None."""


def mem(gb: float, unit_gb: str, unit_mb: str) -> str:
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


def query(cmd: list[str]) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None


def env_job_id(job: str, index: str | None) -> str | None:
    if not os.environ.get(job):
        return None
    i = os.environ.get(index or "", "")
    return f"{os.environ[job]}[{i}]" if i and i != "0" else os.environ[job]
