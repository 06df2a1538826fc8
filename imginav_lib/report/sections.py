"""The phase report's pieces: HTML sections and notebook display (build.py executes and renders the notebook).

The notebook (notebooks/analysis.ipynb) arranges the pieces: the sections here, the figures (`figures.py`) and
the sample browser (`browser.py`). Every piece of text that comes from a run folder or a params file (experiment
names, notes, paths, error messages) goes through `html.escape`. The static HTML works offline: plotly.js is
inlined once by `init()`, images are base64 WebP/PNG.
"""
from __future__ import annotations

import datetime as dt
import html
import math
import re
from typing import TYPE_CHECKING

import pandas as pd

from imginav_lib import heads as H
from imginav_lib.analysis.decision import metric_words
from imginav_lib.analysis.phase import resolved_section
from imginav_lib.analysis.stats import STABILITY

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from imginav_lib.analysis import Analysis


e = html.escape


# ---------------------------------------------------------------------------------------------------------
# Notebook display


CSS = """
.imginav h1 {font-size: 1.7em; margin: 0.2em 0}
.imginav table {border-collapse: collapse; font-size: 0.9em; margin: 0.4em 0; max-width: 100%}
.imginav th, .imginav td {border: 1px solid #ccc; padding: 3px 7px; text-align: left !important; vertical-align: top;
  overflow-wrap: anywhere}
.imginav .table-box {max-width: 100%; overflow-x: auto}
.imginav th {background: #f3f3f3}
.imginav .verdict {border: 2px solid #2a6; border-radius: 6px; padding: 0.6em 1em; background: #f4fbf6}
.imginav .verdict.provisional {border-color: #d90; background: #fffaf0}
.imginav .verdict.none {border-color: #c33; background: #fff5f5}
.imginav .winner {font-size: 1.2em; font-weight: bold; margin: 0.2em 0}
.imginav .verdict .details {font-weight: bold; border-top: 1px solid #ccc; padding-top: 0.4em; margin-bottom: 0}
.imginav .pass {background: #dfd} .imginav .fail {background: #fdd} .imginav .unclear {background: #ffd}
.imginav .muted {color: #666; font-size: 0.9em}
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


def _breakable(cell: str) -> str:
    """Cell HTML with a break opportunity after each "_" of a word longer than 20 characters outside tags: long
    experiment names (phase1_4_AE_F3_rgb_seg_cls) wrap at their parts; short ones stay one piece of text."""
    return re.sub(r"\w{21,}(?![^<>]*>)", lambda m: m[0].replace("_", "_<wbr>"), cell)


def _table(header: list[str], rows: list[list[str]], classes: list[str] | None = None) -> str:
    """rows hold already-escaped cell HTML. Wide tables scroll inside their own box rather than the page's."""
    head = "".join(f"<th>{_breakable(e(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td class="{c}">{_breakable(v)}</td>' if c else f"<td>{_breakable(v)}</td>"
                         for v, c in zip(r, classes[i] if classes else [""] * len(r))) + "</tr>"
        for i, r in enumerate(rows)
    )
    return f'<div class="table-box"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


STATS_COLUMNS = 6  # metrics per table of the statistics across seeds: 7 columns fit a 1,280 px page


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
    question = ("does an auxiliary loss help or hurt reconstruction?" if any(pr.heads.get(x) for x in pr.experiments)
                else "which configuration reconstructs best?")  # e.g. a phase comparing architectures
    return (f"<h1>{e(pr.phase)}: {question}</h1>{desc}"
            + _table(["provenance", ""], rows) + (f"<p><b>Warnings</b></p><ul>{warn}</ul>" if warn else "")
            + "<p>Experiments:</p>" + _table(["experiment", "auxiliary heads", "loss weights", "note", ""], exp_rows))


def _head_names(heads) -> str:
    return H.words(heads) or "none (RGB only)"


def _loss_text(pr, x: str) -> str:
    loss = resolved_section(pr, x, "loss")
    return ", ".join(f"{k} {v:g}" for k, v in loss.items() if isinstance(v, (int, float)) and v and k != "kl") or "n/a"


def verdict_html(a: Analysis) -> str:
    """The answer first (one sentence, then at most three short lines), then the details: the reasoning and how
    sure we are (decision.headline and decision.summary_lines build the text)."""
    v = a.verdict
    cls = {"decided": "", "provisional": " provisional"}.get(v.status, " none")
    more = f"<p><b>Needs more seeds (≈{v.seeds_needed} per experiment).</b> {e(v.more_seeds)}</p>" \
        if v.status == "provisional" and v.seeds_needed and v.seeds_needed <= 200 else ""
    lines = "".join(f"<li>{e(x)}</li>" for x in v.lines)
    return (f'<div class="verdict{cls}"><p class="winner">{e(v.headline)}</p>' + (f"<ul>{lines}</ul>" if lines else "")
            + f"<p class='details'>Details</p><p>{e(v.paragraph)}</p><p><b>How sure we are:</b> {e(v.sureness)}</p>{more}</div>")


def criteria_html(a: Analysis) -> str:
    c = a.verdict.criteria
    if not len(c):
        return "<p>No criteria evaluated: no finished runs.</p>"
    v = a.verdict
    rows = [[e(str(r.experiment)), e(r.criterion), e(str(r.value)), e(str(r.threshold)), e(str(r.test or "")),
             e(str(r.level or "")), e(r.result)] for r in c.itertuples()]
    classes = [["", "", "", "", "", "", r.result if r.result in ("pass", "fail", "unclear") else ""] for r in c.itertuples()]
    calls = "".join(f"<li>{e(x)}: <b>{e(call)}</b></li>" for x, call in v.calls.items())
    split = "the held-out test split" if v.primary == "test_mse" else "the validation split (no held-out test MSE in every run)"
    intro = (f"<p>Primary metric: {e(metric_words(v.primary))} on {e(split)}. Each criterion with its evidence: the "
             f"value with its interval, the test, and the confidence level after the correction (the level of that "
             f"test's step in {e(_correction(a))}). {e(v.design)}</p>")
    rule = f"<p>The pick: <b>{e(v.winner or 'none')}</b>, by the rule: {e(v.rule)}.</p>" if v.rule else ""
    return intro + _table(["experiment", "criterion", "value", "threshold", "test", "level", "result"], rows, classes) \
        + rule + f"<p>Calls:</p><ul>{calls}</ul>"


def _correction(a: Analysis) -> str:
    m = int(a.verdict.family["p"].notna().sum()) if len(a.verdict.family) else 0
    return {"holm": f"Holm's correction over the family of {m} tests that feed the verdict",
            "bonferroni": f"Bonferroni over the family of {m} tests that feed the verdict",
            "none": "no correction (decision.correction: none)"}[a.runs.decision.correction]


def _whole(v) -> str:
    """3.0 -> "3" (a column turns float when one run lacks it); a missing value -> "?"."""
    if v is None or isinstance(v, float) and math.isnan(v):
        return "?"
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def _count(x) -> str:
    return f"{x:.0f}" if isinstance(x, (int, float)) and math.isfinite(x) else "n/a"


def runs_html(a: Analysis) -> str:
    """Every run of the index: state, epochs, images per split (and with each head's target), error, folder."""
    r = a.runs.runs
    head = f"<p>{int((r['state'] == 'done').sum())} of {len(r)} runs finished and are used in the statistics.</p>"
    scored = [h for h in H.auxiliary() if h.scored_on]
    rows = []
    for x in r.to_dict("records"):
        epoch = f"{_whole(x.get('epoch'))}/{_whole(x.get('epochs'))}" if pd.notna(x.get("epoch")) else ""
        counts = [f"{_count(x.get(tr))} / {_count(x.get(va))}" for tr, va in [("n_train", "n_val"), *(h.scored_on for h in scored)]]
        err = x.get("error")
        rows.append([e(str(x["experiment"])), e(str(x["seed"])), e(x["state"]), e(epoch), *map(e, counts),
                     e(err if isinstance(err, str) else ""), e(str(x["run_dir"])) if x["state"] != "done" else ""])
    labelled = [f"{'labelled' if h.name == 'cls' else h.label} train / val" for h in scored]
    out = head + _table(["experiment", "seed", "state", "epoch", "images train / val", *labelled, "error", "folder (if not done)"], rows)
    return out + _few_targets_note(a, scored)


def _few_targets_note(a: Analysis, scored: list) -> str:
    """A caveat when a head's metric rests on no or few validation images with its target."""
    from imginav_lib.analysis.decision import FEW_SCORED

    notes = []
    for h in scored:
        users = [x for x in a.runs.experiments if h.name in a.runs.heads.get(x, ())]
        t = a.table[a.table["experiment"].isin(users)] if len(a.table) else a.table
        n = t[h.scored_on[1]].dropna() if h.scored_on[1] in t else pd.Series(dtype=float)
        if not users or not len(n):
            continue
        if n.max() == 0:
            notes.append(f"No validation image has {h.target}: the {h.gate_label} of {', '.join(users)} cannot be scored (n/a), "
                         f"and {'their' if len(users) > 1 else 'its'} {h.label} loss had nothing to learn from.")
        elif n.min() < FEW_SCORED:
            notes.append(f"The {h.gate_label} rests on {n.min():.0f} validation images with {h.target}: a rough figure "
                         f"(its standard error near 0.8 is about {math.sqrt(0.16 / n.min()):.2f}).")
    return "".join(f"<p>{e(x)}</p>" for x in notes)


def stats_html(a: Analysis) -> str:
    """Per experiment: mean [CI] (n) of every metric, then the comparison with the baseline."""
    s = a.summary
    level = f"{1 - a.runs.decision.alpha:.0%}"
    tests = [m for m in dict.fromkeys(s.metric) if str(m).startswith("test_")]
    metrics = [m for m in [*H.run_metrics(), *tests, "spikes", "late_wobble", "epochs_to_target", "seed_spread"] if s[s.metric == m]["n"].sum() > 0]
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
    labels = {**H.run_metrics(), **{m: m.replace("_", " ") for m in tests}, "spikes": "MSE spikes / run", "late_wobble": "late roughness",
              "epochs_to_target": "epochs to 10% of the baseline's best",
              "seed_spread": "seed spread (final val MSE)"}
    out = f"<p>Mean across finished seeds with the {level} t-interval [low, high] and the number of seeds n. " \
          "With 1 seed there is no interval; with 2 it is very wide: 3 or more seeds are needed.</p>"
    for i in range(0, len(metrics), STATS_COLUMNS):  # several narrow tables, the experiments in each
        out += _table(["experiment", *[labels[m] for m in metrics[i:i + STATS_COLUMNS]]],
                      [[r[0], *r[1 + i:1 + i + STATS_COLUMNS]] for r in rows])
    c = a.verdict.comparisons
    level = "corrected"  # each interval at its test's level after the family's correction (the criteria table gives it)
    out += f"<p>Intervals and p-values below are those of the verdict's family: {e(_correction(a))}; each row's level is in the criteria table.</p>"
    vs_base, h2h = c[c["versus"] == a.runs.baseline], c[c["versus"] != a.runs.baseline]
    if len(vs_base):
        name = metric_words(a.verdict.primary)
        out += (f"<p>{e(name[0].upper() + name[1:])} relative to the baseline {e(a.runs.baseline)}: per seed x/baseline − 1 (paired by seed), its mean, "
                f"{level} CI, the t-test p-value, the effect size (Cohen's d<sub>z</sub> paired; Hedges' g unpaired) and the "
                "probability of improvement P(x &lt; baseline): the share of seeds in which x beats the baseline's run of the "
                "same seed (rliable; Bouthillier et al. 2021).</p>")
        out += _table(["experiment", "seeds", "change", f"{level} CI", "p", "effect size", "P(improvement)", "test", "call"],
                      [_comparison_row(r, r.experiment) for r in vs_base.itertuples()])
    if len(h2h):
        out += ("<p>The winner candidates head to head (paired by seed, the same statistics): the one with the lower mean "
                "against each other. Significantly better wins; otherwise the preference order picks.</p>")
        out += _table(["experiment vs other", "seeds", "change", f"{level} CI", "p", "effect size", "P(improvement)", "test", "result"],
                      [_comparison_row(r, f"{r.experiment} vs {r.versus}") for r in h2h.itertuples()])
    return out


def _comparison_row(r, name: str) -> list[str]:
    num = lambda x, f: format(x, f) if isinstance(x, (int, float)) and math.isfinite(x) else "n/a"  # noqa: E731
    ci = f"[{r.ci_low:+.2%}, {r.ci_high:+.2%}]" if math.isfinite(r.ci_low) else "n/a"
    return [e(name), e(f"{r.n} vs {r.n_baseline} ({r.n_pairs} paired)"), e(num(r.rel_change, "+.2%")), e(ci), e(num(r.p_value, ".3g")),
            e(num(r.effect_size, ".2f")), e(f"{num(r.p_improve, '.2f')} ({r.wins} of {r.n_pairs} seeds)" if r.n_pairs else num(r.p_improve, ".2f")),
            e(r.test), e(r.change)]


# One sentence each for the measures the questions added (semantic boundaries, the latent).
DEFINITIONS = (
    "Boundary F: per class, the harmonic mean of the share of predicted class-boundary pixels within a few pixels "
    "(0.8% of the image diagonal, as the DAVIS benchmark) of a true boundary and the share of true boundary pixels "
    "within that distance of a predicted one, averaged over the classes present; for the reconstruction snapped to "
    "the palette (every experiment) and for the seg head (where trained)",
    "Linear probe mIoU: the validation mIoU of a 1x1 convolution trained for a fixed small budget on the frozen "
    "training latents of the best checkpoint to predict the classes at latent resolution (how linearly readable "
    "the semantics of the latent are; the same probe for every experiment)",
    "Latent scale: 1 / standard deviation of the best checkpoint's training latents, the factor that brings the "
    "latent to unit variance (diffusers' scaling_factor) for the diffusion stage",
)


def split_html(a: Analysis) -> str:
    """How the data was split, and the held-out test metrics of the selected checkpoints (mean over seeds)."""
    from imginav_lib.analysis.split import split_sentence, test_results

    out = f"<p>{e(split_sentence(a.runs))} Early stopping, best.pt and the best epoch use validation only.</p>"
    t = test_results(a.runs)
    if not len(t):
        return out + "<p class='muted'>No held-out test split in these runs (data.test_fraction 0): every number is on validation.</p>"
    cols = [c for c in ("test_mse", "test_psnr", "test_ssim", "test_sem_miou", "test_seg_miou", "test_cls_acc") if c in t]
    rows = []
    for x in a.runs.experiments:
        g = t[t["experiment"] == x]
        if len(g):
            rows.append([e(x), str(len(g)), e(_whole(g["n_test"].iloc[0]))] + [e(_fmt(float(g[c].mean()), c)) for c in cols])
    return out + ("<p>The selected checkpoint of each finished run, evaluated once on the held-out test images "
                  "(eval.json <code>test</code>), mean over its seeds:</p>"
                  + _table(["experiment", "seeds", "test images", *cols], rows))


def definitions_html() -> str:
    items = "".join(f"<li>{e(d)}.</li>" for d in (*STABILITY.values(), *DEFINITIONS))
    return (f"<ul>{items}<li>Best val MSE: the lowest validation MSE of a run (the weights handed on); final val MSE: "
            "the last epoch's.</li><li>Semantic fidelity: the reconstruction snapped to the nearest palette colour, "
            "compared with the true classes (comparable across all experiments).</li></ul>")


def latent_cost_html(a: Analysis) -> str:
    """What the latent statistics and the probe cost, against the runs' training time (the budget: under 10%)."""
    t = a.table
    if not len(t) or "latent_seconds" not in t or not t["latent_seconds"].notna().any():
        return "<p>No latent statistics in eval.json (runs from before they were measured).</p>"
    share = (t["latent_seconds"] / t["train_time_s"]).dropna()
    return (f"<p class='muted'>Latent statistics and probe: median {t['latent_seconds'].median():.1f} s per run, "
            f"{share.median():.1%} of a run's training time (max {share.max():.1%}).</p>")


def steps_html(a: Analysis) -> str:
    """Each experiment against the one it extends (decision.steps), paired by seed, with a sentence per step."""
    from imginav_lib.analysis.ablation import step_sentence

    st = a.steps
    if st is None or not len(st):
        return "<p>No step comparisons: the phase has one experiment.</p>"
    level = a.verdict.level
    pct = lambda x: f"{x:+.2%}" if math.isfinite(x) else "n/a"  # noqa: E731
    rows = [[e(r.later), e(r.earlier), e(r.added), e(f"{r.n_pairs} paired"), e(pct(r.rel_change)),
             e(f"[{pct(r.ci_low)}, {pct(r.ci_high)}] at {r.level:.2%}" if math.isfinite(r.ci_low) else "n/a"),
             e(f"{r.p_value:.3g}" if math.isfinite(r.p_value) else "n/a"), e(r.test), e(r.change)] for r in st.itertuples()]  # fmt: skip
    source = "decision.steps in the params" if a.runs.decision.steps else "default: each experiment against the baseline"
    sentences = "".join(f"<li>{e(step_sentence(r, a.runs.decision, level))}</li>" for r in st.itertuples())
    return (f"<p>Best val MSE of each experiment relative to the one it extends ({e(source)}): per seed later/earlier − 1, "
            f"its mean and CI at the level after the correction (its tests are in the verdict's family); the same "
            "statistics and calls as the comparison with the baseline.</p>"
            + _table(["experiment", "against", "what it changes", "seeds", "change", "CI (level)", "p", "test", "call"], rows)
            + f"<ul>{sentences}</ul>")


def handoff_html(paths: dict, written: bool = True) -> str:
    if not written:
        return "<p>No hand-off written in this session (<code>write_handoff</code> is off; <code>imginav report</code> writes it).</p>"
    if not paths:
        return "<p>No hand-off written: no winner.</p>"
    rows = [[e(k), e(str(v))] for k, v in paths.items()]
    return "<p>Hand-off files written:</p>" + _table(["file", "path"], rows)
