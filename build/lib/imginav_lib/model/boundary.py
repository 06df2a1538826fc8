"""Boundary F-score per class: how well a segmentation keeps the semantic edges (walls, furniture outlines).

The boundary measure of the DAVIS benchmark (Perazzi et al., CVPR 2016): for each class, the boundary pixels of
the predicted and of the true class region are matched within a tolerance of a few pixels; precision is the
share of predicted boundary pixels near a true one, recall the share of true boundary pixels near a predicted
one, and F their harmonic mean. torchmetrics has no boundary F, so this is a max-pool implementation: all
classes and images of a batch at once, no Python loop over either.

Differences from the DAVIS code, on purpose: the tolerance disk is a square (Chebyshev distance, what max-pool
dilates), counts are summed over the data set before the ratio (as the confusion matrices are), and ignored pixels
(IGNORE_INDEX: blended edges) belong to no true class region, so the true edge runs beside them and a
predicted edge drawn on one counts like any other.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchmetrics import Metric

from imginav_lib.palette import IGNORE_INDEX, NUM_CLASSES

DAVIS_TOLERANCE = 0.008  # DAVIS bound_th: the tolerance as a fraction of the image diagonal


def tolerance_px(height: int, width: int) -> int:
    """The DAVIS tolerance in pixels: ceil(0.008 x diagonal), at least 1 (64 px: 1, 512 px: 6)."""
    return max(1, math.ceil(DAVIS_TOLERANCE * math.hypot(height, width)))


def _one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, H, W) long, IGNORE_INDEX allowed -> (B, K, H, W) float; an ignored pixel belongs to no class."""
    x = torch.where(labels == IGNORE_INDEX, num_classes, labels).clamp(0, num_classes)
    return F.one_hot(x, num_classes + 1)[..., :num_classes].permute(0, 3, 1, 2).float()


def _dilate(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary (B, K, H, W) float -> its dilation by a (2r+1)^2 square."""
    return F.max_pool2d(x, 2 * radius + 1, stride=1, padding=radius) if radius > 0 else x


def boundaries(one_hot: torch.Tensor) -> torch.Tensor:
    """(B, K, H, W) binary float -> (B, K, H, W) binary float: pixels of a region with a neighbour (8-connected)
    outside it. The image border is no boundary (replicate padding), as in DAVIS' seg2bmap."""
    outside = F.pad(1.0 - one_hot, (1, 1, 1, 1), mode="replicate")
    return one_hot * F.max_pool2d(outside, 3, stride=1)


def boundary_counts(pred: torch.Tensor, target: torch.Tensor, tolerance: int, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """Matched and total boundary pixels per class of a batch.

    pred, target: (B, H, W) integer class ids (IGNORE_INDEX in target: in no class region). Returns (4, K) float64:
    predicted boundary pixels near a true boundary, predicted boundary pixels, true boundary pixels near a
    predicted boundary, true boundary pixels.
    """
    if pred.shape != target.shape or pred.dim() != 3:
        raise ValueError(f"boundary_counts wants pred and target (B, H, W), got {tuple(pred.shape)} and {tuple(target.shape)}")
    bp = boundaries(_one_hot(pred.long(), num_classes))  # (B, K, H, W)
    bt = boundaries(_one_hot(target.long(), num_classes))  # an ignored pixel is in no true region: never on bt
    sums = [bp * _dilate(bt, tolerance), bp, bt * _dilate(bp, tolerance), bt]
    return torch.stack([s.sum(dim=(0, 2, 3)) for s in sums]).double()


def boundary_f(counts: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(4, K) summed counts -> per-class boundary F (NaN where neither map has a boundary of the class) and the
    mean over the classes that have one. A class with boundaries on one side only scores 0."""
    matched_p, n_p, matched_t, n_t = counts.double()
    precision = torch.where(n_p > 0, matched_p / n_p.clamp(min=1), 0.0)
    recall = torch.where(n_t > 0, matched_t / n_t.clamp(min=1), 0.0)
    f = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12), 0.0)
    f = torch.where((n_p > 0) | (n_t > 0), f, math.nan)
    present = torch.isfinite(f)
    return f, (f[present].mean().item() if present.any() else math.nan)


class BoundaryFScore(Metric):
    """Accumulates `boundary_counts` over batches; `compute()` returns (per-class F (K,), mean F)."""

    full_state_update = False

    def __init__(self, tolerance: int, num_classes: int = NUM_CLASSES, **kwargs):
        super().__init__(**kwargs)
        self.tolerance, self.num_classes = tolerance, num_classes
        self.add_state("counts", default=torch.zeros(4, num_classes, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.counts += boundary_counts(pred, target, self.tolerance, self.num_classes)

    def compute(self) -> tuple[torch.Tensor, float]:
        return boundary_f(self.counts)
