"""`imginav status` on SLURM without a cluster: what `squeue -h -r -o "%i|%T" -j <ids>` prints, and the states
it becomes (the live-cluster tests are tests/test_slurm.py).

The fixtures in tests/fixtures/squeue/ follow SLURM's documentation: squeue's `%i` is `<job>_<index>` for an
array task and `<job>_[<ranges>]` for pending tasks shown on one line ("pending job array elements will be
combined on one line of output with the array index values printed using a regular expression", squeue(1),
`-r`); the ranges are lists and `a-b` spans with an optional `%<max running>` suffix, as `sbatch --array`
takes them (job_array.html). compressed.txt and one_per_line.txt list the same elements in the two forms.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from imginav_lib.launch.schedulers import Slurm
from imginav_lib.launch.schedulers.base import expand_ranges

FIXTURES = Path(__file__).parent / "fixtures" / "squeue"
EXPECTED = {
    **{("212", k): "pending" for k in (3, 4, 5, 7, 9, 10)},
    ("212", 1): "running",
    ("212", 2): "running",  # COMPLETING: still holds its node
    ("212", 6): "held",  # REQUEUE_HOLD: requeued too often, waits for `scontrol release`
    **{("212", k): "pending" for k in (11, 12, 14)},  # SUSPENDED
    ("213", 0): "pending",  # a job that is not an array (the prepare or report job)
}


@pytest.mark.parametrize("fixture", ["compressed.txt", "one_per_line.txt"])
def test_squeue_states_are_read_with_ranges_lists_and_limits(fixture):
    assert Slurm.parse_states((FIXTURES / fixture).read_text()) == EXPECTED


@pytest.mark.parametrize("spec, expected", [
    ("3-5", [3, 4, 5]),
    ("3-5%2", [3, 4, 5]),
    ("7,9-10", [7, 9, 10]),
    ("1,3-4,8%4", [1, 3, 4, 8]),
    ("12", [12]),
    ("0-0", [0]),
])
def test_expand_ranges_keeps_every_element(spec, expected):
    assert expand_ranges(spec) == expected


def test_states_asks_squeue_for_our_jobs_and_reads_its_answer(tmp_path, monkeypatch):
    """Through Slurm.states, with an squeue stand-in (tests only) on PATH that records its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    args = tmp_path / "args"
    (bin_dir / "squeue").write_text(f'#!/bin/sh\necho "$@" > "{args}"\ncat "{FIXTURES / "compressed.txt"}"\n')
    (bin_dir / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert Slurm().states({"213", "212"}) == EXPECTED
    assert args.read_text().split() == ["-h", "-r", "-o", "%i|%T", "-j", "212,213"]


def test_lines_squeue_may_add_are_skipped_without_losing_the_rest():
    noise = "slurm_load_jobs: a warning line\n212_8|BOGUS_STATE\n212_13|PENDING|extra\n|RUNNING\n"  # 8, 13: not ours
    assert Slurm.parse_states(noise + (FIXTURES / "compressed.txt").read_text()) == EXPECTED


@pytest.mark.parametrize("rc, stdout, stderr, expected", [
    (0, "", "", {}),  # none of our jobs is in the queue any more (finished within MinJobAge)
    (1, "", "slurm_load_jobs error: Invalid job id specified\n", {}),  # every listed job has left the queue
    (1, "", "slurm_load_jobs error: Socket timed out on send/recv operation\n", None),  # cannot tell
    (1, "212_1|RUNNING\n", "squeue: error: a partial answer\n", {("212", 1): "running"}),
])
def test_what_squeue_says_when_our_jobs_are_gone_or_it_cannot_answer(tmp_path, monkeypatch, rc, stdout, stderr, expected):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "out").write_text(stdout)
    (tmp_path / "err").write_text(stderr)
    (bin_dir / "squeue").write_text(f'#!/bin/sh\ncat "{tmp_path / "out"}"\ncat "{tmp_path / "err"}" >&2\nexit {rc}\n')
    (bin_dir / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert Slurm().states({"212"}) == expected


@pytest.mark.parametrize("env, expected", [
    ({"SLURM_ARRAY_JOB_ID": "7", "SLURM_ARRAY_TASK_ID": "2", "SLURM_JOB_ID": "9"}, "7[2]"),
    ({"SLURM_JOB_ID": "8"}, "8"),  # the prepare or report job
    ({}, None),
])
def test_slurm_job_id_from_the_environment(monkeypatch, env, expected):
    for var in ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_ID"):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert Slurm().job_id_from_env() == expected


@pytest.mark.parametrize("gb, expected", [(8, "8G"), (1.5, "1536M"), (0.25, "256M")])
def test_memory_per_core_in_slurms_units(gb, expected):
    from imginav_lib.launch.schedulers.base import mem

    assert mem(gb, "G", "M") == expected


def test_a_log_path_with_a_double_quote_is_refused_in_one_line():
    from imginav_lib.errors import InputError
    from imginav_lib.launch.schedulers.base import quoted

    assert quoted(Path("/scratch/my runs/x.out")) == '"/scratch/my runs/x.out"'
    with pytest.raises(InputError, match=r'^/scratch/a"b/x.out: the scheduler cannot be given a log path with a " in it$'):
        quoted(Path('/scratch/a"b/x.out'))
