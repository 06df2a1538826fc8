"""The heads table is the one list of heads, and the library's modules import each other without cycles."""
from __future__ import annotations

import ast
from pathlib import Path

import pandas as pd
import yaml

from imginav_lib import heads as H
from imginav_lib.analysis import Analysis
from imginav_lib.analysis.decision import decide
from imginav_lib.model.metrics import metric_columns
from imginav_lib.config.schema import Decision
from imginav_lib.analysis.phase import load_phase_runs, run_table
from imginav_lib.report.sections import criteria_html, stats_html
from imginav_lib.analysis.stats import summarize
from imginav_lib.testing.synthetic import write_synthetic_phase

LIB = Path(__file__).resolve().parents[1] / "imginav_lib"
F3 = "F3_rgb_seg_cls"
DEPTH = H.Head("depth", "depth estimation", "depth", "depth_l1", "depth L1",
               metrics=(("val_depth_acc", "depth head: accuracy"),), train_metrics=("train_depth_acc",),
               gate="val_depth_acc", gate_label="depth accuracy", min_field="min_depth_accuracy",
               prose="estimates depth at accuracy {:.2f}")


class Rules(Decision):
    min_depth_accuracy: float = 0.6  # the params field a new head's minimum would get


def test_a_fourth_head_in_the_table_reaches_the_metric_columns_the_analysis_and_the_criteria(tmp_path, monkeypatch):
    monkeypatch.setattr(H, "HEADS", (*H.HEADS, DEPTH))
    assert {"train_depth_l1", "val_depth_l1", "train_depth_acc", "val_depth_acc"} <= set(metric_columns())
    runs = write_synthetic_phase(tmp_path, seeds=(1, 2, 3), epochs=4, sample_interval=2)
    for seed in (1, 2, 3):  # F3's runs also trained the depth head, below its minimum
        d = runs / F3 / f"seed{seed}"
        cfg = yaml.safe_load((d / "config.yaml").read_text())
        cfg["loss"]["depth"] = 0.1
        (d / "config.yaml").write_text(yaml.safe_dump(cfg))
        m = pd.read_csv(d / "metrics.csv")
        m.assign(val_depth_l1=0.2, val_depth_acc=0.3).to_csv(d / "metrics.csv", index=False)

    pr = load_phase_runs(runs)
    assert pr.heads[F3] == ("seg", "cls", "depth")
    table = run_table(pr)
    assert table.loc[table.experiment == F3, "val_depth_acc"].tolist() == [0.3] * 3
    summary = summarize(table, pr.experiments)
    assert summary[(summary.experiment == F3) & (summary.metric == "val_depth_acc")]["n"].item() == 3
    verdict = decide(table, pr.experiments, pr.baseline, pr.heads, Rules())
    a = Analysis(pr, table, summary, verdict)

    crit = verdict.criteria[verdict.criteria.experiment == F3].set_index("criterion")
    assert crit.loc["depth accuracy good", ["value", "threshold", "result"]].tolist() == ["0.300", "≥ 0.6", "fail"]
    assert verdict.calls[F3] in ("no gain", "unclear", "hurts") and verdict.winner != F3
    assert "estimates depth at accuracy 0.30" in verdict.paragraph
    assert "depth accuracy good" in criteria_html(a) and "depth head: accuracy" in stats_html(a)


def test_heads_table_imports_no_torch():
    # The import rules and cycles of the whole library: tests/test_layers.py.
    assert "torch" not in ast.unparse(ast.parse((LIB / "heads.py").read_text()))
