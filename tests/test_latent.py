"""Latent statistics and the linear probe: known values, determinism, and that the probe reads real semantics."""
from __future__ import annotations

import math

import pytest
import torch

from imginav_lib.model.latent import downsample_mask, latent_report, latent_stats, linear_probe
from imginav_lib.model.autoencoder import LayoutAutoencoder
from imginav_lib.palette import IGNORE_INDEX, NUM_CLASSES
from imginav_lib.config.schema import Architecture


def test_scaling_factor_brings_the_latent_to_unit_variance():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(64, 4, 8, 8, generator=g) * torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 4, 1, 1) + 5.0
    s = latent_stats(z)
    assert s["channel_mean"] == pytest.approx([5.0] * 4, abs=0.1)
    assert s["channel_std"] == pytest.approx([1.0, 2.0, 3.0, 4.0], rel=0.05)
    assert (z * s["scaling_factor"]).std().item() == pytest.approx(1.0)


def test_downsampled_mask_takes_each_blocks_majority_and_ignores_unscored_pixels():
    m = torch.tensor([[[1, 1, 2, 2],
                       [1, 3, 2, IGNORE_INDEX],
                       [IGNORE_INDEX, IGNORE_INDEX, 0, 0],
                       [IGNORE_INDEX, IGNORE_INDEX, 0, 4]]], dtype=torch.uint8)  # fmt: skip
    assert downsample_mask(m, 2).tolist() == [[[1, 2], [IGNORE_INDEX, 0]]]


def _semantic_latents(n: int, seed: int, signal: float):
    """Latents whose first channels hold the class one-hot (times `signal`) plus noise, and the classes."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n, 8, 8), generator=g)
    z = torch.randn(n, NUM_CLASSES, 8, 8, generator=g)
    z += signal * torch.nn.functional.one_hot(y, NUM_CLASSES).permute(0, 3, 1, 2).float()
    return z, y


def test_probe_reads_linearly_encoded_classes_and_not_noise():
    zt, yt = _semantic_latents(64, 0, signal=4.0)
    zv, yv = _semantic_latents(16, 1, signal=4.0)
    assert linear_probe(zt, yt, zv, yv, seed=0, steps=60)["miou"] > 0.9
    nt, _ = _semantic_latents(64, 2, signal=0.0)
    nv, _ = _semantic_latents(16, 3, signal=0.0)
    assert linear_probe(nt, yt, nv, yv, seed=0, steps=60)["miou"] < 0.4  # 4 balanced classes: chance IoU ~ 0.14


def test_probe_is_deterministic_given_the_seed():
    zt, yt = _semantic_latents(32, 0, signal=1.0)
    zv, yv = _semantic_latents(8, 1, signal=1.0)
    a, b = linear_probe(zt, yt, zv, yv, seed=3, steps=20), linear_probe(zt, yt, zv, yv, seed=3, steps=20)
    c = linear_probe(zt, yt, zv, yv, seed=4, steps=20)
    assert repr(a) == repr(b) != repr(c)  # repr: NaN (absent classes) compares equal


def test_latent_report_of_a_model_has_stats_probe_and_cost():
    torch.manual_seed(0)
    model = LayoutAutoencoder(Architecture(latent_channels=4, base_channels=8, downsampling_steps=2))
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (12, 3, 16, 16), generator=g, dtype=torch.uint8)
    masks = torch.randint(0, NUM_CLASSES, (12, 16, 16), generator=g, dtype=torch.uint8)
    train, val = torch.arange(8), torch.arange(8, 12)
    a = latent_report(model, images, masks, train, val, seed=1, batch_size=4, device=torch.device("cpu"), steps=20)
    b = latent_report(model, images, masks, train, val, seed=1, batch_size=4, device=torch.device("cpu"), steps=20)
    assert a["shape"] == [4, 4, 4] and len(a["channel_std"]) == 4
    assert a["scaling_factor"] == pytest.approx(1 / a["std"])
    assert 0 <= a["probe"]["miou"] <= 1 and a["seconds"] > 0
    assert repr({**a, "seconds": 0}) == repr({**b, "seconds": 0})
    assert not math.isnan(a["probe"]["train_ce"])


def test_shift_and_scale_bring_the_latent_to_zero_mean_and_unit_variance():
    z = torch.randn(16, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 3.0 + 1.5
    s = latent_stats(z)
    shifted = (z.double() - s["shift_factor"]) * s["scaling_factor"]  # diffusers: (z - shift_factor) * scaling_factor
    assert shifted.mean().item() == pytest.approx(0.0, abs=1e-9) and shifted.std().item() == pytest.approx(1.0)
    assert s["shift_factor"] == pytest.approx(1.5, abs=0.1)
