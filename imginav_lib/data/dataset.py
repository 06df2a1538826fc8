"""Layouts: the researchers' manifest and the decoded cache as tensors (palette and masks: palette.py).

Every PNG is decoded once by `prepare_cache` (cache.py) into uint8 arrays (images N x 3 x H x W, masks N x H x W,
labels N) that every experiment of a phase and every later run reuse. Training steps only index tensors
(`load_run_data` gives a run its cache and split, `iter_batches` its batches).
"""
from __future__ import annotations

import csv
import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from imginav_lib.data.cache import open_cache, open_image, prepare_cache
from imginav_lib.errors import InputError
from imginav_lib.files import input_file_problem, read_input_bytes, shown_path
from imginav_lib.palette import PALETTE, SCENE_TYPES, UNKNOWN_LABEL
from imginav_lib.text import plural

if TYPE_CHECKING:
    from imginav_lib.config.schema import RunConfig


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
    Refused (InputError naming the file and the row): a file that is missing or not a regular file, malformed
    CSV, a column given twice (pandas would rename the second and ignore it), an empty path, and an image listed
    twice (it could land in both the training and the validation split).
    """
    path = Path(path)
    if input_file_problem(path) == "file not found":
        raise InputError(f"manifest not found: {path}")
    data = read_input_bytes(path, "manifest")
    try:
        df = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
        header = next(csv.reader(io.StringIO(data.decode("utf-8-sig").split("\n", 1)[0])), [])
    except Exception as e:  # pandas raises several types for malformed CSV
        raise InputError(f"manifest {path}: cannot parse CSV: {e}") from None
    names = [c.strip() for c in header]
    twice = sorted({c for c in names if names.count(c) > 1})
    if twice:
        raise InputError(f"manifest {path}: column {twice[0]!r} appears twice in the header (which one is meant?)")
    missing = [c for c in ("layout_path", "type", "is_empty") if c not in df.columns]
    if missing:
        raise InputError(f"manifest {path}: missing column(s) {', '.join(missing)}")
    out = pd.DataFrame({"row": np.arange(2, len(df) + 2)})
    layout = df["layout_path"].str.strip()
    if (layout == "").any():
        raise InputError(f"manifest {path}: row {int(out['row'][(layout == '').to_numpy()].iloc[0])}: empty layout_path")
    out["path"] = [str(p if os.path.isabs(p) else (path.parent / p)) for p in layout]
    first: dict[str, int] = {}  # normalised path -> its first row: `a.png` and `./a.png` are one image
    for row, p in zip(out["row"], out["path"]):
        same = os.path.normpath(p)
        if same in first:
            raise InputError(f"manifest {path}: rows {first[same]} and {row} list the same image {shown_path(same)} "
                             "(it could land in both the training and the validation split)")  # fmt: skip
        first[same] = int(row)
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

    images: torch.Tensor  # (N, 3, H, W) uint8, memory-mapped
    masks: torch.Tensor  # (N, H, W) uint8, IGNORE_INDEX where no palette colour is near
    labels: torch.Tensor  # (N,) int64, UNKNOWN_LABEL where `type` is empty
    paths: list[str]
    skipped: list[str]  # files skipped because they were unreadable (only with on_bad_image: skip)
    cache_dir: Path
    # (file, byte offset of row 0) of images.npy and masks.npy: batches are read from these with os.preadv into
    # their own buffer, so the pages read never join this process's resident set (a memory map's pages do, and a
    # scheduler counts them: LSF kills a job past its memory limit).
    row_files: tuple[tuple[Path, int], tuple[Path, int]] | None = None

    def __len__(self) -> int:
        return self.images.shape[0]


def load_cache(cache_dir: str | Path) -> LayoutData:
    """Memory-map a cache folder written by `prepare_cache` (cache.py)."""
    images, masks, labels, meta = open_cache(cache_dir)
    return LayoutData(
        images=torch.from_numpy(images),
        masks=torch.from_numpy(masks),
        labels=torch.from_numpy(labels),
        paths=meta["paths"],
        skipped=meta["skipped"],
        cache_dir=Path(cache_dir),
        row_files=((Path(images.filename), images.offset), (Path(masks.filename), masks.offset)),
    )


def run_split_seed(d, seed: int) -> int:
    """The split seed of a run of seed `seed` (`d`: params.Data): split_seed, plus the seed when split: per_seed."""
    return d.split_seed + seed if d.split == "per_seed" else d.split_seed


def check_split(d, seeds: list[int], manifest: pd.DataFrame | None = None) -> None:
    """Raise InputError unless every run of the phase gets at least one training and one validation image: the
    split a run makes (`train_val_split`, of each seed's split seed) on the rows the filters keep. `d`:
    params.Data; `manifest`: read_manifest(d.manifest, d.filters) when already read."""
    manifest = read_manifest(d.manifest, d.filters) if manifest is None else manifest
    n = len(manifest)
    for seed in seeds if d.split == "per_seed" else seeds[:1]:
        train, val = train_val_split(n, d.val_fraction, run_split_seed(d, seed))
        if len(train) == 0 or len(val) == 0:
            per_seed = f" (seed {seed}, split: per_seed)" if d.split == "per_seed" else ""
            raise InputError(f"data: {plural(n, 'image')} after data.filters split into {len(train)} for training and "
                             f"{len(val)} for validation with val_fraction {d.val_fraction}{per_seed}: a run needs at "
                             "least one of each")  # fmt: skip


def train_val_split(n: int, val_fraction: float, split_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic 80/20-style split of range(n) -> (train indices, val indices)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    n_val = max(1, round(n * val_fraction)) if n > 1 else 0
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def read_rows(path: Path, offset: int, idx: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Rows `idx` of a C-ordered .npy file whose row 0 starts at byte `offset` -> `out` (len(idx), *row shape),
    one os.preadv per row straight into `out`: the file's pages stay in the page cache (shared, reclaimable) and out
    of this process's resident set."""
    flat = memoryview(out.numpy().reshape(-1))
    row = out[0].numel() * out.element_size() if len(idx) else 0
    fd = os.open(path, os.O_RDONLY)
    try:
        for k, i in enumerate(idx.tolist()):
            n = os.preadv(fd, [flat[k * row:(k + 1) * row]], offset + i * row)
            if n != row:
                raise OSError(f"{path}: row {i}: read {n} of {row} bytes (the cache file is shorter than its header says)")
    finally:
        os.close(fd)
    return out


def _fetch(layouts: LayoutData, idx: torch.Tensor, pin: bool):
    """Read one batch out of the cache; into page-locked memory when it goes to a GPU."""
    out = []
    files = layouts.row_files or (None, None)
    for src, file in zip((layouts.images, layouts.masks, layouts.labels), (*files, None)):
        buf = torch.empty((len(idx), *src.shape[1:]), dtype=src.dtype, pin_memory=pin)
        out.append(read_rows(file[0], file[1], idx, buf) if file else torch.index_select(src, 0, idx, out=buf))
    return out


def iter_batches(layouts: LayoutData, batches, device: torch.device):
    """Yield (images (B, 3, H, W) float in [-1, 1], masks (B, H, W) long, labels (B,) long) on `device`, one per
    index tensor of `batches`.

    The next batch is read from the cache in a background thread while the current one trains (at 512 px a
    batch of 16 is 16 MiB of page faults and copies); on CUDA it lands in pinned memory, so the copy to the GPU
    is asynchronous (non_blocking) and the uint8 -> float conversion runs on the GPU.
    """
    pin = device.type == "cuda"
    batches = list(batches)
    if not batches:
        return
    with ThreadPoolExecutor(1, thread_name_prefix="imginav-batches") as pool:
        ahead = pool.submit(_fetch, layouts, batches[0], pin)
        for k in range(len(batches)):
            images, masks, labels = ahead.result()
            if k + 1 < len(batches):
                ahead = pool.submit(_fetch, layouts, batches[k + 1], pin)
            images, masks, labels = (t.to(device, non_blocking=pin) for t in (images, masks, labels))
            yield to_model_input(images), masks.long(), labels.long()


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
    cache = prepare_cache(manifest, d.image_size, d.cache_dir, d.on_bad_image, d.mask_tolerance, progress, d.workers)
    layouts = load_cache(cache)
    train_idx, val_idx = train_val_split(len(layouts), d.val_fraction, run_split_seed(d, cfg.seed))
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise ValueError(f"data: {len(layouts)} image(s) are too few for a train/val split")
    return RunData(layouts, train_idx, val_idx, val_idx[: d.num_samples])


def manifest_summary(d, seeds: list[int] | None = None) -> str:
    """What `imginav validate` says about the data (`d`: params.Data): images listed, kept by the filters, and
    the size of the first one against data.image_size (e.g. 64 px images upscaled to 512).

    Checks what the runs will need, without decoding: every kept file is a regular file (with on_bad_image:
    error; skip: counted), the first one opens as an image, and with `seeds` each run's split (check_split).
    Raises InputError naming the manifest and the row."""
    listed, kept = read_manifest(d.manifest), read_manifest(d.manifest, d.filters)
    if seeds is not None:
        check_split(d, seeds, kept)
    filtered = f", {len(kept)} after data.filters {d.filters}" if len(kept) != len(listed) else ""
    source = f"manifest {d.manifest}"
    bad = [(row, p, why) for row, p in zip(kept["row"], kept["path"]) if (why := input_file_problem(p))]
    if bad and d.on_bad_image == "error":
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise InputError(f"{source}: row {bad[0][0]}: {shown_path(bad[0][1])}: {bad[0][2]}{more}")
    skipped = f"; {len(bad)} of them unusable, skipped (on_bad_image: skip)" if bad else ""
    usable = kept[~kept["path"].isin({p for _, p, _ in bad})]
    if not len(usable):
        raise InputError(f"{source}: no usable image, all {len(bad)} skipped: row {bad[0][0]}: {shown_path(bad[0][1])}: {bad[0][2]}")
    row, first = usable["row"].iloc[0], usable["path"].iloc[0]
    try:
        with open_image(first) as im:
            w, h = im.size
    except (OSError, ValueError) as e:
        if d.on_bad_image == "error":
            raise InputError(f"{source}: row {row}: {shown_path(first)}: {e}") from None
        return f"manifest: {len(listed)} images{filtered}{skipped}; first image unreadable ({e})"
    n = d.image_size
    if (w, h) == (n, n):
        how = f"already {n}x{n}: used as they are"
    else:
        how = f"{'upscaled' if max(w, h) < n else 'downscaled' if min(w, h) > n else 'resized'} to {n}x{n} (nearest-neighbour) once, into the cache"
    return f"manifest: {len(listed)} images{filtered}{skipped}; the first is {w}x{h} px: images are {how}"
