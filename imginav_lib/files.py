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


class atomic_path:
    """`with atomic_path(path) as tmp:` gives a temp path beside `path`; when the block ends without error it is
    renamed over `path` (same folder, so the rename is atomic), otherwise removed and `path` is left as it was.
    A class rather than @contextmanager, so that `make mutate` reaches its logic (mutmut skips decorated code)."""

    def __init__(self, path: str | Path, executable: bool = False):
        self.path, self.executable = Path(path), executable

    def __enter__(self) -> str:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
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
