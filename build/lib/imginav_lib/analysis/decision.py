"""The decision: every criterion for every experiment against the baseline, the winner (head to head among the
candidates), and the verdict in words (the paragraph and how sure we are).

Calls are monotone in the evidence: an experiment whose interval moves towards "better" at both ends, or whose
head metric rises, never gets a worse call. "Decided" needs the evidence for it: every experiment finished, every
comparison paired over at least 2 seeds, and every call certain.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from imginav_lib import heads as H
from imginav_lib.text import pct
from imginav_lib.config.schema import Decision
from imginav_lib.analysis.stats import classify_change, compare, seeds_needed

COLUMNS = ["experiment", "versus", "n", "n_baseline", "n_pairs", "rel_change", "ci_low", "ci_high", "p_value", "effect_size",
           "sd_rel", "p_improve", "wins", "test", "change", "call", "mean", "mean_baseline"]
FEW_SCORED = 50  # an accuracy on fewer validation images than this carries a caveat (its SE near 0.8 is > 0.05)


@dataclass
class Verdict:
    winner: str | None
    status: str  # "decided", "provisional" or "no results"
    paragraph: str
    sureness: str  # "how sure we are", in words
    seeds_needed: int | None  # per experiment, for the undecided comparisons (None: decided or unknown)
    calls: dict[str, str]  # experiment -> helps / hurts / no gain / unclear / baseline / no results
    criteria: pd.DataFrame  # experiment, criterion, value, threshold, result (pass / fail / unclear / n/a / info)
    # One row per comparison: each experiment versus the baseline, then the winner candidates head to head
    # (experiment = the one with the lower mean, versus = the other). rel_change is experiment / versus - 1.
    comparisons: pd.DataFrame
    level: float = 0.95  # confidence level of the comparison intervals (1 - alpha, or 1 - alpha / m with Bonferroni)
    more_seeds: str = ""  # how to add the seeds asked for: the command, the runs and GPU-hours ("" when none are)


def _head_words(heads: tuple[str, ...]) -> str:
    return H.words(heads) or "no auxiliary loss"


def _scored(h: H.Head, x: pd.DataFrame) -> float:
    """Validation images the head's gate is scored on, per run (mean over seeds); NaN when not counted."""
    col = h.scored_on[1] if h.scored_on else "n_val"
    return float(x[col].mean()) if col in x and x[col].notna().any() else math.nan


def _heads_criteria(heads: tuple[str, ...], x: pd.DataFrame, agg, rules: Decision, add) -> bool:
    """One row per trained auxiliary head: does its gate column reach the minimum? True when none misses it.

    A gate that cannot exist for this data (no image with the head's target, or never logged) is "n/a" with its
    reason: it neither passes nor fails, so it neither helps nor hurts the call.
    """
    ok_all = True
    for h in H.auxiliary():
        if h.name not in heads:
            continue
        v, thr = agg(h.gate), h.minimum(rules)
        if not math.isfinite(v):
            n = _scored(h, x)
            why = f"n/a: no validation image has {h.target}" if h.scored_on and n == 0 else "n/a: not logged by any run"
            add(f"{h.gate_label} good", why, f"≥ {thr}", "n/a")
            continue
        ok_all &= v >= thr
        add(f"{h.gate_label} good", f"{v:.3f}", f"≥ {thr}", "pass" if v >= thr else "fail")
    return ok_all


def _stability_criteria(agg, agg_base, rules: Decision, add) -> bool:
    """Spikes, late wobble and convergence against the baseline's. True when none is worse (or they only inform)."""
    ok_all = True
    for col, name, thr_fn, fmt in (
        ("spikes", "loss spikes per run", lambda b: b + rules.max_extra_spikes, "{:.1f}"),
        ("late_wobble", "late val wobble", lambda b: b * rules.stability_ratio + 1e-3, "{:.2%}"),
        ("epochs_to_10pct", "epochs to within 10% of best", lambda b: b + rules.max_extra_epochs, "{:.1f}"),
    ):
        v, b = agg(col), agg_base(col)
        if not (math.isfinite(v) and math.isfinite(b)):
            add(f"{name} not worse", "n/a", "", "n/a")
            continue
        ok = v <= thr_fn(b)
        if rules.stability_not_worse:
            ok_all &= ok
        add(f"{name} not worse", fmt.format(v), f"≤ {fmt.format(thr_fn(b))} (baseline {fmt.format(b)})",
            ("pass" if ok else "fail") if rules.stability_not_worse else "info")
    return ok_all


def _boundary_criteria(x: pd.DataFrame, base: pd.DataFrame, heads: tuple[str, ...], rules: Decision, level: float, add) -> bool:
    """Boundary F of the snapped reconstruction (and of the seg head, where both train one) against the baseline's:
    an informative row, or pass/fail when decision.boundary_not_worse asks for it. True unless it is worse then."""
    ok_all = True
    cols = [("val_sem_bf", "semantic boundary F")] + ([("val_seg_bf", "seg head boundary F")] if "seg" in heads else [])
    for col, name in cols:
        if col not in x or col not in base or not x[col].notna().any() or not base[col].notna().any():
            continue
        seeds = sorted(set(x.index) | set(base.index))
        c = compare(x[col].reindex(seeds).to_numpy(), base[col].reindex(seeds).to_numpy(), level)
        # Higher is better: "worse" is the interval of the change entirely below 0 and past the tolerance.
        change = classify_change(-c["ci_high"], -c["ci_low"], rules.similar_tolerance)
        ci = f"{pct(c['rel_change'])} (CI {pct(c['ci_low'])} to {pct(c['ci_high'])})"
        if rules.boundary_not_worse:
            ok = change != "worse"
            ok_all &= ok
            add(f"{name} not worse than baseline", ci, f"CI not entirely below 0 and past -{rules.similar_tolerance:.0%}",
                "fail" if change == "worse" else "unclear" if change == "unclear" else "pass")
        else:
            add(f"{name} vs baseline (informative)", ci, "", "info")
    return ok_all


def call_for(change: str, ci_low: float, heads_ok: bool, stable: bool, tol: float) -> str:
    """The call from the val MSE interval's class (stats.classify_change), its lower end, the heads and stability.

    Reconstruction comes first: significantly better helps even with weak heads (the verdict adds a caveat).
    With weak heads nothing else can win, so the call is "no gain" once any gain is within the tolerance
    (ci_low >= -tol), and "unclear" while the interval still reaches past the tolerance on the good side.
    """
    if change == "worse" or not stable:
        return "hurts"
    if change == "better":
        return "helps"
    if heads_ok:
        return "helps" if change == "similar" else "unclear"
    return "no gain" if math.isfinite(ci_low) and ci_low >= -tol else "unclear"


def _seeds_for(row: dict, heads_ok: bool, rules: Decision, alpha: float) -> int | None:
    """Seeds per experiment that would settle this comparison's open question (None: nothing open)."""
    m, tol = row["rel_change"], rules.similar_tolerance
    if row["call"] == "unclear" and not heads_ok:
        margin = max(-m, m + tol)  # weak heads: significantly better (upper end < 0), or any gain within -tol
    elif row["change"] == "unclear" and row["call"] in ("unclear", "no gain"):
        margin = None  # similar (upper end <= tol) or worse (lower end > 0)
    else:
        return None
    n = seeds_needed(m, row["sd_rel"], tol, alpha, rules.power, margin=margin)
    return n if n is not None else 3


def _judge(e: str, x: pd.DataFrame, base: pd.DataFrame, heads: tuple[str, ...], rules: Decision, level: float, add) -> dict:
    """Every criterion of one experiment x (its finished runs by seed) against the baseline's; its comparison row."""
    metric, tol = "best_val_mse", rules.similar_tolerance
    seeds = sorted(set(x.index) | set(base.index))
    c = compare(x[metric].reindex(seeds).to_numpy(), base[metric].reindex(seeds).to_numpy(), level)
    change = classify_change(c["ci_low"], c["ci_high"], tol) if len(base) else "unclear"
    ci = f"{pct(c['rel_change'])} (CI {pct(c['ci_low'])} to {pct(c['ci_high'])})"
    add("val MSE not worse than baseline", ci, f"CI not entirely above 0 and reaching past {pct(tol)}",
        "fail" if change == "worse" else "unclear" if change == "unclear" else "pass")
    add(f"val MSE similar (within ±{tol:.0%}) or better", ci, f"CI upper ≤ {pct(tol)}",
        "pass" if change in ("better", "similar") else "fail" if change == "worse" else "unclear")
    agg = lambda d: lambda col: float(d[col].mean()) if col in d and len(d) else math.nan  # noqa: E731
    heads_ok = _heads_criteria(heads, x, agg(x), rules, add)
    stable = _stability_criteria(agg(x), agg(base), rules, add)
    stable &= _boundary_criteria(x, base, heads, rules, level, add)
    return {"experiment": e, **c, "change": change, "call": call_for(change, c["ci_low"], heads_ok, stable, tol),
            "mean": x[metric].mean(), "mean_baseline": base[metric].mean() if len(base) else math.nan, "heads_ok": heads_ok}


def preference_order(candidates: list[str], experiments: list[str], heads: dict, rules: Decision) -> list[str]:
    """decision.preference first (in its order), then the fewest auxiliary losses, then the params' order."""
    declared = rules.preference or []
    key = lambda e: (declared.index(e) if e in declared else len(declared), len(heads.get(e, ())), experiments.index(e))  # noqa: E731
    return sorted(candidates, key=key)


def head_to_head(helpers: list[str], by: dict, mean: dict, experiments: list[str], heads: dict, rules: Decision,
                 level: float, alpha: float) -> tuple[str | None, list[dict], list[str], int | None]:  # fmt: skip
    """The winner among the helping experiments: the one with the lowest mean val MSE against each other, paired by
    seed (stats.compare). Those it does not beat significantly are tied with it, and the preference order picks.

    Returns (winner, comparison rows, sentences, seeds needed to tell an indistinguishable pair apart).
    """
    if not helpers:
        return None, [], [], None
    tol, metric = rules.similar_tolerance, "best_val_mse"
    lead = min(helpers, key=lambda e: (mean[e], experiments.index(e)))
    rows, tied = [], [lead]
    for e in [h for h in helpers if h != lead]:
        seeds = sorted(set(by[lead].index) | set(by[e].index))
        c = compare(by[lead][metric].reindex(seeds).to_numpy(), by[e][metric].reindex(seeds).to_numpy(), level)
        lo, hi = c["ci_low"], c["ci_high"]
        change = "better" if hi < 0 else "equivalent" if (lo >= -tol and hi <= tol) else "indistinguishable"
        rows.append({"experiment": lead, "versus": e, **c, "change": change, "call": "head to head",
                     "mean": mean[lead], "mean_baseline": mean[e]})
        if change != "better":
            tied.append(e)
    winner = preference_order(tied, experiments, heads, rules)[0]
    why = "decision.preference" if rules.preference else "fewest auxiliary losses"
    sentences, need = [], []
    for r in rows:
        if r["change"] == "better":
            sentences.append(f"{lead} beats {r['versus']} head to head: val MSE {pct(r['rel_change'])} "
                             f"(CI {pct(r['ci_low'])} to {pct(r['ci_high'])}, paired by seed).")
            continue
        a, b = sorted((lead, r["versus"]), key=experiments.index)
        ci = f"interval {pct(r['ci_low'])} to {pct(r['ci_high'])} of {lead}'s val MSE against {r['versus']}'s"
        if not math.isfinite(r["ci_low"]):
            ci = f"no interval: {r['n_pairs']} paired seed"
        if r["change"] == "equivalent":
            sentences.append(f"{a} and {b} are equivalent ({ci}, within ±{tol:.0%}): {winner} is picked by {why}.")
        else:
            sentences.append(f"{a} and {b} are indistinguishable ({ci}): {winner} is picked by {why}, provisionally.")
            m = r["rel_change"]
            n = seeds_needed(m, r["sd_rel"], tol, alpha, rules.power, margin=max(abs(m), tol - abs(m)) if math.isfinite(m) else None)
            need.append(n if n is not None else 3)
    return winner, rows, sentences, max(need) if need else None


def _gaps(experiments: list[str], by: dict, comparisons: pd.DataFrame) -> list[str]:
    """What is missing for a decided verdict: finished runs of every experiment, 2 paired seeds per comparison."""
    gaps = [f"{e} has no finished run" for e in experiments if not len(by[e])]
    for r in comparisons.itertuples():
        if r.n and r.n_baseline and r.n_pairs < 2:
            gaps.append(f"{r.experiment} against {r.versus} rests on {r.n_pairs} paired seed{'s' if r.n_pairs != 1 else ''}")
    return gaps


def decide(table: pd.DataFrame, experiments: list[str], baseline: str, heads: dict, rules: Decision,
           changes: dict[str, str] | None = None) -> Verdict:  # fmt: skip
    """Evaluate every criterion for every experiment against the baseline; pick the winner and say why.

    table: run_table() rows (finished runs only). An auxiliary experiment "helps" when its val MSE is similar
    or better (interval of the relative change below +tolerance), its heads reach the minimum accuracies and
    its training is not less stable; it "hurts" when its val MSE is worse (interval above 0 and past the
    tolerance) or its training is less stable or slower (see call_for for weak heads). The helping experiments
    meet head to head; without a helper the baseline wins. Decided only with every experiment finished, every
    comparison paired over >= 2 seeds and every call certain; provisional otherwise.
    changes: experiment -> what it changes against the baseline in words (steps.what_is_added), for the verdict
    of experiments that train the same heads as the baseline (e.g. a phase comparing architectures).
    """
    m = max(1, len(experiments) - 1) if rules.correction == "bonferroni" else 1
    level = 1 - rules.alpha / m
    by = {e: table[table["experiment"] == e].set_index("seed") for e in experiments}
    mean = {e: by[e]["best_val_mse"].mean() if len(by[e]) else math.nan for e in experiments}
    base = by[baseline]
    crit, rows, calls, needs, open_ = [], [], {}, [], []  # needs: undecided candidates; open_: MSE open, cannot win
    for e in experiments:
        def add(criterion, value, threshold, result, e=e):
            crit.append({"experiment": e, "criterion": criterion, "value": value, "threshold": threshold, "result": result})

        if len(by[e]) == 0:
            calls[e] = "no results"
            add("finished runs", "0", "≥ 1", "fail")
        elif not len(base):  # nothing to compare with: the ranking below is by mean only
            calls[e] = "unclear"
            add("baseline has finished runs", "0", "≥ 1", "unclear")
        elif e == baseline:
            calls[e] = "baseline"
            add(f"val MSE (baseline, {len(base)} seeds)", f"{mean[e]:.4g}", "", "baseline")
        else:
            row = _judge(e, by[e], base, heads.get(e, ()), rules, level, add)
            calls[e] = row["call"]
            rows.append({**row, "versus": baseline})
            n = _seeds_for(row, row.pop("heads_ok"), rules, rules.alpha / m)
            if n is not None:
                (needs if row["call"] == "unclear" else open_).append((e, n))

    finished = [e for e in experiments if len(by[e])]
    if not finished:
        return Verdict(None, "no results", "No run of this phase has finished: there is nothing to compare yet.",
                       "Not at all: no finished runs.", None, calls, pd.DataFrame(crit), pd.DataFrame(columns=COLUMNS), level)
    helpers = [e for e in experiments if calls[e] == "helps"]
    winner, h2h, ties, tie_need = head_to_head(helpers, by, mean, experiments, heads, rules, level, rules.alpha / m)
    comparisons = pd.DataFrame([{k: r.get(k) for k in COLUMNS} for r in rows + h2h], columns=COLUMNS)
    if winner is None:
        winner = baseline if len(base) else min(finished, key=lambda e: mean[e])
    unclear = [e for e in experiments if calls[e] == "unclear"]
    tied = any(r["change"] == "indistinguishable" for r in h2h)
    gaps = _gaps(experiments, by, comparisons) + ([] if len(base) >= 2 or not len(base) else [f"the baseline {baseline} has 1 finished seed"])
    status = "provisional" if unclear or tied or gaps or not len(base) else "decided"
    need = max([n for _, n in needs] + ([tie_need] if tie_need else []), default=None)
    paragraph = _paragraph(comparisons, calls, experiments, baseline, heads, table, rules, winner, status, ties,
                           changes or {})
    sureness = _sureness(by, experiments, baseline, status, need, rules, unclear, gaps, tied)
    if m > 1:
        sureness += f" Bonferroni: each of the {m} comparisons uses a {level:.2%} interval (alpha {rules.alpha} / {m})."
    if not len(base):
        paragraph = (f"The baseline {baseline} has no finished run, so no experiment can be compared with it; "
                     f"{winner} has the lowest mean best val MSE ({mean[winner]:.4g}). " + paragraph)
        sureness = f"Not sure: without a finished run of the baseline {baseline} there is no comparison; rerun it."
    if open_:
        sureness += " " + " ".join(
            f"Whether {e} hurts reconstruction stays open (its val MSE interval is too wide; ≈{n if n <= 200 else '> 200'} "
            f"seeds per experiment would tell), but it cannot win with its heads below the bar." for e, n in open_)
    return Verdict(winner, status, paragraph, sureness, need, calls, pd.DataFrame(crit), comparisons, level)


def _same_heads_call(call: str, change: str, better: bool, what: str) -> str:
    """The call of an experiment that trains the same heads as the baseline: about what it changes, not a loss."""
    return {"helps": f"it {what}, which does not hurt" + (" and helps" if better else ""),
            "hurts": f"it {what}, which hurts" + ("" if change == "worse" else " (training is less stable or slower: see the criteria)"),
            "no gain": f"it {what}, which gives no gain", "unclear": f"it {what}; undecided"}[call]  # fmt: skip


def _aux_words(e: str, t: pd.DataFrame, heads: dict, rules: Decision) -> tuple[list[str], list[str]]:
    """What the trained heads do, in words (with the images an accuracy rests on), and the gates below the bar."""
    aux, weak = [], []
    for h in H.auxiliary():
        if h.name not in heads.get(e, ()):
            continue
        v, n = t[h.gate].mean() if h.gate in t else math.nan, _scored(h, t)
        if not math.isfinite(v):
            aux.append(f"has no {h.gate_label} (no validation image has {h.target})" if h.scored_on and n == 0
                       else f"has no {h.gate_label} logged")
            continue
        words = h.prose.format(v)
        if h.scored_on and math.isfinite(n):
            words += f" on {n:.0f} validation images with {h.target}" + (" (few: a rough figure)" if n < FEW_SCORED else "")
        aux.append(words)
        if v < h.minimum(rules):
            weak.append(h.gate_label)
    return aux, weak


def _paragraph(comparisons, calls, experiments, baseline, heads, table, rules, winner, status, ties, changes) -> str:
    """The verdict in plain words, one sentence per experiment, the head-to-head sentences and one for the winner."""
    parts = []
    cmp = comparisons[comparisons["versus"] == baseline].set_index("experiment")
    for e in experiments:
        if e not in cmp.index:
            if calls.get(e) == "no results":
                parts.append(f"{e} has no finished run.")
            continue
        c = cmp.loc[e]
        ci = f"CI {pct(c.ci_low)} to {pct(c.ci_high)}" if math.isfinite(c.ci_low) else "no interval: 1 seed"
        p = f", p = {c.p_value:.2g}" if math.isfinite(c.p_value) else ""
        what = {
            "better": f"{e} reconstructs better than {baseline}: val MSE {pct(c.rel_change)} ({ci}{p})",
            "similar": f"{e} matches {baseline} within {abs(c.rel_change) * 100:.1f}% ({ci})",
            "worse": f"{e} reconstructs worse than {baseline}: val MSE {pct(c.rel_change)} ({ci}{p})",
            "unclear": f"{e} differs from {baseline} by {pct(c.rel_change)} in val MSE, but the interval ({ci}) is too "
            f"wide to call it similar (±{rules.similar_tolerance:.0%}) or worse",
        }[c.change]
        if c.n_pairs >= 1:
            what += f"; it beats {baseline} in {c.wins} of {c.n_pairs} seeds"
        if heads.get(e, ()) == heads.get(baseline, ()):  # same losses: the experiment varies something else
            parts.append(f"{what}: {_same_heads_call(calls[e], c.change, c.change == 'better', changes.get(e, 'changes its settings'))}.")
            continue
        aux, weak = _aux_words(e, table[table["experiment"] == e], heads, rules)
        if aux:
            what += "; it " + " and ".join(aux)
        words = _head_words(heads.get(e, ()))
        call = {"helps": f"auxiliary {words} does not hurt" + (" and helps" if c.change == "better" else "")
                + (f" (its {' and '.join(weak)} is below the bar, but reconstruction comes first)" if weak else ""),
                "hurts": f"auxiliary {words} hurts",
                "no gain": f"its {' and '.join(weak) or words} is below the bar and any gain in val MSE is within "
                f"±{rules.similar_tolerance:.0%}, so it cannot win",
                "unclear": "undecided" + (f" (its {' and '.join(weak)} is below the bar: only a significantly better "
                                          "val MSE would make it win)" if weak else "")}[calls[e]]
        if calls[e] == "hurts" and c.change != "worse":
            call += " (training is less stable or slower: see the criteria)"
        parts.append(f"{what}: {call}.")
    parts += ties
    any_aux = any(heads.get(e) for e in experiments)
    simplify = " (simplify to RGB-only)" if winner == baseline and not heads.get(baseline) and any_aux else ""
    parts.append(f"Winner{' (provisional)' if status != 'decided' else ''}: {winner}{simplify}.")
    return " ".join(parts)


def _sureness(by, experiments, baseline, status, need, rules, unclear, gaps, tied) -> str:
    ns = {e: len(by[e]) for e in experiments if len(by[e])}
    lo, hi = min(ns.values()), max(ns.values())
    seeds = f"{lo}" if lo == hi else f"{lo} to {hi}"
    level = f"{1 - rules.alpha:.0%}"
    if hi < 2:
        return (f"Not sure: each experiment has {seeds} finished seed, so no confidence interval exists and the "
                f"ranking is a single draw that may be seed noise (gaps of 8-10% from one seed each have been noise "
                f"before). Confidence intervals need at least 2 and usefully 3 or more seeds per experiment.")
    s = f"{seeds} finished seeds per experiment; {level} confidence intervals (t-interval across seeds, paired by seed where the seeds match)."
    if lo < 3:
        s += " With 2 seeds a t-interval is very wide (t = 12.7); 3 or more seeds are needed for a useful interval."
    if status == "decided":
        return f"Sure enough to pick the winner: no other experiment can still beat it at this level. {s}"
    more = f"needs more seeds (≈{need} per experiment)" if need and need <= 200 else \
        "needs more seeds (the observed change sits on a boundary: more than 200 seeds would be needed; treat them as equal)" \
        if need else "needs more seeds (≥ 3 per experiment)"
    why = []
    if unclear:
        why.append(f"the intervals of {', '.join(unclear)} are too wide to decide")
    if tied:
        why.append("the best candidates cannot be told apart head to head")
    why += gaps
    return f"Not sure yet: {'; '.join(why)}; {more}. {s}"
