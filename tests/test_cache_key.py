"""The cache key (data/cache.cache_key) changes with each of its inputs, one at a time, and with nothing else:
a key that missed one would hand a run the images decoded for another size, palette, tolerance or file."""
from __future__ import annotations

import os

import pandas as pd
import pytest

from imginav_lib.data import cache


@pytest.fixture
def files(tmp_path):
    paths = []
    for i in range(3):
        p = tmp_path / f"img{i}.png"
        p.write_bytes(b"x" * (10 + i))
        os.utime(p, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000 + i))
        paths.append(str(p))
    return paths


def manifest(paths, types=("room", "scene", ""), empty=(False, False, True)) -> pd.DataFrame:
    return pd.DataFrame({"path": list(paths), "type": list(types), "is_empty": list(empty)})


def key(paths, size=64, tolerance=30.0, **columns) -> str:
    return cache.cache_key(manifest(paths, **columns), size, tolerance)


def test_the_same_inputs_give_the_same_key(files):
    assert key(files) == key(list(files))


def _grow(paths):
    with open(paths[1], "ab") as f:
        f.write(b"y")  # same mtime below: only the size differs
    os.utime(paths[1], ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_001))


CHANGES = {
    "image size": lambda p, mp: key(p, size=128),
    "tolerance": lambda p, mp: key(p, tolerance=31.0),
    "a path": lambda p, mp: key([p[0], p[1] + "-other", p[2]]),
    "the row order": lambda p, mp: key([p[1], p[0], p[2]], types=("scene", "room", "")),
    "a row more": lambda p, mp: cache.cache_key(pd.concat([manifest(p), manifest(p[:1], ("room",), (False,))]), 64, 30.0),
    "a type": lambda p, mp: key(p, types=("room", "room", "")),
    "is_empty": lambda p, mp: key(p, empty=(False, True, True)),
    "a file's size": lambda p, mp: (_grow(p), key(p))[1],
    "a file's mtime": lambda p, mp: (os.utime(p[2], ns=(1, 2)), key(p))[1],
    "a file gone": lambda p, mp: (os.remove(p[0]), key(p))[1],
    "the palette": lambda p, mp: (mp.setattr(cache, "PALETTE", cache.PALETTE[::-1].copy()), key(p))[1],
    "the cache version": lambda p, mp: (mp.setattr(cache, "CACHE_VERSION", cache.CACHE_VERSION + 1), key(p))[1],
}


@pytest.mark.parametrize("what", list(CHANGES))
def test_the_key_changes_with_each_input(files, monkeypatch, what):
    before = key(files)
    assert CHANGES[what](files, monkeypatch) != before
