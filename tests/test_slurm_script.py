"""What SLURM is given and what we read back, without a cluster: the `#SBATCH` lines of an array and of a single
job, the `sbatch` command line with its dependencies, the job id `sbatch --parsable` prints and the one-line error
when it refuses, and the queue states `squeue` answers (a stand-in for `subprocess.run`; the live-cluster tests
are tests/test_slurm.py)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from imginav_lib.config.schema import Cluster, ClusterResources
from imginav_lib.launch.schedulers import Slurm
from imginav_lib.launch.schedulers import slurm as slurm_module
from imginav_lib.launch.schedulers.base import QueueJob

LOGS = Path("/scratch/my runs/p1/logs")  # a space: the log paths are quoted
FULL = ClusterResources(queue="gpua100", project="imginav", cores=4, mem_per_core_gb=1.5, gpus=2, walltime="12:30")


def test_an_array_asks_for_every_resource_set_and_requeues_on_the_warning_signal():
    lines = Slurm().array_directives("p1_base", "[1-3,7]%2", FULL, LOGS, Cluster(warning_minutes=10))
    assert lines == [
        "#SBATCH --job-name=p1_base",
        "#SBATCH --partition=gpua100",
        "#SBATCH --account=imginav",
        "#SBATCH --ntasks=1",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem-per-cpu=1536M",  # 1.5 GB is not a whole number of G: SLURM gets megabytes
        "#SBATCH --gres=gpu:2",
        "#SBATCH --time=12:30:00",  # H:MM becomes H:MM:SS (SLURM reads "12:30" as minutes:seconds)
        "#SBATCH --array=1-3,7%2",
        "#SBATCH --signal=B:USR2@600",  # the warning 10 minutes (600 s) before the walltime, to the batch shell
        "#SBATCH --requeue",
        "#SBATCH --open-mode=append",  # a requeued element appends to its log
        '#SBATCH --output="/scratch/my runs/p1/logs/p1_base_%A_%a.out"',
        '#SBATCH --error="/scratch/my runs/p1/logs/p1_base_%A_%a.err"',
    ]


def test_a_single_job_with_nothing_set_asks_for_one_task_and_its_logs_only():
    """gpus 0 and every other field None: the partition's defaults apply; no array, signal or requeue lines."""
    lines = Slurm().job_directives("p1_report", ClusterResources(gpus=0), LOGS, Cluster())
    assert lines == [
        "#SBATCH --job-name=p1_report",
        "#SBATCH --ntasks=1",
        '#SBATCH --output="/scratch/my runs/p1/logs/p1_report_%j.out"',
        '#SBATCH --error="/scratch/my runs/p1/logs/p1_report_%j.err"',
    ]


@pytest.mark.parametrize("gb, line", [(8, "--mem-per-cpu=8G"), (0.25, "--mem-per-cpu=256M")])
def test_memory_per_core_in_whole_gigabytes_or_megabytes(gb, line):
    res = ClusterResources(cores=1, mem_per_core_gb=gb)
    assert f"#SBATCH {line}" in Slurm().job_directives("p1_prepare", res, LOGS, Cluster())


def test_the_signal_comes_warning_minutes_before_the_walltime():
    lines = Slurm().array_directives("p1_base", "[1-4]", ClusterResources(), LOGS, Cluster(warning_minutes=3))
    assert "#SBATCH --signal=B:USR2@180" in lines and "#SBATCH --array=1-4" in lines


@pytest.mark.parametrize("done, ended, deps", [
    ([], [], []),
    (["11", "14"], [], ["--dependency=afterok:11:14", "--kill-on-invalid-dep=yes"]),  # the array waits for prepare
    ([], ["21", "22"], ["--dependency=afterany:21:22", "--kill-on-invalid-dep=yes"]),  # the report waits for arrays
    (["11"], ["21", "22"], ["--dependency=afterok:11,afterany:21:22", "--kill-on-invalid-dep=yes"]),
])
def test_the_sbatch_command_and_its_dependencies(done, ended, deps):
    script = Path("/scratch/p1/jobs/array.sh")
    assert Slurm().submit_command(script, done, ended) == ["sbatch", "--parsable", *deps, str(script)]


class FakeRun:
    """subprocess.run as sbatch or squeue would answer: records each call's argv and keyword arguments."""

    def __init__(self, returncode: int = 0, stdout: str = "", stderr: str = ""):
        self.answer = (returncode, stdout, stderr)
        self.calls: list[tuple[list[str], dict]] = []

    def __call__(self, cmd, **kwargs):
        self.calls.append((cmd, kwargs))
        rc, out, err = self.answer
        return subprocess.CompletedProcess(cmd, rc, out, err)


CMD = ["sbatch", "--parsable", "/scratch/p1/jobs/array.sh"]


@pytest.mark.parametrize("stdout, job_id", [("4242\n", "4242"), ("4242;cluster2\n", "4242")])
def test_submit_returns_the_job_id_sbatch_parsable_prints(monkeypatch, stdout, job_id):
    """--parsable prints `<job id>[;<cluster>]`; sbatch reads no stdin and is given two minutes."""
    run = FakeRun(0, stdout)
    monkeypatch.setattr(subprocess, "run", run)
    assert Slurm().submit(CMD, Path(CMD[-1])) == job_id
    assert run.calls == [(CMD, {"stdin": subprocess.DEVNULL, "capture_output": True, "text": True, "timeout": 120})]


@pytest.mark.parametrize("rc, stdout, stderr, said", [
    (1, "", "sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified\n",
     "exit 1): sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified"),
    (1, "sbatch: error: said on stdout\n", "", "exit 1): sbatch: error: said on stdout"),  # stderr empty: stdout
    (2, "4242\n", "sbatch: warning: but the exit code says it failed\n",
     "exit 2): sbatch: warning: but the exit code says it failed"),  # a job id and a failure: a failure
    (1, "4242\n", "", "exit 1): 4242"),
    (0, "Submitted batch job\n", "", "exit 0): Submitted batch job"),  # exit 0 without a job id: not submitted
])
def test_a_refused_submission_is_one_line_with_the_command_the_exit_code_and_sbatchs_words(monkeypatch, rc, stdout, stderr, said):
    monkeypatch.setattr(subprocess, "run", FakeRun(rc, stdout, stderr))
    with pytest.raises(RuntimeError) as e:
        Slurm().submit(CMD, Path(CMD[-1]))
    assert str(e.value) == f"sbatch --parsable /scratch/p1/jobs/array.sh failed ({said}"


@pytest.fixture
def squeue(monkeypatch):
    """squeue on PATH, answering through a FakeRun (set `.answer`)."""
    monkeypatch.setattr(slurm_module.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    run = FakeRun()
    monkeypatch.setattr(subprocess, "run", run)
    return run


@pytest.mark.parametrize("stderr, expected", [
    ("slurm_load_jobs error: Invalid job id specified\n", {}),
    ("squeue: error: job 212 not found\n", {}),  # the other wording: every listed job has left the queue
    ("slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n", None),
])
def test_squeue_failing_with_nothing_listed_means_gone_only_when_it_says_so(squeue, stderr, expected):
    squeue.answer = (1, "", stderr)
    assert Slurm().states({"212"}) == expected
    assert Slurm().jobs({"212"}) == expected


def test_jobs_are_the_states_as_queue_jobs_and_none_without_squeue(squeue, monkeypatch):
    squeue.answer = (0, "212_1|RUNNING\n212_[2-3%1]|PENDING\n213|REQUEUE_HOLD\n", "")
    assert Slurm().jobs({"212", "213"}) == {("212", 1): QueueJob("running"), ("212", 2): QueueJob("pending"),
                                             ("212", 3): QueueJob("pending"), ("213", 0): QueueJob("held")}
    assert squeue.calls[0][0] == ["squeue", "-h", "-r", "-o", "%i|%T", "-j", "212,213"]
    monkeypatch.setattr(slurm_module.shutil, "which", lambda tool: None)
    assert Slurm().states({"212"}) is None and Slurm().jobs({"212"}) is None
