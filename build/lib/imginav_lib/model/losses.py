"""Loss terms as plain functions of typed tensors, and their weighted sum.

The dataset yields typed targets (float images in [-1, 1], long masks, long labels); the losses check dtype and
shape instead of guessing. No silent zero fallbacks: a weighted term whose input is missing is an error.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from imginav_lib.palette import IGNORE_INDEX, UNKNOWN_LABEL


def _check(name: str, t: torch.Tensor, dtype_ok: bool, ndim: int, what: str) -> None:
    if not dtype_ok or t.ndim != ndim:
        raise ValueError(f"{name}: expected {what}, got {t.dtype} {tuple(t.shape)}")


def mse_loss(rgb: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """rgb, target: (B, 3, H, W) float in [-1, 1]."""
    _check("rgb", rgb, rgb.is_floating_point(), 4, "(B,3,H,W) float")
    if target.shape != rgb.shape:
        raise ValueError(f"rgb target: shape {tuple(target.shape)} != prediction {tuple(rgb.shape)}")
    return F.mse_loss(rgb.float(), target.float())


def seg_loss(seg_logits: torch.Tensor, seg_target: torch.Tensor) -> torch.Tensor:
    """seg_logits: (B, K, H, W) float logits (no softmax); seg_target: (B, H, W) long, IGNORE_INDEX ignored."""
    _check("seg_logits", seg_logits, seg_logits.is_floating_point(), 4, "(B,K,H,W) float logits")
    _check("seg_target", seg_target, seg_target.dtype == torch.long, 3, "(B,H,W) long")
    return F.cross_entropy(seg_logits.float(), seg_target, ignore_index=IGNORE_INDEX)


def cls_loss(cls_logits: torch.Tensor, cls_target: torch.Tensor) -> torch.Tensor:
    """cls_logits: (B, 2) float; cls_target: (B,) long, UNKNOWN_LABEL has no target.

    Mean over the known labels; a batch with none gives 0 (not NaN) and no gradient.
    """
    _check("cls_logits", cls_logits, cls_logits.is_floating_point(), 2, "(B,2) float logits")
    _check("cls_target", cls_target, cls_target.dtype == torch.long, 1, "(B,) long")
    total = F.cross_entropy(cls_logits.float(), cls_target, ignore_index=UNKNOWN_LABEL, reduction="sum")
    known = (cls_target != UNKNOWN_LABEL).sum().clamp(min=1)  # stays on device: no sync
    return total / known


def total_loss(
    out: dict[str, torch.Tensor],
    images: torch.Tensor,
    masks: torch.Tensor,
    labels: torch.Tensor,
    *,
    mse_weight: float,
    seg_weight: float,
    cls_weight: float,
    kl_weight: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted sum of the terms whose weight is non-zero.

    Returns (total, parts): parts holds each unweighted term under its name (`mse`, `seg_ce`, `cls_ce`, `kl`)
    and each weighted term under `w_<name>`, all detached.
    """
    terms: dict[str, tuple[float, torch.Tensor]] = {}
    if mse_weight > 0:
        terms["mse"] = (mse_weight, mse_loss(out["rgb"], images))
    if seg_weight > 0:
        terms["seg_ce"] = (seg_weight, seg_loss(out["seg"], masks))
    if cls_weight > 0:
        terms["cls_ce"] = (cls_weight, cls_loss(out["cls"], labels))
    if "kl" in out and kl_weight > 0:
        terms["kl"] = (kl_weight, out["kl"].mean())
    total = sum(w * v for w, v in terms.values())
    parts = {name: v.detach() for name, (_, v) in terms.items()}
    parts.update({f"w_{name}": (w * v).detach() for name, (w, v) in terms.items()})
    return total, parts
