"""The decoded cache: lookup-table masks, parallel streaming build, skipped images, kill and concurrency safety."""
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from imginav_lib.data import cache
from imginav_lib.testing.counting import decode_count
from imginav_lib.data.dataset import load_cache, read_manifest
from imginav_lib.errors import InputError
from imginav_lib.palette import IGNORE_INDEX, PALETTE, mask_lut, rgb_to_mask, rgb_to_mask_lut, unpack_rgb

REPO = Path(__file__).resolve().parents[1]


def test_lookup_masks_equal_rgb_to_mask_on_the_real_layouts(real_manifest):
    m = read_manifest(real_manifest, filters=None)
    rgb = np.stack([cache.decode_image(p, 128) for p in m["path"]])  # (79, 128, 128, 3), blended edges included
    expected = rgb_to_mask(rgb)
    assert (expected == IGNORE_INDEX).any() and (rgb_to_mask_lut(rgb) == expected).all()


@pytest.mark.parametrize("tolerance", [30.0, 7.5])
def test_lookup_masks_equal_rgb_to_mask_on_blends_the_tolerance_shell_and_random_colours(tolerance):
    pal = PALETTE.astype(float)
    t = np.linspace(0, 1, 129)[:, None]
    blends = [a * (1 - t) + b * t for a, b in itertools.combinations(pal, 2)]  # every edge between two classes
    blends = np.concatenate(blends).round()
    jitter = np.array(list(itertools.product([-1, 0, 1], repeat=3)))
    near_edges = (blends[:, None] + jitter).reshape(-1, 3)
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(20_000, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    radii = tolerance + rng.uniform(-1.5, 1.5, (20_000, 1))
    shell = (pal[rng.integers(0, 10, 20_000)] + directions * radii).round()  # just inside and just outside
    random = unpack_rgb(rng.integers(0, 1 << 24, 1_000_000, dtype=np.uint32)).astype(float)
    colours = np.clip(np.concatenate([near_edges, shell, random]), 0, 255).astype(np.uint8)
    expected = rgb_to_mask(colours, tolerance)
    assert len(np.unique(expected)) == 11  # every class and IGNORE_INDEX are exercised
    assert (rgb_to_mask_lut(colours, tolerance) == expected).all()
    assert not mask_lut(tolerance).flags.writeable


def test_unpack_rgb_of_known_codes():
    """Code r | g << 8 | b << 16: 0x563412 is r 0x12, g 0x34, b 0x56; the channel axis comes last, in uint8."""
    rgb = unpack_rgb(np.array([[0x563412, 0xFFFFFF, 0x000100]], np.uint32))
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 3, 3)
    assert rgb.tolist() == [[[0x12, 0x34, 0x56], [255, 255, 255], [0, 1, 0]]]


def test_lookup_masks_of_palette_colours_in_an_image_of_any_width():
    """A 1 x 2 image of chair and background: classes 2 and 9 (the last axis is the colour, whatever the others)."""
    assert rgb_to_mask_lut(PALETTE[None, [2, 9]]).tolist() == [[2, 9]]


@pytest.mark.parametrize("bad", [np.zeros((2, 2, 3), np.float32), np.zeros((2, 2, 4), np.uint8)])
def test_lookup_masks_refuse_other_than_uint8_rgb(bad):
    want = f"rgb_to_mask_lut wants uint8 (..., 3), got {bad.dtype} {bad.shape}"
    with pytest.raises(ValueError, match=f"^{re.escape(want)}$"):
        rgb_to_mask_lut(bad)

def test_default_workers_follow_the_job_allocation(monkeypatch):
    monkeypatch.delenv("LSB_DJOB_NUMPROC", raising=False)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert cache.default_workers() == len(os.sched_getaffinity(0))
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "5")
    assert cache.default_workers() == 5
    monkeypatch.setenv("LSB_DJOB_NUMPROC", "3")
    assert cache.default_workers() == 3


def _reference(path: str, size: int):
    rgb = cache.decode_image(path, size)
    return rgb.transpose(2, 0, 1), rgb_to_mask(rgb)


def test_parallel_build_writes_every_row_like_one_process(tmp_path, labelled_manifest, monkeypatch):
    monkeypatch.setattr(cache, "MIN_PIXELS_PER_WORKER", 1)  # start workers even for these few small images
    monkeypatch.setattr(cache, "CHUNK_BYTES", 7 * 4 * 128 * 128)  # 7 images per chunk: several chunks per worker
    m = read_manifest(labelled_manifest)
    one = load_cache(cache.prepare_cache(m, 128, tmp_path / "one", workers=1, progress=False))
    two = load_cache(cache.prepare_cache(m, 128, tmp_path / "two", workers=2, progress=False))
    assert one.paths == two.paths == list(m["path"])
    assert (one.images.numpy() == two.images.numpy()).all() and (one.masks.numpy() == two.masks.numpy()).all()
    assert (two.labels.numpy() == m["label"].to_numpy()).all()
    for i in (0, 17, len(m) - 1):
        image, mask = _reference(m["path"][i], 128)
        assert (two.images[i].numpy() == image).all() and (two.masks[i].numpy() == mask).all()


def test_skipped_images_leave_no_hole_and_rows_match_their_paths(tmp_path, labelled_manifest, monkeypatch):
    monkeypatch.setattr(cache, "MIN_PIXELS_PER_WORKER", 1)
    monkeypatch.setattr(cache, "CHUNK_BYTES", 5 * 4 * 128 * 128)
    m = read_manifest(labelled_manifest).iloc[:20].reset_index(drop=True)
    (tmp_path / "corrupt.png").write_bytes(b"not a png")
    for i in (0, 7, 18):  # a bad first row, one in the middle and one in the tail
        m.loc[i, "path"] = str(tmp_path / ("corrupt.png" if i == 7 else f"missing{i}.png"))
    d = load_cache(cache.prepare_cache(m, 128, tmp_path / "c", on_bad_image="skip", workers=2, progress=False))
    assert len(d) == 17 and len(d.skipped) == 3 and "missing" in d.skipped[0] and "corrupt.png" in d.skipped[1]
    assert sorted(d.paths) == sorted(p for i, p in enumerate(m["path"]) if i not in (0, 7, 18))
    label_of = dict(zip(m["path"], m["label"]))
    for i, path in enumerate(d.paths):
        image, mask = _reference(path, 128)
        assert (d.images[i].numpy() == image).all() and (d.masks[i].numpy() == mask).all()
        assert d.labels[i] == label_of[path]


def test_a_cache_of_another_version_is_a_clean_miss(tmp_path, labelled_manifest, monkeypatch):
    m = read_manifest(labelled_manifest)
    monkeypatch.setattr(cache, "CACHE_VERSION", 1)
    old = cache.prepare_cache(m, 32, tmp_path / "c", progress=False)
    monkeypatch.undo()
    before = decode_count()
    new = cache.prepare_cache(m, 32, tmp_path / "c", progress=False)
    assert new != old and decode_count() - before == len(m)  # decoded again, into its own folder
    with pytest.raises(InputError, match="cache version 1 is not 2"):
        load_cache(old)


def test_a_build_folder_with_its_marker_is_never_taken_for_a_cache(tmp_path, labelled_manifest):
    """A prepare killed between writing meta.json and the rename leaves a complete-looking temp folder."""
    m = read_manifest(labelled_manifest)
    key = cache.cache_key(m, 32, 30.0)
    stale = tmp_path / "c" / f".{key}.build-dead"
    stale.mkdir(parents=True)
    (stale / "meta.json").write_text(json.dumps({"version": cache.CACHE_VERSION}))
    d = load_cache(cache.prepare_cache(m, 32, tmp_path / "c", progress=False))
    assert len(d) == len(m) and not stale.exists()


# A prepare in another process. SLOW_S slows each decode so that the test can act mid-build on any machine.
CHILD = """
import sys, time, pandas as pd
from imginav_lib.data import cache
from imginav_lib.testing.counting import decode_count
cache.MIN_PIXELS_PER_WORKER = 1
slow, decode = float(sys.argv[3]), cache.decode_image
def slow_decode(path, size):
    time.sleep(slow)
    return decode(path, size)
cache.decode_image = slow_decode
path = cache.prepare_cache(pd.read_pickle(sys.argv[1]), 128, sys.argv[2], workers=2, progress=False)
print(path, decode_count())
"""


def _child(manifest_pkl: Path, root: Path, slow_s: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(manifest_pkl), str(root), str(slow_s)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True,
    )


def _wait_for_build(root: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while not list(root.glob(".*.build-*")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)


@pytest.fixture
def big_manifest(tmp_path, labelled_manifest) -> Path:
    """The non-empty layouts (54 real ones) listed 6 times (324 rows), pickled for the child processes."""
    m = read_manifest(labelled_manifest, filters={"is_empty": [False]})
    rows = m.loc[np.tile(np.arange(len(m)), 6)].reset_index(drop=True)
    rows["row"] = np.arange(2, len(rows) + 2)
    rows.to_pickle(tmp_path / "m.pkl")
    return tmp_path / "m.pkl"


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:  # field 4 of /proc/PID/stat: the parent pid
            out.append(int(stat.parent.name))
    return out


def test_a_killed_prepare_leaves_no_cache_and_the_next_one_builds_it(tmp_path, big_manifest):
    root = tmp_path / "c"
    proc = _child(big_manifest, root, slow_s=0.02)  # ~3 s of decoding with 2 workers
    _wait_for_build(root, proc)
    deadline = time.monotonic() + 30
    while len(workers := _children(proc.pid)) < 2:
        assert time.monotonic() < deadline, "the prepare started no workers"
        time.sleep(0.05)
    time.sleep(0.3)
    os.kill(proc.pid, signal.SIGKILL)  # the prepare alone, mid-build: its workers must go with it
    proc.wait()
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{w}").exists() for w in workers):  # not orphans that would hold the lock forever
        assert time.monotonic() < deadline, "the killed prepare's workers are still running"
        time.sleep(0.1)
    assert not [p for p in root.iterdir() if not p.name.startswith(".")]  # nothing that looks like a cache
    assert list(root.glob(".*.build-*"))  # the half-built folder is still there, hidden
    m = __import__("pandas").read_pickle(big_manifest)
    before = decode_count()
    d = load_cache(cache.prepare_cache(m, 128, root, progress=False))
    assert decode_count() - before == len(m) and len(d) == len(m)
    assert not list(root.glob(".*.build-*"))  # the next prepare cleared it
    for i in (0, 100, len(m) - 1):
        image, mask = _reference(d.paths[i], 128)
        assert (d.images[i].numpy() == image).all() and (d.masks[i].numpy() == mask).all()


def test_two_concurrent_prepares_build_the_cache_once(tmp_path, big_manifest):
    root = tmp_path / "c"
    first = _child(big_manifest, root, slow_s=0.01)
    _wait_for_build(root, first)  # the first holds the lock
    second = _child(big_manifest, root, slow_s=0.0)
    out1, err1 = first.communicate(timeout=120)
    out2, err2 = second.communicate(timeout=120)
    assert first.returncode == 0 and second.returncode == 0, err1 + err2
    (path1, n1), (path2, n2) = out1.split(), out2.split()
    n = len(__import__("pandas").read_pickle(big_manifest))  # 324 on the real layouts
    assert path1 == path2 and int(n1) == n and int(n2) == 0  # one built it, the other waited and reused it
    assert "waiting for another prepare" in err2
    assert len(load_cache(path1)) == n


def test_prepare_cli_takes_workers_and_refuses_zero(tiny, capsys):
    from imginav_lib.cli import main

    assert main(["prepare", str(tiny), "--workers", "1"]) == 0
    out, err = capsys.readouterr()
    path = Path(out.strip().removeprefix("cache: "))
    assert cache.is_complete(path) and "decode layouts (1 worker)" in err and "img/s" in err
    with pytest.raises(SystemExit) as e:
        main(["prepare", str(tiny), "--workers", "0"])
    assert e.value.code == 2 and "--workers: '0' is not an integer >= 1" in capsys.readouterr().err
