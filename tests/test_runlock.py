"""One run folder, one writer: the run folder's lock, and `imginav run` refusing a phase that is queued or running."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from imginav_lib.runs import runfolder as rf
from imginav_lib.cli import main
from imginav_lib.launch.runner import write_index
from imginav_lib.config.params import load_params, resolve_run
from imginav_lib.runs.runlock import LOCK_ENV, FolderLock, RunLocked, holder
from imginav_lib.launch.schedulers import Slurm
from imginav_lib.train.trainer import fit

from conftest import tiny_params

HOLD = """
import sys
from imginav_lib.runs.runlock import FolderLock
with FolderLock(sys.argv[1], "training", name=sys.argv[2]):
    print("held", flush=True)
    sys.stdin.read()  # until the test closes stdin (or kills us)
"""


@pytest.fixture
def hold():
    """hold(folder) -> a process holding the folder's lock until the test ends."""
    procs = []

    def start(folder: Path, name: str = rf.LOCK) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), name], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
        procs.append(p)
        assert p.stdout.readline() == "held\n"
        return p

    yield start
    for p in procs:
        p.kill()
        p.wait()


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


@pytest.fixture
def running(tmp_path, labelled_manifest, hold):
    """The tiny phase's F1 run folder, mid-run in another process: (params, index, run folder, holder process)."""
    params = tiny_params(tmp_path, labelled_manifest)
    index = write_index(load_params(params), params, tmp_path / "runs")
    run = Path(resolve_run(params, "F1", 1).run_dir)
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"status": "running", "epoch": 1, "epochs": 2}))
    (run / "STOP").touch()  # the running job's stop request: the second writer must leave it alone
    return params, index, run, hold(run)


def test_second_run_one_on_a_running_folder_exits_2_naming_the_holder_and_touches_nothing(running):
    params, index, run, holder_proc = running
    before = snapshot(run)
    out = subprocess.run([sys.executable, "-m", "imginav_lib.cli", "run-one", str(index), "1"], capture_output=True, text=True)
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("imginav: error: ") and "Traceback" not in out.stderr
    assert f"is in use by pid {holder_proc.pid} on host " in lines[0] and "training since " in lines[0]
    assert snapshot(run) == before  # not marked failed, STOP kept, no notebook written


def test_fit_beside_a_running_job_is_refused_before_writing(running, monkeypatch):
    params, _, run, holder_proc = running
    before = snapshot(run)
    monkeypatch.setenv(LOCK_ENV, "not-the-holders-token")  # only the holder's own token lets a kernel in
    with pytest.raises(RunLocked, match=f"pid {holder_proc.pid}"):
        fit(resolve_run(params, "F1", 1), progress=False)
    assert snapshot(run) == before


def test_a_second_writer_in_the_same_process_is_refused(tmp_path):
    with FolderLock(tmp_path, "training"):
        assert "training" in holder(tmp_path)
        with pytest.raises(RunLocked, match="this process"):
            FolderLock(tmp_path, "a notebook cell").__enter__()
    assert holder(tmp_path) is None
    with FolderLock(tmp_path, "training"):  # released: free again
        pass


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_lock_left_by_a_killed_process_never_blocks_a_resume(tmp_path, hold):
    p = hold(tmp_path)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert json.loads((tmp_path / rf.LOCK).read_text())["pid"] == p.pid  # its record stays, and is not trusted
    assert holder(tmp_path) is None
    with FolderLock(tmp_path, "training"):
        assert json.loads((tmp_path / rf.LOCK).read_text())["pid"] == os.getpid()


def test_lock_file_content_alone_never_locks(tmp_path):
    # A record naming a live process (pid 1 here) on this host, but no fcntl lock: e.g. copied with the folder.
    (tmp_path / rf.LOCK).write_text(json.dumps({"host": os.uname().nodename, "pid": 1, "what": "training"}))
    assert holder(tmp_path) is None
    with FolderLock(tmp_path, "training"):
        pass


def test_run_refuses_a_phase_with_a_running_run_unless_forced(running, capsys):
    params, index, run, holder_proc = running
    before = snapshot(index.parent)
    assert main(["run", str(params), "--backend", "local"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1 run already queued or running (F1 seed 1: running, pid" in err[0] and "--force" in err[0]
    assert snapshot(index.parent) == before and not (params.parent / "cache").exists()  # refused before any work
    assert main(["run", str(params), "--backend", "local", "--dry-run", "--force"]) == 0


def test_run_refuses_a_phase_whose_runs_are_queued(tmp_path, labelled_manifest, monkeypatch, capsys):
    params = tiny_params(tmp_path, labelled_manifest)
    index = write_index(load_params(params), params, tmp_path / "runs")
    rf.record_submission(index.parent, {"backend": "slurm", "submitted": rf.now(), "entries": [1, 2],
                                        "jobs": [{"name": "tiny", "job_id": "555", "entries": [1, 2]}]})  # fmt: skip
    monkeypatch.setattr(Slurm, "states", lambda self, ids: {("555", 2): "pending"} if ids == {"555"} else None)
    assert main(["run", str(params), "--backend", "slurm", "--dry-run"]) == 2
    assert "(F3 seed 1: queued (job 555[2]))" in capsys.readouterr().err
    # another experiment of the phase is not busy
    assert main(["run", str(params), "--backend", "slurm", "--dry-run", "--only", "F1"]) == 0


def test_run_refuses_a_phase_while_a_local_pool_has_it(tmp_path, labelled_manifest, hold, capsys):
    params = tiny_params(tmp_path, labelled_manifest)
    index = write_index(load_params(params), params, tmp_path / "runs")
    p = hold(index.parent, rf.PHASE_LOCK)
    assert main(["run", str(params), "--backend", "local", "--dry-run"]) == 2
    assert f"a local pool: pid {p.pid}" in capsys.readouterr().err
