"""`cluster.requeue_exit_code` reaches both backends' job scripts: rendered with a code that is not the default
(77), each script is run by bash with the variables its scheduler sets and stand-ins (tests only) for `imginav`
and `scontrol` on PATH. A stop request before run-one starts exits 77; a run-one that exits 77 is requeued
(LSF: `-Q "77"`; SLURM: the script's own `scontrol requeue`), one that exits the default 99 is not."""
from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from imginav_lib.cli import main
from imginav_lib.demo.layouts import make_layouts

CODE = 77
ENV = {"lsf": {"LSB_JOBID": "101", "LSB_JOBINDEX": "1"},
       "slurm": {"SLURM_ARRAY_JOB_ID": "7", "SLURM_ARRAY_TASK_ID": "1", "SLURM_JOB_ID": "8"}}


def array_script(tmp_path: Path, backend: str, setup: list[str], capsys) -> str:
    manifest = make_layouts(tmp_path / "layouts", n=8, size=32, seed=0)
    params = {"phase": "t", "runs_root": str(tmp_path / "runs"), "seeds": [1],
              "data": {"manifest": str(manifest), "image_size": 32, "cache_dir": str(tmp_path / "cache")},
              "experiments": {"F1": {}},
              "cluster": {"requeue_exit_code": CODE, "setup": setup, "logs_dir": str(tmp_path / "logs")}}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    capsys.readouterr()
    assert main(["run", str(path), "--backend", backend, "--dry-run"]) == 0
    out = capsys.readouterr().out
    parts = re.split(r"^# ---- (\S+).*$", out, flags=re.M)
    scripts = {Path(parts[k]).name: parts[k + 1] for k in range(1, len(parts) - 1, 2)}
    (tmp_path / "logs").mkdir()
    return scripts[f"t-default.{backend}.sh"]


def run_script(tmp_path: Path, backend: str, text: str, imginav_exit: int) -> tuple[int, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    calls = tmp_path / "calls"
    for tool, body in (("imginav", f'echo "imginav $*" >> "{calls}"\nexit {imginav_exit}'),
                       ("scontrol", f'echo "scontrol $*" >> "{calls}"')):
        (bin_dir / tool).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / tool).chmod(0o755)
    script = tmp_path / "array.sh"
    script.write_text(text)
    env = {**os.environ, **ENV[backend], "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    # The scheduler starts the script with no signal blocked (an in-process run-one test may have left them
    # blocked in this process, and a child inherits that).
    unblock = lambda: signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGUSR2, signal.SIGTERM])  # noqa: E731
    p = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60, preexec_fn=unblock)
    return p.returncode, calls.read_text() if calls.exists() else ""


@pytest.mark.parametrize("backend", ["lsf", "slurm"])
def test_a_stop_before_run_one_exits_the_configured_requeue_code(tmp_path, backend, capsys):
    # The warning arrives during the cluster.setup lines: run-one is never started.
    text = array_script(tmp_path, backend, ["kill -USR2 $$"], capsys)
    rc, calls = run_script(tmp_path, backend, text, imginav_exit=0)
    assert rc == CODE
    assert "imginav run-one" not in calls
    assert ("scontrol requeue 7_1" in calls) == (backend == "slurm")


@pytest.mark.parametrize("backend", ["lsf", "slurm"])
@pytest.mark.parametrize("exit_code", [CODE, 99])
def test_only_the_configured_code_requeues(tmp_path, backend, exit_code, capsys):
    text = array_script(tmp_path, backend, [], capsys)
    if backend == "lsf":
        assert f'#BSUB -Q "{CODE}"' in text  # LSF requeues on this exit code itself
    rc, calls = run_script(tmp_path, backend, text, imginav_exit=exit_code)
    assert rc == exit_code and "imginav run-one" in calls
    if backend == "slurm":
        assert ("scontrol requeue 7_1" in calls) == (exit_code == CODE)
