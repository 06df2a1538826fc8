"""The bf16 path, exercised on the CPU (the GPU runs use it): autocast, a finite loss, checkpoint and resume."""
import json

import numpy as np
import pandas as pd
import torch

from imginav_lib.data.dataset import to_model_input
from imginav_lib.model.autoencoder import LayoutAutoencoder
from imginav_lib.config.params import resolve_run
from imginav_lib.train.device import precision
from imginav_lib.train.trainer import fit

from conftest import tiny_params

BF16 = {"precision": "bf16", "device": "cpu"}


def test_bf16_autocast_step_gives_bf16_activations_and_a_finite_loss(tiny):
    cfg = resolve_run(tiny, "F3", 1)
    model = LayoutAutoencoder(cfg.architecture)
    x = to_model_input(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    with precision(torch.device("cpu"), torch.bfloat16):
        out = model(x, heads=("rgb", "seg", "cls"))
    assert out["rgb"].dtype == torch.bfloat16 and out["seg"].dtype == torch.bfloat16
    loss = torch.nn.functional.mse_loss(out["rgb"].float(), x)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_bf16_run_checkpoints_and_resumes_with_finite_losses(tmp_path, labelled_manifest):
    few = tmp_path / "few.csv"  # 5 layouts, one step of 4 per epoch: CPU bf16 convolutions are slow
    lines = labelled_manifest.read_text().splitlines(keepends=True)
    few.write_text("".join([lines[0], *[line for line in lines[1:] if line.rstrip().endswith("false")][:5]]))
    one = resolve_run(tiny_params(tmp_path, few, training={**BF16, "epochs": 1}, data={"num_samples": 1}), "F3", 1)
    first = fit(one, progress=False)
    info = json.loads((first.run_dir / "run.json").read_text())
    assert info["precision"] == "bfloat16" and info["status"] == "done"
    assert (first.run_dir / "checkpoints" / "latest.pt").is_file()
    info["status"] = "running"  # as a job killed after its first epoch leaves it
    (first.run_dir / "run.json").write_text(json.dumps(info))
    two = resolve_run(tiny_params(tmp_path, few, training={**BF16, "epochs": 2}, data={"num_samples": 1}), "F3", 1)
    resumed = fit(two, progress=False)
    h = pd.read_csv(resumed.run_dir / "metrics.csv")
    assert json.loads((resumed.run_dir / "run.json").read_text())["attempts"] == 2
    assert list(h["epoch"]) == [1, 2]  # epoch 1 kept from the first attempt, epoch 2 trained after the resume
    pd.testing.assert_frame_equal(h.iloc[:1], first.history.iloc[:1], check_dtype=False)
    losses = h[[c for c in h.columns if c.endswith(("loss", "mse"))]].to_numpy(float)
    assert losses.size and np.isfinite(losses).all()
