"""The fixed 10-colour palette of the 3D-FRONT layout renders, and RGB <-> class maps (numpy only: the report
imports this without torch)."""
from __future__ import annotations

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


def mask_to_rgb(mask: np.ndarray) -> np.ndarray:
    """(..., H, W) class ids -> (..., H, W, 3) uint8 palette colours; IGNORE_INDEX shows black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:NUM_CLASSES] = PALETTE
    return lut[mask]
