"""Atomic file writes: a reader, a resumed run or a scheduler never sees a half-written file.

Everything the workbench writes (checkpoints, CSVs, run.json, job scripts, reports) goes through `atomic_path`:
a temp file beside the target, renamed over it only once it is complete. `check_output_dir` and
`check_output_file` say, before any work starts, whether a path can be written at all.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from imginav_lib.errors import InputError

TEMP_GLOB = ".*.tmp"  # atomic_path's temp files: what a killed writer leaves behind

UMASK = os.umask(0)  # read the process umask (the only way is to set it) ...
os.umask(UMASK)  # ... and put it back


class atomic_path:
    """`with atomic_path(path) as tmp:` gives a temp path beside `path`; when the block ends without error it is
    renamed over `path` (same folder, so the rename is atomic), otherwise removed and `path` is left as it was.
    A class rather than @contextmanager, so that `make mutate` reaches its logic (mutmut skips decorated code)."""

    def __init__(self, path: str | Path, executable: bool = False):
        self.path, self.executable = Path(path), executable

    def __enter__(self) -> str:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")  # TEMP_GLOB
        os.close(fd)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:  # the block failed: `path` stays as it was, the exception goes on
            self._discard()
            return
        try:
            os.chmod(self.tmp, (0o777 if self.executable else 0o666) & ~UMASK)  # mkstemp makes 0600
            os.replace(self.tmp, self.path)
        except BaseException:
            self._discard()
            raise

    def _discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)


def atomic_write(path: str | Path, write, executable: bool = False) -> None:
    """Write through `write(binary_file)`, atomically: if it raises, `path` is as it was and no temp file stays."""
    with atomic_path(path, executable) as tmp, open(tmp, "wb") as f:
        write(f)


def atomic_write_text(path: str | Path, text: str, executable: bool = False) -> None:
    """UTF-8 text (HTML, YAML, job scripts), through `atomic_write`."""
    atomic_write(path, lambda f: f.write(text.encode()), executable)


def check_output_dir(path: str | Path, what: str, writable: bool = True) -> None:
    """Raise InputError unless `path` is, or can be made, a folder we can write into.

    Called on every output folder (cache, runs root, logs, report) before the expensive work starts, so a
    path that is a file or lies under one fails in a second, not after an hour of decoding or training.
    """
    path = Path(path)
    try:
        if path.exists() and not path.is_dir():
            raise InputError(f"{what}: {path} is an existing file, not a folder")
        above = path
        while not above.exists() and above != above.parent:  # the nearest part of the path that exists
            above = above.parent
        if not above.is_dir():
            raise InputError(f"{what}: cannot create {path}: {above} is a file, not a folder")
        if writable and not os.access(above, os.W_OK | os.X_OK):
            raise InputError(f"{what}: cannot create or write {path}: {above} is not writable")
    except OSError as e:  # e.g. a parent we may not list
        raise InputError(f"{what}: {path}: {e.strerror or e}") from None


def check_output_file(path: str | Path, what: str) -> None:
    """Raise InputError unless a file can be written at `path` (not a folder; its folder can be made)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{what}: {path} is a folder, not a file")
    check_output_dir(path.parent, what)
