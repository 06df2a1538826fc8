"""The fixed 10-colour palette of the 3D-FRONT layout renders, and RGB <-> class maps (numpy only: the report
imports this without torch)."""
from __future__ import annotations

import functools

import numpy as np

# The fixed 10-colour palette of the 3D-FRONT layout renders: class id -> (name, RGB).
CLASSES: list[tuple[str, tuple[int, int, int]]] = [
    ("bed", (228, 26, 28)),
    ("cabinet_shelf_desk", (55, 126, 184)),
    ("chair", (77, 175, 74)),
    ("lighting", (152, 78, 163)),
    ("others", (127, 127, 127)),
    ("pier_stool", (255, 127, 0)),
    ("sofa", (255, 255, 51)),
    ("table", (166, 86, 40)),
    ("wall", (200, 200, 200)),
    ("background", (240, 240, 240)),
]
CLASS_NAMES = [name for name, _ in CLASSES]
PALETTE = np.array([rgb for _, rgb in CLASSES], dtype=np.uint8)  # (K, 3)
NUM_CLASSES = len(CLASSES)
IGNORE_INDEX = 255  # mask value of pixels too far from every palette colour (blended edges)
SCENE_TYPES = {"room": 0, "scene": 1}  # classification target; empty `type` -> UNKNOWN_LABEL
UNKNOWN_LABEL = -1
MASK_TOLERANCE = 30.0  # max Euclidean RGB distance to the nearest palette colour, else IGNORE_INDEX


def rgb_to_mask(rgb: np.ndarray, tolerance: float = MASK_TOLERANCE) -> np.ndarray:
    """(..., H, W, 3) uint8 RGB -> (..., H, W) uint8 class ids; pixels farther than `tolerance` get IGNORE_INDEX."""
    if rgb.dtype != np.uint8 or rgb.shape[-1] != 3:
        raise ValueError(f"rgb_to_mask wants uint8 (..., 3), got {rgb.dtype} {rgb.shape}")
    # Squared distances to the 10 palette colours in int32: (..., H, W, K). 10 colours keep this small.
    diff = rgb[..., None, :].astype(np.int32) - PALETTE.astype(np.int32)
    dist2 = np.einsum("...kc,...kc->...k", diff, diff)
    mask = dist2.argmin(-1).astype(np.uint8)
    mask[dist2.min(-1) > tolerance**2] = IGNORE_INDEX
    return mask


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB -> (...) uint32 colour code r | g << 8 | b << 16 (the index of `mask_lut`)."""
    code = rgb[..., 2].astype(np.uint32) << 16
    code |= rgb[..., 1].astype(np.uint32) << 8
    code |= rgb[..., 0]
    return code


def unpack_rgb(code: np.ndarray) -> np.ndarray:
    """(...) colour codes of `pack_rgb` -> (..., 3) uint8 RGB."""
    code = np.asarray(code, dtype=np.uint32)
    return np.stack([code & 0xFF, (code >> 8) & 0xFF, code >> 16], axis=-1).astype(np.uint8)


@functools.lru_cache(maxsize=4)
def mask_lut(tolerance: float = MASK_TOLERANCE) -> np.ndarray:
    """(2**24,) uint8: `rgb_to_mask`'s class id for every colour code, so a mask is one lookup per pixel.

    Only colours within `tolerance` of a palette colour (the 10 balls of that radius) can get a class; those are
    mapped by `rgb_to_mask` itself, every other colour is IGNORE_INDEX. Cached per tolerance (16 MiB each).
    """
    lut = np.full(1 << 24, IGNORE_INDEX, dtype=np.uint8)
    if NUM_CLASSES * 4.2 * tolerance**3 >= 1 << 24:  # the balls would hold more than every colour: map them all
        groups = [unpack_rgb(np.arange(1 << 24, dtype=np.uint32))]
    else:
        d = np.arange(-int(tolerance), int(tolerance) + 1)
        ball = np.stack(np.meshgrid(d, d, d, indexing="ij"), -1).reshape(-1, 3)
        ball = ball[(ball**2).sum(1) <= tolerance**2]  # (M, 3) integer offsets within the tolerance
        groups = [near[((near >= 0) & (near <= 255)).all(1)].astype(np.uint8) for near in PALETTE.astype(int)[:, None] + ball]
    for colours in groups:
        for start in range(0, len(colours), 1 << 18):  # chunks keep rgb_to_mask's (n, K, 3) int32 temporaries small
            part = colours[start : start + (1 << 18)]
            lut[pack_rgb(part)] = rgb_to_mask(part, tolerance)
    lut.flags.writeable = False
    return lut


def rgb_to_mask_lut(rgb: np.ndarray, tolerance: float = MASK_TOLERANCE) -> np.ndarray:
    """The same masks as `rgb_to_mask`, from `mask_lut`: (..., H, W, 3) uint8 -> (..., H, W) uint8."""
    if rgb.dtype != np.uint8 or rgb.shape[-1] != 3:
        raise ValueError(f"rgb_to_mask_lut wants uint8 (..., 3), got {rgb.dtype} {rgb.shape}")
    return mask_lut(tolerance)[pack_rgb(rgb)]


def class_lut() -> np.ndarray:
    """(256, 3) uint8: class id -> palette colour; every other id (IGNORE_INDEX among them) is black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:NUM_CLASSES] = PALETTE
    return lut


def mask_to_rgb(mask: np.ndarray) -> np.ndarray:
    """(..., H, W) class ids -> (..., H, W, 3) uint8 palette colours; IGNORE_INDEX shows black."""
    return class_lut()[mask]
