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
from dataclasses import dataclass, field
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

    Returns columns: path (absolute), type ('' when unknown), is_empty (bool), label (int), row (1-based CSV line),
    and the manifest's other columns as stripped text (scene_id, room_id, ...).
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
    for c in df.columns:  # the other columns as text (scene_id, room_id, ...): data.group_by and filters may name them
        if c not in out.columns and c != "layout_path":
            out[c] = df[c].str.strip()
    for column, allowed in (filters or {}).items():
        if column not in out.columns:
            raise InputError(f"data.filters: unknown manifest column {column!r} (use type, is_empty or a column of the manifest)")
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


def check_split(d, seeds: list[int], manifest: pd.DataFrame | None = None) -> None:
    """Raise InputError unless every run of the phase gets at least one training and one validation image: the
    split a run makes (`split_for`, of each seed) on the rows the filters keep. `d`: params.Data; `manifest`:
    read_manifest(d.manifest, d.filters) when already read."""
    manifest = read_manifest(d.manifest, d.filters) if manifest is None else manifest
    n = len(manifest)
    for seed in seeds if d.split == "per_seed" else seeds[:1]:
        split = split_for(d, manifest, seed)
        if len(split.train) == 0 or len(split.val) == 0:
            per_seed = f" (seed {seed}, split: per_seed)" if d.split == "per_seed" else ""
            raise InputError(f"data: {plural(n, 'image')} after data.filters split into {len(split.train)} for training "
                             f"and {len(split.val)} for validation with val_fraction {d.val_fraction}"
                             f"{per_seed}: a run needs at least one of each")  # fmt: skip


@dataclass
class Split:
    """A run's train/validation/test split (indices into the cache's rows) and how it was drawn."""

    train: torch.Tensor  # (N_train,) sorted
    val: torch.Tensor
    test: torch.Tensor  # empty when data.test_fraction is 0
    split_seed: int
    group_by: str | None  # the manifest column no group of which is on two sides; None: image by image
    groups: dict[str, int]  # side -> number of groups on it (images, when not grouped)

    def describe(self) -> dict:
        """run.json's `split`: how the split was made and what each side holds."""
        return {"split_seed": self.split_seed, "group_by": self.group_by,
                "images": {k: len(getattr(self, k)) for k in ("train", "val", "test")}, "groups": dict(self.groups)}  # fmt: skip

    def sentence(self) -> str:
        """One line for `imginav validate` and the report."""
        sides = ", ".join(f"{k} {len(getattr(self, k))} images" + (f" / {self.groups[k]} {self.group_by} groups" if self.group_by else "")
                          for k in ("train", "val", "test") if len(getattr(self, k)) or k != "test")  # fmt: skip
        how = (f"grouped by {self.group_by}: no {self.group_by} on two sides" if self.group_by
               else "image by image (no group column)")
        return f"split_seed {self.split_seed}, {how}: {sides}"


def group_column(group_by: str | None, columns) -> str | None:
    """data.group_by resolved against the manifest's columns: "auto" is scene_id when it is there, else None."""
    if group_by == "auto":
        return "scene_id" if "scene_id" in columns else None
    if group_by is not None and group_by not in columns:
        raise InputError(f"data.group_by: the manifest has no column {group_by!r} (columns: {', '.join(map(str, columns))})")
    return group_by


def split_indices(n: int, val_fraction: float, test_fraction: float, split_seed: int,
                  groups=None, group_by: str | None = None) -> Split:  # fmt: skip
    """The one split function (the trainer and `imginav validate` call it): whole groups to each side.

    groups: (n,) group label per cache row (None or group_by None: every image its own group; an empty label is a
    group of its own). The groups are shuffled by split_seed and dealt in that order to validation until it holds
    round(n * val_fraction) images (at least 1), then to test until round(n * test_fraction) (at least 1 when the
    fraction is above 0), the rest to training. Ungrouped without a test split this is the split of before
    (the first n_val of one permutation of range(n)).
    """
    if groups is None or group_by is None:
        codes, n_groups = np.arange(n), n
    else:
        labels = [g if g else f"\0row{i}" for i, g in enumerate(groups)]  # an empty cell: a group of its own
        codes, uniques = pd.factorize(pd.Series(labels, dtype=object))
        n_groups = len(uniques)
    perm = torch.randperm(n_groups, generator=torch.Generator().manual_seed(split_seed)).numpy()
    size = np.bincount(codes, minlength=n_groups)
    n_val = max(1, round(n * val_fraction)) if n > 1 else 0
    n_test = max(1, round(n * test_fraction)) if test_fraction > 0 and n > 2 else 0
    side = np.full(n_groups, 0)  # 0 train, 1 val, 2 test
    filled = [0, 0, 0]
    for g in perm:
        k = 1 if filled[1] < n_val else 2 if filled[2] < n_test else 0
        side[g] = k
        filled[k] += size[g]
    of = side[codes]
    idx = [torch.from_numpy(np.flatnonzero(of == k)) for k in range(3)]
    counts = {name: int((side == k).sum()) for k, name in enumerate(("train", "val", "test"))}
    return Split(idx[0], idx[1], idx[2], split_seed, group_by if groups is not None else None, counts)


def split_for(d, manifest: pd.DataFrame, seed: int, paths: list[str] | None = None) -> Split:
    """The split of run seed `seed` (d: params.Data; manifest: read_manifest's frame after filters; paths: the
    cache's rows, which leave out skipped images; default the manifest's)."""
    split_seed = d.split_seed + seed if d.split == "per_seed" else d.split_seed
    column = group_column(d.group_by, manifest.columns)
    paths = list(manifest["path"]) if paths is None else paths
    groups = None
    if column is not None:
        of_path = dict(zip(manifest["path"], manifest[column]))
        groups = [of_path[p] for p in paths]
    return split_indices(len(paths), d.val_fraction, d.test_fraction, split_seed, groups, column)


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
    test_idx: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))  # (N_test,) held out
    split: Split | None = None


def load_run_data(cfg: RunConfig, progress: bool = True) -> RunData:
    """The phase's cache (decoded once, reused) and this run's split."""
    d = cfg.data
    manifest = read_manifest(d.manifest, d.filters)
    cache = prepare_cache(manifest, d.image_size, d.cache_dir, d.on_bad_image, d.mask_tolerance, progress, d.workers)
    layouts = load_cache(cache)
    split = split_for(d, manifest, cfg.seed, layouts.paths)
    if len(split.train) == 0 or len(split.val) == 0:
        raise ValueError(f"data: {len(layouts)} image(s) are too few for a train/val split")
    return RunData(layouts, split.train, split.val, split.val[: d.num_samples], split.test, split)


def split_summary(d, seeds: list[int]) -> str:
    """What `imginav validate` says about the split (`d`: params.Data): the split of the first seed, and for
    data.split: per_seed that every seed's keeps its groups apart too (the function the runs call)."""
    kept = read_manifest(d.manifest, d.filters)
    splits = [split_for(d, kept, s) for s in (seeds if d.split == "per_seed" else seeds[:1])]
    every = f" (data.split per_seed: each of the {len(seeds)} seeds draws its own)" if d.split == "per_seed" else ""
    return f"split: {splits[0].sentence()}{every}"


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
