"""Batches read from the cache without keeping its pages in the resident set (issue 22, "memory that stays flat"):
`_fetch` reads rows with os.preadv into the batch's own buffer; a memory map's pages would stay in RssFile, which
a scheduler counts (LSF kills a job past its memory limit). bench/memory.py measures it at 2,000 images at 512^2.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from imginav_lib.data.dataset import _fetch, iter_batches, load_cache, read_rows


def rss_file_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    pytest.skip("no RssFile in /proc/self/status (not Linux)")


@pytest.fixture
def big_cache(tmp_path):
    """A cache folder as prepare_cache lays it out, 640 images of 3 x 128 x 128 (30 MiB) and their masks (10 MiB), written with
    numpy directly (decoding that many PNGs would take a minute); load_cache reads only the .npy files and meta."""
    from imginav_lib.data.cache import CACHE_VERSION
    import json

    n, size = 640, 128
    rng = np.random.default_rng(0)
    np.save(tmp_path / "images.npy", rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8))
    np.save(tmp_path / "masks.npy", rng.integers(0, 10, (n, size, size), dtype=np.uint8))
    np.save(tmp_path / "labels.npy", rng.integers(0, 3, n).astype(np.int64))
    (tmp_path / "meta.json").write_text(json.dumps({"version": CACHE_VERSION, "paths": [f"{i}.png" for i in range(n)],
                                                    "skipped": []}))  # fmt: skip
    return tmp_path


def test_a_batch_read_with_preadv_is_the_batch_of_the_memory_map(big_cache):
    layouts = load_cache(big_cache)
    idx = torch.tensor([639, 0, 17, 17, 300])
    images, masks, labels = _fetch(layouts, idx, pin=False)
    assert torch.equal(images, layouts.images[idx]) and torch.equal(masks, layouts.masks[idx])
    assert torch.equal(labels, layouts.labels[idx])
    assert read_rows(*layouts.row_files[0], torch.tensor([], dtype=torch.long), torch.empty((0, 3, 128, 128), dtype=torch.uint8)).shape[0] == 0


def test_one_pass_over_the_cache_leaves_its_pages_out_of_the_resident_set(big_cache):
    """40 MiB of images and masks read once: RssFile grows by the map's pages with the old reader (checked
    here, so that the measure can tell), and by almost nothing with preadv."""
    layouts = load_cache(big_cache)
    batches = torch.randperm(len(layouts), generator=torch.Generator().manual_seed(0)).split(16)
    before = rss_file_kb()
    for _ in iter_batches(layouts, batches, torch.device("cpu")):
        pass
    grown = rss_file_kb() - before
    assert grown < 8 * 1024, f"RssFile grew by {grown} KiB"
    layouts.row_files = None  # the memory-mapped reader this replaced
    before = rss_file_kb()
    for _ in iter_batches(layouts, batches, torch.device("cpu")):
        pass
    assert rss_file_kb() - before > 30 * 1024
