"""The report says how the data was split (grouped by scene, groups per side) and which numbers are on the
held-out test split (eval.json `test`)."""
from __future__ import annotations

import json

from imginav_lib.analysis import analyse
from imginav_lib.report.sections import split_html
from imginav_lib.testing.synthetic import write_synthetic_phase


def _record_split_and_test(runs, test_mse: dict[str, float]):
    for d in runs.glob("*/seed*"):
        seed = int(d.name[4:])
        info = json.loads((d / "run.json").read_text())
        info["split"] = {"split_seed": 42 + seed, "group_by": "scene_id", "images": {"train": 230 + seed, "val": 58, "test": 32},
                         "groups": {"train": 90, "val": 22, "test": 12 + seed}}
        (d / "run.json").write_text(json.dumps(info))
        ev = json.loads((d / "eval.json").read_text())
        ev["test"] = {k.replace("val_", "test_", 1): v for k, v in ev["val"].items()}
        ev["test"]["test_mse"] = test_mse[d.parent.name] * (1 + seed / 100)
        ev["n_test"] = 32
        (d / "eval.json").write_text(json.dumps(ev))


def test_the_report_shows_the_grouped_split_and_the_test_numbers(tmp_path):
    runs = write_synthetic_phase(tmp_path, seeds=(1, 2))
    _record_split_and_test(runs, {"F1_rgb_only": 0.005, "F2_rgb_seg": 0.006, "F3_rgb_seg_cls": 0.007})
    html = split_html(analyse(runs))
    assert "grouped by scene_id: no scene_id has images on two sides" in html
    assert "2 splits (data.split per_seed, 2 seeds)" in html
    assert "train 231–232 images in 90 groups, val 58 images in 22 groups, test 32 images in 13–14 groups" in html
    assert "<td>F1_rgb_only</td><td>2</td><td>32</td><td>0.005075</td>" in html  # mean of 0.00505 and 0.0051


def test_without_a_test_split_the_report_says_every_number_is_on_validation(tmp_path):
    html = split_html(analyse(write_synthetic_phase(tmp_path, seeds=(1, 2))))
    assert "not recorded" in html and "every number is on validation" in html
