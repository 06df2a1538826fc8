"""Stop requests in the training kernel (train/stopping.py), in a child process: a signal that arrives before the
notebook knows its run folder must still become the STOP file once it does, and never kill the kernel."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

KERNEL = """
import os, signal, sys
from pathlib import Path
from imginav_lib.train.stopping import block_stop_signals, stop_on_signals
run_dir = Path(sys.argv[1])
{before}
stop_on_signals(run_dir)  # the run folder becomes known
print("STOP" if (run_dir / "STOP").exists() else "no STOP", "in", run_dir.name)
"""


@pytest.mark.parametrize("before, sig", [
    # the notebook's first cell installs the handler; the scheduler's warning comes before the folder is known
    ("stop_on_signals()\nos.kill(os.getpid(), signal.SIG)", "SIGUSR2"),
    ("stop_on_signals()\nos.kill(os.getpid(), signal.SIG)", "SIGTERM"),
    # run-one started the kernel with the signals blocked: one sent then waits, and the first cell takes it
    ("block_stop_signals()\nos.kill(os.getpid(), signal.SIG)\nstop_on_signals()", "SIGUSR2"),
], ids=["usr2", "term", "usr2-while-blocked"])
def test_a_signal_before_the_run_folder_is_known_becomes_the_stop_file_once_it_is(tmp_path, before, sig):
    run_dir = tmp_path / "F1_seed1"  # not made yet: a first attempt
    code = textwrap.dedent(KERNEL).format(before=before.replace("signal.SIG", f"signal.{sig}"))
    p = subprocess.run([sys.executable, "-c", code, str(run_dir)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr  # the signal did not kill the process
    assert f"{sig}: stop requested (the run folder, once it is known)" in p.stdout
    assert "STOP in F1_seed1" in p.stdout and (run_dir / "STOP").is_file()


def test_no_signal_leaves_no_stop_file(tmp_path):
    run_dir = tmp_path / "F1_seed1"
    code = textwrap.dedent(KERNEL).format(before="stop_on_signals()")
    p = subprocess.run([sys.executable, "-c", code, str(run_dir)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "no STOP in F1_seed1" in p.stdout, p.stderr
    assert not (run_dir / "STOP").exists()
