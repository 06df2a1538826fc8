"""What the latent gives the next stage (the ControlNet diffusion model): its statistics and a linear probe.

- Statistics of the frozen encoder's latents on training images: per-channel mean and std, the shift and the
  scale that bring the latent to zero mean and unit variance (diffusers' `shift_factor` = its mean and
  `scaling_factor` = 1 / its std, used as (z - shift_factor) * scaling_factor; Stable Diffusion's 0.18215 was
  found this way), and per channel (`channel_mean` as the shift, 1 / `channel_std` as the scale). They describe
  the model they were measured on only: a retrained model (the next phase) measures its own.
- A linear probe: a 1x1 convolution trained for a fixed small budget on the frozen training latents to predict
  the segmentation at latent resolution; its mIoU on the validation latents says how linearly readable the
  semantics are. The same probe for every experiment (F1 included) answers "does semantic guidance make the
  latent more semantic?".

The images are a fixed subset of the split (the same for every experiment and seed); the probe's init and
batch order come from the run's seed, so the result is deterministic given the seed (on a CPU).
"""
from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from imginav_lib.data.dataset import to_model_input
from imginav_lib.model.metrics import iou_from_confusion
from imginav_lib.palette import IGNORE_INDEX, NUM_CLASSES

# The probe's fixed budget: the same for every run, small enough to cost a few percent of a run's training.
PROBE_IMAGES = 2048  # at most this many training and validation images (evenly spaced in the split)
PROBE_STEPS = 300  # optimiser steps
PROBE_BATCH = 32  # latent images per step
PROBE_LR = 0.05  # Adam, on per-channel standardised latents so that the budget means the same for every latent


def spread_subset(idx: torch.Tensor, k: int) -> torch.Tensor:
    """At most k of the indices, evenly spaced: the same images for every experiment and seed (no RNG)."""
    if len(idx) <= k:
        return idx
    return idx[torch.linspace(0, len(idx) - 1, k).round().long()]


@torch.no_grad()
def encode(model, images: torch.Tensor, masks: torch.Tensor, idx: torch.Tensor, batch_size: int, device: torch.device,
           factor: int) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Latents (N, C, h, w) float32 on the CPU (the mean of a variational encoder) and the masks at latent
    resolution (N, h, w) of images[idx]; images (M, 3, H, W) and masks (M, H, W) uint8, indexed batch by batch so
    that a memory-mapped cache is never read whole."""
    model.eval()
    zs, ys = [], []
    for part in idx.split(batch_size):
        zs.append(model.encode(to_model_input(images[part].to(device)))[0].float().cpu())
        ys.append(downsample_mask(masks[part], factor))
    return torch.cat(zs), torch.cat(ys)


def latent_stats(z: torch.Tensor) -> dict:
    """(N, C, h, w) latents -> per-channel mean and std, the overall mean and std, shift_factor = mean and
    scaling_factor = 1 / std (diffusers: (z - shift_factor) * scaling_factor has mean 0 and std 1)."""
    z = z.double()
    std = z.std().item()
    return {
        "channel_mean": z.mean(dim=(0, 2, 3)).tolist(),
        "channel_std": z.std(dim=(0, 2, 3)).tolist(),
        "mean": z.mean().item(),
        "std": std,
        "shift_factor": z.mean().item(),
        "scaling_factor": 1.0 / std if std > 0 else math.nan,
    }


def downsample_mask(masks: torch.Tensor, factor: int, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """(N, H, W) uint8/long class ids -> (N, H/f, W/f) long: the majority class of each f x f block, counting only
    scored pixels; a block of ignored pixels only is IGNORE_INDEX."""
    x = masks.long()
    x = torch.where(x == IGNORE_INDEX, num_classes, x)
    one_hot = F.one_hot(x, num_classes + 1).permute(0, 3, 1, 2).float()  # (N, K+1, H, W)
    share = F.avg_pool2d(one_hot, factor)[:, :num_classes]  # (N, K, h, w): share of each class in a block
    best = share.argmax(1)
    return torch.where(share.amax(1) > 0, best, IGNORE_INDEX)


def linear_probe(z_train: torch.Tensor, y_train: torch.Tensor, z_val: torch.Tensor, y_val: torch.Tensor,
                 seed: int, steps: int = PROBE_STEPS, batch: int = PROBE_BATCH, lr: float = PROBE_LR) -> dict:  # fmt: skip
    """Train a 1x1 conv (C -> K logits) on frozen latents; score it on the validation latents.

    z_*: (N, C, h, w) float latents; y_*: (N, h, w) long classes at latent resolution (IGNORE_INDEX: not scored).
    Returns {"miou", "accuracy", "iou" (per class, NaN where absent), "train_ce" (last step)}.
    """
    g = torch.Generator().manual_seed(seed)
    mean = z_train.mean(dim=(0, 2, 3), keepdim=True)
    std = z_train.std(dim=(0, 2, 3), keepdim=True).clamp(min=1e-6)
    z_train, z_val = (z_train - mean) / std, (z_val - mean) / std
    probe = nn.Conv2d(z_train.shape[1], NUM_CLASSES, 1)
    with torch.no_grad():  # a seeded init, independent of the global RNG
        bound = 1 / math.sqrt(z_train.shape[1])
        probe.weight.copy_(torch.rand(probe.weight.shape, generator=g) * 2 * bound - bound)
        probe.bias.zero_()
    opt = torch.optim.Adam(probe.parameters(), lr=lr)
    loss = torch.tensor(math.nan)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # steps this small are all overhead: more threads only wait on each other (10x on a busy CPU)
    try:
        for _ in range(steps):
            idx = torch.randint(len(z_train), (min(batch, len(z_train)),), generator=g)
            loss = F.cross_entropy(probe(z_train[idx]), y_train[idx], ignore_index=IGNORE_INDEX)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    with torch.no_grad():
        pred = probe(z_val).argmax(1)  # (N, h, w)
    keep = y_val != IGNORE_INDEX
    cm = torch.bincount(y_val[keep] * NUM_CLASSES + pred[keep], minlength=NUM_CLASSES**2).reshape(NUM_CLASSES, NUM_CLASSES)
    iou, miou, acc = iou_from_confusion(cm)
    return {"miou": miou, "accuracy": acc, "iou": iou.tolist(), "train_ce": loss.item()}


def latent_report(model, images: torch.Tensor, masks: torch.Tensor, train_idx: torch.Tensor, val_idx: torch.Tensor,
                  seed: int, batch_size: int, device: torch.device, steps: int = PROBE_STEPS) -> dict:  # fmt: skip
    """Latent statistics on the training images and the probe mIoU on validation, for eval.json, with its cost.

    images (N, 3, H, W) and masks (N, H, W): the uint8 cache; train_idx, val_idx: the run's split. At most
    PROBE_IMAGES of each, evenly spaced, so the cost does not grow with the data set.
    """
    t0 = time.perf_counter()
    train_idx, val_idx = spread_subset(train_idx, PROBE_IMAGES), spread_subset(val_idx, PROBE_IMAGES)
    h = images.shape[-1]
    with torch.no_grad():
        factor = h // model.encode(to_model_input(images[train_idx[:1]].to(device)))[0].shape[-1]
    z_train, y_train = encode(model, images, masks, train_idx, batch_size, device, factor)
    z_val, y_val = encode(model, images, masks, val_idx, batch_size, device, factor)
    probe = linear_probe(z_train, y_train, z_val, y_val, seed, steps)
    return {**latent_stats(z_train), "shape": list(z_train.shape[1:]), "images": len(train_idx),
            "probe": {**probe, "steps": steps, "train_images": len(train_idx), "val_images": len(val_idx)},
            "seconds": time.perf_counter() - t0}  # fmt: skip
