"""The report of a phase trained on layouts without room/scene labels (the real manifest's `type` is empty):
classification is "not applicable", not a failure or a nan; F3 is F2 here and the report says why; building it
prints no kernel warning."""
from __future__ import annotations

import html as htmllib
import json
import re
import subprocess
import sys

import pytest
import torch

from imginav_lib import analysis as A
from imginav_lib.launch.runner import write_index
from imginav_lib.config.params import load_params, resolve_run
from imginav_lib.train.trainer import fit

from conftest import tiny_params

EXPS = {"F1": {}, "F2": {"loss": {"seg": 0.05}}, "F3": {"loss": {"seg": 0.05, "cls": 0.01}}}


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory, layouts_manifest):
    """F1/F2/F3 x 2 seeds, 1 epoch at 16 px on the real layouts (every `type` empty), then `imginav report`."""
    tmp = tmp_path_factory.mktemp("unlabelled")
    params = tiny_params(tmp, layouts_manifest, experiments=EXPS, seeds=[1, 2], phase="unlabelled",
                         training={"epochs": 1, "sample_interval": 1}, data={"filters": {}, "image_size": 16})
    phase = load_params(params)
    write_index(phase, params, phase.runs_root)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 16 px convs: one thread is as fast, and far faster on a busy machine
    try:
        for e in EXPS:
            for s in (1, 2):
                fit(resolve_run(params, e, s), progress=False)
    finally:
        torch.set_num_threads(threads)
    runs = tmp / "runs" / "unlabelled"
    out = tmp / "report.html"
    proc = subprocess.run([sys.executable, "-m", "imginav_lib.cli", "report", str(runs), "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return runs, params, out.read_text(), proc


def visible_text(page: str) -> str:
    body = re.sub(r"<script.*?</script>|<style.*?</style>", " ", page, flags=re.S)
    return htmllib.unescape(re.sub(r"<[^>]+>", " ", body))


def test_run_json_counts_the_labelled_images_per_split(unlabelled):
    runs, *_ = unlabelled
    info = json.loads((runs / "F3" / "seed1" / "run.json").read_text())
    assert info["n_train_labelled"] == 0 and info["n_val_labelled"] == 0 and info["n_train"] > 0


def test_classification_without_labels_is_not_applicable_and_does_not_decide(unlabelled):
    runs, params, *_ = unlabelled
    a = A.analyse(runs, params)
    crit = a.verdict.criteria.set_index(["experiment", "criterion"])
    row = crit.loc[("F3", "cls balanced accuracy good")]
    assert row.result == "n/a" and "no validation image has a room/scene label" in row.value
    assert a.verdict.calls["F3"] == a.verdict.calls["F2"]  # the same runs get the same call


def test_the_report_has_no_nan_none_or_inf_and_says_f3_is_f2(unlabelled):
    _, _, page, _ = unlabelled
    text = visible_text(page)
    assert not re.findall(r"\b(?:nan|NaN|inf|None)\b", text)
    assert "F3 is F2 here" in text and "no labelled" in text
    assert re.search(r"labelled\s+train\s*/\s*val", text)  # the runs table's column


def test_building_the_report_prints_no_kernel_warning(unlabelled):
    *_, proc = unlabelled
    assert "IPKernelApp" not in proc.stderr + proc.stdout
    assert "without encryption" not in proc.stderr + proc.stdout
