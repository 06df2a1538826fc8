"""The phase report: figures, HTML pieces, the sample browser and `build_report` (papermill + nbconvert).

The notebook (notebooks/analysis.ipynb) arranges these pieces; this module makes them. Every piece of text that
comes from a run folder or a params file (experiment names, notes, paths, error messages) goes through
`html.escape` here; plotly gets escaped text too (it decodes entities and renders tags in names otherwise).
The static HTML works offline: plotly.js is inlined once by `init()`, images are base64 WebP/PNG.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
import io
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .analysis import LOSS_COMPONENTS, RUN_METRICS, STABILITY, Analysis, ReportError
from .files import UMASK, atomic_write_text
from .palette import CLASS_NAMES, PALETTE
from .errors import InputError

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "analysis.ipynb"
BROWSER_BUDGET = 2400  # (run, epoch, sample) images embedded in the static browser; beyond it epochs are thinned

e = html.escape


def _t(text) -> str:
    """Text for plotly labels: escaped, since plotly renders a subset of HTML tags in names and titles."""
    return html.escape(str(text), quote=False)


def colors(experiments: list[str]) -> dict[str, str]:
    import plotly.colors as pc

    base = pc.qualitative.Plotly if len(experiments) <= 10 else pc.sample_colorscale("Turbo", np.linspace(0.05, 0.95, len(experiments)))
    return {x: base[i % len(base)] for i, x in enumerate(experiments)}


def _rgba(color: str, alpha: float) -> str:
    import plotly.colors as pc

    r, g, b = pc.unlabel_rgb(pc.convert_colors_to_same_type(color, "rgb")[0][0])
    return f"rgba({int(r)},{int(g)},{int(b)},{alpha})"


# ---------------------------------------------------------------------------------------------------------
# Notebook display


CSS = """
.imginav h1 {font-size: 1.7em; margin: 0.2em 0}
.imginav table {border-collapse: collapse; font-size: 0.9em; margin: 0.4em 0}
.imginav th, .imginav td {border: 1px solid #ccc; padding: 3px 7px; text-align: left !important; vertical-align: top}
.imginav th {background: #f3f3f3}
.imginav .verdict {border: 2px solid #2a6; border-radius: 6px; padding: 0.6em 1em; background: #f4fbf6}
.imginav .verdict.provisional {border-color: #d90; background: #fffaf0}
.imginav .verdict.none {border-color: #c33; background: #fff5f5}
.imginav .winner {font-size: 1.4em; font-weight: bold}
.imginav .pass {background: #dfd} .imginav .fail {background: #fdd} .imginav .unclear {background: #ffd}
.imginav .muted {color: #666; font-size: 0.9em}
.imginav-browser .panels {display: flex; flex-wrap: wrap; gap: 8px; margin-top: 6px}
.imginav-browser figure {margin: 0; text-align: center}
.imginav-browser img {width: 192px; height: 192px; image-rendering: pixelated; border: 1px solid #ccc}
.imginav-browser label {margin-right: 1em}
"""


def init() -> None:
    """Display plotly.js (once, inline) and the report's styles. Call before any figure."""
    from IPython.display import HTML, display
    from plotly.offline import get_plotlyjs

    # plotly.js is a UMD bundle: with require.js on the page (classic notebook) it would register as an anonymous
    # AMD module and never set window.Plotly. Hide `define` while it loads.
    display(HTML(
        f"<style>{CSS}</style>"
        "<script>window.__imginavDefine = window.define; window.define = undefined;</script>"
        f"<script>{get_plotlyjs()}</script>"
        "<script>window.define = window.__imginavDefine;</script>"
    ))


def show(fig: go.Figure) -> None:
    """A figure as an inline div that uses the plotly.js from `init()`."""
    from IPython.display import HTML, display

    display(HTML(fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False, "responsive": True})))


def show_html(text: str) -> None:
    from IPython.display import HTML, display

    display(HTML(f'<div class="imginav">{text}</div>'))


# ---------------------------------------------------------------------------------------------------------
# HTML pieces


def _fmt(x, metric: str = "") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if "mse" in metric:
        return f"{x:.4g}"
    if metric in ("late_wobble", "seed_spread"):
        return f"{x:.2%}"
    return f"{x:.3f}" if abs(x) < 100 else f"{x:.1f}"


def _table(header: list[str], rows: list[list[str]], classes: list[str] | None = None) -> str:
    """rows hold already-escaped cell HTML."""
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td class="{c}">{v}</td>' if c else f"<td>{v}</td>" for v, c in zip(r, classes[i] if classes else [""] * len(r))) + "</tr>"
        for i, r in enumerate(rows)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def header_html(a: Analysis) -> str:
    pr = a.runs
    r = pr.runs
    def uniq(col):
        return sorted({str(v) for v in r[col].dropna()}) if col in r else []
    started = min(uniq("started"), default="n/a")
    ended = max(uniq("ended"), default="n/a")
    counts = r["state"].value_counts()
    states = ", ".join(f"{n} {s}" for s, n in counts.items())
    built = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    rows = [
        ["phase", e(pr.phase)],
        ["runs folder", e(str(pr.runs_dir))],
        ["params file", e(str(pr.params_file or "none found (decision defaults)"))],
        ["params hash", e(str(pr.params_hash or "n/a"))],
        ["git commit(s)", e(", ".join(uniq("git_commit")) or "n/a")],
        ["runs started / last ended", e(f"{started} / {ended}")],
        ["hosts", e(", ".join(uniq("host")) or "n/a")],
        ["devices", e(", ".join(uniq("device")) or "n/a")],
        ["run states", e(f"{len(r)} runs: {states}")],
        ["report built", e(built)],
    ]
    exp_rows = [[e(x), e(_head_names(pr.heads.get(x, ()))), e(_loss_text(pr, x)), e(pr.notes.get(x, "")),
                 e("baseline" if x == pr.baseline else "")] for x in pr.experiments]
    warn = "".join(f"<li>{e(w)}</li>" for w in pr.warnings)
    desc = f"<p>{e(pr.params.description)}</p>" if pr.params and pr.params.description else ""
    return (f"<h1>{e(pr.phase)}: does an auxiliary loss help or hurt reconstruction?</h1>{desc}"
            + _table(["provenance", ""], rows) + (f"<p><b>Warnings</b></p><ul>{warn}</ul>" if warn else "")
            + "<p>Experiments:</p>" + _table(["experiment", "auxiliary heads", "loss weights", "note", ""], exp_rows))


def _head_names(heads) -> str:
    return " + ".join({"seg": "segmentation", "cls": "classification"}[h] for h in heads) or "none (RGB only)"


def _loss_text(pr, x: str) -> str:
    from .analysis import _resolved

    loss = _resolved(pr, x, "loss")
    return ", ".join(f"{k} {v:g}" for k, v in loss.items() if isinstance(v, (int, float)) and v and k != "kl") or "n/a"


def verdict_html(a: Analysis) -> str:
    v = a.verdict
    cls = {"decided": "", "provisional": " provisional"}.get(v.status, " none")
    winner = e(v.winner) if v.winner else "none"
    more = f"<p><b>Needs more seeds (≈{v.seeds_needed} per experiment).</b></p>" if v.seeds_needed and v.seeds_needed <= 200 else ""
    return (f'<div class="verdict{cls}"><div class="winner">Winner: {winner} <span class="muted">({e(v.status)})</span></div>'
            f"<p>{e(v.paragraph)}</p><p><b>How sure we are:</b> {e(v.sureness)}</p>{more}</div>")


def criteria_html(a: Analysis) -> str:
    c = a.verdict.criteria
    if not len(c):
        return "<p>No criteria evaluated: no finished runs.</p>"
    rows = [[e(str(r.experiment)), e(r.criterion), e(str(r.value)), e(str(r.threshold)), e(r.result)] for r in c.itertuples()]
    classes = [["", "", "", "", r.result if r.result in ("pass", "fail", "unclear") else ""] for r in c.itertuples()]
    calls = "".join(f"<li>{e(x)}: <b>{e(call)}</b></li>" for x, call in a.verdict.calls.items())
    return _table(["experiment", "criterion", "value", "threshold", "result"], rows, classes) + f"<p>Calls:</p><ul>{calls}</ul>"


def runs_html(a: Analysis) -> str:
    r = a.runs.runs
    bad = r[r["state"] != "done"]
    head = f"<p>{int((r['state'] == 'done').sum())} of {len(r)} runs finished and are used in the statistics.</p>"
    if not len(bad):
        return head + "<p>Every run listed in index.json finished.</p>"
    rows = []
    for x in bad.itertuples():
        epoch = f"{getattr(x, 'epoch', '')}/{getattr(x, 'epochs', '')}" if "epoch" in r and pd.notna(getattr(x, "epoch", None)) else ""
        err = getattr(x, "error", None)
        rows.append([e(str(x.experiment)), e(str(x.seed)), e(x.state), e(epoch), e(str(err) if isinstance(err, str) else ""), e(str(x.run_dir))])
    return head + "<p>Left out of the statistics:</p>" + _table(["experiment", "seed", "state", "epoch", "error", "folder"], rows)


def stats_html(a: Analysis) -> str:
    """Per experiment: mean [CI] (n) of every metric, then the comparison with the baseline."""
    s = a.summary
    level = f"{1 - a.runs.decision.alpha:.0%}"
    metrics = [m for m in [*RUN_METRICS, "spikes", "late_wobble", "epochs_to_10pct", "seed_spread"] if s[s.metric == m]["n"].sum() > 0]
    rows = []
    for x in a.runs.experiments:
        row = [e(x)]
        for m in metrics:
            q = s[(s.experiment == x) & (s.metric == m)].iloc[0]
            if q.n == 0 or not math.isfinite(q["mean"]):
                row.append("—")
            elif math.isfinite(q.ci_low):
                row.append(f"{_fmt(q['mean'], m)}<br><span class='muted'>[{_fmt(q.ci_low, m)}, {_fmt(q.ci_high, m)}] n={q.n}</span>")
            else:
                row.append(f"{_fmt(q['mean'], m)}<br><span class='muted'>n={q.n}{', no CI' if m != 'seed_spread' else ''}</span>")
        rows.append(row)
    labels = {**RUN_METRICS, "spikes": "loss spikes / run", "late_wobble": "late val wobble", "epochs_to_10pct": "epochs to 10% of best",
              "seed_spread": "seed spread (final val MSE)"}
    out = f"<p>Mean across finished seeds with the {level} t-interval [low, high] and the number of seeds n. " \
          "With 1 seed there is no interval; with 2 it is very wide: 3 or more seeds are needed.</p>"
    out += _table(["experiment", *[labels[m] for m in metrics]], rows)
    c = a.verdict.comparisons
    if a.verdict.level != 1 - a.runs.decision.alpha:
        level = f"{a.verdict.level:.2%} (Bonferroni)"
    if len(c):
        crow = [[e(r.experiment), e(f"{r.n} vs {r.n_baseline} ({r.n_pairs} paired)"), e(f"{r.rel_change:+.2%}" if math.isfinite(r.rel_change) else "n/a"),
                 e(f"[{r.ci_low:+.2%}, {r.ci_high:+.2%}]" if math.isfinite(r.ci_low) else "n/a"),
                 e(f"{r.p_value:.3g}" if math.isfinite(r.p_value) else "n/a"), e(f"{r.effect_size:.2f}" if math.isfinite(r.effect_size) else "n/a"),
                 e(r.test), e(r.change)] for r in c.itertuples()]
        out += (f"<p>Best val MSE relative to the baseline {e(a.runs.baseline)}: per seed x/baseline − 1 (paired by seed), its mean, "
                f"{level} CI, the t-test p-value and the effect size (Cohen's d<sub>z</sub> paired; Hedges' g unpaired).</p>")
        out += _table(["experiment", "seeds", "change", f"{level} CI", "p", "effect size", "test", "call"], crow)
    return out


def definitions_html() -> str:
    items = "".join(f"<li>{e(d)}.</li>" for d in STABILITY.values())
    return (f"<ul>{items}<li>Best val MSE: the lowest validation MSE of a run (the weights handed on); final val MSE: "
            "the last epoch's.</li><li>Semantic fidelity: the reconstruction snapped to the nearest palette colour, "
            "compared with the true classes (comparable across all experiments).</li></ul>")


def handoff_html(paths: dict) -> str:
    if not paths:
        return "<p>No hand-off written: no winner.</p>"
    rows = [[e(k), e(str(v))] for k, v in paths.items()]
    return "<p>Hand-off files written:</p>" + _table(["file", "path"], rows)


# ---------------------------------------------------------------------------------------------------------
# Figures


def _done_metrics(a: Analysis) -> pd.DataFrame:
    m = a.runs.metrics
    return m[m["state"] == "done"] if len(m) else m


def fig_curves(a: Analysis) -> go.Figure:
    """Per loss component, train and val: mean over seeds per epoch with a min-max seed band."""
    m = _done_metrics(a)
    comps = [c for c in LOSS_COMPONENTS if any(f"{s}_{c}" in m and m[f"{s}_{c}"].notna().any() for s in ("train", "val"))] or ["mse"]
    names = {"mse": "MSE", "seg_ce": "seg CE", "cls_ce": "cls CE", "kl": "KL"}
    fig = make_subplots(rows=len(comps), cols=2, shared_xaxes=True, vertical_spacing=0.06, horizontal_spacing=0.08,
                        subplot_titles=[f"{split} {names[c]}" for c in comps for split in ("train", "val")])
    col = colors(a.runs.experiments)
    traces, rows, cols = [], [], []  # added in one call: add_trace per trace is slow with hundreds of traces
    for x in a.runs.experiments:
        g = m[m["experiment"] == x]
        if not len(g):
            continue
        for i, c in enumerate(comps):
            for j, split in enumerate(("train", "val")):
                k = f"{split}_{c}"
                if k not in g or g[k].isna().all():
                    continue
                q = g.groupby("epoch")[k].agg(["mean", "min", "max"]).dropna()
                ep = q.index.to_numpy()
                traces.append(go.Scatter(x=np.r_[ep, ep[::-1]], y=np.r_[q["max"], q["min"][::-1]], fill="toself", mode="lines", line_width=0,
                                         fillcolor=_rgba(col[x], 0.15), hoverinfo="skip", showlegend=False, legendgroup=x))
                traces.append(go.Scatter(x=ep, y=q["mean"], mode="lines", line_color=col[x], name=_t(x), legendgroup=x,
                                         showlegend=(i == 0 and j == 0), hovertemplate=f"{_t(x)}<br>epoch %{{x}}<br>{split} {names[c]} %{{y:.4g}}<extra></extra>"))
                rows += [i + 1, i + 1]
                cols += [j + 1, j + 1]
    if traces:
        fig.add_traces(traces, rows=rows, cols=cols)
    for i, c in enumerate(comps):
        fig.update_yaxes(title_text=names[c], type="log" if c == "mse" else "linear", row=i + 1, col=1)
    fig.update_xaxes(title_text="epoch", row=len(comps))
    fig.update_layout(title=_t(f"{a.runs.phase}: loss components per epoch (mean over finished seeds, band = seed min-max)"),
                      height=260 * len(comps) + 120, legend_title_text="experiment")
    return fig


def _bar_ci(fig, a, metric, row, col, colr):
    """One bar trace (mean, whiskers = CI) and one dot trace (seeds) for a metric, over all experiments."""
    s = a.summary[a.summary.metric == metric].set_index("experiment")
    exps = [x for x in a.runs.experiments if s.loc[x, "n"] > 0 and math.isfinite(s.loc[x, "mean"])]
    if not exps:
        return
    q = s.loc[exps]
    ci = np.isfinite(q["ci_low"].to_numpy())
    fig.add_trace(go.Bar(x=[_t(x) for x in exps], y=q["mean"], marker_color=[colr[x] for x in exps], opacity=0.6, showlegend=False,
                         error_y=dict(type="data", symmetric=False, array=np.where(ci, q["ci_high"] - q["mean"], 0),
                                      arrayminus=np.where(ci, q["mean"] - q["ci_low"], 0)),
                         customdata=q["n"], hovertemplate="%{x}<br>mean %{y:.4g} (n=%{customdata})<extra></extra>"), row, col)
    t = a.table[a.table["experiment"].isin(exps)].dropna(subset=[metric])
    fig.add_trace(go.Scatter(x=[_t(x) for x in t["experiment"]], y=t[metric], mode="markers", marker=dict(color="black", size=5),
                             showlegend=False, hovertemplate="%{x}<br>seed value %{y:.4g}<extra></extra>"), row, col)


def fig_final_metrics(a: Analysis) -> go.Figure:
    level = f"{1 - a.runs.decision.alpha:.0%}"
    metrics = [m for m in RUN_METRICS if a.table[m].notna().any()] if len(a.table) else ["best_val_mse"]
    ncol = 3
    nrow = math.ceil(len(metrics) / ncol)
    fig = make_subplots(rows=nrow, cols=ncol, subplot_titles=[RUN_METRICS[m] for m in metrics], vertical_spacing=0.12)
    colr = colors(a.runs.experiments)
    for i, m in enumerate(metrics):
        _bar_ci(fig, a, m, i // ncol + 1, i % ncol + 1, colr)
    fig.update_xaxes(showticklabels=len(a.runs.experiments) <= 6)
    fig.update_layout(title=_t(f"{a.runs.phase}: final metrics per experiment (bars: mean, whiskers: {level} t-interval, dots: seeds)"),
                      height=320 * nrow + 120, barmode="overlay")
    return fig


def fig_relative(a: Analysis) -> go.Figure:
    c = a.verdict.comparisons
    tol = a.runs.decision.similar_tolerance
    level = f"{a.verdict.level:.0%}" if a.verdict.level == 1 - a.runs.decision.alpha else f"{a.verdict.level:.2%} (Bonferroni)"
    fig = go.Figure()
    fig.add_vrect(x0=-tol * 100, x1=tol * 100, fillcolor="green", opacity=0.1, line_width=0,
                  annotation_text=f"similar (±{tol:.0%})", annotation_position="top left")
    fig.add_vline(x=0, line_color="gray")
    call_color = {"helps": "#2a6", "hurts": "#c33", "unclear": "#d90", "no gain": "#888"}
    for r in c.itertuples():
        if not math.isfinite(r.rel_change):
            continue
        err = dict(type="data", symmetric=False, array=[(r.ci_high - r.rel_change) * 100], arrayminus=[(r.rel_change - r.ci_low) * 100]) \
            if math.isfinite(r.ci_low) else None
        fig.add_trace(go.Scatter(x=[r.rel_change * 100], y=[_t(r.experiment)], error_x=err, mode="markers", marker=dict(size=11, color=call_color.get(r.call, "#333")),
                                 name=_t(f"{r.experiment}: {r.call}"), hovertemplate=f"{_t(r.experiment)}<br>%{{x:+.2f}}% ({_t(r.test)})<extra></extra>"))
    fig.update_layout(title=_t(f"{a.runs.phase}: best val MSE relative to {a.runs.baseline} (% per seed pair, mean and {level} CI)"),
                      xaxis_title=_t(f"change of best val MSE vs {a.runs.baseline} (%); negative = better"), yaxis_title="experiment",
                      height=max(300, 40 * len(c) + 200), yaxis_autorange="reversed")
    return fig


def fig_stability(a: Analysis) -> go.Figure:
    t = a.table
    specs = [("spikes", "loss spikes per run", 1), ("late_wobble", "late val wobble (% of mean)", 100),
             ("epochs_to_10pct", "epochs to within 10% of best", 1)]
    fig = make_subplots(rows=1, cols=4, subplot_titles=[s[1] for s in specs] + ["seed spread of final val MSE (%)"])
    colr = colors(a.runs.experiments)
    traces, cols = [], []
    for x in a.runs.experiments:
        g = t[t["experiment"] == x] if len(t) else t
        if not len(g):
            continue
        for j, (col, _, scale) in enumerate(specs):
            traces.append(go.Box(y=g[col].dropna() * scale, name=_t(x), marker_color=colr[x], boxpoints="all", jitter=0.3, showlegend=False))
            cols.append(j + 1)
        q = a.summary[(a.summary.experiment == x) & (a.summary.metric == "seed_spread")]["mean"]
        if len(q) and math.isfinite(q.iloc[0]):
            traces.append(go.Bar(x=[_t(x)], y=[q.iloc[0] * 100], marker_color=colr[x], showlegend=False))
            cols.append(4)
    if traces:
        fig.add_traces(traces, rows=[1] * len(traces), cols=cols)
    fig.update_xaxes(showticklabels=len(a.runs.experiments) <= 6)
    fig.update_layout(title=_t(f"{a.runs.phase}: stability and convergence per experiment (one dot per finished seed)"), height=420)
    return fig


def fig_iou(a: Analysis) -> go.Figure:
    t = a.table
    exps = a.runs.experiments
    fig = make_subplots(rows=1, cols=2, subplot_titles=["segmentation head IoU", "semantic fidelity IoU (reconstruction snapped to palette)"],
                        horizontal_spacing=0.15)
    for j, h in enumerate(("seg", "sem")):
        z = np.array([[t.loc[t.experiment == x, f"val_{h}_iou_{c}"].mean() if len(t) and f"val_{h}_iou_{c}" in t else np.nan for c in CLASS_NAMES] for x in exps], dtype=float)
        fig.add_trace(go.Heatmap(z=z, x=CLASS_NAMES, y=[_t(x) for x in exps], zmin=0, zmax=1, colorscale="Viridis", showscale=(j == 1),
                                 text=np.where(np.isfinite(z), np.round(z, 2).astype(str), "—"), texttemplate="%{text}" if len(exps) <= 12 else None,
                                 hovertemplate="%{y}<br>%{x}: IoU %{z:.3f}<extra></extra>"), 1, j + 1)
    fig.update_yaxes(autorange="reversed")
    fig.update_yaxes(showticklabels=False, row=1, col=2)  # same rows as the left panel
    fig.update_layout(title=_t(f"{a.runs.phase}: per-class IoU at the best epoch (mean over finished seeds; — = head not trained)"),
                      height=max(380, 28 * len(exps) + 220))
    return fig


def fig_confusion(a: Analysis) -> go.Figure:
    """Row-normalised confusion of the seg head (or of the snapped reconstruction), summed over finished seeds."""
    done = set(map(tuple, a.runs.done[["experiment", "seed"]].to_numpy()))
    mats = []
    for x in a.runs.experiments:
        evs = [ev for (ex, s), ev in a.runs.evals.items() if ex == x and (ex, s) in done]
        kind = "seg_confusion" if any(ev.get("seg_confusion") for ev in evs) else "sem_confusion"
        cms = [np.asarray(ev[kind], float) for ev in evs if ev.get(kind)]
        if cms:
            cm = sum(cms)
            mats.append((x, "segmentation head" if kind == "seg_confusion" else "reconstruction snapped to palette",
                         cm / np.maximum(cm.sum(1, keepdims=True), 1)))
    fig = go.Figure()
    if not mats:
        fig.update_layout(title=_t(f"{a.runs.phase}: confusion matrix: no eval.json of a finished run"))
        return fig
    title = lambda x, k: _t(f"{a.runs.phase}: confusion of {x} ({k}), rows = true class, normalised")  # noqa: E731
    fig.add_trace(go.Heatmap(z=mats[0][2], x=CLASS_NAMES, y=CLASS_NAMES, zmin=0, zmax=1, colorscale="Blues",
                             hovertemplate="true %{y}<br>predicted %{x}: %{z:.3f}<extra></extra>"))
    fig.update_layout(
        title=title(mats[0][0], mats[0][1]), height=560, xaxis_title="predicted class", yaxis_title="true class", yaxis_autorange="reversed",
        updatemenus=[dict(type="dropdown", x=1.0, y=1.12, xanchor="right", showactive=True, buttons=[
            dict(label=_t(x), method="update", args=[{"z": [z]}, {"title.text": title(x, k)}]) for x, k, z in mats])],
    )
    return fig


def fig_cls(a: Analysis) -> go.Figure | None:
    exps = [x for x in a.runs.experiments if "cls" in a.runs.heads.get(x, ())]
    if not exps or not len(a.table) or a.table["val_cls_acc"].isna().all():
        return None
    level = f"{1 - a.runs.decision.alpha:.0%}"
    fig = make_subplots(rows=1, cols=1)
    _bar_ci(fig, a, "val_cls_acc", 1, 1, colors(a.runs.experiments))
    fig.add_hline(y=a.runs.decision.min_cls_accuracy, line_dash="dash", annotation_text=f"minimum {a.runs.decision.min_cls_accuracy}")
    fig.update_layout(title=_t(f"{a.runs.phase}: room/scene classification accuracy (mean, {level} CI, seeds)"),
                      yaxis_title="validation accuracy", yaxis_range=[0, 1.05], height=380)
    return fig


def figures(a: Analysis) -> list[go.Figure]:
    """Every figure of the report, in order (the browser test counts them)."""
    figs = [fig_curves(a), fig_final_metrics(a), fig_relative(a), fig_stability(a), fig_iou(a), fig_confusion(a), fig_cls(a)]
    return [f for f in figs if f is not None]


# ---------------------------------------------------------------------------------------------------------
# Sample browser


def _error_lut() -> np.ndarray:
    """0..255 -> a dark-to-bright heat palette (black, red, yellow, white), flattened for PIL."""
    x = np.linspace(0, 1, 256)
    rgb = np.stack([np.clip(3 * x, 0, 1), np.clip(3 * x - 1, 0, 1), np.clip(3 * x - 2, 0, 1)], 1)
    return (rgb * 255).astype(np.uint8).ravel()


def _png_p(indices: np.ndarray, palette: np.ndarray) -> bytes:
    from PIL import Image

    im = Image.fromarray(indices.astype(np.uint8), mode="P")
    im.putpalette(palette.tolist())
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


_CLASS_LUT = np.zeros((256, 3), np.uint8)
_CLASS_LUT[: len(PALETTE)] = PALETTE
_CLASS_LUT = _CLASS_LUT.ravel()  # IGNORE_INDEX shows black


def _webp(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="WEBP", quality=85, method=4)
    return buf.getvalue()


def _png(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


_ERROR_LUT = _error_lut()
# How each panel of a sample is encoded: npz arrays -> bytes. Layouts are flat colours (PNG); recon is photo-like (WebP).
PANELS = {
    "input": lambda a, i: _png(a["input"][i].transpose(1, 2, 0)),
    "recon": lambda a, i: _webp(a["recon"][i].transpose(1, 2, 0)),
    "error": lambda a, i: _png_p(a["error"][i], _ERROR_LUT),
    "seg": lambda a, i: _png_p(a["seg_pred"][i] if "seg_pred" in a else a["recon_classes"][i], _CLASS_LUT),
    "mask": lambda a, i: _png_p(a["mask"][i], _CLASS_LUT),
}


def panels(arrays: dict, i: int) -> dict[str, bytes]:
    """Encoded images of sample i of an npz: input/mask/seg as palette PNG, recon as WebP, |error| as heat PNG."""
    return {k: enc(arrays, i) for k, enc in PANELS.items()}


def _thin(epochs: list[int], k: int) -> list[int]:
    if len(epochs) <= k:
        return epochs
    idx = np.unique(np.round(np.linspace(0, len(epochs) - 1, max(2, k))).astype(int))
    return [epochs[i] for i in idx]


def browser_data(a: Analysis, budget: int = BROWSER_BUDGET) -> dict:
    """The static browser's data: blobs (data URIs, deduplicated) and per experiment/seed/epoch the blob ids."""
    s = a.runs.samples
    state = a.runs.runs.set_index(["experiment", "seed"])["state"]
    runs = [(x, int(seed)) for x in a.runs.experiments for seed in sorted(s.loc[s.experiment == x, "seed"].unique())]
    if not runs:
        return {"experiments": [], "runs": [], "blobs": [], "note": "no samples/ in any run folder"}
    with np.load(s.iloc[0]["npz"]) as z:
        n = len(z["index"])
    total = sum(len(s[(s.experiment == x) & (s.seed == seed)]) for x, seed in runs) * n
    n_show = n if total <= budget else min(n, 4)
    per_run = max(2, budget // (len(runs) * n_show))
    blobs, ids, data = [], {}, []
    shown = total_epochs = 0
    for x in a.runs.experiments:
        seeds = []
        for seed in sorted(s.loc[s.experiment == x, "seed"].unique()):
            g = s[(s.experiment == x) & (s.seed == seed)].sort_values("epoch")
            epochs_all = g["epoch"].tolist()
            epochs = _thin(epochs_all, per_run)
            total_epochs += len(epochs_all)
            frames = {}
            for ep in epochs:
                with np.load(g.loc[g.epoch == ep, "npz"].iloc[0]) as z:
                    arrays = {k: z[k] for k in z.files}
                frame = []
                for i in range(min(n_show, len(arrays["index"]))):
                    ref = {}
                    for k, enc in PANELS.items():
                        # The same input and true mask recur in every run and epoch: key by the raw pixels, encode once.
                        src = arrays["seg_pred" if k == "seg" and "seg_pred" in arrays else "recon_classes" if k == "seg" else k][i]
                        h = (k, hashlib.blake2b(src.tobytes(), digest_size=12).digest())
                        if h not in ids:
                            b = enc(arrays, i)
                            ids[h] = len(blobs)
                            mime = "image/webp" if b[8:12] == b"WEBP" else "image/png"
                            blobs.append(f"data:{mime};base64," + base64.b64encode(b).decode())
                        ref[k] = ids[h]
                    frame.append(ref)
                frames[str(ep)] = frame
                shown += 1
            st = state.get((x, int(seed)), "missing")
            seeds.append({"seed": int(seed), "label": f"seed {seed}" + ("" if st == "done" else f" ({st})"), "epochs": epochs,
                          "seg_label": "predicted segmentation" if "seg" in a.runs.heads.get(x, ()) else "reconstruction snapped to palette",
                          "frames": frames})
        if seeds:
            data.append(seeds)
    exps = [x for x in a.runs.experiments if len(s[s.experiment == x])]
    note = "" if shown == total_epochs and n_show == n else (
        f"To keep this file small the static browser shows {shown} of {total_epochs} saved epochs and {n_show} of {n} samples; "
        "the live notebook (analysis.ipynb) shows all.")
    return {"experiments": exps, "runs": data, "blobs": blobs, "note": note}


_BROWSER_JS = """
(function () {
  var root = document.getElementById(ID);
  var D = JSON.parse(document.getElementById(ID + "-data").textContent);
  function q(r) { return root.querySelector('[data-role="' + r + '"]'); }
  var expSel = q("exp"), seedSel = q("seed"), ep = q("epoch"), sm = q("sample");
  D.experiments.forEach(function (x, i) { expSel.add(new Option(x, i)); });
  function run() { return D.runs[+expSel.value][+seedSel.value]; }
  function fillSeeds() {
    seedSel.innerHTML = "";
    D.runs[+expSel.value].forEach(function (s, i) { seedSel.add(new Option(s.label, i)); });
    fillEpochs();
  }
  function fillEpochs() {
    var r = run(), old = +(ep.dataset.epoch || 0), best = 0;
    r.epochs.forEach(function (e, i) { if (Math.abs(e - old) < Math.abs(r.epochs[best] - old)) best = i; });
    ep.max = r.epochs.length - 1; ep.value = old ? best : r.epochs.length - 1;
    sm.max = r.frames[String(r.epochs[0])].length - 1; if (+sm.value > +sm.max) sm.value = 0;
    draw();
  }
  function draw() {
    var r = run(), e = r.epochs[+ep.value], f = r.frames[String(e)][+sm.value];
    ep.dataset.epoch = e;
    q("epoch-label").textContent = "epoch " + e;
    q("sample-label").textContent = "sample " + (+sm.value + 1) + " of " + (+sm.max + 1);
    q("seg-caption").textContent = r.seg_label;
    ["input", "recon", "error", "seg", "mask"].forEach(function (k) { q("img-" + k).src = D.blobs[f[k]]; });
  }
  expSel.addEventListener("change", fillSeeds);
  seedSel.addEventListener("change", fillEpochs);
  ep.addEventListener("input", draw);
  sm.addEventListener("input", draw);
  fillSeeds();
})();
"""


def browser_html(a: Analysis, budget: int = BROWSER_BUDGET) -> str:
    """Self-contained HTML + JS sample browser (no kernel): experiment, seed, epoch and sample controls."""
    d = browser_data(a, budget)
    if not d["experiments"]:
        return "<p>No samples were saved by any run (samples/epoch_XXX.npz), so there is nothing to browse.</p>"
    uid = "imginav-browser-" + hashlib.blake2b(str(a.runs.runs_dir).encode(), digest_size=4).hexdigest()
    # JSON inside <script>: escape <, > and & so no name can close the tag.
    payload = json.dumps(d, separators=(",", ":")).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    figs = "".join(f'<figure><img data-role="img-{k}" alt="{k}"><figcaption{" data-role=seg-caption" if k == "seg" else ""}>{cap}</figcaption></figure>'
                   for k, cap in (("input", "input"), ("recon", "reconstruction"), ("error", "|error|"), ("seg", "segmentation"), ("mask", "true classes")))
    return (f'<div class="imginav-browser" id="{uid}">'
            f'<label>experiment <select data-role="exp"></select></label><label>seed <select data-role="seed"></select></label>'
            f'<label><input type="range" data-role="epoch" min="0" max="0" step="1" value="0"> <span data-role="epoch-label"></span></label>'
            f'<label><input type="range" data-role="sample" min="0" max="0" step="1" value="0"> <span data-role="sample-label"></span></label>'
            f'<div class="panels">{figs}</div><p class="muted">{e(d["note"])}</p></div>'
            f'<script type="application/json" id="{uid}-data">{payload}</script>'
            f"<script>{_BROWSER_JS.replace('ID', json.dumps(uid))}</script>")


def browser_widget(a: Analysis):
    """The same browser with ipywidgets, for a live kernel: every saved epoch and sample, read on demand."""
    import ipywidgets as W

    s = a.runs.samples
    exps = [x for x in a.runs.experiments if len(s[s.experiment == x])]
    if not exps:
        return W.HTML("No samples saved.")
    exp = W.Dropdown(options=exps, description="experiment")
    seed = W.Dropdown(description="seed")
    epoch = W.SelectionSlider(options=[0], description="epoch")
    sample = W.IntSlider(min=0, max=0, description="sample")
    names = ["input", "recon", "error", "seg", "mask"]
    imgs = {k: W.Image(format="png", width=192, height=192) for k in names}
    caps = {k: W.Label(k) for k in names}
    box = W.HBox([W.VBox([imgs[k], caps[k]]) for k in names])

    busy = [False]  # while options are replaced, the value observers must not fire on half-updated state

    def on_exp(_=None):
        busy[0] = True
        seed.options = sorted(s.loc[s.experiment == exp.value, "seed"].unique().tolist())
        seed.value = seed.options[0]
        busy[0] = False
        on_seed()

    def on_seed(_=None):
        if busy[0]:
            return
        g = s[(s.experiment == exp.value) & (s.seed == seed.value)]
        old, epochs = epoch.value, sorted(g["epoch"].tolist())
        busy[0] = True
        epoch.options = epochs
        epoch.value = min(epochs, key=lambda x: abs(x - old)) if old else epochs[-1]
        busy[0] = False
        draw()

    def draw(_=None):
        if busy[0]:
            return
        g = s[(s.experiment == exp.value) & (s.seed == seed.value) & (s.epoch == epoch.value)]
        if not len(g):
            return
        with np.load(g["npz"].iloc[0]) as z:
            arrays = {k: z[k] for k in z.files}
        sample.max = len(arrays["index"]) - 1
        for k, b in panels(arrays, min(sample.value, sample.max)).items():
            imgs[k].format = "webp" if b[8:12] == b"WEBP" else "png"
            imgs[k].value = b
        caps["seg"].value = "predicted segmentation" if "seg_pred" in arrays else "recon snapped to palette"

    on_exp()
    exp.observe(on_exp, "value")
    seed.observe(on_seed, "value")
    epoch.observe(draw, "value")
    sample.observe(draw, "value")
    return W.VBox([W.HBox([exp, seed]), W.HBox([epoch, sample]), box])


# ---------------------------------------------------------------------------------------------------------
# Build: papermill, then nbconvert with the code hidden


# The lab template minus everything that loads from a CDN (require.js, MathJax, mermaid, the widget manager):
# the report must open offline with no console errors, and it uses none of them.
_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""
HIDE_TAG = "hide-in-report"  # cells tagged so (the notebook's intro, the live widget browser) are left out


def export_html(nb_path: Path, title: str) -> str:
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    nb = nbformat.read(nb_path, as_version=4)
    nb.cells = [c for c in nb.cells if HIDE_TAG not in c.get("metadata", {}).get("tags", [])]
    for c in nb.cells:
        if c.cell_type == "code":  # warnings on stderr stay in the executed notebook, not in the report
            c.outputs = [o for o in c.outputs if not (o.output_type == "stream" and o.get("name") == "stderr")
                         and "application/vnd.jupyter.widget-view+json" not in o.get("data", {})]
    nb.metadata.pop("widgets", None)
    nb.metadata["title"] = title
    exporter = HTMLExporter(extra_loaders=[DictLoader({"imginav.html.j2": _TEMPLATE})], template_file="imginav.html.j2")
    exporter.exclude_input = exporter.exclude_input_prompt = exporter.exclude_output_prompt = True
    body, _ = exporter.from_notebook_node(nb)
    return body


def build_report(runs_dir, params_file=None, out=None) -> Path:
    """Execute the analysis notebook into <runs_dir>/analysis.ipynb (it writes winner.yaml and the next-phase
    params) and render it, code hidden, to `out` (default reports/<phase>.html under the working directory)."""
    import papermill as pm

    runs_dir = Path(runs_dir).resolve()
    if not runs_dir.is_dir():
        raise InputError(f"runs folder not found: {runs_dir}")
    if params_file is not None and not Path(params_file).is_file():
        raise InputError(f"params file not found: {params_file}")
    try:
        phase = json.loads((runs_dir / "index.json").read_text()).get("phase") or runs_dir.name
    except (OSError, ValueError):
        phase = runs_dir.name
    out = Path(out) if out else Path("reports") / f"{phase}.html"
    nb_path = runs_dir / "analysis.ipynb"
    fd, tmp = tempfile.mkstemp(dir=runs_dir, prefix=".analysis.", suffix=".ipynb")
    os.close(fd)
    params = {"runs_dir": str(runs_dir), "params_file": str(Path(params_file).resolve()) if params_file else None}
    try:
        pm.execute_notebook(str(NOTEBOOK), tmp, parameters=params, kernel_name="python3", progress_bar=False, cwd=str(NOTEBOOK.parent))
    except pm.PapermillExecutionError as err:
        os.replace(tmp, nb_path)
        raise ReportError(f"analysis notebook failed: {err.ename}: {err.evalue} (executed notebook: {nb_path})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    os.chmod(tmp, 0o666 & ~UMASK)
    os.replace(tmp, nb_path)
    atomic_write_text(out, export_html(nb_path, f"{phase}: phase report"))
    return out
