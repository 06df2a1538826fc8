"""The cluster schedulers: LSF (`bsub`) and SLURM (`sbatch`), one module each with the methods of
`base.Scheduler`. `SCHEDULERS` is the one list of them; the params schema names the backends itself
(`config.schema.SCHEDULER_NAMES`, so that reading a params file does not import the schedulers), and this module
checks that the two lists agree.
"""
from __future__ import annotations

from imginav_lib.config.schema import BACKENDS, SCHEDULER_NAMES
from imginav_lib.launch.schedulers.base import Scheduler, expand_ranges
from imginav_lib.launch.schedulers.lsf import Lsf
from imginav_lib.launch.schedulers.slurm import Slurm

SCHEDULERS: dict[str, Scheduler] = {s.name: s for s in (Lsf(), Slurm())}
if tuple(SCHEDULERS) != SCHEDULER_NAMES:
    raise ImportError(f"schedulers {tuple(SCHEDULERS)} and config.schema.SCHEDULER_NAMES {SCHEDULER_NAMES} differ")

__all__ = ["BACKENDS", "SCHEDULERS", "Lsf", "Scheduler", "Slurm", "expand_ranges", "job_id_from_env"]


def job_id_from_env() -> str | None:
    """The scheduler's job id of this process (run.json's `job_id`), None outside a job."""
    for s in SCHEDULERS.values():
        job = s.job_id_from_env()
        if job:
            return job
    return None
