"""Each loss term against a value worked out by hand (not against the function itself).

The normalisations matter: seg CE is a mean over the labelled pixels, cls CE a mean over the labelled images,
MSE a mean over every element, KL a sum over latent elements per image and a mean over the batch. Dividing by
the batch (or by all pixels) instead changes every number below.
"""
from __future__ import annotations

import math

import pytest
import torch

from imginav_lib.model.losses import cls_loss, mse_loss, seg_loss, total_loss
from imginav_lib.model.autoencoder import DiagonalGaussian
from imginav_lib.palette import IGNORE_INDEX, UNKNOWN_LABEL

LN2, LN10 = math.log(2), math.log(10)


def test_cls_ce_is_the_mean_over_known_labels_only():
    # One known label at uniform logits: ln 2. A batch mean would halve it.
    assert cls_loss(torch.zeros(2, 2), torch.tensor([0, UNKNOWN_LABEL])).item() == pytest.approx(LN2)
    # logits (2, 0) for class 0: CE = ln(1 + e^-2); (0, 3) for class 0: CE = ln(1 + e^3); the third is unknown.
    logits = torch.tensor([[2.0, 0.0], [0.0, 3.0], [5.0, -5.0]])
    expected = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(3))) / 2
    assert cls_loss(logits, torch.tensor([0, 0, UNKNOWN_LABEL])).item() == pytest.approx(expected, rel=1e-6)


def test_cls_ce_with_no_known_label_is_zero_without_gradient_nan():
    logits = torch.zeros(3, 2, requires_grad=True)
    loss = cls_loss(logits, torch.full((3,), UNKNOWN_LABEL))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros(3, 2))


def test_seg_ce_is_the_mean_over_labelled_pixels():
    # 1 image, 2x2 pixels, 10 classes. Zero logits: CE = ln 10 per pixel. Pixel (0, 1) has logit a on its true
    # class 3: CE = ln(9 + e^a) - a. Pixel (1, 1) is ignored, whatever its logits (a huge wrong one here).
    a = 2.0
    logits = torch.zeros(1, 10, 2, 2)
    logits[0, 3, 0, 1] = a
    logits[0, 0, 1, 1] = 50.0
    target = torch.tensor([[[1, 3], [7, IGNORE_INDEX]]])
    expected = (2 * LN10 + math.log(9 + math.exp(a)) - a) / 3  # 3 labelled pixels, not 4
    assert seg_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_seg_ce_mean_runs_over_the_whole_batch_of_labelled_pixels():
    # Image 0: 4 labelled pixels at ln 10. Image 1: 1 labelled pixel with a perfect logit (CE ~ 0).
    logits = torch.zeros(2, 10, 2, 2)
    logits[1, 5, 0, 0] = 100.0
    target = torch.full((2, 2, 2), IGNORE_INDEX)
    target[0] = 2
    target[1, 0, 0] = 5
    assert seg_loss(logits, target).item() == pytest.approx(4 * LN10 / 5, rel=1e-6)  # per pixel, not per image


def test_mse_is_the_mean_over_every_element():
    rgb = torch.zeros(2, 3, 2, 2)
    target = torch.zeros(2, 3, 2, 2)
    target[0, 0, 0, 0] = 1.0  # squared error 1
    target[1, 2, 1, 1] = -0.5  # squared error 0.25
    assert mse_loss(rgb, target).item() == pytest.approx(1.25 / 24)


def test_kl_per_sample_sums_latent_elements():
    # KL(N(m, s^2) || N(0, 1)) per element = (m^2 + s^2 - 1 - ln s^2) / 2.
    mean = torch.zeros(2, 1, 2, 2)
    logvar = torch.zeros(2, 1, 2, 2)
    mean[0] = 1.0  # 4 elements at m = 1, s = 1: 0.5 each
    logvar[1] = math.log(2.0)  # 4 elements at m = 0, s^2 = 2: (2 - 1 - ln 2) / 2 each
    kl = DiagonalGaussian(torch.cat([mean, logvar], dim=1)).kl()
    assert kl.shape == (2,)
    assert kl.tolist() == pytest.approx([4 * 0.5, 4 * (1 - LN2) / 2], rel=1e-6)


def test_total_loss_takes_the_batch_mean_of_the_per_sample_kl():
    out = {"rgb": torch.zeros(2, 3, 2, 2), "kl": torch.tensor([2.0, 6.0])}
    images = torch.zeros(2, 3, 2, 2)
    total, parts = total_loss(out, images, None, None, mse_weight=1.0, seg_weight=0.0, cls_weight=0.0, kl_weight=0.5)
    assert parts["kl"].item() == pytest.approx(4.0) and parts["w_kl"].item() == pytest.approx(2.0)
    assert total.item() == pytest.approx(2.0)  # the MSE is 0


def test_total_loss_computes_only_the_weighted_terms():
    out = {"rgb": torch.zeros(1, 3, 2, 2), "seg": torch.zeros(1, 10, 2, 2), "cls": torch.zeros(1, 2), "kl": torch.tensor([3.0])}
    images, masks, labels = torch.ones(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), torch.tensor([0])
    total, parts = total_loss(out, images, masks, labels, mse_weight=0.0, seg_weight=0.0, cls_weight=2.0)
    assert set(parts) == {"cls_ce", "w_cls_ce"}  # no mse at weight 0, no kl without a kl weight
    assert total.item() == pytest.approx(2 * LN2) and parts["cls_ce"].item() == pytest.approx(LN2)


def test_mse_refuses_other_types_and_shapes_naming_them():
    with pytest.raises(ValueError, match=r"^rgb: expected \(B,3,H,W\) float, got torch.int64"):
        mse_loss(torch.zeros(1, 3, 2, 2, dtype=torch.long), torch.zeros(1, 3, 2, 2))
    with pytest.raises(ValueError, match=r"^rgb target: shape \(1, 3, 4, 4\) != prediction \(1, 3, 2, 2\)"):
        mse_loss(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 4, 4))


@pytest.mark.parametrize("call, message", [
    (lambda: seg_loss(torch.zeros(1, 10, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long)), r"^seg_logits: expected \(B,K,H,W\) float logits, got torch.int64 \(1, 10, 2, 2\)"),
    (lambda: seg_loss(torch.zeros(1, 10, 2, 2), torch.zeros(1, 2, 2)), r"^seg_target: expected \(B,H,W\) long, got torch.float32 \(1, 2, 2\)"),
    (lambda: cls_loss(torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long)), r"^cls_logits: expected \(B,2\) float logits, got torch.int64 \(2,\)"),
    (lambda: cls_loss(torch.zeros(2, 2), torch.zeros(2)), r"^cls_target: expected \(B,\) long, got torch.float32 \(2,\)"),
])
def test_loss_input_errors_name_the_tensor_and_what_was_expected(call, message):
    with pytest.raises(ValueError, match=message):
        call()
