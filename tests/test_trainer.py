import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from imginav_lib.train import trainer
from imginav_lib.errors import InputError
from imginav_lib.config.params import resolve_run
from imginav_lib.train.trainer import Diverged, Preempted, fit

from conftest import tiny_params

TIMING = ["epoch_time_s", "train_images_per_s"]


def metrics_without_timing(run_dir) -> pd.DataFrame:
    return pd.read_csv(run_dir / "metrics.csv").drop(columns=TIMING)


def assert_same_metrics(a, b):
    a, b = metrics_without_timing(a), metrics_without_timing(b)
    assert list(a["epoch"]) == list(b["epoch"])  # no duplicated or missing rows
    pd.testing.assert_frame_equal(a, b, rtol=1e-6)


def test_run_folder_contents(tiny):
    cfg = resolve_run(tiny, "F3", 1)
    result = fit(cfg, progress=False)
    d = result.run_dir
    for name in ("config.yaml", "metrics.csv", "steps.csv", "eval.json", "run.json",
                 "checkpoints/latest.pt", "checkpoints/best.pt", "samples/epoch_001.png", "samples/epoch_002.npz"):
        assert (d / name).is_file(), name
    info = json.loads((d / "run.json").read_text())
    assert info["status"] == "done" and info["epoch"] == 2 and info["best_val_mse"] > 0
    assert 0 < info["checkpoint_s"] < 60  # the longest checkpoint write, measured for `imginav status`
    m = pd.read_csv(d / "metrics.csv")
    assert len(m) == 2 and m["val_seg_miou"].notna().all() and m["val_cls_acc"].notna().all()
    assert m["val_sem_miou"].notna().all() and (m["val_psnr"] > 0).all()
    s = np.load(d / "samples" / "epoch_002.npz")
    assert s["input"].shape == (4, 3, 32, 32) and s["seg_pred"].shape == (4, 32, 32)
    ev = json.loads((d / "eval.json").read_text())
    assert len(ev["seg_confusion"]) == 10 and ev["val"]["val_mse"] == pytest.approx(info["best_val_mse"])
    # F1 trains no seg/cls head: its metrics are empty, not made up; its samples have no seg_pred
    f1 = fit(resolve_run(tiny, "F1", 1), progress=False).run_dir
    m1 = pd.read_csv(f1 / "metrics.csv")
    assert m1["val_seg_miou"].isna().all() and m1["val_cls_acc"].isna().all() and m1["val_sem_miou"].notna().all()
    assert "seg_pred" not in np.load(f1 / "samples" / "epoch_002.npz")
    # running a finished run again does nothing
    assert fit(cfg, progress=False).status == "done" and len(pd.read_csv(d / "metrics.csv")) == 2


def test_resume_after_epoch_equals_uninterrupted(tmp_path, labelled_manifest):
    full = resolve_run(tiny_params(tmp_path / "a", labelled_manifest), "F3", 1)
    fit(full, progress=False)
    # the same run stopped after epoch 1 (as if killed), then resumed with the 2-epoch config
    cut = resolve_run(tiny_params(tmp_path / "b", labelled_manifest, training={"epochs": 1}), "F3", 1)
    fit(cut, progress=False)
    info = json.loads((tmp_path / "b/runs/tiny/F3/seed1/run.json").read_text())
    info["status"] = "running"  # a kill leaves the status as it was during training
    (tmp_path / "b/runs/tiny/F3/seed1/run.json").write_text(json.dumps(info))
    resumed = resolve_run(tiny_params(tmp_path / "b", labelled_manifest), "F3", 1)
    fit(resumed, progress=False)
    assert_same_metrics(tmp_path / "a/runs/tiny/F3/seed1", tmp_path / "b/runs/tiny/F3/seed1")
    steps = pd.read_csv(tmp_path / "b/runs/tiny/F3/seed1/steps.csv")
    assert steps["global_step"].is_unique


def test_preempted_variational_run_resumes_mid_epoch_into_the_uninterrupted_numbers(tmp_path, labelled_manifest, monkeypatch):
    # A VAE samples its latent in every training step: the resumed run must go on with torch's random stream
    # where it stopped (not re-seeded), or its metrics drift from the uninterrupted run's.
    over = {"architecture": {"variational": True}, "loss": {"kl": 0.01}}
    ref = resolve_run(tiny_params(tmp_path / "a", labelled_manifest, **over), "F3", 1)
    fit(ref, progress=False)
    cfg = resolve_run(tiny_params(tmp_path / "b", labelled_manifest, **over), "F3", 1)
    original = trainer._Hooks.after_step

    def touch_stop_at_step_15(self, epoch, step, loss, parts):  # mid epoch 2 (11 steps per epoch)
        original(self, epoch, step, loss, parts)
        if self.state.global_step == 15:
            (trainer.Path(cfg.run_dir) / "STOP").touch()

    monkeypatch.setattr(trainer._Hooks, "after_step", touch_stop_at_step_15)
    with pytest.raises(Preempted):
        fit(cfg, progress=False)
    info = json.loads((trainer.Path(cfg.run_dir) / "run.json").read_text())
    assert info["status"] == "preempted" and info["epoch"] == 1 and info["global_step"] == 15
    monkeypatch.setattr(trainer._Hooks, "after_step", original)
    torch.randn(100)  # what the process drew in between must not matter
    fit(cfg, progress=False)
    assert (metrics_without_timing(trainer.Path(cfg.run_dir))["train_kl"] > 0).all()  # the KL term was trained
    assert_same_metrics(trainer.Path(ref.run_dir), trainer.Path(cfg.run_dir))
    a = pd.read_csv(trainer.Path(ref.run_dir) / "steps.csv")
    b = pd.read_csv(trainer.Path(cfg.run_dir) / "steps.csv")
    pd.testing.assert_frame_equal(a, b, rtol=1e-6)


def test_non_finite_loss_marks_run_diverged(tmp_path, labelled_manifest):
    cfg = resolve_run(tiny_params(tmp_path, labelled_manifest, training={"lr": 1e30}), "F1", 1)
    with pytest.raises(Diverged, match="non-finite loss"):
        fit(cfg, progress=False)
    info = json.loads((trainer.Path(cfg.run_dir) / "run.json").read_text())
    assert info["status"] == "diverged" and "non-finite" in info["error"]


KILL_SCRIPT = """
import sys
from imginav_lib.errors import InputError
from imginav_lib.config.params import resolve_run
from imginav_lib.train.trainer import fit
fit(resolve_run(sys.argv[1], "F3", 1), progress=False)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_kill_9_mid_epoch_then_rerun_gives_same_final_metrics(tmp_path, labelled_manifest):
    over = {"training": {"epochs": 3, "heartbeat_s": 0.01}}
    ref = resolve_run(tiny_params(tmp_path / "a", labelled_manifest, **over), "F3", 1)
    params_b = tiny_params(tmp_path / "b", labelled_manifest, **over)
    run_b = trainer.Path(resolve_run(params_b, "F3", 1).run_dir)
    env = {**os.environ, "OMP_NUM_THREADS": str(__import__("torch").get_num_threads())}
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(params_b)], env=env)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until it is inside epoch 2 (steps 12..22)
        try:
            info = json.loads((run_b / "run.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            info = {}
        if info.get("epoch") == 1 and info.get("global_step", 0) >= 14:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert info.get("epoch") == 1, "did not catch the run mid-epoch"
    assert json.loads((run_b / "run.json").read_text())["status"] == "running"
    subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(params_b)], env=env, check=True)
    fit(ref, progress=False)
    assert_same_metrics(trainer.Path(ref.run_dir), run_b)
    assert json.loads((run_b / "run.json").read_text())["attempts"] == 2


def test_a_run_folder_of_another_config_is_refused_not_mixed(tmp_path, labelled_manifest):
    fit(resolve_run(tiny_params(tmp_path, labelled_manifest), "F1", 1), progress=False)
    more_logging = resolve_run(tiny_params(tmp_path, labelled_manifest, training={"log_every": 1}), "F1", 1)
    assert len(fit(more_logging, progress=False).history) == 2  # done stays done; logging is not the computation
    other = resolve_run(tiny_params(tmp_path, labelled_manifest, architecture={"latent_channels": 8}), "F1", 1)
    with pytest.raises(InputError, match="experiment F1 seed 1: architecture.latent_channels 4 → 8 would mix two runs"):
        fit(other, progress=False)


def test_the_selected_checkpoint_is_evaluated_once_on_the_test_split(tmp_path, labelled_manifest, monkeypatch):
    """Early stopping and best.pt use validation; eval.json's "test" holds the test metrics of best.pt, with the
    keys of "val" (val_ -> test_); the curves stay on validation."""
    from imginav_lib.data.dataset import load_run_data
    from imginav_lib.model.autoencoder import LayoutAutoencoder
    from imginav_lib.runs.runfolder import load_checkpoint
    from imginav_lib.train.device import setup_device

    cfg = resolve_run(tiny_params(tmp_path, labelled_manifest, training={"epochs": 3}, data={"test_fraction": 0.25}), "F3", 1)
    calls = []
    real_evaluate = trainer.evaluate
    monkeypatch.setattr(trainer, "evaluate", lambda *a, **k: calls.append(k.get("idx")) or real_evaluate(*a, **k))
    d = fit(cfg, progress=False).run_dir
    tested = [c for c in calls if c is not None]
    assert len(tested) == 1  # once, after training: never for selection
    ev = json.loads((d / "eval.json").read_text())
    assert set(ev["test"]) == {k.replace("val_", "test_", 1) for k in ev["val"]}
    data = load_run_data(cfg, progress=False)
    assert ev["n_test"] == len(data.test_idx) > 0 and torch.equal(tested[0], data.test_idx)
    assert not set(data.test_idx.tolist()) & (set(data.val_idx.tolist()) | set(data.train_idx.tolist()))
    # the numbers are best.pt's on the test images, recomputed here
    model = LayoutAutoencoder(cfg.architecture)
    ckpt = load_checkpoint(d / "checkpoints" / "best.pt")
    model.load_state_dict(ckpt["model"])
    device, dtype = setup_device(cfg.training)
    again = real_evaluate(model, cfg, data, device, dtype, idx=data.test_idx).compute()
    assert ev["test"]["test_mse"] == pytest.approx(again["val_mse"]) and ev["test"]["test_psnr"] == pytest.approx(again["val_psnr"])
    assert ev["epoch"] == ckpt["state"]["best_epoch"]
    assert ev["test"]["test_mse"] != pytest.approx(ev["val"]["val_mse"])  # other images than validation
    m = pd.read_csv(d / "metrics.csv")
    assert not [c for c in m.columns if c.startswith("test_")]  # curves: validation only
    info = json.loads((d / "run.json").read_text())
    assert info["n_test"] == ev["n_test"] and info["split"]["images"]["test"] == ev["n_test"]


@pytest.mark.parametrize("best, val, min_delta, improved", [
    (0.004, 0.00399, 0.001, True),  # 0.25% better than the best, the rule asks 0.1%
    (0.004, 0.00399, 0.005, False),  # ... asks 0.5%
    (0.04, 0.0399, 0.005, False),  # the same relative change at another scale: the same answer
    (0.004, 0.0040, 0.0, False),  # equal is no improvement
])  # fmt: skip
def test_min_delta_is_a_fraction_of_the_best_so_far(best, val, min_delta, improved):
    from imginav_lib.config.schema import EarlyStopping

    state = trainer.TrainState(epoch=4, best_value=best, best_epoch=4)
    got, _ = trainer._update_best(state, {"epoch": 5, "val_mse": val}, EarlyStopping(min_delta=min_delta))
    assert got is improved and state.best_epoch == (5 if improved else 4)
