"""One run folder, one writer: an exclusive fcntl lock on `<run folder>/run.lock` for as long as a run trains.

The trainer (`fit`) and `imginav run-one` take it before they write anything. A second process pointed at the same
folder (a phase submitted twice, an array element started twice, a notebook beside a running job) gets `RunLocked`:
one line naming the holder, exit 2, nothing written. The local `imginav run` pool holds the same kind of lock on
its phase folder (`phase.lock`) while it has runs queued.

The kernel drops an fcntl lock when its process ends, however it ends (kill -9 included), so a dead run never
blocks its resume. The lock file is never deleted, and its content (host, PID, job id) is only read to say who
holds a lock that the kernel reports as held; it never decides whether a folder is locked.

POSIX record locks (`fcntl.lockf`), not `flock`: they also exclude processes on other hosts of an NFS share. They
come with two rules: a process drops its lock when it closes *any* descriptor of the file (so this module never
opens a file it holds), and they do not exclude one process from itself (so `_HELD` does).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import struct
import sys
import uuid
from pathlib import Path

from imginav_lib.runs import runfolder as rf
from imginav_lib.errors import InputError

# `imginav run-one` holds the run folder's lock while papermill's kernel trains in it. The kernel is another
# process, so it cannot share the lock: it gets the lock's token in this variable and trains under its launcher's lock.
LOCK_ENV = "IMGINAV_RUN_LOCK"

_HELD: dict[str, FolderLock] = {}  # lock file -> the lock this process holds on it

# struct flock as F_GETLK reads it: (l_type, l_pid) positions differ by platform; Python's off_t is 64-bit.
_FLOCK = {"linux": ("hhqqi", 0, 4), "darwin": ("qqihh", 3, 2)}


class RunLocked(InputError):
    """The folder has a writer already (exit 2, like other input errors: nothing was touched)."""


def _describe(content: dict, pid: int | None = None) -> str:
    """'pid 123 on host n1 (job 55[2]), training since ...' from a lock file's content."""
    pid = content.get("pid") or pid
    who = f"pid {pid}" if pid else "another process"
    if content.get("host"):
        who += f" on host {content['host']}"
    if content.get("job_id"):
        who += f" (job {content['job_id']})"
    if content.get("what"):
        who += f", {content['what']}"
    if content.get("since"):
        who += f" since {content['since']}"
    return who


def _read_content(fd: int) -> dict:
    """The holder's record; {} while it is being written (the holder writes it just after locking)."""
    try:
        content = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}
    return content if isinstance(content, dict) else {}


def _conflicting_pid(fd: int) -> int | None:
    """Whether another process holds a lock on the file (F_GETLK, which takes nothing): its PID as the kernel
    reports it (0 for a holder on another NFS client), or None when the file is free or the platform unknown."""
    layout = _FLOCK.get(sys.platform)
    if layout is None:
        return None
    fmt, type_at, pid_at = layout
    query = [0] * len(fmt)
    query[type_at] = fcntl.F_WRLCK  # "could I take an exclusive lock?" over the whole file (start 0, length 0)
    answer = struct.unpack(fmt, fcntl.fcntl(fd, fcntl.F_GETLK, struct.pack(fmt, *query)))
    return None if answer[type_at] == fcntl.F_UNLCK else answer[pid_at]


def holder(folder: str | Path, name: str = rf.LOCK) -> str | None:
    """Who holds the lock of `folder` (a `_describe` line), None if nobody does. Takes no lock itself."""
    path = Path(folder) / name
    key = str(path.resolve())
    if key in _HELD:
        return _describe(_HELD[key].content)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        pid = _conflicting_pid(fd)
        return None if pid is None else _describe(_read_content(fd), pid)
    finally:
        os.close(fd)


def lock_is_free_here(folder: str | Path, name: str = rf.LOCK) -> bool:
    """True when the lock of `folder` was last taken by a process on this host and nobody holds it now: then no
    process trains in the folder, whatever its heartbeat says (the kernel dropped the lock when the process ended,
    kill -9 included). False when the lock is held, was never taken, or was taken on another host (a folder copied
    back from a cluster, or one on a shared file system whose locks this host cannot see): then ask the scheduler."""
    path = Path(folder) / name
    if str(path.resolve()) in _HELD:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        content = _read_content(fd)
        if content.get("host") != socket.gethostname() or sys.platform not in _FLOCK:
            return False
        return _conflicting_pid(fd) is None
    finally:
        os.close(fd)


class FolderLock:
    """`with FolderLock(run_dir, "training"):` holds `run_dir/run.lock` or raises RunLocked before anything is written.

    When the lock is already held by the process that started this one and passed its token in $IMGINAV_RUN_LOCK
    (`imginav run-one` -> papermill's kernel), the block runs under that lock instead.
    """

    def __init__(self, folder: str | Path, what: str, name: str = rf.LOCK, job_id: str | None = None):
        self.path = Path(folder) / name
        self.what = what
        self.job_id = job_id  # the scheduler's job id of this process, recorded for whoever finds the lock held
        self.fd: int | None = None
        self.content: dict = {}

    def __enter__(self) -> FolderLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        key = str(self.path.resolve())
        if key in _HELD:  # fcntl would let this process lock again: a second writer in this process
            raise RunLocked(f"{self.path.parent} is in use by {_describe(_HELD[key].content)} (this process)")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            content = _read_content(fd)
            os.close(fd)  # we hold nothing on it: closing drops nothing
            if content.get("token") and content["token"] == os.environ.get(LOCK_ENV):
                return self  # our launcher holds it for us
            raise RunLocked(f"{self.path.parent} is in use by {_describe(content)}: one writer per folder; "
                            "wait for it to end or stop it") from None  # fmt: skip
        self.fd = fd
        self.content = {"host": socket.gethostname(), "pid": os.getpid(), "job_id": self.job_id,
                        "what": self.what, "since": rf.now(), "token": uuid.uuid4().hex}  # fmt: skip
        # In place, not through a temp file: a renamed file would be another inode, with no lock on it.
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(self.content).encode(), 0)
        _HELD[key] = self
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            _HELD.pop(str(self.path.resolve()), None)
            os.close(self.fd)  # releases the lock; the file stays (deleting it would race with the next locker)
            self.fd = None

    @contextlib.contextmanager
    def shared_with_children(self):
        """Child processes started in this block (papermill's kernel) train under this lock."""
        before = os.environ.get(LOCK_ENV)
        os.environ[LOCK_ENV] = self.content.get("token", "")
        try:
            yield
        finally:
            if before is None:
                os.environ.pop(LOCK_ENV, None)
            else:
                os.environ[LOCK_ENV] = before
