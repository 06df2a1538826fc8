"""Small exact checks of the layers `make mutate-runs` mutates, each written against a mutant that survived the
other tests: what bjobs is asked and how its rows read, how long a queue query may take, which queue a seed goes
to, what a held lock says about its holder and when a lock is free, which run folder and params file a phase
folder points to, a prepare worker's setup, the decompression-bomb message and the one-line params errors."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import types
from pathlib import Path

import pytest
from pydantic import ValidationError

from imginav_lib.launch.schedulers import Lsf
from imginav_lib.launch.schedulers import lsf as lsf_module
from imginav_lib.launch.schedulers.base import QueueJob, query

# --- LSF: bjobs --------------------------------------------------------------------------------------------------


@pytest.fixture
def bjobs(monkeypatch):
    """bjobs on PATH, answering `answer` = (returncode, stdout, stderr) and recording each argv."""
    monkeypatch.setattr(lsf_module.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    fake = types.SimpleNamespace(answer=(0, "", ""), calls=[])

    def run(cmd):
        fake.calls.append(cmd)
        return subprocess.CompletedProcess(cmd, *fake.answer)

    monkeypatch.setattr(lsf_module, "query", run)
    return fake


def test_bjobs_is_asked_for_our_jobs_without_a_header_in_the_o_fields(bjobs):
    bjobs.answer = (0, "101[1]|RUN|1|-|-|-|-\n", "")
    assert Lsf().jobs({"99", "101"}) == {("101", 1): QueueJob("running", "RUN")}
    assert bjobs.calls == [["bjobs", "-noheader", "-o", f"{Lsf.FIELDS} delimiter='|'", "101", "99"]]


@pytest.mark.parametrize("job_ids, expected", [({"104"}, {}), ({"104", "105"}, None)])
def test_not_found_means_gone_only_when_every_listed_job_is_not_found(bjobs, job_ids, expected):
    bjobs.answer = (255, "", "Job <104> is not found\n")
    assert Lsf().jobs(job_ids) == expected


def test_without_bjobs_the_states_are_unknown(monkeypatch):
    monkeypatch.setattr(lsf_module.shutil, "which", lambda tool: None)
    assert Lsf().states({"101"}) is None


def test_a_pending_reason_with_a_bar_in_it_is_kept_whole():
    line = "101[2]|PEND|2|-|-|-|Job dependency condition not satisfied: done(99) | ended(98)\n"
    assert Lsf.parse_jobs(line) == {("101", 2): QueueJob(
        "pending", "PEND", pend_reason="Job dependency condition not satisfied: done(99) | ended(98)")}


def test_a_line_that_is_not_a_row_does_not_hide_the_rows_after_it():
    assert Lsf.parse_jobs("bjobs: a warning line\n101[1]|RUN|1\n") == {("101", 1): QueueJob("running", "RUN")}


@pytest.mark.parametrize("row, key", [
    ("101[3]|RUN|-", ("101", 3)),  # no jobindex field value: the index in the id
    ("102|PEND|-", ("102", 0)),  # a job that is not an array
])
def test_the_index_is_read_from_the_id_when_jobindex_says_nothing(row, key):
    assert list(Lsf.parse_jobs(row + "\n")) == [key]


def test_an_empty_field_is_no_value():
    assert Lsf.parse_jobs("101[1]|EXIT|1|1||-|\n") == {("101", 1): QueueJob("exited", "EXIT", 1)}


def test_an_exit_with_nothing_said_is_named_so():
    assert Lsf.exit_words(QueueJob("exited", "EXIT")) == "ended with an error (LSF: EXIT, no reason given)"


# --- the queue query, by_seed queues -----------------------------------------------------------------------------


def test_a_queue_query_gives_up_after_30_seconds(monkeypatch):
    """A hung squeue/bjobs must not hang `imginav status`: 30 s, then "cannot tell" (None)."""
    seen = {}

    def hung(cmd, **kwargs):
        seen.update(kwargs)
        raise subprocess.TimeoutExpired(cmd, kwargs.get("timeout"))

    monkeypatch.setattr(subprocess, "run", hung)
    assert query(["squeue"]) is None
    assert seen == {"capture_output": True, "text": True, "timeout": 30}


def test_seeds_are_dealt_over_the_queues_in_the_order_of_seeds_and_an_unlisted_seed_by_its_value():
    from imginav_lib.launch.jobs import queue_of_seed

    phase = types.SimpleNamespace(seeds=[5, 3, 9], cluster=types.SimpleNamespace(queues=["a100", "h100"]))
    assert [queue_of_seed(phase, s) for s in (5, 3, 9)] == ["a100", "h100", "a100"]
    assert queue_of_seed(phase, 7) == "h100"  # 7 % 2


# --- the run lock ------------------------------------------------------------------------------------------------


def test_a_held_lock_names_its_holder():
    from imginav_lib.runs.runlock import _describe

    content = {"pid": 123, "host": "n1", "job_id": "55[2]", "what": "training", "since": "2026-01-02T03:04:05"}
    assert _describe(content) == "pid 123 on host n1 (job 55[2]), training since 2026-01-02T03:04:05"
    assert _describe({}) == "another process"
    assert _describe({}, pid=77) == "pid 77"


def test_a_lock_this_process_holds_is_not_free(tmp_path):
    """fcntl does not show a process its own lock: without the process's own table the folder would read free."""
    from imginav_lib.runs.runlock import FolderLock, lock_is_free_here

    with FolderLock(tmp_path, "training"):
        assert lock_is_free_here(tmp_path) is False
    assert lock_is_free_here(tmp_path) is True  # taken here, and released


@pytest.mark.parametrize("content", [
    {"host": "another-host", "pid": 1},  # a folder copied back from a cluster: its lock says nothing here
    [socket.gethostname()],  # not a record
])
def test_a_lock_taken_elsewhere_or_unreadable_is_not_called_free(tmp_path, content):
    from imginav_lib.runs.runfolder import LOCK
    from imginav_lib.runs.runlock import lock_is_free_here

    (tmp_path / LOCK).write_text(json.dumps(content))
    assert lock_is_free_here(tmp_path) is False


# --- the run folder ----------------------------------------------------------------------------------------------


def test_the_sample_arrays_and_an_epochs_checkpoint(tmp_path):
    from imginav_lib.runs.runfolder import RunFolder

    rf = RunFolder(tmp_path)
    rf.samples.mkdir()
    for name in ("epoch_002.npz", "epoch_001.npz", "epoch_001.png", "other.npz"):
        (rf.samples / name).touch()
    assert rf.sample_arrays() == [rf.samples / "epoch_001.npz", rf.samples / "epoch_002.npz"]
    assert rf.epoch_checkpoint(7) == tmp_path / "checkpoints" / "epoch_007.pt"


@pytest.mark.parametrize("here, recorded, expected", [
    (True, True, "here"),  # next to index.json wins
    (False, True, "recorded"),  # a runs root elsewhere
    (False, False, "here"),  # neither exists: where it would be
    (False, None, "here"),  # index.json records none
])
def test_the_run_folder_of_an_index_entry(tmp_path, here, recorded, expected):
    from imginav_lib.runs.runfolder import resolve_run_dir

    phase = tmp_path / "phase"
    paths = {"here": phase / "base" / "seed3", "recorded": tmp_path / "elsewhere" / "base" / "seed3"}
    if here:
        paths["here"].mkdir(parents=True)
    if recorded:
        paths["recorded"].mkdir(parents=True)
    entry = {"experiment": "base", "seed": 3}
    if recorded is not None:
        entry["run_dir"] = str(paths["recorded"])
    assert resolve_run_dir(phase, entry) == paths[expected]


def test_a_recorded_relative_path_is_in_the_working_folder(tmp_path, monkeypatch):
    from imginav_lib.runs.runfolder import recorded_path

    monkeypatch.chdir(tmp_path)
    assert recorded_path("params/p1.yaml") == tmp_path / "params" / "p1.yaml"
    assert recorded_path("/abs/p1.yaml") == Path("/abs/p1.yaml")


@pytest.mark.parametrize("index, expected", [
    ({"params_file": "params/p1.yaml"}, "params/p1.yaml"),  # relative to the working folder, resolved
    ({"params_file": "params/gone.yaml"}, None),  # not on this machine
    ({"params_file": 5}, None),  # damaged
    ({}, None),
])
def test_the_params_file_a_phase_folder_belongs_to(tmp_path, monkeypatch, index, expected):
    from imginav_lib.runs.runfolder import INDEX, home_params

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "p1.yaml").write_text("x: 1\n")
    (tmp_path / "phase").mkdir()
    (tmp_path / "phase" / INDEX).write_text(json.dumps(index))
    assert home_params(tmp_path / "phase") == (None if expected is None else (tmp_path / expected).resolve())
    assert home_params(tmp_path / "phase", "params/other.yaml") == (tmp_path / "params" / "other.yaml").resolve()


# --- the cache: a prepare worker, the bomb message ---------------------------------------------------------------


@pytest.mark.parametrize("platform, lock_fd, ppid, expected", [
    ("linux", 7, 100, [("close", 7), ("prctl", 1, signal.SIGKILL)]),  # dies with the parent (PR_SET_PDEATHSIG)
    ("linux", None, 100, [("prctl", 1, signal.SIGKILL)]),
    ("darwin", 7, 100, [("close", 7)]),  # no prctl there
    ("linux", None, 1, [("prctl", 1, signal.SIGKILL), ("_exit", 1)]),  # the parent (pid 100) died before prctl
])
def test_a_prepare_worker_lets_go_of_the_lock_and_dies_with_its_parent(monkeypatch, platform, lock_fd, ppid, expected):
    from imginav_lib.data import cache

    calls = []
    fake_os = types.SimpleNamespace(close=lambda fd: calls.append(("close", fd)), getppid=lambda: ppid,
                                    _exit=lambda code: calls.append(("_exit", code)))  # fmt: skip
    libc = types.SimpleNamespace(prctl=lambda *a: calls.append(("prctl", *a)))
    monkeypatch.setattr(cache, "os", fake_os)
    monkeypatch.setattr(cache, "sys", types.SimpleNamespace(platform=platform))
    monkeypatch.setattr(cache, "ctypes", types.SimpleNamespace(CDLL=lambda name: libc))
    cache._worker_init(100, lock_fd)
    assert calls == expected


def test_the_decompression_bomb_message_says_the_size_when_known(monkeypatch):
    from PIL import Image

    from imginav_lib.data.cache import _too_many_pixels

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert _too_many_pixels(2500) == "2,500 pixels is more than Pillow's limit of 1,000 pixels (decompression-bomb check)"
    assert _too_many_pixels(None) == "its size is more than Pillow's limit of 1,000 pixels (decompression-bomb check)"


# --- params: one-line errors -------------------------------------------------------------------------------------


def test_every_problem_of_a_params_section_in_one_line_a_bad_experiment_name_at_its_section():
    from imginav_lib.config.params import _one_line
    from imginav_lib.config.schema import Cluster

    with pytest.raises(ValidationError) as e:
        Cluster.model_validate({"experiments": {"a/b": {}}, "warning_minutes": 0, "bogus": 1})
    assert _one_line(e.value, "p.yaml") == ("p.yaml: experiments: 'a/b' is not a usable folder name: contains / or \\; "
                                            "warning_minutes: Input should be greater than or equal to 1; "
                                            "bogus: unknown key")  # fmt: skip


def test_a_bad_winner_file_is_named_with_the_field_that_points_to_it(tmp_path):
    from imginav_lib.config.params import _winner_architecture
    from imginav_lib.config.yaml_file import read_yaml
    from imginav_lib.errors import InputError

    field = "p2.yaml: architecture_from"
    bad_key = tmp_path / "winner.yaml"
    bad_key.write_text("architecture: {bogus: 1}\n")
    with pytest.raises(InputError) as e:
        _winner_architecture(bad_key, field)
    assert str(e.value) == f"{field}: {bad_key}: architecture.bogus: unknown key"
    bad_yaml = tmp_path / "broken.yaml"
    bad_yaml.write_text("architecture: [\n")
    with pytest.raises(InputError) as yaml_error:
        read_yaml(bad_yaml)
    with pytest.raises(InputError) as e:
        _winner_architecture(bad_yaml, field)
    assert str(e.value) == f"{field}: {yaml_error.value}"
