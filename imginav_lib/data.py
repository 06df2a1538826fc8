"""Layouts: the researchers' manifest and the decoded cache (the palette and masks live in palette.py).

Every PNG is decoded once by `prepare_cache` into uint8 arrays (images N x 3 x H x W, masks N x H x W,
labels N) that every experiment of a phase and every later run reuse. Training steps only index tensors
(`load_run_data` gives a run its cache and split, `get_batch` one batch).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from PIL import Image

from .errors import InputError
from .files import atomic_write, atomic_write_text
from .palette import MASK_TOLERANCE, PALETTE, SCENE_TYPES, UNKNOWN_LABEL, rgb_to_mask

if TYPE_CHECKING:
    from .params import RunConfig

CACHE_VERSION = 1


def rgb_to_classes_torch(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) float in [-1, 1] -> (B, H, W) long nearest palette class (no tolerance).

    Used for the semantic fidelity of reconstructions: what a reader of the image would call each pixel.
    """
    palette = torch.as_tensor(PALETTE, device=rgb.device, dtype=rgb.dtype) / 127.5 - 1.0  # (K, 3)
    dist = (rgb[:, None] - palette[None, :, :, None, None]).square().sum(2)  # (B, K, H, W)
    return dist.argmin(1)


# ---------------------------------------------------------------------------------------------------------
# Manifest


def read_manifest(path: str | Path, filters: dict[str, list] | None = None) -> pd.DataFrame:
    """Read the researchers' manifest CSV (layout_path, type, is_empty; other columns ignored).

    Returns columns: path (absolute), type ('' when unknown), is_empty (bool), label (int), row (1-based CSV line).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"manifest not found: {path}")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as e:  # pandas raises several types for malformed CSV
        raise InputError(f"manifest {path}: cannot parse CSV: {e}") from None
    missing = [c for c in ("layout_path", "type", "is_empty") if c not in df.columns]
    if missing:
        raise InputError(f"manifest {path}: missing column(s) {', '.join(missing)}")
    out = pd.DataFrame({"row": np.arange(2, len(df) + 2)})
    layout = df["layout_path"].str.strip()
    if (layout == "").any():
        raise InputError(f"manifest {path}: row {int(out['row'][(layout == '').to_numpy()].iloc[0])}: empty layout_path")
    out["path"] = [str(p if os.path.isabs(p) else (path.parent / p)) for p in layout]
    out["type"] = df["type"].str.strip().str.lower()
    bad_type = out.loc[~out["type"].isin(["", *SCENE_TYPES]), ["row", "type"]]
    if len(bad_type):
        r = bad_type.iloc[0]
        raise InputError(f"manifest {path}: row {r.row}: type {r.type!r} is not room, scene or empty")
    empty = df["is_empty"].str.strip().str.lower()
    bad_empty = ~empty.isin(["true", "false", "1", "0", ""])
    if bad_empty.any():
        row = int(out["row"][bad_empty.to_numpy()].iloc[0])
        raise InputError(f"manifest {path}: row {row}: is_empty {df['is_empty'][bad_empty].iloc[0]!r} is not true/false")
    out["is_empty"] = empty.isin(["true", "1"])
    out["label"] = out["type"].map(lambda t: SCENE_TYPES.get(t, UNKNOWN_LABEL)).astype(int)
    for column, allowed in (filters or {}).items():
        if column not in out.columns:
            raise InputError(f"data.filters: unknown manifest column {column!r} (use type or is_empty)")
        out = out[out[column].isin(allowed)]
    if len(out) == 0:
        raise InputError(f"manifest {path}: no rows left after filters {filters}")
    out = out.reset_index(drop=True)
    out.attrs["manifest"] = str(path)  # so that errors about its images can name it
    return out


# ---------------------------------------------------------------------------------------------------------
# Decoded cache


@dataclass
class LayoutData:
    """The decoded layouts of one manifest (after filters), ready to index."""

    images: torch.Tensor  # (N, 3, H, W) uint8
    masks: torch.Tensor  # (N, H, W) uint8, IGNORE_INDEX where no palette colour is near
    labels: torch.Tensor  # (N,) int64, UNKNOWN_LABEL where `type` is empty
    paths: list[str]
    skipped: list[str]  # files skipped because they were unreadable (only with on_bad_image: skip)
    cache_dir: Path

    def __len__(self) -> int:
        return self.images.shape[0]


def cache_key(manifest: pd.DataFrame, image_size: int, tolerance: float) -> str:
    """Content key: the manifest rows, each file's size and mtime, the image size, palette and tolerance."""
    h = hashlib.sha256()
    h.update(f"v{CACHE_VERSION}|{image_size}|{tolerance}|".encode())
    h.update(PALETTE.tobytes())
    for p, t, e in zip(manifest["path"], manifest["type"], manifest["is_empty"]):
        try:
            st = os.stat(p)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        h.update(f"{p}|{t}|{e}|{stamp}\n".encode())
    return h.hexdigest()[:20]


def finished_cache(manifest: pd.DataFrame, image_size: int, cache_root: str | Path, tolerance: float = MASK_TOLERANCE) -> Path | None:
    """The cache folder of these layouts if `prepare_cache` has finished it, else None (nothing is decoded)."""
    final = Path(cache_root) / cache_key(manifest, image_size, tolerance)
    return final if (final / "meta.json").is_file() else None


def _decode(path: str, size: int) -> np.ndarray:
    """PNG -> (size, size, 3) uint8; raises ValueError saying what is wrong with the file."""
    with Image.open(path) as im:
        if im.mode not in ("RGB", "RGBA", "P"):
            raise ValueError(f"mode {im.mode} is not RGB")
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.NEAREST)  # nearest keeps palette colours exact
        return np.asarray(im, dtype=np.uint8)


def decode_count() -> int:
    """How many PNGs this process has decoded (tests use it to prove the cache is reused)."""
    return _DECODED[0]


_DECODED = [0]


def prepare_cache(
    manifest: pd.DataFrame,
    image_size: int,
    cache_root: str | Path,
    on_bad_image: str = "error",
    tolerance: float = MASK_TOLERANCE,
    progress: bool = True,
) -> Path:
    """Decode every listed image once into `<cache_root>/<key>/`; return that folder (reused if it exists)."""
    if on_bad_image not in ("error", "skip"):
        raise ValueError(f"invalid on_bad_image: {on_bad_image!r}")
    done = finished_cache(manifest, image_size, cache_root, tolerance)
    if done is not None:
        return done
    key = cache_key(manifest, image_size, tolerance)
    final = Path(cache_root) / key
    from tqdm.auto import tqdm

    n = len(manifest)
    images = np.empty((n, 3, image_size, image_size), dtype=np.uint8)
    masks = np.empty((n, image_size, image_size), dtype=np.uint8)
    keep, bad = [], []
    rows = zip(manifest["row"], manifest["path"])
    for i, (row, path) in enumerate(tqdm(rows, total=n, desc="decode layouts", disable=not progress)):
        try:
            rgb = _decode(path, image_size)
        except FileNotFoundError:
            bad.append(f"row {row}: {path}: missing")
            continue
        except Exception as e:  # PIL raises many types for a corrupt file
            bad.append(f"row {row}: {path}: {str(e) or type(e).__name__}")
            continue
        _DECODED[0] += 1
        images[i] = rgb.transpose(2, 0, 1)
        masks[i] = rgb_to_mask(rgb, tolerance)
        keep.append(i)
    more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
    source = f"manifest {manifest.attrs.get('manifest', '(in memory)')}"
    if bad and on_bad_image == "error":
        raise InputError(f"{source}: {len(bad)} unreadable image(s): " + "; ".join(bad[:3]) + more)
    if not keep:
        raise InputError(f"{source}: no readable images, all {len(bad)} skipped: " + "; ".join(bad[:3]) + more)
    keep_idx = np.array(keep)
    Path(cache_root).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache_root, prefix=f".{key}."))
    try:
        # Each file atomically, and the folder renamed last: a reader sees a whole cache or none.
        for name, arr in (("images", images[keep_idx]), ("masks", masks[keep_idx]),
                          ("labels", manifest["label"].to_numpy(np.int64)[keep_idx])):  # fmt: skip
            atomic_write(tmp / f"{name}.npy", lambda f, a=arr: np.save(f, a))
        meta = {
            "version": CACHE_VERSION,
            "image_size": image_size,
            "tolerance": tolerance,
            "paths": [manifest["path"].iloc[i] for i in keep],
            "skipped": bad,
        }
        atomic_write_text(tmp / "meta.json", json.dumps(meta))
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished the same cache first: use theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def load_cache(cache_dir: str | Path) -> LayoutData:
    """Memory-map a cache folder written by `prepare_cache`."""
    cache_dir = Path(cache_dir)
    meta = json.loads((cache_dir / "meta.json").read_text())
    return LayoutData(
        images=torch.from_numpy(np.load(cache_dir / "images.npy", mmap_mode="c")),
        masks=torch.from_numpy(np.load(cache_dir / "masks.npy", mmap_mode="c")),
        labels=torch.from_numpy(np.load(cache_dir / "labels.npy")),
        paths=meta["paths"],
        skipped=meta["skipped"],
        cache_dir=cache_dir,
    )


def train_val_split(n: int, val_fraction: float, split_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic 80/20-style split of range(n) -> (train indices, val indices)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    n_val = max(1, round(n * val_fraction)) if n > 1 else 0
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) uint8 -> float in [-1, 1], the range of the tanh RGB head."""
    return images.float().div_(127.5).sub_(1.0)


# ---------------------------------------------------------------------------------------------------------
# One run's data


@dataclass
class RunData:
    layouts: LayoutData
    train_idx: torch.Tensor  # (N_train,) indices into layouts
    val_idx: torch.Tensor  # (N_val,)
    sample_idx: torch.Tensor  # the fixed validation images shown in samples/


def load_run_data(cfg: RunConfig, progress: bool = True) -> RunData:
    """The phase's cache (decoded once, reused) and this run's split."""
    d = cfg.data
    manifest = read_manifest(d.manifest, d.filters)
    cache = prepare_cache(manifest, d.image_size, d.cache_dir, d.on_bad_image, d.mask_tolerance, progress=progress)
    layouts = load_cache(cache)
    train_idx, val_idx = train_val_split(len(layouts), d.val_fraction, d.split_seed)
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise ValueError(f"data: {len(layouts)} image(s) are too few for a train/val split")
    return RunData(layouts, train_idx, val_idx, val_idx[: d.num_samples])


def get_batch(data: LayoutData, idx: torch.Tensor, device: torch.device):
    """Index the uint8 cache (no decoding) -> float images in [-1, 1], long masks, long labels."""
    images = data.images[idx].to(device, non_blocking=True)
    masks = data.masks[idx].to(device, non_blocking=True)
    labels = data.labels[idx].to(device, non_blocking=True)
    return to_model_input(images), masks.long(), labels.long()
