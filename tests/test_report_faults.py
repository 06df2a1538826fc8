"""`imginav report` while things go wrong: a diverged run, a run still writing, a corrupt metrics.csv and a run
with no folder yet. The report renders, lists each with its state, and leaves the damaged files out."""
from __future__ import annotations

import json
import re
import shutil

import pytest

from imginav_lib import analysis

from imginav_lib.report import browser

from imginav_lib.report import figures

from imginav_lib.analysis import handoff

from imginav_lib.report import sections as report
from imginav_lib.cli import main
from imginav_lib.analysis.phase import load_phase_runs
from imginav_lib.testing.synthetic import write_synthetic_phase

F1, F2, F3 = "F1_rgb_only", "F2_rgb_seg", "F3_rgb_seg_cls"


def _render(runs_dir) -> str:
    """What analysis.ipynb does, in-process: every piece of the report, so a crash in any of them fails here."""
    a = analysis.analyse(runs_dir)
    html = report.header_html(a) + report.verdict_html(a) + report.criteria_html(a) + report.runs_html(a) + report.stats_html(a)
    handoff.write_handoff(a.runs, a.verdict, a.summary)
    for make in (figures.fig_curves, figures.fig_final_metrics, figures.fig_effects, figures.fig_stability,
                 figures.fig_iou, figures.fig_confusion, figures.fig_cls):  # fmt: skip
        fig = make(a)
        if fig is not None:
            fig.to_json()
    return html + browser.browser_html(a)


def _faulty_phase(root):
    """F1: two good seeds. F2: seed 1 diverged, seed 2 running and caught mid-write. F3: seed 1 done but its
    metrics.csv is garbage, seed 2 listed in the index with no folder yet."""
    runs = write_synthetic_phase(root, phase="faults", seeds=(1, 2), epochs=6, sample_interval=2,
                                 states={(F2, 1): "diverged", (F2, 2): "running", (F3, 2): "missing"})  # fmt: skip
    live = runs / F2 / "seed2"
    steps = (live / "steps.csv").read_bytes()
    (live / "steps.csv").write_bytes(steps[: len(steps) - 17])  # the last row cut (a file system without atomic rename)
    (live / ".metrics.csv.k2j4.tmp").write_bytes((live / "metrics.csv").read_bytes()[:300])  # a write in progress
    npz = sorted((live / "samples").glob("epoch_*.npz"))[-1]
    npz.write_bytes(npz.read_bytes()[:500])  # the newest sample, truncated
    (live / "config.yaml").write_text("phase: faults\nloss: {mse: 1.0, seg: 0.0")
    (runs / F3 / "seed1" / "metrics.csv").write_bytes(bytes(range(256)) * 8)
    return runs, npz


def test_report_renders_a_phase_in_the_middle_of_faults(tmp_path, capsys):
    runs, npz = _faulty_phase(tmp_path / "runs")
    out = tmp_path / "faults.html"
    assert main(["report", str(runs), "--out", str(out)]) == 0, capsys.readouterr().err
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", out.read_text()))
    for exp, seed, state in ((F2, 1, "diverged"), (F2, 2, "running"), (F3, 1, "unreadable"), (F3, 2, "missing")):
        assert re.search(rf"{exp} {seed} {state} ", text), (exp, seed, state)
    assert "3 of 6 runs finished" not in text and "2 of 6 runs finished" in text
    assert f"{F2}/seed2/samples/{npz.name}: unreadable, left out" in text
    assert "non-finite loss at epoch 3" in text and "run folder not found" in text
    assert (runs / "winner.yaml").is_file()


METRICS_FAULTS = {
    "binary garbage": (lambda t: "".join(map(chr, range(256))) * 4, "metrics.csv: "),
    "header only": (lambda t: t.splitlines()[0] + "\n", "status done but metrics.csv has no finite val_mse"),
    "empty": (lambda t: "", "status done but metrics.csv has no finite val_mse"),
    "text in val_mse": (lambda t: _set_cell(t, 2, "val_mse", "abc"), "metrics.csv: val_mse on line 3 is 'abc', not a number"),
    "text in epoch": (lambda t: _set_cell(t, 2, "epoch", "three"), "metrics.csv: epoch on line 3 is 'three', not a number"),
    "fractional epoch": (lambda t: _set_cell(t, 2, "epoch", "2.5"), "metrics.csv: epoch on line 3 is not a whole number"),
    "an epoch twice": (lambda t: t + t.split("\n", 1)[1], "metrics.csv: epoch 1 appears twice"),
    "no val_mse column": (lambda t: _drop_column(t, "val_mse"), "metrics.csv: no val_mse column"),
    "no epoch column": (lambda t: _drop_column(t, "epoch"), "metrics.csv: no epoch column"),
}


def _set_cell(text: str, line: int, column: str, value: str) -> str:
    rows = [r.split(",") for r in text.splitlines()]
    rows[line][rows[0].index(column)] = value
    return "\n".join(",".join(r) for r in rows) + "\n"


def _drop_column(text: str, column: str) -> str:
    rows = [r.split(",") for r in text.splitlines()]
    j = rows[0].index(column)
    return "\n".join(",".join(c for i, c in enumerate(r) if i != j) for r in rows) + "\n"


@pytest.fixture(scope="module")
def clean_phase(tmp_path_factory):
    return write_synthetic_phase(tmp_path_factory.mktemp("faults") / "runs", phase="faults", seeds=(1, 2), epochs=4, sample_interval=2)


@pytest.mark.parametrize("fault", list(METRICS_FAULTS))
def test_corrupt_metrics_csv_makes_the_run_unreadable_not_the_report(tmp_path, clean_phase, fault):
    runs = shutil.copytree(clean_phase, tmp_path / "faults")
    corrupt, error = METRICS_FAULTS[fault]
    path = runs / F1 / "seed1" / "metrics.csv"
    path.write_text(corrupt(path.read_text()))
    row = load_phase_runs(runs).runs.set_index(["experiment", "seed"]).loc[(F1, 1)]
    assert row.state == "unreadable" and error in row.error and "\n" not in row.error
    html = _render(runs)
    assert "unreadable" in html and "5 of 6 runs finished" in html


def test_a_running_run_with_a_corrupt_csv_stays_running(tmp_path):
    runs = write_synthetic_phase(tmp_path / "runs", seeds=(1,), epochs=4, sample_interval=2, states={(F2, 1): "running"})
    (runs / F2 / "seed1" / "steps.csv").write_text("global_step,loss\n1,0.5\n2,0.")  # caught mid-row: still numbers
    (runs / F2 / "seed1" / "metrics.csv").write_text("epoch,val_mse\n1,0.1\n2,oops\n")
    pr = load_phase_runs(runs)
    row = pr.runs.set_index(["experiment", "seed"]).loc[(F2, 1)]
    assert row.state == "running" and row.error == "metrics.csv: val_mse on line 3 is 'oops', not a number"
    assert any("metrics.csv" in w for w in pr.warnings)
    assert "running" in _render(runs)


@pytest.mark.parametrize("value", [[1, 2], {"a": 1}, "abc", None, True])
def test_odd_values_in_run_json_do_not_stop_the_report(tmp_path, clean_phase, value):
    runs = shutil.copytree(clean_phase, tmp_path / "faults")
    path = runs / F2 / "seed2" / "run.json"
    info = json.loads(path.read_text())
    path.write_text(json.dumps({**info, "status": "failed", "epoch": value, "epochs": value, "error": value, "host": value}))
    row = load_phase_runs(runs).runs.set_index(["experiment", "seed"]).loc[(F2, 2)]
    assert row.state == "failed"
    assert "failed" in _render(runs)


@pytest.mark.parametrize("content", ["[1, 2]", '{"epoch": 3, "val": {"val_mse": "abc"}}', '{"epoch": 3, "val": 7}', '{"epo'])
def test_an_unusable_eval_json_is_a_warning(tmp_path, clean_phase, content):
    runs = shutil.copytree(clean_phase, tmp_path / "faults")
    (runs / F1 / "seed1" / "eval.json").write_text(content)
    pr = load_phase_runs(runs)
    assert (F1, 1) not in pr.evals and any(f"{F1}/seed1/eval.json: unreadable" in w for w in pr.warnings)
    _render(runs)
