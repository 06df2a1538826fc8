"""The decision: every criterion for every experiment against the baseline, the winner, and the verdict in words
(the paragraph and how sure we are)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from . import heads as H
from .params import Decision
from .stats import classify_change, compare, seeds_needed


@dataclass
class Verdict:
    winner: str | None
    status: str  # "decided", "provisional" or "no results"
    paragraph: str
    sureness: str  # "how sure we are", in words
    seeds_needed: int | None  # per experiment, for the undecided comparisons (None: decided or unknown)
    calls: dict[str, str]  # experiment -> helps / hurts / no gain / unclear / baseline / no results
    criteria: pd.DataFrame  # experiment, criterion, value, threshold, result
    comparisons: pd.DataFrame  # experiment, rel_change, ci_low, ci_high, p_value, effect_size, test, call, ...
    level: float = 0.95  # confidence level of the comparison intervals (1 - alpha, or 1 - alpha / m with Bonferroni)


def _pct(x: float) -> str:
    return f"{x * 100:+.1f}%" if math.isfinite(x) else "n/a"


def _head_words(heads: tuple[str, ...]) -> str:
    return H.words(heads) or "no auxiliary loss"


def _heads_criteria(heads: tuple[str, ...], agg, rules: Decision, add) -> bool:
    """One row per trained auxiliary head: does its gate column reach the minimum? True when all do."""
    ok_all = True
    for h in H.auxiliary():
        if h.name in heads:
            v, thr = agg(h.gate), h.minimum(rules)
            ok = math.isfinite(v) and v >= thr
            ok_all &= ok
            add(f"{h.gate_label} good", f"{v:.3f}" if math.isfinite(v) else "n/a", f"≥ {thr}", "pass" if ok else "fail")
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
        ci = f"{_pct(c['rel_change'])} (CI {_pct(c['ci_low'])} to {_pct(c['ci_high'])})"
        if rules.boundary_not_worse:
            ok = change != "worse"
            ok_all &= ok
            add(f"{name} not worse than baseline", ci, f"CI not entirely below 0 and past -{rules.similar_tolerance:.0%}",
                "fail" if change == "worse" else "unclear" if change == "unclear" else "pass")
        else:
            add(f"{name} vs baseline (informative)", ci, "", "info")
    return ok_all


def _call(change: str, heads_ok: bool, stable: bool, ci_low: float) -> str:
    if change == "worse" or not stable:
        return "hurts"
    if not heads_ok and change != "better":
        # Its heads miss the bar, so only a significantly better reconstruction (which comes first) could
        # make it win: undecided while its interval still reaches below 0, else no gain.
        return "unclear" if change == "unclear" and ci_low < 0 else "no gain"
    if change in ("better", "similar"):
        return "helps"
    return "unclear"


def _judge(e: str, x: pd.DataFrame, base: pd.DataFrame, heads: tuple[str, ...], rules: Decision, level: float, add) -> dict:
    """Every criterion of one experiment x (its finished runs by seed) against the baseline's; its comparison row."""
    metric, tol = "best_val_mse", rules.similar_tolerance
    seeds = sorted(set(x.index) | set(base.index))
    c = compare(x[metric].reindex(seeds).to_numpy(), base[metric].reindex(seeds).to_numpy(), level)
    change = classify_change(c["ci_low"], c["ci_high"], tol) if len(base) else "unclear"
    ci = f"{_pct(c['rel_change'])} (CI {_pct(c['ci_low'])} to {_pct(c['ci_high'])})"
    add("val MSE not worse than baseline", ci, f"CI not entirely above 0 and reaching past {_pct(tol)}",
        "fail" if change == "worse" else "unclear" if change == "unclear" else "pass")
    add(f"val MSE similar (within ±{tol:.0%}) or better", ci, f"CI upper ≤ {_pct(tol)}",
        "pass" if change in ("better", "similar") else "fail" if change == "worse" else "unclear")
    agg = lambda d: lambda col: float(d[col].mean()) if col in d and len(d) else math.nan  # noqa: E731
    heads_ok = _heads_criteria(heads, agg(x), rules, add)
    stable = _stability_criteria(agg(x), agg(base), rules, add)
    stable &= _boundary_criteria(x, base, heads, rules, level, add)
    return {"experiment": e, **c, "change": change, "call": _call(change, heads_ok, stable, c["ci_low"]),
            "mean": x[metric].mean(), "mean_baseline": base[metric].mean() if len(base) else math.nan}


def decide(table: pd.DataFrame, experiments: list[str], baseline: str, heads: dict, rules: Decision,
           changes: dict[str, str] | None = None) -> Verdict:  # fmt: skip
    """Evaluate every criterion for every experiment against the baseline; pick the winner and say why.

    table: run_table() rows (finished runs only). An auxiliary experiment "helps" when its val MSE is similar
    or better (interval of the relative change below +tolerance), its heads reach the minimum accuracies and
    its training is not less stable; it "hurts" when its val MSE is worse (interval above 0 and past the
    tolerance) or its training is less stable or slower. Reconstruction comes first: a significantly better val
    MSE helps even when the heads miss their bar. The winner is the helping experiment with the lowest mean val
    MSE (those significantly better first), else the baseline. Any "unclear" makes it provisional.
    changes: experiment -> what it changes against the baseline in words (steps.what_is_added), for the verdict
    of experiments that train the same heads as the baseline (e.g. a phase comparing architectures).
    """
    m = max(1, len(experiments) - 1) if rules.correction == "bonferroni" else 1
    level = 1 - rules.alpha / m
    by = {e: table[table["experiment"] == e].set_index("seed") for e in experiments}
    mean = {e: by[e]["best_val_mse"].mean() if len(by[e]) else math.nan for e in experiments}
    base = by[baseline]
    crit, cmp_rows, calls, needs, open_ = [], [], {}, [], []  # needs: undecided candidates; open_: MSE open, cannot win
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
            cmp_rows.append(row)
            if row["change"] == "unclear":
                n = seeds_needed(row["rel_change"], row["sd_rel"], rules.similar_tolerance, rules.alpha / m, rules.power)
                (needs if row["call"] == "unclear" else open_).append((e, n if n is not None else 3))

    comparisons = pd.DataFrame(cmp_rows, columns=["experiment", "n", "n_baseline", "n_pairs", "rel_change", "ci_low", "ci_high",
                                                  "p_value", "effect_size", "sd_rel", "test", "change", "call", "mean", "mean_baseline"])
    finished = [e for e in experiments if len(by[e])]
    if not finished:
        return Verdict(None, "no results", "No run of this phase has finished: there is nothing to compare yet.",
                       "Not at all: no finished runs.", None, calls, pd.DataFrame(crit), comparisons, level)
    helpers = [e for e in experiments if calls[e] == "helps"]
    better = [e for e in helpers if comparisons.set_index("experiment").loc[e, "change"] == "better"]
    if helpers:
        winner = min(better or helpers, key=lambda e: mean[e])
    elif len(base):
        winner = baseline
    else:
        winner = min(finished, key=lambda e: mean[e])
    unclear = [e for e in experiments if calls[e] == "unclear"]
    status = "provisional" if unclear or not len(base) else "decided"
    need = max(n for _, n in needs) if needs else None
    paragraph = _paragraph(comparisons, calls, experiments, baseline, heads, table, rules, winner, status, changes or {})
    sureness = _sureness(by, experiments, baseline, status, need, rules, unclear)
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


def _paragraph(comparisons, calls, experiments, baseline, heads, table, rules, winner, status, changes) -> str:
    """The verdict in plain words, one sentence per experiment and one for the winner."""
    parts = []
    cmp = comparisons.set_index("experiment")
    for e in experiments:
        if e not in cmp.index:
            if calls.get(e) == "no results":
                parts.append(f"{e} has no finished run.")
            continue
        c = cmp.loc[e]
        ci = f"CI {_pct(c.ci_low)} to {_pct(c.ci_high)}" if math.isfinite(c.ci_low) else "no interval: 1 seed"
        p = f", p = {c.p_value:.2g}" if math.isfinite(c.p_value) else ""
        what = {
            "better": f"{e} reconstructs better than {baseline}: val MSE {_pct(c.rel_change)} ({ci}{p})",
            "similar": f"{e} matches {baseline} within {abs(c.rel_change) * 100:.1f}% ({ci})",
            "worse": f"{e} reconstructs worse than {baseline}: val MSE {_pct(c.rel_change)} ({ci}{p})",
            "unclear": f"{e} differs from {baseline} by {_pct(c.rel_change)} in val MSE, but the interval ({ci}) is too "
            f"wide to call it similar (±{rules.similar_tolerance:.0%}) or worse",
        }[c.change]
        if heads.get(e, ()) == heads.get(baseline, ()):  # same losses: the experiment varies something else
            parts.append(f"{what}: {_same_heads_call(calls[e], c.change, c.change == 'better', changes.get(e, 'changes its settings'))}.")
            continue
        t = table[table["experiment"] == e]
        trained = [h for h in H.auxiliary() if h.name in heads.get(e, ())]
        aux = [h.prose.format(t[h.gate].mean()) for h in trained]
        if aux:
            what += "; it " + " and ".join(aux)
        words = _head_words(heads.get(e, ()))
        weak = [h.gate_label for h in trained if not t[h.gate].mean() >= h.minimum(rules)]
        call = {"helps": f"auxiliary {words} does not hurt" + (" and helps" if c.change == "better" else "")
                + (f" (its {' and '.join(weak)} is below the bar, but reconstruction comes first)" if weak else ""),
                "hurts": f"auxiliary {words} hurts",
                "no gain": f"its {words} head is below the bar ("
                + ", ".join(f"{h.gate_label} ≥ {h.minimum(rules)}" for h in trained) + "), so it cannot win",
                "unclear": "undecided" + (f" (its {' and '.join(weak)} is below the bar: only a significantly better "
                                          "val MSE would make it win)" if weak else "")}[calls[e]]
        if calls[e] == "hurts" and c.change != "worse":
            call += " (training is less stable or slower: see the criteria)"
        parts.append(f"{what}: {call}.")
    any_aux = any(heads.get(e) for e in experiments)
    simplify = " (simplify to RGB-only)" if winner == baseline and not heads.get(baseline) and any_aux else ""
    parts.append(f"Winner{' (provisional)' if status != 'decided' else ''}: {winner}{simplify}.")
    return " ".join(parts)


def _sureness(by, experiments, baseline, status, need, rules, unclear) -> str:
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
        "needs more seeds (the observed change sits on the tolerance: more than 200 seeds would be needed; treat them as equal)" \
        if need else "needs more seeds (≥ 3 per experiment)"
    return f"Not sure yet: the intervals of {', '.join(unclear) or baseline} are too wide to decide; {more}. {s}"
