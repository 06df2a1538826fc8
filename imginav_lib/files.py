"""Atomic file writes: a reader, a resumed run or a scheduler never sees a half-written file.

Everything the workbench writes (checkpoints, CSVs, run.json, job scripts, reports) goes through `atomic_path`:
a temp file beside the target, renamed over it only once it is complete.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

UMASK = os.umask(0)  # read the process umask (the only way is to set it) ...
os.umask(UMASK)  # ... and put it back


@contextlib.contextmanager
def atomic_path(path: str | Path, executable: bool = False):
    """Yield a temp path beside `path`; when the block ends without error, rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, (0o777 if executable else 0o666) & ~UMASK)  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write(path: str | Path, write) -> None:
    """Write through `write(binary_file)`, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)


def atomic_write_text(path: str | Path, text: str, executable: bool = False) -> None:
    with atomic_path(path, executable) as tmp:
        Path(tmp).write_text(text)
