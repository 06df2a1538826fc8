"""kill -9 anywhere loses nothing: the crash soak (bench/crash_soak.py) at a CI size, and the cases it found."""
import importlib.util
import json
import signal
from pathlib import Path

import pandas as pd
import pytest

from imginav_lib.runs import runfolder as rf
from imginav_lib.train import trainer
from imginav_lib.config.params import resolve_run
from imginav_lib.train.trainer import fit

from conftest import tiny_params

REPO = Path(__file__).resolve().parents[1]


def load_soak():
    spec = importlib.util.spec_from_file_location("crash_soak", REPO / "bench" / "crash_soak.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_kill_9_in_every_write_window_then_resume_equals_an_uninterrupted_run(tmp_path):
    """One kill per window (the full 20: `make soak`); mismatches include half-written or leftover files."""
    soak = load_soak()
    f = soak.soak(kills=len(soak.PHASES), epochs=2, seed=0, root=tmp_path)
    assert f["problems"] == [] and f["mismatches"] == 0
    assert f["kills"] == f["resumes"] == len(soak.PHASES)
    assert all(n == 1 for n in f["per_phase"].values()), f["per_phase"]


class Killed(BaseException):
    """Stands in for kill -9 (the heartbeat then says failed, which a resume ignores just like running)."""


def test_killed_during_final_evaluation_after_an_early_stop_resumes_without_training_on(tmp_path, labelled_manifest, monkeypatch):
    # min_delta this large (99% of the best): epoch 1 improves on inf, epoch 2 does not, and patience 1 stops the 4-epoch run there
    over = {"training": {"epochs": 4, "early_stopping": {"patience": 1, "min_delta": 0.99}}}
    cfg = resolve_run(tiny_params(tmp_path, labelled_manifest, **over), "F1", 1)

    def die(*args):
        raise Killed

    monkeypatch.setattr(trainer, "_final_eval", die)
    with pytest.raises(Killed):
        fit(cfg, progress=False)
    monkeypatch.undo()
    fit(cfg, progress=False)
    assert list(pd.read_csv(Path(cfg.run_dir) / rf.METRICS)["epoch"]) == [1, 2]
    info = json.loads((Path(cfg.run_dir) / rf.RUN_JSON).read_text())
    assert info["status"] == "done" and info["stopped_early"] is True and info["epoch"] == 2
