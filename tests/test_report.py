"""The HTML report: built by papermill + nbconvert, self-contained, escaped, naming failed and missing runs."""
from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest
import yaml

from imginav_lib.analysis import analyse
from imginav_lib.report.browser import browser_data, browser_html, browser_widget
from imginav_lib.cli import main
from conftest import figures
from imginav_lib.analysis.handoff import write_handoff
from imginav_lib.report.build import build_report
from imginav_lib.report.sections import criteria_html, e, header_html, runs_html, stats_html, verdict_html
from imginav_lib.testing.synthetic import write_synthetic_phase
from imginav_lib.text import pct

EVIL = "<img src=x onerror=alert(1)>"  # experiment names are folders: no "/", so no "</script>"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A phase with one failed and one missing run, and a hostile name, note and error message."""
    tmp = tmp_path_factory.mktemp("report")
    runs = write_synthetic_phase(
        tmp / "runs", phase="phase_report", seeds=(1, 2, 3), epochs=6, sample_interval=2,
        experiments={"F1": {}, "F2_seg": {"seg": 0.05}, EVIL: {"seg": 0.05, "cls": 0.01}},
        states={("F2_seg", 3): "failed", ("F1", 3): "missing"}, notes={"F1": "<script>alert(2)</script>"},
    )
    out = tmp / "out" / "report.html"
    t = time.time()
    assert main(["report", str(runs), "--out", str(out)]) == 0
    return runs, out, out.read_text(), time.time() - t


def test_report_files_are_written(built):
    runs, out, _, seconds = built
    assert out.is_file() and (runs / "analysis.ipynb").is_file()
    assert (runs / "winner.yaml").is_file() and (runs / "phase1_5.yaml").is_file()
    assert not [p for p in [*runs.iterdir(), *out.parent.iterdir()] if p.name.startswith(".")]  # atomic: no temp files
    print(f"\nreport of 9 runs: {seconds:.1f} s, {out.stat().st_size / 1e6:.1f} MB")


def test_report_is_self_contained(built):
    _, _, html, _ = built
    from plotly.offline import get_plotlyjs

    assert html.count(get_plotlyjs()[:2000]) == 1  # plotly.js inlined exactly once
    assert not re.search(r"<script[^>]+src=", html)  # nothing loaded from anywhere (CDNs included)
    assert not re.search(r"<link[^>]+href=\"http", html)
    assert "require.min.js" not in html and "mathjax@" not in html.lower()
    assert "data:image/webp;base64," in html and "data:image/png;base64," in html


def test_user_text_is_escaped(built):
    _, _, html, _ = built
    # Outside <script> (where names are JSON with <, >, & as \u escapes) every occurrence is escaped.
    body = re.sub(r"<script.*?</script>", "", html, flags=re.S)
    assert EVIL not in body and "&lt;img src=x onerror=alert(1)&gt;" in body
    assert "<script>alert(2)</script>" not in body and "&lt;script&gt;alert(2)&lt;/script&gt;" in body


# Plotly renders a subset of HTML in trace names, tick labels, titles, hover text and menus: the only tags in
# figure text may be plotly's own. `legendgroup` is an identifier plotly never displays.
PLOTLY_TAGS = {"<br>", "<extra>", "</extra>", "<b>", "</b>", "<i>", "</i>", "<sup>", "</sup>", "<sub>", "</sub>"}
NOT_SHOWN = {"legendgroup"}


def _figure_strings(obj, key=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _figure_strings(v, k)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _figure_strings(v, key)
    elif isinstance(obj, str) and key not in NOT_SHOWN:
        yield key, obj


def _foreign_tags(figure_json) -> list[tuple[str, str]]:
    return [(k, t) for k, s in _figure_strings(figure_json) for t in re.findall(r"<[^<>]*>", s) if t not in PLOTLY_TAGS]


def test_hostile_names_are_escaped_inside_the_figures(tmp_path):
    runs = write_synthetic_phase(tmp_path / "runs", seeds=(1, 2), epochs=4, sample_interval=2,
                                   experiments={"F1": {}, EVIL: {"seg": 0.05, "cls": 0.01}})
    figs = [json.loads(fig.to_json()) for fig in figures(analyse(runs))]
    assert [_foreign_tags(f) for f in figs] == [[] for _ in figs]
    shown = [s for f in figs for _, s in _figure_strings(f) if "onerror" in s]
    assert len(shown) > 20 and all("&lt;img src=x onerror=alert(1)&gt;" in s for s in shown)  # there, escaped


def _plotly_figures(html: str) -> list[dict]:
    """The figure JSON of every Plotly.newPlot call embedded in the report."""
    figs, decode = [], json.JSONDecoder().raw_decode
    for m in re.finditer(r'Plotly\.newPlot\(\s*"[^"]+",\s*', html):
        data, end = decode(html, m.end())
        layout, _ = decode(html, html.index("{", end))
        figs.append({"data": data, "layout": layout})
    return figs


def test_hostile_names_are_escaped_in_the_figure_json_of_the_report(built):
    _, _, html, _ = built
    figs = _plotly_figures(html)
    assert len(figs) >= 5 and [_foreign_tags(f) for f in figs] == [[] for _ in figs]
    assert any("&lt;img src=x onerror=alert(1)&gt;" in s for f in figs for _, s in _figure_strings(f))


def test_verdict_first_then_evidence(built):
    _, _, html, _ = built
    text = re.sub(r"<script.*?</script>|<style.*?</style>", "", html, flags=re.S)
    order = [text.find(s) for s in ("phase_report: does an auxiliary loss", "Winner:", "How sure we are", "Decision criteria",
                                    "Statistics across seeds", "Training curves", "Reconstructions")]
    assert -1 not in order and order == sorted(order)
    assert "jp-InputArea-editor" not in text and "analysis.analyse(" not in text  # code hidden


def test_failed_and_missing_runs_are_named(built):
    _, _, html, _ = built
    assert "failed" in html and "RuntimeError: synthetic failure" in html
    assert "missing" in html and "run folder not found" in html
    assert "7 of 9 runs finished" in html


def test_winner_yaml_names_the_winner(built):
    runs, _, html, _ = built
    w = yaml.safe_load((runs / "winner.yaml").read_text())
    assert w["winner"] in ("F1", "F2_seg", EVIL)
    assert f"Winner: {e(w['winner'])}" in html


def test_report_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "runs folder not found" in capsys.readouterr().err


def test_one_seed_phase_says_so(tmp_path):
    """The report pieces for a 1-seed phase (in-process: the notebook path is covered above)."""
    runs = write_synthetic_phase(tmp_path / "runs", seeds=(7,), epochs=4, sample_interval=2)
    a = analyse(runs)
    text = verdict_html(a) + stats_html(a) + criteria_html(a)
    assert "no confidence interval" in text and "n=1" in text
    for fig in figures(a):
        fig.to_json()
    assert "imginav-browser" in browser_html(a)


def test_no_finished_run_still_renders(tmp_path):
    runs = write_synthetic_phase(tmp_path / "runs", seeds=(1,), epochs=4,
                                   states={("F1_rgb_only", 1): "failed", ("F2_rgb_seg", 1): "running", ("F3_rgb_seg_cls", 1): "missing"})
    a = analyse(runs)
    assert a.verdict.winner is None and a.verdict.status == "no results"
    assert write_handoff(a.runs, a.verdict, a.summary) == {}
    html = header_html(a) + verdict_html(a) + runs_html(a) + stats_html(a) + criteria_html(a)
    assert "0 of 3 runs finished" in html
    for fig in figures(a):
        fig.to_json()


def test_static_browser_stays_within_budget(tmp_path):
    runs = write_synthetic_phase(tmp_path / "runs", seeds=(1, 2), epochs=12, sample_interval=1, num_samples=6)
    a = analyse(runs)
    full = browser_data(a, budget=10**9)
    assert all(len(s["epochs"]) == 12 for seeds in full["runs"] for s in seeds) and not full["note"]
    budget = sum(map(len, full["blobs"])) // 4
    d = browser_data(a, budget=budget)
    one_epoch = max(map(len, d["blobs"])) * 6 * 3  # a run-epoch's own panels (recon, error, seg) can pass the budget
    assert sum(map(len, d["blobs"])) <= budget + one_epoch and "static browser shows" in d["note"]
    assert all(s["epochs"][-1] == 12 and s["epochs"][0] == 1 for seeds in d["runs"] for s in seeds)  # last and first first
    assert all(len(f) == 6 for seeds in d["runs"] for s in seeds for f in s["frames"].values())
    tiny = browser_data(a, budget=1)  # not even the last epochs fit with every sample: fewer samples, never none
    assert all(s["epochs"] == [12] for seeds in tiny["runs"] for s in seeds) and "1 of 6 samples" in tiny["note"]


def test_priority_covers_the_run_evenly():
    from imginav_lib.report.images import priority

    assert priority(list(range(1, 11))) == [10, 1, 5, 3, 7, 2, 4, 6, 8, 9]
    assert priority([4]) == [4] and priority([]) == []
    assert sorted(priority(list(range(50)))) == list(range(50))


def test_scale_30_experiments_3_seeds_50_epochs(tmp_path):
    t = time.time()
    exps = {f"E{i:02d}": ({"seg": 0.05} if i % 3 else {}) | ({"cls": 0.01} if i % 5 == 0 else {}) for i in range(30)}
    runs = write_synthetic_phase(tmp_path / "runs", phase="scale", experiments=exps, seeds=(1, 2, 3), epochs=50,
                                   sample_interval=5, steps_per_epoch=10)
    written = time.time() - t
    out = build_report(runs, out=tmp_path / "scale.html").report
    seconds = time.time() - t - written
    size = out.stat().st_size / 1e6
    print(f"\nscale 30x3x50: wrote runs in {written:.1f} s; report {seconds:.1f} s, {size:.1f} MB")
    assert size < 40 and seconds < 120
    assert "E29" in out.read_text()


def _find(w, cls, **match):
    """The widgets of class `cls` under w, depth first, whose traits equal `match`."""
    out = [w] if isinstance(w, cls) and all(getattr(w, k, None) == v for k, v in match.items()) else []
    for c in getattr(w, "children", ()):
        out += _find(c, cls, **match)
    return out


def test_live_widget_browser_follows_its_controls(tmp_path):
    import ipywidgets as W

    runs = write_synthetic_phase(tmp_path / "runs", seeds=(1, 2), epochs=4, sample_interval=2, image_size=32)
    w = browser_widget(analyse(runs))
    [exp] = _find(w, W.Dropdown, description="experiment")
    [seed] = _find(w, W.Dropdown, description="seed")
    [epoch] = _find(w, W.SelectionSlider, description="epoch")
    [sample] = _find(w, W.IntSlider, description="sample")
    [size] = _find(w, W.ToggleButtons, description="size")
    images = _find(w, W.Image)
    recon, seg_caption = images[1], [x for x in _find(w, W.Label) if "segmentation" in x.value or "snapped" in x.value][0]
    assert (seed.value, epoch.value, sample.min, sample.value) == (1, 4, 1, 1) and recon.format == "webp" and recon.value
    info = [x for x in _find(w, W.Label) if x.value.startswith("sample ")][0]
    assert info.value.startswith("sample 1 of 4 (layout 1), MSE ")  # numbered from 1, as the static view
    before = recon.value
    epoch.value = 2
    assert recon.value != before
    size.value = 1  # native pixels
    assert recon.width == "32" and size.options[1][0].startswith("1")
    size.value = 4
    assert recon.width == "128"
    exp.value = exp.options[1]
    assert seed.value == 1 and epoch.value == 2  # the nearest epoch is kept
    assert seg_caption.value == "predicted segmentation"
    assert "data-role=\"legend\"" in "".join(x.value for x in _find(w, W.HTML))


def test_refresh_follows_a_running_phase(tmp_path):
    """A run that saves another epoch after the widget was drawn: the refresh button shows it, no re-run needed."""
    import shutil

    import ipywidgets as W

    runs = write_synthetic_phase(tmp_path / "runs", seeds=(1,), epochs=4, sample_interval=2, image_size=16)
    samples = runs / "F1_rgb_only" / "seed1" / "samples"
    shutil.move(samples / "epoch_004.npz", tmp_path / "later.npz")
    w = browser_widget(analyse(runs))
    [epoch] = _find(w, W.SelectionSlider, description="epoch")
    [refresh] = _find(w, W.Button, description="refresh")
    assert list(epoch.options) == [2] and epoch.value == 2
    shutil.move(tmp_path / "later.npz", samples / "epoch_004.npz")
    refresh.click()
    assert list(epoch.options) == [2, 4] and epoch.value == 4  # following the newest epoch, it stays on the newest


# ---------------------------------------------------------------------------------------------------------
# The answer in ten seconds (issue 23): the verdict's sentence and lines, the effects figure, a head at chance


def test_the_verdict_opens_with_one_sentence_then_at_most_three_lines_then_the_details(tmp_path):
    runs = write_synthetic_phase(tmp_path / "runs", seeds=(1, 2, 3), epochs=4, test_split=True, effects={"F2_rgb_seg": {"mse": 0.9}})
    a = analyse(runs)
    v = a.verdict
    vs = v.comparisons[(v.comparisons.versus == "F1_rgb_only") & (v.comparisons.call != "head to head")].set_index("experiment")
    rival = v.winner if v.winner != "F1_rgb_only" else vs.rel_change.idxmin()
    assert v.primary == "test_mse" and v.headline.startswith(f"Winner: {v.winner} ({v.status})")
    for part in ("test MSE", pct(vs.loc[rival, "rel_change"]), pct(vs.loc[rival, "ci_low"]), pct(vs.loc[rival, "ci_high"]), rival):
        assert part in v.headline
    html = verdict_html(a)
    head, details = html.split("Details", 1)
    assert e(v.headline) in head and head.count("<li>") == len(v.lines) <= 3
    assert e(v.paragraph) in details and "How sure we are" in details


def test_the_effects_figure_has_each_experiments_change_its_interval_and_one_dot_per_seed(tmp_path):
    from imginav_lib.report.figures import fig_effects

    runs = write_synthetic_phase(tmp_path / "runs", seeds=(1, 2, 3), epochs=4, states={("F3_rgb_seg_cls", 3): "failed"})
    a = analyse(runs)
    fig = fig_effects(a)
    assert fig.layout.title.text.startswith("Effect on val MSE")
    tol = a.runs.decision.similar_tolerance * 100
    assert {(s.type, s.x0, s.x1) for s in fig.layout.shapes} >= {("rect", -tol, tol), ("line", 0, 0)}
    t = a.table.set_index(["experiment", "seed"])["best_val_mse"]
    c = a.verdict.comparisons
    c = c[(c.versus == "F1_rgb_only") & (c.call != "head to head")].set_index("experiment")
    for x, seeds in (("F2_rgb_seg", (1, 2, 3)), ("F3_rgb_seg_cls", (1, 2))):
        mean = next(d for d in fig.data if d.name == f"{x}: {c.loc[x, 'call']}")
        assert mean.x[0] == pytest.approx(c.loc[x, "rel_change"] * 100)
        assert mean.error_x.array[0] == pytest.approx((c.loc[x, "ci_high"] - c.loc[x, "rel_change"]) * 100)
        dots = next(d for d in fig.data if d.name == f"{x}: seeds")
        assert list(dots.customdata) == list(seeds)  # one dot per seed paired with the baseline's
        assert list(dots.x) == pytest.approx([(t[x, s] / t["F1_rgb_only", s] - 1) * 100 for s in seeds])
        assert np.mean(dots.x) == pytest.approx(mean.x[0])  # the mark is the mean of the paired ratios


def test_a_classification_head_at_chance_level_is_named_in_the_verdict_and_the_classification_figure(tmp_path):
    from imginav_lib.report.figures import fig_cls

    stuck = analyse(write_synthetic_phase(tmp_path / "stuck", seeds=(1, 2), epochs=4, effects={"F3_rgb_seg_cls": {"cls_chance": True}}))
    said = "the classification head of F3_rgb_seg_cls stayed at chance level"
    assert list(stuck.verdict.chance) == ["F3_rgb_seg_cls"] and stuck.verdict.chance["F3_rgb_seg_cls"].startswith(said)
    assert any(line.startswith("T" + said[1:]) and "its loss gave the encoder no signal" in line for line in stuck.verdict.lines)
    assert "stayed at chance level" in verdict_html(stuck) and "≈ ln 2" in verdict_html(stuck)
    assert "stayed at chance level" in fig_cls(stuck).layout.title.text
    learned = analyse(write_synthetic_phase(tmp_path / "learned", seeds=(1, 2), epochs=4))
    assert learned.verdict.chance == {} and "chance level" not in verdict_html(learned) + fig_cls(learned).layout.title.text
