"""The atomic-write helper: a failed write leaves the previous file as it was, and no temp file.

A failure is injected into the file object of the helper, halfway through writing, for each kind of file the
workbench writes, each through the writer the library uses for it. `test_every_file_the_library_writes_is_
written_beside_and_renamed` then checks that the library's writers really use the helper.
"""
from __future__ import annotations

import errno
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imginav_lib import files
from imginav_lib.errors import InputError
from imginav_lib.files import UMASK, atomic_path, atomic_write, atomic_write_text, check_output_dir, check_output_file
from imginav_lib.runs.runfolder import write_csv, write_json


def _checkpoint(path, v):
    obj = {"model": {"w": torch.arange(256.0) * v}, "state": {"epoch": v, "best_value": 0.1 * v}}
    atomic_write(path, lambda f: torch.save(obj, f))


def _csv(path, v):
    rows = [{"epoch": e, "val_mse": v / (e + 1), "val_psnr": float("nan")} for e in range(40)]
    write_csv(path, rows, ["epoch", "val_mse", "val_psnr"])


def _json(path, v):
    write_json(path, {"status": "running", "epoch": v, "history": list(range(100 * v))})


def _npz(path, v):
    arrays = {"input": np.full((4, 3, 16, 16), v, np.uint8), "recon": np.arange(4 * 3 * 256, dtype=np.uint8).reshape(4, 3, 16, 16) * v}
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


def _png(path, v):
    grid = Image.fromarray(np.random.default_rng(v).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    atomic_write(path, lambda f: grid.save(f, format="PNG"))


def _html(path, v):
    atomic_write_text(path, f"<!doctype html><title>report {v}</title>" + "<p>row</p>\n" * 200 * v)


def _yaml(path, v):
    atomic_write_text(path, "".join(f"key_{i}: {v}\n" for i in range(100)))


def _cache_array(path, v):
    arr = np.full((8, 3, 16, 16), v, np.uint8)
    atomic_write(path, lambda f: np.save(f, arr))


def _job_script(path, v):
    atomic_write_text(path, "#!/bin/bash\n" + f"echo attempt {v}\n" * 50, executable=True)


KINDS = {
    "checkpoints/latest.pt": _checkpoint,
    "metrics.csv": _csv,
    "run.json": _json,
    "samples/epoch_002.npz": _npz,
    "samples/epoch_002.png": _png,
    "report.html": _html,
    "winner.yaml": _yaml,
    "cache/images.npy": _cache_array,
    "jobs/train.lsf.sh": _job_script,
}


class FailingFile:
    """A file that raises ENOSPC once `limit` bytes have been written (having written the first `limit`)."""

    def __init__(self, f, limit: int):
        self._f, self.limit, self.written, self.failed = f, limit, 0, False

    def write(self, data) -> int:
        data = bytes(data)
        room = self.limit - self.written
        if len(data) > room:
            self._f.write(data[:room])
            self._f.flush()
            self.written, self.failed = self.limit, True
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        self.written += len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def _fail_halfway(monkeypatch, limit: int) -> list[FailingFile]:
    opened = []

    def failing_open(path, mode="r", *args, **kwargs):
        opened.append(FailingFile(open(path, mode, *args, **kwargs), limit))
        return opened[-1]

    monkeypatch.setattr(files, "open", failing_open, raising=False)  # the helper's only way to a file
    return opened


def _listing(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", list(KINDS))
def test_a_write_that_fails_halfway_leaves_the_previous_file_and_no_temp_file(tmp_path, monkeypatch, name):
    write, target = KINDS[name], tmp_path / name
    write(target, 1)
    write(tmp_path / "size_of_new", 2)  # the size of the version that will fail, to fail halfway through it
    half = (tmp_path / "size_of_new").stat().st_size // 2
    (tmp_path / "size_of_new").unlink()
    before = _listing(tmp_path)
    opened = _fail_halfway(monkeypatch, half)
    with pytest.raises(Exception):  # torch.save reports it as a RuntimeError
        write(target, 2)
    assert len(opened) == 1 and opened[0].failed and opened[0].written == half > 0  # after real bytes were written
    assert _listing(tmp_path) == before  # the old file byte for byte, nothing else beside it


@pytest.mark.parametrize("name", list(KINDS))
def test_a_first_write_that_fails_leaves_no_file(tmp_path, monkeypatch, name):
    opened = _fail_halfway(monkeypatch, 10)
    with pytest.raises(Exception):
        KINDS[name](tmp_path / name, 1)
    assert opened[0].failed and _listing(tmp_path) == {}


def test_the_final_path_keeps_its_old_content_until_the_write_completes(tmp_path):
    target = tmp_path / "run.json"
    target.write_bytes(b'{"epoch": 1}')
    seen = []

    def write(f):
        f.write(b'{"epoch": 2, "status": ')
        f.flush()  # were this the final path, a reader would now see half a JSON object
        seen.append(target.read_bytes())
        f.write(b'"done"}')

    atomic_write(target, write)
    assert seen == [b'{"epoch": 1}'] and target.read_bytes() == b'{"epoch": 2, "status": "done"}'


def test_atomic_path_yields_a_temp_file_beside_the_target(tmp_path):
    target = tmp_path / "sub" / "latest.pt"
    with atomic_path(target) as tmp:
        assert Path(tmp).parent == target.parent and Path(tmp).name != target.name  # same file system: rename is atomic
        assert not target.exists()
        Path(tmp).write_bytes(b"x")
    assert target.read_bytes() == b"x" and _listing(tmp_path) == {"sub/latest.pt": b"x"}


def test_written_files_get_the_umask_modes_not_the_temp_file_0600(tmp_path):
    atomic_write_text(tmp_path / "a.yaml", "a: 1\n")
    atomic_write_text(tmp_path / "job.sh", "#!/bin/sh\n", executable=True)
    assert (tmp_path / "a.yaml").stat().st_mode & 0o777 == 0o666 & ~UMASK
    assert (tmp_path / "job.sh").stat().st_mode & 0o777 == 0o777 & ~UMASK


# ---------------------------------------------------------------------------------------------------------
# The library's writers use the helper: every file opened for writing is a temp file beside its target.

_AUDIT: list[list] = []
TEMP = re.compile(r"^\..+\.[^.]+\.tmp$")  # atomic_path's mkstemp name: .<target name>.<random>.tmp


def _audit(event, args):
    if not _AUDIT:
        return
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        flags = args[2] or 0
        mode = args[1] or ""
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT) or any(c in mode for c in "wax+"):
            _AUDIT[-1].append(("open", os.fsdecode(args[0])))
    elif event in ("os.rename", "os.replace"):
        _AUDIT[-1].append(("rename", os.fsdecode(args[1])))


sys.addaudithook(_audit)  # cannot be removed; it records only while _AUDIT holds a list


@pytest.fixture
def writes(monkeypatch):
    """Every file opened for writing and every rename target while the test runs. torch.save to a path
    opens the file in C++ (no audit event), so such a call is recorded as an open of that path."""
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)):
            _AUDIT[-1].append(("open", os.fspath(f)))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    _AUDIT.append([])
    yield _AUDIT[-1]
    _AUDIT.clear()


def _not_atomic(events, root: Path) -> list[str]:
    """Files opened for writing under `root` other than temp files; the cache's empty .lock file holds no data."""
    return sorted({p for kind, p in events if kind == "open" and Path(p).is_relative_to(root)
                   and not TEMP.match(Path(p).name) and not Path(p).name.endswith(".lock")})  # fmt: skip


def test_every_file_a_run_writes_is_written_beside_and_renamed(tmp_path, labelled_manifest, writes):
    from conftest import tiny_params
    from imginav_lib.config.params import resolve_run
    from imginav_lib.train.trainer import fit

    cfg = resolve_run(tiny_params(tmp_path, labelled_manifest, training={"epochs": 1}), "F3", 1)
    fit(cfg, progress=False)
    assert _not_atomic(writes, tmp_path / "runs") + _not_atomic(writes, tmp_path / "cache") == []
    renamed = {Path(p).name for kind, p in writes if kind == "rename"}
    # Not vacuous: each kind of file of a run (and of the cache) went through a rename.
    for name in ("latest.pt", "best.pt", "metrics.csv", "steps.csv", "run.json", "eval.json", "config.yaml",
                 "epoch_001.npz", "epoch_001.png", "images.npy", "masks.npy", "labels.npy", "meta.json"):
        assert name in renamed, name


def test_generated_layouts_are_written_beside_and_renamed(tmp_path, writes):
    from imginav_lib.demo.layouts import make_layouts

    make_layouts(tmp_path / "layouts", n=3, size=32, seed=0)
    assert _not_atomic(writes, tmp_path) == []
    assert {"layout_00001.png", "manifest.csv"} <= {Path(p).name for kind, p in writes if kind == "rename"}


# ---------------------------------------------------------------------------------------------------------
# check_output_dir / check_output_file: the error names the option and what is wrong with the path.


def test_check_output_dir_names_a_file_in_the_way(tmp_path):
    """A file where the folder should be, or a file above it (cannot mkdir through it): each said plainly."""
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match=f"^cache: {re.escape(str(tmp_path / 'f'))} is an existing file, not a folder$"):
        check_output_dir(tmp_path / "f", "cache")
    want = f"cache: cannot create {tmp_path / 'f' / 'a' / 'b'}: {tmp_path / 'f'} is a file, not a folder"
    with pytest.raises(InputError, match=f"^{re.escape(want)}$"):
        check_output_dir(tmp_path / "f" / "a" / "b", "cache")
    check_output_dir(tmp_path / "new" / "sub", "cache")  # made later, under a folder we can write into: fine


def test_a_read_only_folder_is_refused_where_writing_is_wanted(tmp_path, monkeypatch):
    """The nearest existing folder is read-only (faked: the tests run as root, which may write anywhere):
    refused for a folder to write into and for a file, accepted for a folder that is only read."""
    asked = []

    def access(path, mode):
        asked.append((Path(path), mode))
        return not mode & os.W_OK  # may list and enter, not write

    monkeypatch.setattr(os, "access", access)
    want = f"runs: cannot create or write {tmp_path / 'a' / 'b'}: {tmp_path} is not writable"
    with pytest.raises(InputError, match=f"^{re.escape(want)}$"):
        check_output_dir(tmp_path / "a" / "b", "runs")
    assert asked == [(tmp_path, os.W_OK | os.X_OK)]  # the nearest part of the path that exists
    check_output_dir(tmp_path / "a", "runs", writable=False)
    with pytest.raises(InputError, match="^report: cannot create or write .* is not writable$"):
        check_output_file(tmp_path / "report.html", "report")


def test_a_folder_we_may_not_look_into_is_an_input_error(tmp_path, monkeypatch):
    """An OSError while looking (a parent we may not list; faked, as root may list anything) is reported with the
    system's reason, not as a traceback."""

    def exists(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "exists", exists)
    with pytest.raises(InputError, match=f"^logs: {re.escape(str(tmp_path / 'x'))}: Permission denied$"):
        check_output_dir(tmp_path / "x", "logs")


def test_check_output_file_wants_a_file_in_a_folder_that_can_be_made(tmp_path):
    """A folder at the path, or a file above it, is refused naming the option; a folder yet to be made is fine."""
    check_output_file(tmp_path / "new" / "report.html", "report")
    with pytest.raises(InputError, match=f"^report: {re.escape(str(tmp_path))} is a folder, not a file$"):
        check_output_file(tmp_path, "report")
    (tmp_path / "f").write_text("x")
    want = f"--out: cannot create {tmp_path / 'f' / 'sub'}: {tmp_path / 'f'} is a file, not a folder"
    with pytest.raises(InputError, match=f"^{re.escape(want)}$"):
        check_output_file(tmp_path / "f" / "sub" / "report.html", "--out")


def test_a_block_that_removed_its_temp_file_fails_with_its_own_error(tmp_path):
    """The clean-up of a failed block finds no temp file: the block's error comes out, not one of the clean-up;
    the same when the temp file went away before the rename."""
    with pytest.raises(ValueError, match="the block's own"):
        with atomic_path(tmp_path / "a.json") as tmp:
            os.unlink(tmp)
            raise ValueError("the block's own")
    with pytest.raises(FileNotFoundError):
        with atomic_path(tmp_path / "a.json") as tmp:
            os.unlink(tmp)
    assert _listing(tmp_path) == {}


def test_atomic_writes_make_missing_folders_and_are_not_executable_unless_asked(tmp_path):
    """A file is written as open() would write it (0o666 less the umask), a job script with the x bits too, and the
    folders above it are made (a run's checkpoints/ or samples/ folder on its first write)."""

    atomic_write(tmp_path / "a" / "b" / "data.bin", lambda f: f.write(b"x"))
    atomic_write_text(tmp_path / "c" / "d" / "job.sh", "#!/bin/sh\n", executable=True)
    with atomic_path(tmp_path / "e" / "f" / "plain.txt") as tmp:
        Path(tmp).write_text("y")
    assert (tmp_path / "a" / "b" / "data.bin").read_bytes() == b"x"
    assert (tmp_path / "a" / "b" / "data.bin").stat().st_mode & 0o777 == 0o666 & ~UMASK
    assert (tmp_path / "e" / "f" / "plain.txt").stat().st_mode & 0o777 == 0o666 & ~UMASK
    assert (tmp_path / "c" / "d" / "job.sh").stat().st_mode & 0o777 == 0o777 & ~UMASK
