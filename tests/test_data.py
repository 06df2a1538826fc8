import numpy as np
import pytest
import torch
from PIL import Image

from imginav_lib.data import cache
from imginav_lib.testing.counting import decode_count

from imginav_lib.data import dataset as data
from imginav_lib.data.dataset import read_manifest
from imginav_lib.palette import IGNORE_INDEX, PALETTE, UNKNOWN_LABEL, rgb_to_mask
from imginav_lib.errors import InputError


def test_exact_palette_colours_map_to_their_class():
    rgb = PALETTE[None, :, :]  # (1, K, 3)
    assert rgb_to_mask(rgb).tolist() == [list(range(10))]


def test_blended_pixels_snap_within_tolerance_and_unknown_colours_are_ignored():
    wall, bg = PALETTE[8].astype(int), PALETTE[9].astype(int)
    near_bg = (0.8 * bg + 0.2 * wall).astype(np.uint8)  # resized edge pixel, close to background
    halfway = ((bg + PALETTE[0]) // 2).astype(np.uint8)  # bed/background blend: far from both
    black = np.array([0, 0, 0], np.uint8)
    mask = rgb_to_mask(np.stack([near_bg, halfway, black])[None])
    assert mask.tolist() == [[9, IGNORE_INDEX, IGNORE_INDEX]]


def test_a_colour_exactly_at_the_tolerance_is_kept_and_masks_are_uint8():
    bg = PALETTE[9].astype(int)
    at = np.array([[bg - [0, 0, 30], bg - [0, 0, 31]]], np.uint8)  # distance 30 and 31 from background
    mask = rgb_to_mask(at, tolerance=30.0)
    assert mask.dtype == np.uint8 and mask.tolist() == [[9, IGNORE_INDEX]]


@pytest.mark.parametrize("bad", [np.zeros((2, 2, 3), np.float32), np.zeros((2, 2, 4), np.uint8)])
def test_rgb_to_mask_refuses_other_than_uint8_rgb(bad):
    with pytest.raises(ValueError, match="uint8"):
        rgb_to_mask(bad)


def test_torch_snapping_agrees_with_numpy_mapping():
    rng = np.random.default_rng(0)
    rgb = PALETTE[rng.integers(0, 10, (2, 8, 8))]  # (2, 8, 8, 3) exact colours
    x = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 127.5 - 1
    assert (data.rgb_to_classes_torch(x).numpy() == rgb_to_mask(rgb)).all()


def test_torch_snapping_of_any_colour_picks_the_nearest_palette_colour():
    # Reconstructions are blends: every colour, not only palette ones, snaps to its nearest palette colour.
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    d2 = ((rgb[..., None, :].astype(int) - PALETTE.astype(int)) ** 2).sum(-1)  # (1, 64, 64, K) exact integers
    two = np.sort(d2, axis=-1)[..., :2]
    clear = two[..., 1] - two[..., 0] >= 2  # leave out near-ties, where float rounding may pick either
    x = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 127.5 - 1
    got = data.rgb_to_classes_torch(x).numpy()
    assert clear.mean() > 0.9 and (got == d2.argmin(-1))[clear].all()


def test_manifest_empty_type_is_unknown_label(real_manifest):
    m = read_manifest(real_manifest, filters={"is_empty": [False]})
    assert len(m) == 54 and (m["label"] == UNKNOWN_LABEL).all()
    assert read_manifest(real_manifest, filters=None)["is_empty"].sum() == 25


def test_manifest_errors_name_the_problem(tmp_path):
    bad = tmp_path / "m.csv"
    bad.write_text("layout_path,is_empty\na.png,false\n")
    with pytest.raises(InputError, match="missing column.*type"):
        read_manifest(bad)
    bad.write_text("layout_path,type,is_empty\na.png,kitchen,false\n")
    with pytest.raises(InputError, match="row 2: type 'kitchen'"):
        read_manifest(bad)


def test_cache_is_built_once_and_reused(tmp_path, labelled_manifest):
    m = read_manifest(labelled_manifest)
    before = decode_count()
    first = cache.prepare_cache(m, 32, tmp_path / "cache", progress=False)
    assert decode_count() - before == len(m)
    second = cache.prepare_cache(m, 32, tmp_path / "cache", progress=False)
    assert second == first and decode_count() - before == len(m)  # nothing decoded the second time
    d = data.load_cache(first)
    assert d.images.shape == (len(m), 3, 32, 32) and d.images.dtype == torch.uint8
    assert d.masks.shape == (len(m), 32, 32) and set(d.labels.tolist()) == {0, 1}
    # another image size is another cache
    assert cache.prepare_cache(m, 16, tmp_path / "cache", progress=False) != first


def test_bad_images_listed_or_skipped(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.full((8, 8, 3), 240, np.uint8)).save(good)
    (tmp_path / "corrupt.png").write_bytes(b"not a png")
    Image.fromarray(np.zeros((8, 8), np.uint8), mode="L").save(tmp_path / "gray.png")
    (tmp_path / "m.csv").write_text(
        "layout_path,type,is_empty\ngood.png,room,false\ncorrupt.png,room,false\nmissing.png,,false\ngray.png,,false\n"
    )
    m = read_manifest(tmp_path / "m.csv")
    with pytest.raises(InputError) as e:
        cache.prepare_cache(m, 8, tmp_path / "cache", progress=False)
    msg = str(e.value)
    assert "3 unreadable" in msg and "corrupt.png" in msg and "missing.png" in msg and "\n" not in msg
    assert not (tmp_path / "cache").exists()  # nothing half-written, no lock file
    d = data.load_cache(cache.prepare_cache(m, 8, tmp_path / "cache", on_bad_image="skip", progress=False))
    assert len(d) == 1 and len(d.skipped) == 3


def test_other_sizes_are_resized_nearest(tmp_path):
    img = np.full((64, 64, 3), 240, np.uint8)
    img[:, :32] = PALETTE[0]
    Image.fromarray(img).save(tmp_path / "a.png")
    (tmp_path / "m.csv").write_text("layout_path,type,is_empty\na.png,room,false\n")
    d = data.load_cache(cache.prepare_cache(read_manifest(tmp_path / "m.csv"), 16, tmp_path / "c", progress=False))
    assert set(np.unique(d.masks.numpy())) == {0, 9}  # no blended colours from resizing


def test_prefetched_batches_equal_direct_indexing_in_order(tmp_path, labelled_manifest):
    d = data.load_cache(cache.prepare_cache(read_manifest(labelled_manifest), 32, tmp_path / "cache", progress=False))
    idx = torch.randperm(len(d), generator=torch.Generator().manual_seed(0)).split(16)  # the last one is partial
    got = list(data.iter_batches(d, idx, torch.device("cpu")))
    assert len(got) == len(idx)
    for (images, masks, labels), i in zip(got, idx):
        assert torch.equal(images, data.to_model_input(d.images[i])) and images.dtype == torch.float32
        assert torch.equal(masks, d.masks[i].long()) and torch.equal(labels, d.labels[i].long())


def test_torch_snapping_stays_on_the_device_of_the_images():
    """A CUDA batch is snapped on the GPU: the palette is made where the images are, not on the default device
    ("meta" as the default stands in for a device other than the images'). Chair and background: classes 2, 9."""
    x = torch.from_numpy(PALETTE[None, [[2, 9]]]).permute(0, 3, 1, 2).float() / 127.5 - 1  # (1, 3, 1, 2) on the CPU
    with torch.device("meta"):
        classes = data.rgb_to_classes_torch(x)
    assert classes.device.type == "cpu" and classes.tolist() == [[[2, 9]]]


# ---------------------------------------------------------------------------------------------------------
# The split: by group (scene and its rooms), with a held-out test split


def _scene_manifest(tmp_path, real_manifest, scene_of=lambda i: f"s{i // 4}" if i % 9 else ""):
    """The real layouts with a scene_id column: groups of 4 (a scene and its rooms), every ninth row without one."""
    import csv

    rows = list(csv.DictReader(real_manifest.open()))
    out = tmp_path / "scenes.csv"
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["scene_id", "room_id", "type", "meta_path", "layout_path", "is_empty"])
        w.writeheader()
        for i, r in enumerate(rows):
            w.writerow({"scene_id": scene_of(i), "room_id": f"r{i}", "type": ("room", "scene")[i % 2], "meta_path": "",
                        "layout_path": str(real_manifest.parent / r["layout_path"]), "is_empty": r["is_empty"]})
    return out


def _sides_of_groups(split, groups) -> dict[str, set]:
    """group label -> the sides its images are on."""
    sides: dict[str, set] = {}
    for side in ("train", "val", "test"):
        for i in getattr(split, side).tolist():
            if groups[i]:
                sides.setdefault(groups[i], set()).add(side)
    return sides


def test_a_scene_is_never_on_two_sides_for_any_seed_under_per_seed(tmp_path, real_manifest):
    from conftest import tiny_params
    from imginav_lib.config.params import resolve_run

    manifest = _scene_manifest(tmp_path, real_manifest)
    seeds = [1, 2, 3, 4, 5, 6]
    params = tiny_params(tmp_path, manifest, seeds=seeds, data={"split": "per_seed", "test_fraction": 0.2, "filters": {}})
    splits = []
    for s in seeds:
        cfg = resolve_run(params, "F1", s)
        assert cfg.data.group_by == "auto"  # the default: scene_id, because the manifest has it
        rd = data.load_run_data(cfg, progress=False)  # what the run trains on
        groups = [dict(zip(read_manifest(manifest)["path"], read_manifest(manifest)["scene_id"]))[p] for p in rd.layouts.paths]
        assert rd.split.group_by == "scene_id"
        sides = _sides_of_groups(rd.split, groups)
        assert all(len(v) == 1 for v in sides.values()), {g: v for g, v in sides.items() if len(v) > 1}
        assert len(rd.test_idx) and len(rd.val_idx) and len(rd.train_idx)
        assert sorted(torch.cat([rd.train_idx, rd.val_idx, rd.test_idx]).tolist()) == list(range(len(rd.layouts)))
        # the counts run.json and the report show: groups per side, the images without a scene_id one group each
        n_groups = len(set(g for g in groups if g)) + sum(1 for g in groups if not g)
        assert sum(rd.split.groups.values()) == n_groups
        # `imginav validate` calls the same function on the manifest: the same split
        same = data.split_for(cfg.data, read_manifest(manifest, cfg.data.filters), s)
        assert torch.equal(same.val, rd.val_idx) and torch.equal(same.test, rd.test_idx)
        splits.append(tuple(rd.val_idx.tolist()))
    assert len(set(splits)) == len(seeds)  # per_seed: each seed draws its own


def test_without_grouping_scenes_straddle_the_split(tmp_path, real_manifest):
    """The control: the same manifest split image by image (group_by: null) puts scenes on two sides."""
    manifest = _scene_manifest(tmp_path, real_manifest)
    m = read_manifest(manifest, {})
    from imginav_lib.config.schema import Data

    split = data.split_for(Data(manifest=str(manifest), group_by=None, test_fraction=0.2), m, 0)
    assert split.group_by is None
    sides = _sides_of_groups(split, list(m["scene_id"]))
    assert any(len(v) > 1 for v in sides.values())


def test_ungrouped_split_without_test_is_the_split_of_before():
    """Run folders made before grouping and test splits resume on the same images."""
    perm = torch.randperm(50, generator=torch.Generator().manual_seed(7))
    s = data.split_indices(50, 0.2, 0.0, 7)
    assert s.val.tolist() == sorted(perm[:10].tolist()) and s.train.tolist() == sorted(perm[10:].tolist())
    assert len(s.test) == 0 and s.groups == {"train": 40, "val": 10, "test": 0}


def test_group_sizes_give_whole_groups_and_fractions_near_the_target():
    groups = [f"g{i // 5}" for i in range(200)]  # 40 groups of 5
    s = data.split_indices(200, 0.2, 0.1, 3, groups, "scene_id")
    assert (len(s.val), len(s.test), len(s.train)) == (40, 20, 140)
    assert s.groups == {"train": 28, "val": 8, "test": 4}
    assert "grouped by scene_id" in s.sentence() and "test 20 images / 4 scene_id groups" in s.sentence()


def test_group_by_an_unknown_column_is_an_input_error(tmp_path, real_manifest):
    from imginav_lib.config.schema import Data

    m = read_manifest(real_manifest)
    with pytest.raises(InputError, match="data.group_by: the manifest has no column 'house'"):
        data.split_for(Data(manifest=str(real_manifest), group_by="house"), m, 0)
    assert data.split_for(Data(manifest=str(real_manifest)), m, 0).group_by is None  # auto without scene_id


def test_validate_says_how_the_split_is_made_with_the_runs_split_function(tmp_path, real_manifest, capsys):
    from conftest import tiny_params
    from imginav_lib.cli import main

    manifest = _scene_manifest(tmp_path, real_manifest)
    params = tiny_params(tmp_path, manifest, seeds=[1, 2], data={"split": "per_seed", "test_fraction": 0.2, "filters": {}})
    assert main(["validate", str(params)]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("split: "))
    from imginav_lib.config.params import resolve_run

    cfg = resolve_run(params, "F1", 1)
    assert line == "split: " + data.split_for(cfg.data, read_manifest(manifest, {}), 1).sentence() + \
        " (data.split per_seed: each of the 2 seeds draws its own)"
    assert "grouped by scene_id: no scene_id on two sides" in line and "scene_id groups" in line
