"""The device and precision of a run: `training.device` and `training.precision` resolved once, and the one
autocast context that training, evaluation and the benchmarks share."""
from __future__ import annotations

import contextlib

import torch


def setup_device(training) -> tuple[torch.device, torch.dtype]:
    if training.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("training.device is cuda but no CUDA device is available")
    device = torch.device("cuda" if training.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    if training.precision == "auto":
        if device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            dtype = torch.float32  # CPU autocast is slower than fp32 for these convs
    else:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[training.precision]
    return device, dtype


def precision(device: torch.device, dtype: torch.dtype):
    """The one precision context of training and evaluation: autocast unless fp32."""
    return torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
