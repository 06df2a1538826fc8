"""Atomic file writes, and the checked reads of the files a user gives.

Everything the workbench writes (checkpoints, CSVs, run.json, job scripts, reports) goes through `atomic_path`:
a temp file beside the target, renamed over it only once it is complete. `check_output_dir` and
`check_output_file` say, before any work starts, whether a path can be written at all.

Every file a user gives (params, manifests, images, run.json, index.json) is first checked by
`input_file_problem`: a path that is missing, holds a NUL byte, or is not a regular file (a FIFO would block the
reader for ever, a device or a folder cannot be read as a file) is refused before anything opens it.
`check_input_file` makes that an `InputError` naming the file; `read_input_bytes` reads such a file, turning every
OSError into that one line.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from pathlib import Path

from imginav_lib.errors import InputError

TEMP_GLOB = ".*.tmp"  # atomic_path's temp files: what a killed writer leaves behind

UMASK = os.umask(0)  # read the process umask (the only way is to set it) ...
os.umask(UMASK)  # ... and put it back


SPACE_ERRNOS = {errno.ENOSPC: "no space left on the file system (ENOSPC)",
                errno.EDQUOT: "disk quota exceeded (EDQUOT)"}  # fmt: skip


class OutOfSpace(OSError):
    """A write that failed because its file system is full or the user's quota there is spent: one line naming
    the file, the cause and the free space left (`errno`, `filename` as OSError's)."""

    def __str__(self) -> str:
        return str(self.strerror)  # the one line, which names the file already


def out_of_space(path: str | Path, code: int) -> OutOfSpace:
    """The OutOfSpace error of a write of `path` that failed with errno `code` (ENOSPC or EDQUOT)."""
    folder = Path(path).parent
    try:
        free = f"{shutil.disk_usage(folder).free / 2**20:.1f} MiB free there"
    except OSError:
        free = "free space unknown"
    why = SPACE_ERRNOS.get(code, os.strerror(code))
    return OutOfSpace(code, f"{path}: not written: {why}; {free} (quotas are not shown here: ask `quota`)", str(path))


def space_errno(e: BaseException) -> int | None:
    """ENOSPC/EDQUOT when `e`, or an exception it came from, is an OSError for one of them."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in SPACE_ERRNOS:
            return e.errno
        e = e.__cause__ or e.__context__
    return None


def describe_error(e: BaseException) -> str:
    """'<Type>: <message>' for run.json and the log; a write that ran out of space as OutOfSpace's one line."""
    code = space_errno(e)
    if code is not None and not isinstance(e, OutOfSpace):
        where = next((x.filename for x in (e, e.__cause__, e.__context__) if isinstance(x, OSError) and x.filename), None)
        if where:
            e = out_of_space(where, code)
    return f"{type(e).__name__}: {e}"


def _probe_space(f) -> int | None:
    """After a writer failed without saying why (torch: "unexpected pos ..."): ENOSPC/EDQUOT when 64 KiB more
    cannot be written to the same file (and synced: a network file system may refuse only then), else None."""
    try:
        f.flush()
        os.write(f.fileno(), b"\0" * 65536)
        os.fsync(f.fileno())
    except OSError as e:
        return e.errno if e.errno in SPACE_ERRNOS else None
    return None


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
    """Write through `write(binary_file)`, atomically: if it raises, `path` is as it was and no temp file stays.
    A write that fails for lack of space (ENOSPC, EDQUOT; also when the writer hides the cause, as torch.save
    does) raises OutOfSpace, naming `path` and the free space left once the temp file is gone."""
    code = None
    try:
        with atomic_path(path, executable) as tmp, open(tmp, "wb") as f:
            try:
                write(f)
                f.flush()
            except Exception as e:
                code = space_errno(e) or _probe_space(f)
                raise
    except OutOfSpace:
        raise
    except Exception as e:
        code = code or space_errno(e)  # also a flush or close at the end of the block
        if code is None:
            raise
        raise out_of_space(path, code) from e


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


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):  # fmt: skip
        if test(mode):
            return name
    return "a special file"


def input_file_problem(path: str | Path) -> str | None:
    """Why `path` cannot be read as a file (None: it is a regular file). Follows symlinks; opens nothing."""
    try:
        st = os.stat(path)
    except ValueError:  # os.stat's own check: "embedded null byte"
        return "the path contains a NUL byte"
    except FileNotFoundError:
        return "file not found"
    except OSError as e:
        return e.strerror or str(e)
    return None if stat.S_ISREG(st.st_mode) else f"is {_kind(st.st_mode)}, not a regular file"


def require_regular_file(path: str | Path) -> None:
    """Before opening a file the workbench reads: FileNotFoundError when it is missing, ValueError saying what
    else is wrong (input_file_problem: a FIFO would block the open for ever)."""
    problem = input_file_problem(path)
    if problem == "file not found":
        raise FileNotFoundError(path)
    if problem:
        raise ValueError(problem)


def check_input_file(path: str | Path, what: str = "") -> Path:
    """`path` as a Path if it is a regular file; else InputError `<what>: <path>: <why>` (see input_file_problem)."""
    problem = input_file_problem(path)
    if problem:
        raise InputError(f"{what + ': ' if what else ''}{shown_path(path)}: {problem}")
    return Path(path)


def read_input_bytes(path: str | Path, what: str = "") -> bytes:
    """The bytes of a regular file (check_input_file first); an OSError while reading is the same one line."""
    path = check_input_file(path, what)
    try:
        return path.read_bytes()
    except OSError as e:
        raise InputError(f"{what + ': ' if what else ''}{path}: cannot read: {e.strerror or e}") from None


def shown_path(path: str | Path) -> str:
    """A path for an error line: control characters (a NUL byte, a line break) shown escaped."""
    text = str(path)
    return repr(text)[1:-1] if any(ord(c) < 32 for c in text) else text
