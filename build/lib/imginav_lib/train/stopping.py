"""Stop requests: a scheduler's warning (SIGUSR2, `cluster.warning_minutes` before the walltime) or termination
(SIGTERM: preemption, bkill, scancel) asks a run to checkpoint and stop. It must never kill the run.

The request itself is the run folder's STOP file, which the trainer polls every step. Every process of a job may
get the signal (LSF signals all of them; SLURM's `--signal=B:USR2` only the batch shell, which passes it on):

- the job script (hpc/*_array.sh.tmpl) traps it from its first line and passes it on to `imginav run-one`;
- `imginav run-one` blocks the signals from its start (`block_stop_signals`), so the Jupyter kernel it starts
  inherits them blocked: a signal during the kernel's start waits instead of killing it. A thread of run-one
  (`StopFileWriter`) turns the first signal run-one gets into the STOP file;
- in the kernel, the notebook's first cell calls `stop_on_signals()`: a handler that records the signal, then the
  signals unblocked (a waiting one arrives now). `stop_on_signals(run_dir)` names the run folder; a signal recorded
  before becomes the STOP file then. During `fit` the trainer's own handler (`StopFlag`) takes over and puts this
  one back after.

Light imports only: run-one imports this before anything slow.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from pathlib import Path

from imginav_lib.runs.runfolder import STOP

SIGNALS = (signal.SIGUSR2, signal.SIGTERM)


def _say(message: str) -> None:
    # os.write, not print: a handler may interrupt a print of the notebook's output (reentrant buffer).
    with contextlib.suppress(OSError, ValueError, AttributeError):  # stdout without a descriptor
        os.write(sys.stdout.fileno(), (message + "\n").encode())


def request_stop(stop_file: Path) -> None:
    """Create the STOP file (and its run folder, which a first attempt may not have made yet)."""
    with contextlib.suppress(OSError):
        stop_file.parent.mkdir(parents=True, exist_ok=True)
        stop_file.touch()


class _Recorder:
    """The kernel's handler: remembers the last signal; creates the STOP file once the run folder is known."""

    def __init__(self):
        self.signum: int | None = None
        self.stop_file: Path | None = None

    def __call__(self, signum, frame):
        self.signum = signum
        where = self.stop_file or "the run folder, once it is known"
        if self.stop_file is not None:
            request_stop(self.stop_file)
        _say(f"imginav: {signal.Signals(signum).name}: stop requested ({where})")


_recorder = _Recorder()


def stop_on_signals(run_dir: str | Path | None = None) -> None:
    """From now on SIGUSR2/SIGTERM in this process are stop requests (the STOP file in `run_dir`), never a kill.

    Called by the training notebook's first cell (no run folder yet) and again once the run folder is known.
    Outside the main thread only the run folder is recorded (Python handlers live in the main thread)."""
    if run_dir is not None:
        _recorder.stop_file = Path(run_dir) / STOP
        if _recorder.signum is not None:  # a signal came before the run folder was known
            request_stop(_recorder.stop_file)
    if threading.current_thread() is threading.main_thread():
        for s in SIGNALS:
            signal.signal(s, _recorder)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)  # run-one started this kernel with them blocked


def block_stop_signals() -> tuple:
    """Hold SIGUSR2/SIGTERM pending in this thread and in every process and thread started from it (masks are
    inherited through fork and exec); returns what `restore_stop_signals` puts back. Handlers reset to the
    default: a job script starts run-one with the signals ignored, and a pending one must not be dropped."""
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        handlers = {s: signal.signal(s, signal.SIG_DFL) for s in SIGNALS}
    return mask, handlers


def restore_stop_signals(saved: tuple) -> None:
    """Undo `block_stop_signals`. In `imginav run-one` the signals were blocked before (cli.py), so they stay held:
    one that comes after papermill has ended must not kill the process with the default action."""
    mask, handlers = saved
    for s, handler in handlers.items():
        signal.signal(s, handler)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)


class StopFileWriter:
    """run-one's signals, blocked (block_stop_signals), are taken by a thread; the first becomes the STOP file.

    A thread with `sigwait` rather than a handler: a handler would need the signals unblocked in run-one's main
    thread, and the kernel that papermill starts from it would then inherit them unblocked."""

    def __init__(self, stop_file: Path, name: str):
        self.stop_file, self.name = stop_file, name
        self._closing = False
        self._thread = threading.Thread(target=self._wait, name="imginav-stop", daemon=True)

    def _wait(self):
        asked = False
        while True:
            signum = signal.sigwait(set(SIGNALS))
            if self._closing:
                return
            if not asked:  # once: the job script passes a request on again every 2 s until run-one ends
                request_stop(self.stop_file)
                _say(f"imginav: {signal.Signals(signum).name}: asked {self.name} to checkpoint and stop")
                asked = True

    def __enter__(self):
        self._thread.start()  # takes the signals that arrived while they were blocked, too
        return self

    def __exit__(self, *exc):
        self._closing = True
        signal.pthread_kill(self._thread.ident, signal.SIGUSR2)  # wakes sigwait; it returns without a request
        self._thread.join(timeout=10)


class StopFlag:
    """The trainer's stop request: SIGUSR2/SIGTERM while `fit` runs, or the run folder's STOP file. `uninstall`
    puts back the handler that was there (the notebook's, from `stop_on_signals`)."""

    def __init__(self, stop_file: Path):
        self.stop_file = stop_file
        self.signalled = False
        self._previous = {}

    def install(self):
        for sig in SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: only the STOP file works
                pass

    def uninstall(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        self.signalled = True

    def __bool__(self):
        return self.signalled or self.stop_file.exists()
