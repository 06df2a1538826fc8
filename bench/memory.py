"""Resident memory of one pass over the cache, as a scheduler counts it: RSS and RssFile (/proc/self/status)
before and after reading every image once in training batches, with today's reader (`iter_batches`: os.preadv
into the batch's buffer) and with the memory-mapped reader it replaced (`--reader mmap`: index_select on the map,
whose pages stay in the resident set).

    python bench/memory.py                       # 2,000 images at 512 x 512, both readers, one process each
    python bench/memory.py --cache <dir>         # an existing cache folder (prepare_cache's), e.g. the real one

Each reader runs in a fresh process, so the other's pages do not count. The cache is built once (demo layouts).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def one_pass(cache: Path, reader: str, batch: int) -> None:
    from imginav_lib.data.dataset import iter_batches, load_cache

    layouts = load_cache(cache)
    if reader == "mmap":
        layouts.row_files = None  # _fetch falls back to index_select on the memory map
    idx = torch.randperm(len(layouts), generator=torch.Generator().manual_seed(0))
    before = status_kb("VmRSS"), status_kb("RssFile")
    t0 = time.perf_counter()
    n = 0
    for images, _, _ in iter_batches(layouts, idx.split(batch), torch.device("cpu")):
        n += images.shape[0]
    dt = time.perf_counter() - t0
    after = status_kb("VmRSS"), status_kb("RssFile")
    mib = lambda kb: f"{kb / 1024:.0f} MiB"  # noqa: E731
    print(f"{reader:5s}: {n} images {tuple(layouts.images.shape[1:])} in {dt:.1f} s; RSS {mib(before[0])} -> "
          f"{mib(after[0])}, RssFile {mib(before[1])} -> {mib(after[1])}", flush=True)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="demo images to build a cache of (without --cache)")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--cache", help="an existing cache folder instead of demo layouts")
    ap.add_argument("--reader", choices=["pread", "mmap"], help="(internal) run one reader in this process")
    a = ap.parse_args()
    if a.reader:
        one_pass(Path(a.cache), a.reader, a.batch)
        return
    cache = a.cache
    if cache is None:
        from imginav_lib.data.dataset import prepare_cache, read_manifest
        from imginav_lib.demo.layouts import make_layouts

        tmp = Path(tempfile.mkdtemp(prefix="imginav-membench-"))
        t0 = time.perf_counter()
        manifest = make_layouts(tmp / "layouts", n=a.n, size=a.size, seed=0)
        cache = prepare_cache(read_manifest(manifest), a.size, tmp / "cache", progress=False)
        print(f"cache of {a.n} demo layouts at {a.size}^2: {cache} ({time.perf_counter() - t0:.0f} s to build)", flush=True)
    for reader in ("pread", "mmap"):
        subprocess.run([sys.executable, __file__, "--cache", str(cache), "--reader", reader, "--batch", str(a.batch)],
                       check=True)  # fmt: skip


if __name__ == "__main__":
    main()
