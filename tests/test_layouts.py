"""Procedural layouts: determinism, manifest format, exact palette pixels, sizes, speed, and realism vs the real set."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imginav_lib.data.dataset import read_manifest
from imginav_lib.palette import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, PALETTE, rgb_to_mask
from imginav_lib.errors import InputError
from conftest import require_real_layouts
from imginav_lib.demo.layouts import make_layouts

FURNITURE = range(8)  # class ids 0..7; 8 is wall, 9 background


def _rgb(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _class_fractions(manifest: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-class pixel fractions of every listed image at `size` px -> ((N, K) fractions, (N,) is_empty)."""
    df = read_manifest(manifest, filters=None)
    fracs = []
    for p in df["path"]:
        with Image.open(p) as im:
            rgb = np.asarray(im.convert("RGB").resize((size, size), Image.NEAREST))
        mask = rgb_to_mask(rgb)
        fracs.append(np.bincount(mask.ravel(), minlength=256)[:NUM_CLASSES] / mask.size)
    return np.array(fracs), df["is_empty"].to_numpy()


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    """200 layouts at 128 px, the real set's size: shared by the format and realism tests."""
    return make_layouts(tmp_path_factory.mktemp("gen") / "layouts", n=200, size=128, seed=0)


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = make_layouts(tmp_path / "a", n=12, size=64, seed=3)
    b = make_layouts(tmp_path / "b", n=12, size=64, seed=3)
    c = make_layouts(tmp_path / "c", n=12, size=64, seed=4)
    assert a.read_bytes() == b.read_bytes()
    names = sorted(p.name for p in (a.parent / "images").iterdir())
    assert len(names) == 12
    for name in names:
        assert (a.parent / "images" / name).read_bytes() == (b.parent / "images" / name).read_bytes()
    differ = sum((a.parent / "images" / n).read_bytes() != (c.parent / "images" / n).read_bytes() for n in names)
    assert differ >= 10


def test_layout_does_not_depend_on_n(tmp_path):
    # Layout i is keyed by (seed, i), so a bigger set extends a smaller one.
    small = make_layouts(tmp_path / "s", n=3, size=64, seed=1).parent / "images"
    big = make_layouts(tmp_path / "b", n=6, size=64, seed=1).parent / "images"
    for p in small.iterdir():
        assert p.read_bytes() == (big / p.name).read_bytes()


def test_manifest_format(generated):
    text = generated.read_text().splitlines()
    assert text[0] == "scene_id,room_id,type,meta_path,layout_path,is_empty"  # the researchers' columns (+ is_empty)
    assert text[1].startswith("scene_00001,") and ",images/layout_00001.png," in text[1]
    df = read_manifest(generated)
    assert len(df) == 200
    assert set(df["type"]) == {"room", "scene"}
    assert set(df["label"]) == {0, 1}
    # Roughly the real set's 25/79 walls-only share.
    assert 0.2 <= df["is_empty"].mean() <= 0.4
    assert all(Path(p).is_file() for p in df["path"])
    assert not list(generated.parent.glob(".manifest.*"))  # the temp file was renamed away


def test_pixels_are_exact_palette_colours(generated):
    df = read_manifest(generated)

    def packed(rgb):  # (..., 3) uint8 -> (...) int32 0xRRGGBB, so set tests are on plain integers
        rgb = rgb.astype(np.int32)
        return rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2]

    palette = packed(PALETTE)
    for p in df["path"]:
        rgb = _rgb(p)
        assert rgb.shape == (128, 128, 3)
        assert np.isin(np.unique(packed(rgb)), palette).all(), p


@pytest.mark.parametrize("size", [32, 64, 100, 512])
def test_sizes_show_walls_and_furniture(tmp_path, size):
    n = 6 if size == 512 else 30
    df = read_manifest(make_layouts(tmp_path, n=n, size=size, seed=7))
    shown = 0
    for p, empty in zip(df["path"], df["is_empty"]):
        mask = rgb_to_mask(_rgb(p))
        assert mask.shape == (size, size)
        assert (mask != IGNORE_INDEX).all()
        assert (mask == 8).any(), f"{p}: no walls"
        has_furniture = bool((mask < 8).any())
        if empty:
            assert not has_furniture, f"{p}: is_empty but has furniture"
        shown += has_furniture
    assert shown >= (1 if size == 512 else n // 3)


@pytest.mark.parametrize("kwargs", [dict(n=0, size=64, seed=0), dict(n=5, size=31, seed=0), dict(n=5, size=64, seed=-1)])
def test_bad_args_raise_input_error(tmp_path, kwargs):
    with pytest.raises(InputError) as e:
        make_layouts(tmp_path, **kwargs)
    assert "\n" not in str(e.value)


def test_class_fractions_match_real_layouts(generated):
    """Mean per-tile pixel fraction of every class within 3x of the real set, over all tiles and non-empty ones."""
    real, real_empty = _class_fractions(require_real_layouts(), 128)
    gen, gen_empty = _class_fractions(generated, 128)
    rows, bad = [], []
    for subset, r, g in (("all", real, gen), ("non-empty", real[~real_empty], gen[~gen_empty])):
        r_mean, g_mean = r.mean(0), g.mean(0)
        for k in range(NUM_CLASSES):
            ratio = g_mean[k] / r_mean[k]
            rows.append(f"{subset:9s} {CLASS_NAMES[k]:20s} real {r_mean[k]:.4f} gen {g_mean[k]:.4f} ratio {ratio:.2f}")
            if not 1 / 3 <= ratio <= 3:
                bad.append(rows[-1])
    print("\n" + "\n".join(rows))
    assert not bad, "class fractions off by more than 3x:\n" + "\n".join(bad)


def test_rooms_are_cut_from_their_scene(generated):
    """A scene row is followed by rooms of the same scene_id whose pixels come from the scene's image: the
    leakage a split by image would have, which data.group_by (scene_id) prevents."""
    df = read_manifest(generated)
    scenes = df[df["type"] == "scene"]
    cut = df[(df["type"] == "room") & df["scene_id"].isin(scenes["scene_id"])]
    assert len(cut) >= len(scenes) // 2, "too few rooms cut from scenes"
    assert (df.groupby("scene_id")["type"].apply(lambda t: (t == "scene").sum()) <= 1).all()
    rooms = df[df["type"] == "room"]
    assert all(r.startswith(f"{s}_room") for r, s in zip(rooms["room_id"], rooms["scene_id"]))
    assert (df["room_id"][df["type"] == "scene"] == "").all()
    # A cut room's furniture colours are a subset of its scene's (same furniture, cropped).
    for _, room in cut.head(20).iterrows():
        scene = scenes[scenes["scene_id"] == room["scene_id"]].iloc[0]
        colours = lambda p: {tuple(c) for c in np.unique(_rgb(p).reshape(-1, 3), axis=0)}  # noqa: E731
        assert colours(room["path"]) <= colours(scene["path"]), (room["path"], scene["path"])
