"""The decoded cache: every listed PNG decoded once into on-disk uint8 arrays, in parallel, with flat memory.

`<cache_root>/<key>/` holds images.npy (N, 3, H, W) uint8, masks.npy (N, H, W) uint8 (IGNORE_INDEX where no
palette colour is near), labels.npy (N,) int64 and meta.json. It is built in `.<key>.build-XXXX/` beside it:
forked worker processes decode chunks of rows and write them straight to their rows of the .npy files (nothing
accumulates in memory), then the folder is renamed into place; meta.json is written last. So a killed build
leaves only a hidden temp folder, which the next build of that key deletes. `.<key>.lock` (fcntl) lets one of
several concurrent prepares build and the others wait for it and reuse its result.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import ctypes
import fcntl
import hashlib
import io
import json
import multiprocessing
import os
import re
import shutil
import signal
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from imginav_lib.errors import InputError
from imginav_lib.files import UMASK, atomic_path, atomic_write, atomic_write_text, check_output_dir, require_regular_file, shown_path
from imginav_lib.palette import MASK_TOLERANCE, PALETTE, mask_lut, rgb_to_mask_lut

CACHE_VERSION = 2  # 2: streamed build, lock, LUT masks (identical values); a v1 folder is another key: a miss
CHUNK_BYTES = 16 << 20  # decoded bytes per worker task (16 images at 512 px)
MIN_PIXELS_PER_WORKER = 1 << 24  # a worker process costs ~0.3 s to start: only start one per ~64 images at 512 px


def cache_key(manifest, image_size: int, tolerance: float) -> str:
    """Content key: the manifest rows, each file's size and mtime, the image size, palette and tolerance."""
    h = hashlib.sha256()
    h.update(f"v{CACHE_VERSION}|{image_size}|{tolerance}|".encode())
    h.update(PALETTE.tobytes())
    for p, t, e in zip(manifest["path"], manifest["type"], manifest["is_empty"]):
        try:
            st = os.stat(p)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except (OSError, ValueError):  # ValueError: a NUL byte in the path (decoding then says so)
            stamp = "missing"
        h.update(f"{p}|{t}|{e}|{stamp}\n".encode())
    return h.hexdigest()[:20]


def default_workers() -> int:
    """The cores this job was given: LSB_DJOB_NUMPROC (LSF), SLURM_CPUS_PER_TASK, else the usable CPUs."""
    for var in ("LSB_DJOB_NUMPROC", "SLURM_CPUS_PER_TASK"):
        if os.environ.get(var, "").isdigit() and int(os.environ[var]) > 0:
            return int(os.environ[var])
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def is_complete(cache_dir: Path) -> bool:
    return (cache_dir / "meta.json").is_file()


def finished_cache(manifest, image_size: int, cache_root: str | Path, tolerance: float = MASK_TOLERANCE) -> Path | None:
    """The cache folder of these layouts if `prepare_cache` has finished it, else None (nothing is decoded).

    The cluster launcher asks this on the login node to decide whether a prepare job is needed."""
    final = Path(cache_root) / cache_key(manifest, image_size, tolerance)
    return final if is_complete(final) else None


# ---------------------------------------------------------------------------------------------------------
# Decoding (in the worker processes)


def _too_many_pixels(pixels: int | None) -> str:
    """The decompression-bomb refusal, with the pixel count and the limit."""
    count = f"{pixels:,} pixels" if pixels is not None else "its size"
    return f"{count} is more than Pillow's limit of {Image.MAX_IMAGE_PIXELS:,} pixels (decompression-bomb check)"


@contextlib.contextmanager
def open_image(path: str):
    """The one opener of images: yield the Pillow image of `path` (its header read, its pixels not yet decoded).

    Raises FileNotFoundError for a missing file, ValueError saying what is wrong for anything else: not a regular
    file (a FIFO would block the open for ever; checked before opening), a NUL byte in the path, not an image, or
    more pixels than Pillow's decompression-bomb limit (Image.MAX_IMAGE_PIXELS: above it Pillow only warns, above
    twice it refuses; both are refused here, with the pixel count and the limit)."""
    require_regular_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked below, as an error
            im = Image.open(path)
    except Image.DecompressionBombError as e:  # above twice the limit; the count is only in Pillow's message
        numbers = re.findall(r"\d+", str(e))
        raise ValueError(_too_many_pixels(int(numbers[0]) if numbers else None)) from None
    except (OSError, SyntaxError, ValueError) as e:  # UnidentifiedImageError is an OSError
        raise ValueError(str(e) or type(e).__name__) from None
    with im:
        w, h = im.size
        if Image.MAX_IMAGE_PIXELS and w * h > Image.MAX_IMAGE_PIXELS:  # None: the check switched off by the user
            raise ValueError(f"{w}x{h}: " + _too_many_pixels(w * h))
        yield im


def decode_image(path: str, size: int) -> np.ndarray:
    """An image file (PNG, GIF, WebP, ...: what Pillow reads) -> (size, size, 3) uint8; raises ValueError saying
    what is wrong with the file (FileNotFoundError when it is missing)."""
    with open_image(path) as im:
        if im.mode not in ("RGB", "RGBA", "P"):
            raise ValueError(f"mode {im.mode} is not RGB")
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.NEAREST)  # nearest keeps palette colours exact
        return np.asarray(im, dtype=np.uint8)


def decode_chunk(paths: list[str], start: int, size: int, tolerance: float, images: NpyRows, masks: NpyRows) -> list[tuple[int, str]]:
    """Decode manifest rows start, start + 1, ... and write them at those rows of `images` and `masks`.

    Returns (row, message) for each unreadable image; its rows stay zero."""
    chunk_images = np.zeros((len(paths), 3, size, size), dtype=np.uint8)
    chunk_masks = np.zeros((len(paths), size, size), dtype=np.uint8)
    errors = []
    for j, path in enumerate(paths):
        try:
            rgb = decode_image(path, size)
        except FileNotFoundError:
            errors.append((start + j, "missing"))
            continue
        except Exception as e:  # PIL raises many types for a corrupt file
            errors.append((start + j, str(e) or type(e).__name__))
            continue
        chunk_images[j] = rgb.transpose(2, 0, 1)
        chunk_masks[j] = rgb_to_mask_lut(rgb, tolerance)  # the table the parent built before forking: shared
    images.write(start, chunk_images)
    masks.write(start, chunk_masks)
    return errors


# ---------------------------------------------------------------------------------------------------------
# On-disk arrays


def _npy_header(shape: tuple[int, ...], dtype) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _pwrite_all(fd: int, data, offset: int) -> None:
    view = memoryview(data).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


class NpyRows:
    """A .npy file of n rows that any process writes row range by row range with pwrite (no memory map, so
    nothing written stays in the writer's resident memory), then shrinks to the rows kept.

    numpy pads the header so its length does not depend on shape[0]; `finish` checks that."""

    def __init__(self, path: Path, n: int, row_shape: tuple[int, ...], dtype=np.uint8):
        self.path, self.row_shape, self.dtype = str(path), tuple(row_shape), np.dtype(dtype)
        self.row_bytes = int(np.prod(row_shape)) * self.dtype.itemsize
        header = _npy_header((n, *self.row_shape), self.dtype)
        self.offset = len(header)
        with open(path, "wb") as f:
            f.write(header)
            f.truncate(self.offset + n * self.row_bytes)  # sparse until written

    def write(self, start: int, rows: np.ndarray) -> None:
        fd = os.open(self.path, os.O_WRONLY)
        try:
            _pwrite_all(fd, np.ascontiguousarray(rows, dtype=self.dtype), self.offset + start * self.row_bytes)
        finally:
            os.close(fd)

    def finish(self, n: int, moves: list[tuple[int, int]]) -> None:
        """Copy row src to row dst for each (src, dst), keep the first n rows, and flush to disk."""
        header = _npy_header((n, *self.row_shape), self.dtype)
        if len(header) != self.offset:
            raise RuntimeError(f"{self.path}: npy header length changed ({self.offset} -> {len(header)})")
        fd = os.open(self.path, os.O_RDWR)
        try:
            for src, dst in moves:
                row = os.pread(fd, self.row_bytes, self.offset + src * self.row_bytes)
                _pwrite_all(fd, row, self.offset + dst * self.row_bytes)
            _pwrite_all(fd, header, 0)
            os.ftruncate(fd, self.offset + n * self.row_bytes)
            os.fsync(fd)  # on disk before meta.json marks the cache complete
        finally:
            os.close(fd)


# ---------------------------------------------------------------------------------------------------------
# Build


@contextlib.contextmanager
def _locked(lock_path: Path, what: Path):
    """Hold an exclusive fcntl lock on `lock_path` (yield its file descriptor) or, where the file system has none,
    yield None.

    The lock file stays: deleting it would let a third process lock a new file while a second holds the old."""
    with open(lock_path, "a+") as f:
        fd = f.fileno()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"imginav: waiting for another prepare of {what}", file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:  # a file system without locks (Lustre without -o flock): the rename still protects
            print(f"imginav: warning: cannot lock {lock_path} ({e}); building without a lock", file=sys.stderr)
            fd = None
        yield fd  # closing the file releases the lock, also when the process is killed


def _chunks(n: int, image_size: int) -> list[tuple[int, int]]:
    per = max(1, CHUNK_BYTES // (4 * image_size * image_size))  # image + mask: 4 bytes per pixel
    return [(s, min(s + per, n)) for s in range(0, n, per)]


def _worker_init(parent: int, lock_fd: int | None) -> None:
    """In each forked worker: die with the parent, so a killed prepare leaves no orphan decoding, and close the
    inherited lock descriptor, so the lock is the parent's alone and is released when the parent dies."""
    if lock_fd is not None:
        os.close(lock_fd)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl
        os._exit(1)


def _decode_all(paths: list[str], size: int, tolerance: float, images: NpyRows, masks: NpyRows, workers: int,
                lock_fd: int | None = None):
    """Decode every path into its row; yield (errors, images done) per chunk, as chunks finish."""
    spans = _chunks(len(paths), size)
    mask_lut(tolerance)  # built once here, before any worker is forked
    if workers <= 1:
        for s, e in spans:
            yield decode_chunk(paths[s:e], s, size, tolerance, images, masks), e - s
        return
    # fork: spawn would re-run a caller's script without a main guard; the workers use only numpy and PIL, so
    # a parent holding torch threads is safe to fork, and they share the parent's lookup table copy-on-write.
    ctx = multiprocessing.get_context("fork")
    pool = cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init, initargs=(os.getpid(), lock_fd))
    try:
        futures = {pool.submit(decode_chunk, paths[s:e], s, size, tolerance, images, masks): e - s for s, e in spans}
        for fut in cf.as_completed(futures):
            yield fut.result(), futures[fut]
    finally:
        pool.shutdown(cancel_futures=True)


def _build(tmp: Path, manifest, image_size: int, tolerance: float, workers: int, on_bad_image: str, progress: bool,
           lock_fd: int | None = None) -> int:
    """Decode every row into the arrays in `tmp`, then write meta.json; return how many images were kept.

    Raises InputError for unreadable images (on_bad_image: error), after listing them all."""
    from tqdm.auto import tqdm

    paths, rows = list(manifest["path"]), list(manifest["row"])
    n = len(paths)
    source = f"manifest {manifest.attrs.get('manifest', '(in memory)')}"
    with atomic_path(tmp / "images.npy") as images_tmp, atomic_path(tmp / "masks.npy") as masks_tmp:
        images = NpyRows(images_tmp, n, (3, image_size, image_size))
        masks = NpyRows(masks_tmp, n, (image_size, image_size))
        errors = []
        desc = f"decode layouts ({workers} worker{'s' * (workers > 1)})"
        with tqdm(total=n, unit="img", desc=desc, disable=not progress, smoothing=0.1) as bar:
            for chunk_errors, done in _decode_all(paths, image_size, tolerance, images, masks, workers, lock_fd):
                errors += chunk_errors
                bar.update(done)
        errors.sort()
        bad = [f"row {rows[i]}: {shown_path(paths[i])}: {msg}" for i, msg in errors]
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        if bad and on_bad_image == "error":
            raise InputError(f"{source}: {len(bad)} unreadable image(s): " + "; ".join(bad[:3]) + more)
        skipped = {i for i, _ in errors}
        n_keep = n - len(skipped)
        if n_keep == 0:
            raise InputError(f"{source}: no readable images, all {len(bad)} skipped: " + "; ".join(bad[:3]) + more)
        # A skipped image leaves a hole; the last readable rows fill the holes: one row moved per skipped image,
        # never a second copy of the arrays. So with skips the order is the manifest's except for those rows.
        holes = [i for i in sorted(skipped) if i < n_keep]
        tail = [i for i in range(n_keep, n) if i not in skipped]
        order = list(range(n_keep))
        for hole, src in zip(holes, tail):
            order[hole] = src
        images.finish(n_keep, list(zip(tail, holes)))
        masks.finish(n_keep, list(zip(tail, holes)))
    labels = manifest["label"].to_numpy(np.int64)[order]
    atomic_write(tmp / "labels.npy", lambda f: np.save(f, labels))
    meta = {
        "version": CACHE_VERSION,
        "image_size": image_size,
        "tolerance": tolerance,
        "paths": [paths[i] for i in order],
        "skipped": bad,
    }
    atomic_write_text(tmp / "meta.json", json.dumps(meta))  # last: marks the arrays complete
    return n_keep


def prepare_cache(
    manifest,
    image_size: int,
    cache_root: str | Path,
    on_bad_image: str = "error",
    tolerance: float = MASK_TOLERANCE,
    progress: bool = True,
    workers: int | None = None,
) -> Path:
    """Decode every listed image once into `<cache_root>/<key>/`; return that folder (reused if it exists).

    `workers` decoding processes (default: `default_workers()`); small jobs use fewer, down to this process."""
    if on_bad_image not in ("error", "skip"):
        raise ValueError(f"invalid on_bad_image: {on_bad_image!r}")
    key = cache_key(manifest, image_size, tolerance)
    root = Path(cache_root)
    final = root / key
    if is_complete(final):
        return final  # a finished cache is only read: it may be read-only
    check_output_dir(root, "data.cache_dir")  # a read-only folder: one line before the lock file is made
    _check_space(root, len(manifest), image_size)
    made = [d for d in (root, *root.parents) if not d.exists()]  # removed again if the input is bad
    try:
        root.mkdir(parents=True, exist_ok=True)
        return _prepare_locked(manifest, image_size, tolerance, workers, on_bad_image, progress, root, key, final)
    except (InputError, OSError) as e:
        # Bad input leaves nothing behind: a waiting prepare of the same layouts fails the same way.
        with contextlib.suppress(OSError):
            (root / f".{key}.lock").unlink(missing_ok=True)
        for d in made:
            with contextlib.suppress(OSError):
                d.rmdir()
        if isinstance(e, OSError):  # writing the cache (reading an image is caught per image): a full disk, ...
            raise InputError(f"data.cache_dir: {shown_path(e.filename or root)}: cannot write the cache: {e.strerror or e}") from None
        raise


def _check_space(root: Path, n: int, image_size: int) -> None:
    """Refuse a cache the disk cannot hold (its .npy files are sparse until written: it would fail mid-build)."""
    need = n * 4 * image_size**2 + (1 << 20)  # image (3 bytes) + mask (1 byte) per pixel, + headers and meta
    above = root
    while not above.exists() and above != above.parent:
        above = above.parent
    free = shutil.disk_usage(above).free
    if need > free:
        raise InputError(f"data.cache_dir: {root}: the cache of {n} images at {image_size}x{image_size} px needs "
                         f"{need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free (a smaller data.image_size?)")  # fmt: skip


def _prepare_locked(manifest, image_size, tolerance, workers, on_bad_image, progress, root, key, final) -> Path:
    with _locked(root / f".{key}.lock", final) as lock_fd:
        if is_complete(final):  # another prepare built it while we waited
            return final
        for stale in root.glob(f".{key}.build-*") if lock_fd is not None else ():  # left by a killed prepare
            shutil.rmtree(stale, ignore_errors=True)
        workers = max(1, workers or default_workers())
        workers = min(workers, -(-len(manifest) * image_size**2 // MIN_PIXELS_PER_WORKER))
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{key}.build-"))
        try:
            _build(tmp, manifest, image_size, tolerance, workers, on_bad_image, progress, lock_fd)
            os.chmod(tmp, 0o777 & ~UMASK)  # mkdtemp makes 0700: the cache is shared like any folder made here
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


def open_cache(cache_dir: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """A complete cache folder -> (images, masks) copy-on-write memory maps, labels, meta."""
    cache_dir = Path(cache_dir)
    try:
        meta = json.loads((cache_dir / "meta.json").read_text())
        meta["version"]  # noqa: B018 (a mapping with a version)
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise InputError(f"{cache_dir / 'meta.json'}: unreadable cache record ({type(e).__name__}); prepare it again") from None
    if meta.get("version") != CACHE_VERSION:
        raise InputError(f"{cache_dir}: cache version {meta.get('version')} is not {CACHE_VERSION}; prepare it again")
    images = np.load(cache_dir / "images.npy", mmap_mode="c")
    masks = np.load(cache_dir / "masks.npy", mmap_mode="c")
    return images, masks, np.load(cache_dir / "labels.npy"), meta
