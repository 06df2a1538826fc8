"""The report's figures (plotly): curves, final metrics, the comparison with the baseline, stability, IoU,
confusion and classification. Text from run folders and params files is escaped: plotly renders a subset of
HTML tags in names and titles.
"""
from __future__ import annotations

import html
import math
import textwrap
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from imginav_lib import heads as H
from imginav_lib.palette import CLASS_NAMES

if TYPE_CHECKING:
    from imginav_lib.analysis import Analysis


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


def _done_metrics(a: Analysis) -> pd.DataFrame:
    m = a.runs.metrics
    return m[m["state"] == "done"] if len(m) else m


def fig_curves(a: Analysis) -> go.Figure:
    """Per loss component, train and val: mean over seeds per epoch with a min-max seed band."""
    m = _done_metrics(a)
    comps = [c for c in H.loss_terms() if any(f"{s}_{c}" in m and m[f"{s}_{c}"].notna().any() for s in ("train", "val"))] or ["mse"]
    names = H.term_labels()
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
    labels = H.run_metrics()
    metrics = [m for m in labels if a.table[m].notna().any()] if len(a.table) else ["best_val_mse"]
    ncol = 3
    nrow = math.ceil(len(metrics) / ncol)
    fig = make_subplots(rows=nrow, cols=ncol, subplot_titles=[labels[m] for m in metrics], vertical_spacing=0.12)
    colr = colors(a.runs.experiments)
    for i, m in enumerate(metrics):
        _bar_ci(fig, a, m, i // ncol + 1, i % ncol + 1, colr)
    fig.update_xaxes(showticklabels=len(a.runs.experiments) <= 6)
    fig.update_layout(title=_t(f"{a.runs.phase}: final metrics per experiment (bars: mean, whiskers: {level} t-interval, dots: seeds)"),
                      height=320 * nrow + 120, barmode="overlay")
    return fig


def seed_effects(a: Analysis, experiment: str) -> pd.Series:
    """seed -> experiment / baseline - 1 of the verdict's primary metric, for the seeds both finished (paired)."""
    t, metric = a.table, a.verdict.primary
    if not len(t):
        return pd.Series(dtype=float)
    x, b = (t[t["experiment"] == e].set_index("seed")[metric] for e in (experiment, a.runs.baseline))
    ratio = (x / b.reindex(x.index) - 1).dropna()
    return ratio[np.isfinite(ratio)]


def fig_effects(a: Analysis) -> go.Figure:
    """The answer in one picture: each experiment's change of the primary metric against the baseline (%), its
    mean with the interval at its corrected level, one dot per seed (paired with the baseline's run of that seed),
    the band of ±decision.similar_tolerance and the line at 0."""
    from imginav_lib.analysis.decision import metric_words

    c = a.verdict.comparisons
    c = c[(c["versus"] == a.runs.baseline) & (c["call"] != "head to head")]  # the head-to-head rows are in the stats table
    tol, name = a.runs.decision.similar_tolerance, metric_words(a.verdict.primary)
    fig = go.Figure()
    fig.add_vrect(x0=-tol * 100, x1=tol * 100, fillcolor="green", opacity=0.1, line_width=0,
                  annotation_text=f"similar (±{tol:.0%})", annotation_position="top left")
    fig.add_vline(x=0, line_color="gray")
    call_color = {"helps": "#2a6", "hurts": "#c33", "unclear": "#d90", "no gain": "#888"}
    for r in c.itertuples():
        if not math.isfinite(r.rel_change):
            continue
        y = _t(r.experiment)
        err = dict(type="data", symmetric=False, array=[(r.ci_high - r.rel_change) * 100], arrayminus=[(r.rel_change - r.ci_low) * 100]) \
            if math.isfinite(r.ci_low) else None
        fig.add_trace(go.Scatter(x=[r.rel_change * 100], y=[y], error_x=err, mode="markers", marker=dict(size=13, color=call_color.get(r.call, "#333")),
                                 name=_t(f"{r.experiment}: {r.call}"), legendgroup=y,
                                 hovertemplate=f"{y}<br>mean %{{x:+.2f}}% ({_t(r.test)}, {r.level:.2%} CI)<extra></extra>"))
        seeds = seed_effects(a, r.experiment)
        fig.add_trace(go.Scatter(x=seeds.to_numpy() * 100, y=[y] * len(seeds), mode="markers", showlegend=False, legendgroup=y,
                                 name=_t(f"{r.experiment}: seeds"), customdata=seeds.index.to_numpy(),
                                 marker=dict(size=7, color="black", symbol="circle-open"),
                                 hovertemplate=f"{y}<br>seed %{{customdata}}: %{{x:+.2f}}%<extra></extra>"))
    fig.update_layout(title=_t(f"Effect on {name} vs the baseline {a.runs.baseline}: mean % change, corrected CI, "
                               "open dots = seeds"),
                      xaxis_title=_t(f"change of {name} vs {a.runs.baseline} (%); negative = better"), yaxis_title="experiment",
                      height=max(300, 40 * len(c) + 200), yaxis_autorange="reversed")
    return fig


def fig_stability(a: Analysis) -> go.Figure:
    t = a.table
    specs = [("spikes", "MSE spikes per run", 1), ("late_wobble", "late roughness (%)", 100),
             ("epochs_to_target", "epochs to 10% of the baseline's best", 1)]
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
    prefixes = H.class_iou_prefixes()  # the per-pixel heads, then the snapped reconstruction ("sem")
    titles = [f"{h.label} head IoU" for h in H.HEADS if h.class_iou] + ["semantic fidelity IoU (reconstruction snapped to palette)"]
    fig = make_subplots(rows=1, cols=len(prefixes), subplot_titles=titles, horizontal_spacing=0.15)
    for j, h in enumerate(prefixes):
        z = np.array([[t.loc[t.experiment == x, f"val_{h}_iou_{c}"].mean() if len(t) and f"val_{h}_iou_{c}" in t else np.nan for c in CLASS_NAMES] for x in exps], dtype=float)
        fig.add_trace(go.Heatmap(z=z, x=CLASS_NAMES, y=[_t(x) for x in exps], zmin=0, zmax=1, colorscale="Viridis", showscale=(j == len(prefixes) - 1),
                                 text=np.where(np.isfinite(z), np.round(z, 2).astype(str), "—"), texttemplate="%{text}" if len(exps) <= 12 else None,
                                 hovertemplate="%{y}<br>%{x}: IoU %{z:.3f}<extra></extra>"), 1, j + 1)
    fig.update_yaxes(autorange="reversed")
    for j in range(2, len(prefixes) + 1):
        fig.update_yaxes(showticklabels=False, row=1, col=j)  # same rows as the left panel
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
    h = H.head("cls")
    exps = [x for x in a.runs.experiments if h.name in a.runs.heads.get(x, ())]
    if not exps or not len(a.table) or a.table[h.gate].isna().all():
        return None
    level = f"{1 - a.runs.decision.alpha:.0%}"
    fig = make_subplots(rows=1, cols=1)
    _bar_ci(fig, a, h.gate, 1, 1, colors(a.runs.experiments))
    fig.add_hline(y=h.minimum(a.runs.decision), line_dash="dash", annotation_text=f"minimum {h.minimum(a.runs.decision)}")
    title = _t(f"{a.runs.phase}: room/scene classification accuracy (mean, {level} CI, seeds)")
    chance = [w for x, w in a.verdict.chance.items() if x in exps]  # heads whose loss never left chance level
    lines = [_t(line) for w in chance for line in textwrap.wrap(w[0].upper() + w[1:] + ".", 120)]
    fig.update_layout(title=title + "".join(f"<br><sup>{line}</sup>" for line in lines), margin_t=80 + 18 * len(lines),
                      yaxis_title="validation accuracy", yaxis_range=[0, 1.05], height=380 + 18 * len(lines))
    return fig


def fig_boundary(a: Analysis) -> go.Figure:
    """Per-class boundary F (eval.json of the best checkpoint, mean over finished seeds): snapped reconstruction and seg head."""
    done = set(map(tuple, a.runs.done[["experiment", "seed"]].to_numpy()))
    exps = a.runs.experiments
    kinds = (("sem", "reconstruction snapped to palette"), ("seg", "segmentation head"))
    fig = make_subplots(rows=1, cols=2, subplot_titles=[f"boundary F: {k}" for _, k in kinds], horizontal_spacing=0.15)
    tol = None
    for j, (kind, _) in enumerate(kinds):
        z = []
        for x in exps:
            vals = [ev["boundary_f"][kind] for (ex, sd), ev in a.runs.evals.items()
                    if ex == x and (ex, sd) in done and (ev.get("boundary_f") or {}).get(kind)]  # fmt: skip
            tol = tol or next((ev["boundary_f"].get("tolerance_px") for (ex, _), ev in a.runs.evals.items() if ev.get("boundary_f")), None)
            z.append(np.nanmean(np.asarray(vals, float), 0) if vals else np.full(len(CLASS_NAMES), np.nan))
        z = np.asarray(z, float)
        fig.add_trace(go.Heatmap(z=z, x=CLASS_NAMES, y=[_t(x) for x in exps], zmin=0, zmax=1, colorscale="Viridis", showscale=(j == 1),
                                 text=np.where(np.isfinite(z), np.round(z, 2).astype(str), "—"), texttemplate="%{text}" if len(exps) <= 12 else None,
                                 hovertemplate="%{y}<br>%{x}: boundary F %{z:.3f}<extra></extra>"), 1, j + 1)
    fig.update_yaxes(autorange="reversed")
    fig.update_yaxes(showticklabels=False, row=1, col=2)
    fig.update_layout(title=_t(f"{a.runs.phase}: per-class boundary F at the best checkpoint, tolerance {tol or '?'} px "
                               "(mean over finished seeds; — = head not trained or class absent)"), height=max(380, 28 * len(exps) + 220))
    return fig


def fig_latent(a: Analysis) -> go.Figure:
    """What the latent gives the next stage: linear-probe mIoU and the scale to unit variance, per experiment."""
    level = f"{1 - a.runs.decision.alpha:.0%}"
    labels = dict(H.LATENT)
    fig = make_subplots(rows=1, cols=2, subplot_titles=[labels["probe_miou"], labels["latent_scale"]])
    colr = colors(a.runs.experiments)
    for j, m in enumerate(("probe_miou", "latent_scale")):
        if len(a.table) and m in a.table and a.table[m].notna().any():
            _bar_ci(fig, a, m, 1, j + 1, colr)
    fig.update_xaxes(showticklabels=len(a.runs.experiments) <= 6)
    fig.update_layout(title=_t(f"{a.runs.phase}: the latent at the best checkpoint (bars: mean, whiskers: {level} t-interval, dots: seeds)"),
                      height=420, barmode="overlay")
    return fig
