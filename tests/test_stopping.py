"""Stop requests in the training kernel (train/stopping.py): a signal that arrives before the notebook knows its
run folder must still become the STOP file once it does, and never kill the process.

In this process, so that mutation testing sees the code run: the signal is delivered by calling the handler that
`stop_on_signals` installed (what the interpreter does on delivery), and the handlers, the signal mask and the
recorder are put back after. A signal held while blocked is delivered for real, in a child process."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import imginav_lib

from imginav_lib.train import stopping
from imginav_lib.train.stopping import SIGNALS, stop_on_signals


def deliver(sig: signal.Signals) -> None:
    handler = signal.getsignal(sig)
    assert handler is stopping._recorder, f"stop_on_signals did not install its handler for {sig.name}"
    handler(sig, None)


@pytest.fixture
def kernel(capfd):
    handlers = {s: signal.getsignal(s) for s in SIGNALS}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    saved = stopping._recorder
    stopping._recorder = stopping._Recorder()  # a fresh kernel's
    yield capfd
    stopping._recorder = saved
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    for s, h in handlers.items():
        signal.signal(s, h)


@pytest.mark.parametrize("sig", [signal.SIGUSR2, signal.SIGTERM], ids=["usr2", "term"])
def test_a_signal_before_the_run_folder_is_known_becomes_the_stop_file_once_it_is(tmp_path, kernel, sig):
    run_dir = tmp_path / "F1_seed1"  # not made yet: a first attempt
    stop_on_signals()  # the notebook's first cell
    deliver(sig)  # the scheduler's warning, before the run folder is known
    assert not run_dir.exists()
    assert kernel.readouterr().out == f"imginav: {sig.name}: stop requested (the run folder, once it is known)\n"
    stop_on_signals(run_dir)  # the run folder becomes known
    assert (run_dir / "STOP").is_file()


BLOCKED = """
import os, signal, sys
from pathlib import Path
from imginav_lib.train.stopping import block_stop_signals, stop_on_signals
run_dir = Path(sys.argv[1])
block_stop_signals()  # run-one starts the kernel with them blocked
os.kill(os.getpid(), signal.SIGUSR2)  # pending: would kill the process if it arrived without the handler
stop_on_signals()  # unblocks: the pending signal arrives now, and is recorded
assert not run_dir.exists()
stop_on_signals(run_dir)
print("STOP" if (run_dir / "STOP").is_file() else "no STOP")
"""


def test_a_signal_while_blocked_waits_and_becomes_the_stop_file(tmp_path):
    run_dir = tmp_path / "F1_seed1"
    env = {**os.environ, "PYTHONPATH": str(Path(imginav_lib.__file__).parents[1])}  # the package under test
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(BLOCKED), str(run_dir)], env=env,
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert p.returncode == 0 and p.stdout.splitlines()[-1] == "STOP", p.stdout + p.stderr


def test_a_signal_after_the_run_folder_is_known_makes_the_stop_file_at_once(tmp_path, kernel):
    run_dir = tmp_path / "F1_seed1"
    stop_on_signals(run_dir)
    assert not (run_dir / "STOP").exists()
    deliver(signal.SIGTERM)
    assert (run_dir / "STOP").is_file()
    assert f"SIGTERM: stop requested ({run_dir / 'STOP'})" in kernel.readouterr().out


def test_no_signal_leaves_no_stop_file(tmp_path, kernel):
    run_dir = tmp_path / "F1_seed1"
    stop_on_signals()
    stop_on_signals(run_dir)
    assert not (run_dir / "STOP").exists() and not run_dir.exists()


def test_the_stop_file_is_made_in_a_folder_that_exists_or_not_and_a_failure_is_no_crash(tmp_path, kernel):
    deep = tmp_path / "runs" / "phase" / "F1" / "seed1"  # a first attempt: none of the folders exist yet
    stopping.request_stop(deep / "STOP")
    assert (deep / "STOP").is_file()
    (deep / "STOP").unlink()
    stopping.request_stop(deep / "STOP")  # a resumed run: the folder exists
    assert (deep / "STOP").is_file()
    (tmp_path / "file").write_text("")
    stopping.request_stop(tmp_path / "file" / "STOP")  # cannot be made (OSError): the run goes on


class NoDescriptor:
    def __init__(self, error):
        self.error = error

    def fileno(self):
        raise self.error


@pytest.mark.parametrize("error", [OSError("no descriptor"), ValueError("closed"), AttributeError("fileno")])
def test_a_handler_never_fails_for_want_of_a_stdout(monkeypatch, error):
    monkeypatch.setattr(sys, "stdout", NoDescriptor(error))
    stopping._say("imginav: SIGUSR2: stop requested")


def test_the_trainers_flag_is_set_by_its_signal_or_by_the_stop_file(tmp_path):
    flag = stopping.StopFlag(tmp_path / "STOP")
    assert not flag
    (tmp_path / "STOP").touch()
    assert flag  # the file alone (run-one's thread wrote it)
    (tmp_path / "STOP").unlink()
    flag._handle(signal.SIGUSR2, None)
    assert flag  # the signal alone


def test_blocking_outside_the_main_thread_holds_the_signals_and_puts_them_back(kernel):
    import threading

    seen = {}

    def worker():
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)  # a thread inherits its starter's mask
        saved = stopping.block_stop_signals()
        seen["blocked"] = set(SIGNALS) <= signal.pthread_sigmask(signal.SIG_BLOCK, [])
        stopping.restore_stop_signals(saved)
        seen["after"] = set(SIGNALS) & signal.pthread_sigmask(signal.SIG_BLOCK, [])

    before = {s: signal.getsignal(s) for s in SIGNALS}
    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen == {"blocked": True, "after": set()}
    assert {s: signal.getsignal(s) for s in SIGNALS} == before  # handlers live in the main thread: untouched
