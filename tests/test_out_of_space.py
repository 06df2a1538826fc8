"""A full file system said plainly (issue 22, case 8): a run whose runs root lies on a small tmpfs fails with one
line naming the file, the cause and the free space, in run.json (which status shows, up to 400 characters); after
space is freed the same run, run again, ends with the metrics of an uninterrupted run. Needs root (mount -t tmpfs); skipped without.
"""
from __future__ import annotations

import errno
import json
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from conftest import tiny_params
from imginav_lib.config.params import resolve_run
from imginav_lib.files import OutOfSpace, atomic_write, describe_error
from imginav_lib.train.trainer import fit

TIMING = ["epoch_time_s", "train_images_per_s"]


@pytest.fixture
def small_fs(tmp_path):
    """A tmpfs mounted at tmp_path/fs; yields (its path, a function that resizes it)."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    if shutil.which("mount") is None or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                                                       capture_output=True).returncode != 0:  # fmt: skip
        pytest.skip("cannot mount a tmpfs here (needs root)")

    def resize(kib: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={kib}k", str(mnt)], check=True)

    try:
        yield mnt, resize
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def test_a_write_that_runs_out_of_space_says_the_file_the_cause_and_the_free_space(small_fs):
    mnt, _ = small_fs
    target = mnt / "big.bin"
    with pytest.raises(OutOfSpace) as e:
        atomic_write(target, lambda f: f.write(b"x" * 200_000))
    assert e.value.errno == errno.ENOSPC and not target.exists() and not list(mnt.iterdir())  # no temp file left
    line = describe_error(e.value)
    assert line.startswith(f"OutOfSpace: {target}: not written: no space left on the file system (ENOSPC); ")
    assert "MiB free there" in line and "\n" not in line


def test_a_run_on_a_full_file_system_fails_in_one_line_and_resumes_once_space_is_freed(tmp_path, small_fs, labelled_manifest):
    mnt, resize = small_fs
    ref = resolve_run(tiny_params(tmp_path / "ref", labelled_manifest), "F3", 1)
    fit(ref, progress=False)
    ref_dir = Path(ref.run_dir)
    size_kib = sum(p.stat().st_size for p in ref_dir.rglob("*") if p.is_file()) // 1024
    ckpt_kib = (ref_dir / "checkpoints" / "latest.pt").stat().st_size // 1024
    # Room for the run folder's small files and one checkpoint, not for a second one beside it (atomic writes
    # need the old and the new file at once): the first checkpoint write fits, a later one does not.
    resize(max(size_kib - 2 * ckpt_kib, ckpt_kib + 64))
    params = tiny_params(tmp_path / "p", labelled_manifest, runs_root=str(mnt / "runs"))
    cfg = resolve_run(params, "F3", 1)
    with pytest.raises(OutOfSpace):
        fit(cfg, progress=False)
    info = json.loads((Path(cfg.run_dir) / "run.json").read_text())
    assert info["status"] == "failed"
    assert info["error"].startswith(f"OutOfSpace: {mnt}/runs/")
    assert "not written: no space left on the file system (ENOSPC); " in info["error"] and "MiB free there" in info["error"]
    resize(64 * 1024)  # space freed: the same run goes on from its last checkpoint
    assert str(OutOfSpace(errno.ENOSPC, "x: not written", "x")) == "x: not written"  # the log's line: once
    assert fit(resolve_run(params, "F3", 1), progress=False).status == "done"
    a = pd.read_csv(ref_dir / "metrics.csv").drop(columns=TIMING, errors="ignore")
    b = pd.read_csv(Path(cfg.run_dir) / "metrics.csv").drop(columns=TIMING, errors="ignore")
    pd.testing.assert_frame_equal(a, b)
