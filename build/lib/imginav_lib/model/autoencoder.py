"""The multi-head layout autoencoder: conv encoder, optional Gaussian latent, decoder trunk with three heads.

Heads return logits (no softmax): rgb (tanh, data in [-1, 1]), seg (K class logits per pixel), cls (2 logits).
`forward(x, heads=...)` computes only the heads asked for, so a head whose loss weight is 0 costs nothing.
"""
from __future__ import annotations

import torch
from torch import nn

from imginav_lib import heads as H
from imginav_lib.palette import NUM_CLASSES
from imginav_lib.config.schema import Architecture

HEADS = H.names()  # ("rgb", "seg", "cls"): the layers below are per head, the names come from the table


def _act(name: str) -> nn.Module:
    if name == "silu":
        return nn.SiLU()
    if name == "relu":
        return nn.ReLU()
    if name == "gelu":
        return nn.GELU()
    raise ValueError(f"invalid activation: {name!r}")


def _block(conv: nn.Module, channels: int, groups: int, act: str) -> nn.Sequential:
    return nn.Sequential(conv, nn.GroupNorm(groups, channels), _act(act))


class DiagonalGaussian:
    """Latent distribution of the variational encoder (as diffusers' DiagonalGaussianDistribution)."""

    def __init__(self, moments: torch.Tensor):  # (B, 2C, h, w)
        self.mean, logvar = moments.chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self) -> torch.Tensor:
        return self.mean + self.std * torch.randn_like(self.mean)

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) per sample, summed over latent dims: (B,)."""
        return 0.5 * (self.mean.square() + self.logvar.exp() - 1.0 - self.logvar).sum(dim=(1, 2, 3))


class Encoder(nn.Module):
    def __init__(self, cfg: Architecture):
        super().__init__()
        g, a = cfg.norm_groups, cfg.activation
        chans = [cfg.base_channels * 2**i for i in range(cfg.downsampling_steps)]
        layers, c_in = [], 3
        for c in chans:  # each level: conv3 keeps the size, conv4 stride 2 halves it
            layers += [
                _block(nn.Conv2d(c_in, c, 3, padding=1), c, g, a),
                _block(nn.Conv2d(c, c, 4, stride=2, padding=1), c, g, a),
            ]
            c_in = c
        layers += [_block(nn.Conv2d(c_in, c_in, 3, padding=1), c_in, g, a)]
        self.body = nn.Sequential(*layers)
        out = cfg.latent_channels * (2 if cfg.variational else 1)  # mean and log-variance
        self.to_latent = nn.Conv2d(c_in, out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, C or 2C, H/2^L, W/2^L)
        return self.to_latent(self.body(x))


class Decoder(nn.Module):
    def __init__(self, cfg: Architecture, num_classes: int = NUM_CLASSES, num_scene_types: int = 2):
        super().__init__()
        g, a = cfg.norm_groups, cfg.activation
        chans = [cfg.base_channels * 2**i for i in range(cfg.downsampling_steps)]
        self.stem = nn.Sequential(
            nn.Conv2d(cfg.latent_channels, chans[-1], 1),
            _block(nn.Conv2d(chans[-1], chans[-1], 3, padding=1), chans[-1], g, a),
        )
        ups = []
        for i in reversed(range(len(chans))):  # mirror of the encoder, ending at base_channels
            c_in, c_out = chans[i], chans[max(i - 1, 0)]
            ups += [
                _block(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), c_out, g, a),
                _block(nn.Conv2d(c_out, c_out, 3, padding=1), c_out, g, a),
            ]
        self.trunk = nn.Sequential(*ups)
        self.rgb_head = nn.Conv2d(chans[0], 3, 3, padding=1)
        self.seg_head = nn.Conv2d(chans[0], num_classes, 3, padding=1)
        self.cls_head = nn.Linear(chans[-1], num_scene_types)

    def forward(self, z: torch.Tensor, heads: tuple[str, ...] = HEADS) -> dict[str, torch.Tensor]:
        h = self.stem(z)  # (B, C_L, h, w)
        out = {}
        if "cls" in heads:
            out["cls"] = self.cls_head(h.mean(dim=(2, 3)))  # (B, 2) logits from the pooled bottleneck
        if "rgb" in heads or "seg" in heads:
            f = self.trunk(h)  # (B, base, H, W)
            if "rgb" in heads:
                out["rgb"] = torch.tanh(self.rgb_head(f))  # (B, 3, H, W) in [-1, 1]
            if "seg" in heads:
                out["seg"] = self.seg_head(f)  # (B, K, H, W) logits
        return out


class LayoutAutoencoder(nn.Module):
    def __init__(self, cfg: Architecture):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, DiagonalGaussian | None]:
        """(B, 3, H, W) -> latent (B, C, h, w): a sample in training, the mean in evaluation."""
        moments = self.encoder(x)
        if not self.cfg.variational:
            return moments, None
        q = DiagonalGaussian(moments)
        return (q.sample() if self.training else q.mode()), q

    def forward(self, x: torch.Tensor, heads: tuple[str, ...] = HEADS) -> dict[str, torch.Tensor]:
        for h in heads:
            if h not in HEADS:
                raise ValueError(f"invalid head: {h!r}")
        z, q = self.encode(x)
        out = self.decoder(z, heads)
        out["latent"] = z
        if q is not None:
            out["kl"] = q.kl()  # (B,)
        return out


def heads_for(loss_weights) -> tuple[str, ...]:
    """The heads worth computing in training: those with a non-zero loss weight."""
    return tuple(h.name for h in H.HEADS if getattr(loss_weights, h.loss_weight) > 0)
