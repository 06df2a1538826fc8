"""The device and precision of a run: `training.device` and `training.precision` resolved once, the check that
this torch has kernels for this GPU, deterministic mode, the environment run.json records per attempt, and the
one autocast context that training, evaluation and the benchmarks share."""
from __future__ import annotations

import contextlib
import os
import re

import torch

from imginav_lib.errors import InputError

BF16_CAPABILITY = (8, 0)  # Ampere and later have bf16 units; below it bf16 is emulated (slow, and not what F3 ran)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# torch's cuBLAS needs a fixed workspace to be deterministic (CUDA >= 10.2); set before its first cuBLAS call.
CUBLAS_WORKSPACE = ":4096:8"


class UnsupportedGPU(InputError):
    """This torch build has no kernels for this GPU (or cannot run the precision asked for on it): one line."""


def _arch(name: str) -> tuple[str, tuple[int, int]] | None:
    """'sm_70' -> ('sm', (7, 0)); 'sm_90a' -> ('sm', (9, 0)); 'compute_120' -> ('compute', (12, 0))."""
    m = re.fullmatch(r"(sm|compute)_(\d+)(\d)[a-z]?", name)
    return (m.group(1), (int(m.group(2)), int(m.group(3)))) if m else None


def has_kernels(arch_list: list[str], capability: tuple[int, int]) -> bool:
    """Whether a torch built for `arch_list` (torch.cuda.get_arch_list()) runs on a GPU of `capability`.

    A cubin for sm_XY runs on devices of the same major version X and minor >= Y; PTX (compute_XY) is compiled
    by the driver for any device of capability >= X.Y."""
    for kind, cap in filter(None, map(_arch, arch_list)):
        if kind == "sm" and cap[0] == capability[0] and cap[1] <= capability[1]:
            return True
        if kind == "compute" and cap <= capability:
            return True
    return False


def check_gpu_kernels(index: int = 0) -> None:
    """Refuse, in one line naming the GPU, the build and the fix, a torch that has no kernels for this GPU
    (a CUDA 13 build on a V100: 'no kernel image is available' at the first kernel otherwise). Every job
    calls it at its start, before any data is read."""
    if not torch.cuda.is_available():
        return
    cap = tuple(torch.cuda.get_device_capability(index))
    archs = torch.cuda.get_arch_list()
    if has_kernels(archs, cap):
        return
    name = torch.cuda.get_device_name(index)
    raise UnsupportedGPU(
        f"torch {torch.__version__} (CUDA {torch.version.cuda}, built for {' '.join(archs) or 'no GPU'}) has no kernels "
        f"for {name} (compute capability {cap[0]}.{cap[1]}, sm_{cap[0]}{cap[1]}): install a build that has them, "
        f"e.g. the CUDA 12.6 wheels of environment.yml (pip install torch=={torch.__version__.split('+')[0]} "
        f"--index-url https://download.pytorch.org/whl/cu126), or run on another queue")


def resolve_precision(precision: str, device: torch.device, capability: tuple[int, int] | None) -> torch.dtype:
    """training.precision on this device. auto: bf16 from compute capability 8.0 (native bf16), fp16 below it
    (never emulated bf16: torch.cuda.is_bf16_supported() says True on a V100 by emulation), fp32 on the CPU.
    bf16 asked for on a GPU without bf16 units is refused rather than emulated."""
    if precision not in ("auto", *DTYPES):
        raise ValueError(f"invalid precision: {precision!r}")
    if device.type != "cuda":
        return torch.float32 if precision == "auto" else DTYPES[precision]  # CPU autocast is slower than fp32 here
    cap = tuple(capability) if capability is not None else (0, 0)
    if precision == "auto":
        return torch.bfloat16 if cap >= BF16_CAPABILITY else torch.float16
    if precision == "bf16" and cap < BF16_CAPABILITY:
        raise UnsupportedGPU(f"training.precision bf16: this GPU (compute capability {cap[0]}.{cap[1]}) has no bf16 "
                             f"units (from {BF16_CAPABILITY[0]}.{BF16_CAPABILITY[1]}); it would be emulated: use fp16 or fp32")  # fmt: skip
    return DTYPES[precision]


def setup_device(training) -> tuple[torch.device, torch.dtype]:
    """The run's device and autocast dtype; on a GPU, after checking this torch has kernels for it."""
    if training.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("training.device is cuda but no CUDA device is available")
    device = torch.device("cuda" if training.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    capability = None
    if device.type == "cuda":
        check_gpu_kernels()
        capability = tuple(torch.cuda.get_device_capability(device))
    return device, resolve_precision(training.precision, device, capability)


@contextlib.contextmanager
def deterministic_mode(enabled: bool):
    """training.deterministic: cuDNN's deterministic algorithms (no autotuning) and torch's deterministic
    algorithms (an op without one raises) for the block; the previous settings after it."""
    if not enabled:
        yield
        return
    before = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
              torch.are_deterministic_algorithms_enabled(), os.environ.get("CUBLAS_WORKSPACE_CONFIG"))  # fmt: skip
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[0], before[1]
        torch.use_deterministic_algorithms(before[2])
        if before[3] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def environment(device: torch.device, dtype: torch.dtype, deterministic: bool) -> dict:
    """What one attempt ran on, for run.json: GPU model and compute capability, precision, torch/CUDA/cuDNN
    versions, deterministic mode. The analysis names comparisons whose runs differ in these (analysis/confounds.py)."""
    cuda = device.type == "cuda"
    cap = torch.cuda.get_device_capability(device) if cuda else None
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "device": device.type,
        "gpu": torch.cuda.get_device_name(device) if cuda else None,
        "capability": f"{cap[0]}.{cap[1]}" if cap else None,
        "precision": str(dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": str(cudnn) if cudnn is not None else None,
        "deterministic": bool(deterministic),
    }


def check_same_precision(attempts: list[dict], env: dict, what: str) -> None:
    """A resumed run continues in the precision (and on the kind of device) it started in: `precision: auto`
    resolves to bf16 on an L40s and fp16 on a V100, and one run must not mix them. attempts: run.json's
    `environments`; env: this attempt's."""
    first = next((a for a in attempts if isinstance(a, dict) and a.get("precision")), None)
    if first is None:
        return
    for key in ("precision", "device"):
        if first.get(key) != env[key]:
            where = f" on {env['gpu']}" if env.get("gpu") else ""
            raise InputError(f"{what}: started in {key} {first.get(key)} ({first.get('gpu') or first.get('device')}), this attempt "
                             f"would resume in {env[key]}{where}: set training.precision explicitly, or run it where it started")  # fmt: skip


def precision(device: torch.device, dtype: torch.dtype):
    """The one precision context of training and evaluation: autocast unless fp32."""
    return torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
