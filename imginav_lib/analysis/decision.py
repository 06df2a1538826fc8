"""The decision: every configuration (the baseline included) a candidate, the researchers' rules applied in order
with the evidence for each, one correction over the family of comparisons, and the verdict in words.

The rules, in order (docs/analysis.md):
1. The primary metric (`primary_metric`: the held-out test MSE where every run has one, else the best val MSE)
   ranks the candidates; the leader has the lowest mean over the seeds every finished candidate shares. A candidate
   significantly worse than the leader (two-sided interval clear of 0) is out.
2. Among the leader and those not out: an auxiliary loss helps only when its MSE against the baseline is similar
   (two one-sided tests on the (1 - 2 alpha) interval inside ±tolerance) or better (two-sided interval below 0),
   its heads reach their minimum and its training is more stable (paired interval across seeds); such a candidate
   is picked (by the preference order among several).
3. Otherwise `decision.preference` picks (default: fewest auxiliary losses, then the params' order).
Stability never overturns a significantly better primary metric: a leader every other candidate is significantly
worse than wins by rule 1. Every test of the family is corrected together (Holm by default) at the alpha of this
look of the add-seeds design (stats.look_alpha): decided only at a planned look; what the last look leaves open
stays provisional (rule 3 picks).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from imginav_lib import heads as H
from imginav_lib.text import pct
from imginav_lib.config.schema import Decision
from imginav_lib.analysis.stats import (STABILITY_COLUMNS, classify_change, compare, compare_paired_difference, holm,
                                        look_alpha, look_reached, seeds_needed)

COLUMNS = ["experiment", "versus", "n", "n_baseline", "n_pairs", "rel_change", "ci_low", "ci_high", "p_value", "effect_size",
           "sd_rel", "p_improve", "wins", "test", "change", "call", "mean", "mean_baseline", "eq_low", "eq_high",
           "p_equivalence", "p_adjusted", "p_equivalence_adjusted", "level", "eq_level"]
CRITERIA = ["experiment", "criterion", "value", "threshold", "result", "test", "level"]
FEW_SCORED = 50  # an accuracy on fewer validation images than this carries a caveat (its SE near 0.8 is > 0.05)
STABILITY_NAMES = {"spikes": ("MSE spikes per run", "{:.1f}"), "late_wobble": ("late roughness", "{:.2%}"),
                   "epochs_to_target": ("epochs to within 10% of the baseline's best", "{:.1f}")}
SPENDING = {"pocock": "Pocock-type", "obrien_fleming": "O'Brien-Fleming-type"}


@dataclass
class Verdict:
    winner: str | None
    status: str  # "decided", "provisional" or "no results"
    paragraph: str
    sureness: str  # "how sure we are", in words
    seeds_needed: int | None  # per experiment, for the undecided comparisons (None: decided or unknown)
    calls: dict[str, str]  # experiment -> helps / hurts / no gain / unclear / baseline / no results
    criteria: pd.DataFrame  # CRITERIA: experiment, criterion, value, threshold, result, test, level (after correction)
    # One row per comparison: each experiment versus the baseline, then every other candidate versus the leader
    # (experiment = the other, versus = the leader; call "head to head"). rel_change is experiment / versus - 1.
    comparisons: pd.DataFrame
    level: float = 0.95  # 1 - the family alpha of this look (before the correction within the family)
    more_seeds: str = ""  # how to add the seeds asked for: the command, the runs and GPU-hours ("" when none are)
    rule: str = ""  # the rule that made the pick, in words
    design: str = ""  # the sequential design and the correction, in words
    primary: str = "best_val_mse"  # the column the candidates are ranked by (primary_metric)
    family: pd.DataFrame = field(default_factory=pd.DataFrame)  # hypothesis, kind, p, p_adjusted, level, rejected
    steps: dict = field(default_factory=dict)  # (earlier, later) -> the step's tests after the correction
    headline: str = ""  # the answer in one sentence: winner, status, the primary metric's change and its interval
    lines: list[str] = field(default_factory=list)  # at most 3 short sentences: why, the heads, what would settle it
    chance: dict = field(default_factory=dict)  # experiment -> its classification head at chance level, in words


def primary_metric(table: pd.DataFrame) -> str:
    """"test_mse" when that column exists and is finite in every row (every finished run evaluated its best
    checkpoint on the held-out test split), else "best_val_mse"."""
    if len(table) and "test_mse" in table and np.isfinite(pd.to_numeric(table["test_mse"], errors="coerce")).all():
        return "test_mse"
    return "best_val_mse"


def metric_words(metric: str) -> str:
    return "test MSE" if metric == "test_mse" else "val MSE"


def _head_words(heads: tuple[str, ...]) -> str:
    return H.words(heads) or "no auxiliary loss"


def _scored(h: H.Head, x: pd.DataFrame) -> float:
    """Validation images the head's gate is scored on, per run (mean over seeds); NaN when not counted."""
    col = h.scored_on[1] if h.scored_on else "n_val"
    return float(x[col].mean()) if col in x and x[col].notna().any() else math.nan


def _mean(x: pd.DataFrame, col: str) -> float:
    return float(x[col].mean()) if col in x and len(x) and x[col].notna().any() else math.nan


class _Family:
    """The hypotheses that feed one verdict, corrected together (decision.correction) at the look's alpha."""

    def __init__(self):
        self.rows: list[dict] = []

    def add(self, hypothesis: str, kind: str, p: float) -> int:
        self.rows.append({"hypothesis": hypothesis, "kind": kind, "p": p})
        return len(self.rows) - 1

    def correct(self, alpha: float, method: str) -> None:
        ps = [r["p"] for r in self.rows]
        m = sum(math.isfinite(p) for p in ps)
        if method == "holm":
            adj, levels = holm(ps, alpha)
        elif method == "bonferroni":
            adj = [min(1.0, m * p) if math.isfinite(p) else math.nan for p in ps]
            levels = [alpha / max(1, m)] * len(ps)
        elif method == "none":
            adj, levels = list(ps), [alpha] * len(ps)
        else:
            raise ValueError(f"invalid correction: {method!r}")
        for r, a, lv in zip(self.rows, adj, levels):
            # An untested hypothesis (no interval) is shown at the family's strictest level.
            r.update(p_adjusted=a, alpha=lv if math.isfinite(lv) else alpha / max(1, m), rejected=bool(a <= alpha))
        self.m = m

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=["hypothesis", "kind", "p", "p_adjusted", "alpha", "rejected"])


@dataclass
class _Test:
    """One comparison of the primary metric (x against versus) with its two hypotheses in the family."""

    x: str
    versus: str
    c: dict
    i_diff: int
    i_eq: int

    def row(self, fam: _Family, tol: float) -> dict:
        d, q = fam.rows[self.i_diff], fam.rows[self.i_eq]
        lo, hi = self.c.interval(1 - d["alpha"])
        eq_lo, eq_hi = self.c.interval(1 - 2 * q["alpha"])
        tested = math.isfinite(self.c["p_value"])
        change = classify_change(lo, hi, tol, eq_lo, eq_hi, differs=d["rejected"], equivalent=q["rejected"]) if tested else "unclear"
        return {**{k: v for k, v in self.c.items() if not k.startswith("_")}, "ci_low": lo, "ci_high": hi,
                "eq_low": eq_lo, "eq_high": eq_hi, "p_equivalence": q["p"], "p_adjusted": d["p_adjusted"],
                "p_equivalence_adjusted": q["p_adjusted"], "level": 1 - d["alpha"], "eq_level": 1 - 2 * q["alpha"],
                "change": change}


def _compare(fam: _Family, by: dict, x: str, versus: str, metric: str, tol: float) -> _Test:
    seeds = sorted(set(by[x].index) | set(by[versus].index))
    c = compare(by[x][metric].reindex(seeds).to_numpy(), by[versus][metric].reindex(seeds).to_numpy())
    name = f"{metric_words(metric)} of {x} against {versus}"
    return _Test(x, versus, c, fam.add(f"{name}: differs", "difference (two-sided t)", c["p_value"]),
                 fam.add(f"{name}: equivalent within ±{tol:.0%}", "equivalence (TOST)", c.equivalence_p(tol)))


def _leader(by: dict, finished: list[str], metric: str, experiments: list[str]) -> str:
    """The candidate with the lowest mean over the seeds every finished candidate shares (the paired mean); the
    plain mean where they share none."""
    common = sorted(set.intersection(*(set(by[e].index) for e in finished)))
    key = (lambda e: float(by[e].loc[common, metric].mean())) if common else (lambda e: float(by[e][metric].mean()))
    return min(finished, key=lambda e: (key(e), experiments.index(e)))


def _stability_tests(fam: _Family, x: pd.DataFrame, base: pd.DataFrame, e: str) -> dict:
    """col -> (paired difference x - baseline, family index) for each stability number both have per seed."""
    out = {}
    seeds = sorted(set(x.index) | set(base.index))
    for col in STABILITY_COLUMNS:
        if col not in x or col not in base:
            continue
        d = compare_paired_difference(x[col].reindex(seeds).to_numpy(), base[col].reindex(seeds).to_numpy())
        if d["n_pairs"] == 0 or not math.isfinite(d["diff"]):
            continue
        out[col] = (d, fam.add(f"{STABILITY_NAMES[col][0]} of {e} against the baseline: differs", "difference (paired t)",
                               d["p_value"]))
    return out


def stability_call(tests: dict, fam: _Family) -> tuple[str, dict]:
    """("more stable" | "less stable" | "unclear" | "n/a", col -> its call) from the corrected paired tests: less
    stable when any number is significantly higher, more stable when one is significantly lower and none higher."""
    per = {}
    for col, (d, i) in tests.items():
        rej = fam.rows[i]["rejected"] and math.isfinite(fam.rows[i]["p"])
        per[col] = ("less stable" if d["diff"] > 0 else "more stable") if rej else "unclear"
    if not per:
        return "n/a", per
    if "less stable" in per.values():
        return "less stable", per
    return ("more stable" if "more stable" in per.values() else "unclear"), per


def call_for(change: str, heads_ok: bool, stability: str, stability_decides: bool = True) -> str:
    """The call against the baseline from the primary metric's class, the heads and the stability call.

    worse (two-sided interval above 0): hurts. better (below 0): helps, whatever the heads and the stability
    (reconstruction comes first). Less stable with paired evidence: hurts. Similar (equivalent within ±tolerance):
    helps only with good heads and more stable training, else no gain. Anything else: unclear.
    """
    if change == "worse":
        return "hurts"
    if change == "better":
        return "helps"
    if stability_decides and stability == "less stable":
        return "hurts"
    if change == "similar":
        return "helps" if heads_ok and (stability == "more stable" or not stability_decides) else "no gain"
    return "unclear"


def _heads_criteria(heads: tuple[str, ...], x: pd.DataFrame, rules: Decision, add) -> bool:
    """One row per trained auxiliary head: does its gate column reach the minimum? True when none misses it.

    Each gate is shown beside what a trivial head scores: the balanced accuracy beside the majority-class rate,
    the seg mIoU beside the free baseline (the reconstruction snapped to the palette). A gate that cannot exist
    for this data is "n/a" with its reason: it neither helps nor hurts the call.
    """
    ok_all = True
    for h in H.auxiliary():
        if h.name not in heads:
            continue
        v, thr = _mean(x, h.gate), h.minimum(rules)
        beside = ""
        if h.name == "cls" and math.isfinite(_mean(x, "val_cls_majority")):
            beside = f" (majority-class rate {_mean(x, 'val_cls_majority'):.3f})"
        if h.name == "seg" and math.isfinite(_mean(x, "val_sem_miou")):
            beside = f" (free baseline: the reconstruction snapped to the palette {_mean(x, 'val_sem_miou'):.3f})"
        if not math.isfinite(v):
            n = _scored(h, x)
            why = f"n/a: no validation image has {h.target}" if h.scored_on and n == 0 else "n/a: not logged by any run"
            add(f"{h.gate_label} good", why, f"≥ {thr}", "n/a", "mean over seeds (a bar, not a test)", "")
            continue
        ok_all &= v >= thr
        add(f"{h.gate_label} good", f"{v:.3f}{beside}", f"≥ {thr}", "pass" if v >= thr else "fail",
            "mean over seeds (a bar, not a test)", "")
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
        # Higher is better: "worse" is the interval of the change entirely below 0.
        change = classify_change(-c["ci_high"], -c["ci_low"], rules.similar_tolerance)
        ci = f"{pct(c['rel_change'])} (CI {pct(c['ci_low'])} to {pct(c['ci_high'])})"
        if rules.boundary_not_worse:
            ok = change != "worse"
            ok_all &= ok
            add(f"{name} not worse than baseline", ci, "CI not entirely below 0",
                "fail" if change == "worse" else "unclear" if change == "unclear" else "pass", c["test"] + " (not corrected)", f"{level:.2%}")
        else:
            add(f"{name} vs baseline (informative)", ci, "", "info", c["test"], f"{level:.2%}")
    return ok_all


def preference_order(candidates: list[str], experiments: list[str], heads: dict, rules: Decision) -> list[str]:
    """decision.preference first (in its order), then the fewest auxiliary losses, then the params' order."""
    declared = rules.preference or []
    key = lambda e: (declared.index(e) if e in declared else len(declared), len(heads.get(e, ())), experiments.index(e))  # noqa: E731
    return sorted(candidates, key=key)


def aux_helps(e: str, heads: dict, baseline: str, change: str, heads_ok: bool, stability: str, rules: Decision) -> bool:
    """Rule 2: an auxiliary loss (heads beyond the baseline's) with MSE similar or better against the baseline,
    good heads and more stable training (when the stability rule applies)."""
    extra = set(heads.get(e, ())) - set(heads.get(baseline, ()))
    stable = stability == "more stable" or not rules.stability_not_worse
    return bool(extra) and change in ("similar", "better") and heads_ok and stable


def pick(leader: str, h2h: dict[str, str], helpers: list[str], experiments: list[str], heads: dict,
         rules: Decision) -> tuple[str, str, list[str]]:
    """(winner, the rule that picked it, the contenders) from the head-to-head classes of every other candidate
    against the leader (worse: out; similar: equivalent; unclear or better: not told apart) and the candidates
    for which rule 2 holds."""
    contenders = [leader] + [o for o, ch in h2h.items() if ch != "worse"]
    if len(contenders) == 1:
        return leader, "best primary metric: every other candidate is significantly worse", contenders
    helping = [e for e in preference_order(contenders, experiments, heads, rules) if e in helpers]
    if helping:
        return helping[0], "an auxiliary loss helps: its MSE is similar or better, its heads are good and its training more stable", contenders
    ordered = preference_order(contenders, experiments, heads, rules)
    differ = len({len(heads.get(e, ())) for e in contenders}) > 1  # an architecture phase: all train the same heads
    why = "decision.preference" if rules.preference else "fewest auxiliary losses" if differ else "the params' order"
    return ordered[0], why, contenders


def _gaps(experiments: list[str], by: dict, comparisons: pd.DataFrame) -> list[str]:
    """What is missing for a decided verdict: finished runs of every experiment, 2 paired seeds per comparison."""
    gaps = [f"{e} has no finished run" for e in experiments if not len(by[e])]
    for r in comparisons.itertuples():
        if r.n and r.n_baseline and r.n_pairs < 2:
            gaps.append(f"{r.experiment} against {r.versus} rests on {r.n_pairs} paired seed{'s' if r.n_pairs != 1 else ''}")
    return list(dict.fromkeys(gaps))


def design_words(rules: Decision, look: int, alpha_look: float, m: int) -> str:
    """The sequential design and the correction, in words."""
    corr = {"holm": f"Holm's correction over the {m} tests of the family", "bonferroni": f"Bonferroni over the {m} tests of the family",
            "none": "no correction within the family"}[rules.correction]
    if rules.alpha_spending == "none":
        seq = (f"Fixed design: every look at the seeds tests at alpha {rules.alpha:g} again, so adding seeds until "
               "significant raises the error rate (decision.alpha_spending: none).")
    else:
        looks = ", ".join(map(str, rules.looks))
        reached = look_reached(look, rules.looks)
        seq = (f"Sequential design: group-sequential alpha spending ({SPENDING[rules.alpha_spending]} Lan-DeMets spending "
               f"function) with planned looks at {looks} seeds; with {look} seeds the look reached is "
               + (f"{reached}" if reached else f"none yet (the first is {rules.looks[0]})")
               + f", tested at alpha {alpha_look:.2g} of the total {rules.alpha:g}, so the chance of any false call stays "
               f"≤ {rules.alpha:g} however the seeds are added, as long as a verdict is decided only at a planned look.")
        if look not in rules.looks and look < rules.max_seeds:
            nxt = min(lk for lk in rules.looks if lk > look)
            seq += f" {look} seeds is not a planned look: nothing is decided until {nxt}."
        if look >= rules.max_seeds:
            seq += " This is the design's last look: what is not shown now stays open, and the preference order picks."
    return f"{seq} Within the look: {corr}."


def decide(table: pd.DataFrame, experiments: list[str], baseline: str, heads: dict, rules: Decision,
           changes: dict[str, str] | None = None, steps: list[tuple[str, str]] | None = None,
           chance: dict[str, str] | None = None) -> Verdict:  # fmt: skip
    """Apply the rules (module docstring, docs/analysis.md) to the per-run table; pick the winner and say why.

    table: run_table() rows (finished runs only). heads: experiment -> trained auxiliary heads. changes: experiment
    -> what it changes against the baseline in words (for experiments with the baseline's heads). steps: the
    (earlier, later) pairs of the step comparisons, whose tests join the family (their results in `Verdict.steps`).
    chance: experiment -> the sentence naming its classification head at chance level (chance.chance_words).
    """
    metric, tol = primary_metric(table), rules.similar_tolerance
    by = {e: table[table["experiment"] == e].set_index("seed") for e in experiments}
    finished = [e for e in experiments if len(by[e])]
    crit, calls = [], {}
    if not finished:
        calls = {e: "no results" for e in experiments}
        crit = [{"experiment": e, "criterion": "finished runs", "value": "0", "threshold": "≥ 1", "result": "fail", "test": "", "level": ""} for e in experiments]
        return Verdict(None, "no results", "No run of this phase has finished: there is nothing to compare yet.",
                       "Not at all: no finished runs.", None, calls, pd.DataFrame(crit, columns=CRITERIA),
                       pd.DataFrame(columns=COLUMNS), 1 - rules.alpha, primary=metric,
                       headline="No winner (no results): no run of this phase has finished.")
    look = max(len(by[e]) for e in finished)
    alpha_look = look_alpha(look, rules.looks, rules.alpha, rules.alpha_spending)
    sequential = rules.alpha_spending != "none"
    final = sequential and look >= rules.max_seeds
    between = sequential and not final and look not in rules.looks  # no verdict is decided between planned looks
    base = by[baseline]
    fam = _Family()
    vs = {e: _compare(fam, by, e, baseline, metric, tol) for e in finished if e != baseline and len(base)}
    stab = {e: _stability_tests(fam, by[e], base, e) for e in vs}
    leader = _leader(by, finished, metric, experiments)
    # The same pair is one test: a comparison with the baseline serves as the head to head (and the step) of that pair.
    h2h = {o: vs[o] if leader == baseline else vs[leader] if o == baseline and leader in vs
           else _compare(fam, by, o, leader, metric, tol) for o in finished if o != leader}
    step_tests = {}
    for a, b in steps or []:
        if a in by and b in by and len(by[a]) and len(by[b]):
            step_tests[(a, b)] = vs[b] if a == baseline and b in vs else _compare(fam, by, b, a, metric, tol)
    fam.correct(alpha_look, rules.correction)

    rows, need = [], []
    for e in experiments:
        def add(criterion, value, threshold, result, test="", level="", e=e):
            crit.append({"experiment": e, "criterion": criterion, "value": value, "threshold": threshold, "result": result,
                         "test": test, "level": level})

        if not len(by[e]):
            calls[e] = "no results"
            add("finished runs", "0", "≥ 1", "fail")
            continue
        if not len(base):
            calls[e] = "unclear"
            add("baseline has finished runs", "0", "≥ 1", "unclear")
            continue
        if e == baseline:
            calls[e] = "baseline"
            add(f"{metric_words(metric)} (baseline, {len(base)} seeds)", f"{_mean(base, metric):.4g}", "", "baseline")
            continue
        r = vs[e].row(fam, tol)
        _mse_criteria(r, metric, tol, rules, add)
        heads_ok = _heads_criteria(heads.get(e, ()), by[e], rules, add)
        stability, per = stability_call(stab[e], fam)
        _stab_criteria(stab[e], per, fam, by[e], base, rules, add)
        boundary_ok = _boundary_criteria(by[e], base, heads.get(e, ()), rules, 1 - alpha_look, add)
        call = call_for(r["change"], heads_ok, stability, rules.stability_not_worse)
        if not boundary_ok and call == "helps" and r["change"] != "better":
            call = "hurts"
        calls[e] = call
        rows.append({**r, "experiment": e, "versus": baseline, "call": call, "mean": _mean(by[e], metric),
                     "mean_baseline": _mean(base, metric), "heads_ok": heads_ok, "stability": stability})

    # Rule 1 and the head to head: every other candidate against the leader.
    h2h_rows = []
    for o, t in h2h.items():
        r = t.row(fam, tol)
        if t.x != o:  # the baseline's comparison with the leader, seen from the baseline's side
            seeds = sorted(set(by[o].index) | set(by[leader].index))
            c = compare(by[o][metric].reindex(seeds).to_numpy(), by[leader][metric].reindex(seeds).to_numpy())
            lo, hi = c.interval(r["level"])
            eq_lo, eq_hi = c.interval(r["eq_level"])
            flip = {"better": "worse", "worse": "better"}.get(r["change"], r["change"])
            r = {**r, **{k: v for k, v in c.items() if not k.startswith("_")}, "ci_low": lo, "ci_high": hi,
                 "eq_low": eq_lo, "eq_high": eq_hi, "change": flip}
        h2h_rows.append({**r, "experiment": o, "versus": leader, "call": "head to head", "mean": _mean(by[o], metric),
                         "mean_baseline": _mean(by[leader], metric)})
        verb = {"worse": "fail", "similar": "pass", "better": "pass", "unclear": "unclear"}[r["change"]]
        crit.append({"experiment": o, "criterion": f"not significantly worse than the leader {leader} (rule 1)",
                     "value": f"{pct(r['rel_change'])} (CI {pct(r['ci_low'])} to {pct(r['ci_high'])})",
                     "threshold": "two-sided CI not above 0", "result": verb, "test": f"{r['test']}, {_corr(rules)}",
                     "level": f"{r['level']:.2%}"})
    classes = {r["experiment"]: r["change"] for r in h2h_rows}
    info = {r["experiment"]: r for r in rows}
    helpers = [e for e in finished if e in info and aux_helps(e, heads, baseline, info[e]["change"], info[e]["heads_ok"],
                                                              info[e]["stability"], rules)]
    if len(base):
        winner, rule, contenders = pick(leader, classes, helpers, experiments, heads, rules)
    else:
        winner, rule, contenders = leader, "lowest mean (no baseline to compare with)", finished
    open_pairs = [r for r in h2h_rows if r["experiment"] in contenders and r["change"] != "similar"]
    for r in open_pairs:
        m = r["rel_change"]
        n = seeds_needed(m, r["sd_rel"], tol, _alpha_at(rules, max(1, fam.m)), rules.power,
                         max_n=rules.max_seeds if sequential else 200, start=look + 1)
        need.append(n if n is not None else 3)
    if sequential:  # the first planned look at or after it; past the last look: none (the design ends there)
        need = [min((lk for lk in rules.looks if lk >= n), default=rules.max_seeds + 1) for n in need]
    if between and not need:
        need = [min(lk for lk in rules.looks if lk > look)]
    comparisons = pd.DataFrame([{k: r.get(k) for k in COLUMNS} for r in rows + h2h_rows], columns=COLUMNS)
    gaps = _gaps(experiments, by, comparisons) + ([] if len(base) >= 2 or not len(base) else [f"the baseline {baseline} has 1 finished seed"])
    status = "provisional" if gaps or not len(base) or open_pairs or between else "decided"
    n_need = max(need) if need and status != "decided" else None
    if final or (n_need is not None and sequential and n_need > rules.max_seeds):
        n_need = None if final else rules.max_seeds  # the design ends at its last look
    design = design_words(rules, look, alpha_look, fam.m)
    steps_out = {k: t.row(fam, tol) for k, t in step_tests.items()}
    paragraph = _paragraph(comparisons, calls, experiments, baseline, heads, table, rules, winner, status, leader,
                           contenders, rule, metric, changes or {})
    sureness = _sureness(by, experiments, status, n_need, rules, gaps, open_pairs, look, final, between)
    sureness += " " + design
    if not len(base):
        paragraph = (f"The baseline {baseline} has no finished run, so no experiment can be compared with it; "
                     f"{winner} has the lowest mean {metric_words(metric)} ({_mean(by[winner], metric):.4g}). " + paragraph)
        sureness = f"Not sure: without a finished run of the baseline {baseline} there is no comparison; rerun it. " + design
    v = Verdict(winner, status, paragraph, sureness, n_need, calls, pd.DataFrame(crit, columns=CRITERIA), comparisons,
                1 - alpha_look, rule=rule, design=design, primary=metric, family=fam.frame(), steps=steps_out, chance=chance or {})
    v.headline = headline(v, baseline)
    v.lines = summary_lines(v, table, heads, experiments, final and bool(open_pairs) and not gaps)
    return v


def _level_words(level: float) -> str:
    """0.95 -> "95%", 0.98333 -> "98.33%" (a level after the correction)."""
    return f"{level:.0%}" if abs(level * 100 - round(level * 100)) < 1e-9 else f"{level:.2%}"


def _change_words(r, name: str) -> str:
    """"test MSE -3.1% vs F1 (95% interval -7.0% to +0.8%)" for one comparisons row."""
    ci = (f"{_level_words(r.level)} interval {pct(r.ci_low)} to {pct(r.ci_high)}" if math.isfinite(r.ci_low)
          else f"no interval: {r.n_pairs} paired seed{'s' if r.n_pairs != 1 else ''}")
    return f"{name} {pct(r.rel_change)} vs {r.versus} ({ci})"


def headline(v: Verdict, baseline: str) -> str:
    """The answer in one sentence: the winner, the status and the primary metric's change against the baseline with
    its interval at the corrected level; when the baseline wins, the best rival's change (the lowest mean)."""
    if v.winner is None:
        return "No winner (no results): no run of this phase has finished."
    status = f" ({v.status})"
    c = v.comparisons
    vs_base = c[(c["versus"] == baseline) & (c["call"] != "head to head")] if len(c) else c
    vs_base = vs_base[np.isfinite(vs_base["rel_change"].astype(float))] if len(vs_base) else vs_base
    name = metric_words(v.primary)
    if v.winner != baseline:
        row = vs_base[vs_base["experiment"] == v.winner]
        if not len(row):
            return f"Winner: {v.winner}{status}: no finished run of the baseline {baseline} to compare it with."
        return f"Winner: {v.winner}{status}: {_change_words(next(row.itertuples()), name)}."
    if not len(vs_base):
        return f"Winner: {v.winner}{status}, the baseline: no other experiment has a comparison with it."
    best = next(vs_base.sort_values("rel_change", kind="stable").itertuples())
    return f"Winner: {v.winner}{status}, the baseline; the best rival {best.experiment} has {_change_words(best, name)}."


def summary_lines(v: Verdict, table: pd.DataFrame, heads: dict, experiments: list[str], design_ended: bool) -> list[str]:
    """At most three short sentences under the headline: why the winner wins, what the auxiliary heads reach (and
    which never left chance level), and what would settle it."""
    lines = [f"It wins by the rule: {v.rule}."] if v.rule else []
    reach = []
    for e in experiments:
        t = table[table["experiment"] == e] if len(table) else table
        got = [h.prose.format(_mean(t, h.gate)) for h in H.auxiliary()
               if h.name in heads.get(e, ()) and math.isfinite(_mean(t, h.gate)) and not (h.name == "cls" and e in v.chance)]
        if got:
            reach.append(f"{e} {' and '.join(got)}")
    if v.chance:
        said = "; ".join(v.chance.values())
        lines.append(said[0].upper() + said[1:] + ".")
    elif reach:
        lines.append("Heads: " + "; ".join(reach) + ".")
    if v.status == "decided":
        lines.append("Decided at the corrected level: more seeds are not needed.")
    elif design_ended:
        lines.append("The design's last look leaves it open: the preference order picks, and only a new design could settle it.")
    elif v.seeds_needed:
        more = max(0, v.seeds_needed - max((len(table[table["experiment"] == e]) for e in experiments), default=0))
        lines.append(f"To settle it: ≈{v.seeds_needed} seeds per experiment ({more} more).")
    elif v.status == "provisional":
        lines.append("To settle it: more finished seeds (see How sure we are).")
    return lines[:3]


def _alpha_at(rules: Decision, m: int):
    """The per-test alpha at look n (the strictest Holm step, alpha_n / m): what a future look must clear."""
    at = lambda n: min((lk for lk in rules.looks if lk >= n), default=rules.max_seeds)  # noqa: E731  (the look it would be)
    return lambda n: look_alpha(at(n), rules.looks, rules.alpha, rules.alpha_spending) / (m if rules.correction != "none" else 1)


def _corr(rules: Decision) -> str:
    return {"holm": "Holm", "bonferroni": "Bonferroni", "none": "not corrected"}[rules.correction]


def _mse_criteria(r: dict, metric: str, tol: float, rules: Decision, add) -> None:
    name = metric_words(metric)
    ci = f"{pct(r['rel_change'])} (CI {pct(r['ci_low'])} to {pct(r['ci_high'])})"
    eq = f"{pct(r['rel_change'])} ({r['eq_level']:.1%} CI {pct(r['eq_low'])} to {pct(r['eq_high'])})"
    test = f"{r['test']}, {_corr(rules)}"
    add(f"{name} not worse than baseline", ci + (f", p = {r['p_value']:.2g}" if math.isfinite(r['p_value']) else ""),
        "two-sided CI not above 0", "fail" if r["change"] == "worse" else "unclear" if r["change"] == "unclear" else "pass",
        test, f"{r['level']:.2%}")
    add(f"{name} similar (within ±{tol:.0%}) or better", eq, f"(1 − 2α) CI inside ±{tol:.0%} (TOST), or two-sided CI below 0",
        "pass" if r["change"] in ("better", "similar") else "fail" if r["change"] == "worse" else "unclear",
        f"TOST, {test}", f"{r['eq_level']:.2%}")


def _stab_criteria(tests: dict, per: dict, fam: _Family, x, base, rules: Decision, add) -> None:
    for col in STABILITY_COLUMNS:
        name, fmt = STABILITY_NAMES[col]
        if col not in tests:
            add(f"{name}: more stable than baseline", "n/a", "", "n/a")
            continue
        d, i = tests[col]
        lv = fam.rows[i]["alpha"]
        lo, hi = d.interval(1 - lv)
        value = (f"{fmt.format(_mean(x, col))} vs {fmt.format(_mean(base, col))}: difference {fmt.format(d['diff'])} "
                 f"(CI {fmt.format(lo)} to {fmt.format(hi)})" if math.isfinite(lo) else f"difference {fmt.format(d['diff'])}, no interval")
        result = {"more stable": "pass", "less stable": "fail", "unclear": "unclear"}[per[col]]
        add(f"{name}: more stable than baseline", value, "paired CI below 0 (above 0: less stable)",
            result if rules.stability_not_worse else "info", f"{d['test']}, {_corr(rules)}", f"{1 - lv:.2%}")


def _same_heads_call(call: str, change: str, what: str) -> str:
    """The call of an experiment that trains the same heads as the baseline: about what it changes, not a loss."""
    return {"helps": f"it {what}, which helps" if change == "better" else f"it {what}, which does not hurt and trains more stably",
            "hurts": f"it {what}, which hurts" + ("" if change == "worse" else " (training is less stable: see the criteria)"),
            "no gain": f"it {what}, which gives no gain", "unclear": f"it {what}; undecided"}[call]  # fmt: skip


def _aux_words(e: str, t: pd.DataFrame, heads: dict, rules: Decision) -> tuple[list[str], list[str]]:
    """What the trained heads do, in words (with the images an accuracy rests on), and the gates below the bar."""
    aux, weak = [], []
    for h in H.auxiliary():
        if h.name not in heads.get(e, ()):
            continue
        v, n = _mean(t, h.gate), _scored(h, t)
        if not math.isfinite(v):
            aux.append(f"has no {h.gate_label} (no validation image has {h.target})" if h.scored_on and n == 0
                       else f"has no {h.gate_label} logged")
            continue
        words = h.prose.format(v)
        if h.name == "cls" and math.isfinite(_mean(t, "val_cls_majority")):
            words += f" (always answering the majority class would score accuracy {_mean(t, 'val_cls_majority'):.2f})"
        if h.scored_on and math.isfinite(n):
            words += f" on {n:.0f} validation images with {h.target}" + (" (few: a rough figure)" if n < FEW_SCORED else "")
        aux.append(words)
        if v < h.minimum(rules):
            weak.append(h.gate_label)
    return aux, weak


def _paragraph(comparisons, calls, experiments, baseline, heads, table, rules, winner, status, leader, contenders, rule,
               metric, changes) -> str:
    """The verdict in plain words: one sentence per experiment against the baseline, the head to head, the pick."""
    name, tol = metric_words(metric), rules.similar_tolerance
    split = ("the held-out test split (each run's best checkpoint)" if metric == "test_mse"
             else "the validation split (each run's best epoch; no held-out test MSE in every run)")
    parts = [f"The primary numbers are the {name} on {split}."]
    vs_base = (comparisons["versus"] == baseline) & (comparisons["call"] != "head to head")
    cmp = comparisons[vs_base].set_index("experiment") if len(comparisons) else comparisons
    for e in experiments:
        if e not in cmp.index:
            if calls.get(e) == "no results":
                parts.append(f"{e} has no finished run.")
            continue
        c = cmp.loc[e]
        ci = f"CI {pct(c.ci_low)} to {pct(c.ci_high)}" if math.isfinite(c.ci_low) else "no interval: 1 seed"
        p = f", p = {c.p_value:.2g}" if math.isfinite(c.p_value) else ""
        what = {
            "better": f"{e} reconstructs better than {baseline}: {name} {pct(c.rel_change)} ({ci}{p}, clear of 0)",
            "similar": f"{e} is equivalent to {baseline} within ±{tol:.0%}: {name} {pct(c.rel_change)} "
            f"({c.eq_level:.0%} CI {pct(c.eq_low)} to {pct(c.eq_high)}, inside ±{tol:.0%})",
            "worse": f"{e} reconstructs worse than {baseline}: {name} {pct(c.rel_change)} ({ci}{p}, clear of 0)",
            "unclear": f"{e} differs from {baseline} by {pct(c.rel_change)} in {name}, but the interval ({ci}) is neither "
            f"clear of 0 nor inside ±{tol:.0%}",
        }[c.change]
        if c.n_pairs >= 1:
            what += f"; it beats {baseline} in {c.wins} of {c.n_pairs} seeds"
        if heads.get(e, ()) == heads.get(baseline, ()):  # same losses: the experiment varies something else
            parts.append(f"{what}: {_same_heads_call(calls[e], c.change, changes.get(e, 'changes its settings'))}.")
            continue
        aux, weak = _aux_words(e, table[table["experiment"] == e], heads, rules)
        if aux:
            what += "; it " + " and ".join(aux)
        words = _head_words(heads.get(e, ()))
        call = {"helps": f"auxiliary {words} helps" + (" (reconstruction comes first" + (f"; its {' and '.join(weak)} is below the bar)" if weak else ")")
                                                     if c.change == "better" else " (similar MSE, good heads and more stable training)"),
                "hurts": f"auxiliary {words} hurts" + ("" if c.change == "worse" else " (training is less stable: see the criteria)"),
                "no gain": f"auxiliary {words} gives no gain" + (f" (its {' and '.join(weak)} is below the bar)" if weak else
                                                                 " (training is not shown to be more stable)"),
                "unclear": "undecided"}[calls[e]]
        parts.append(f"{what}: {call}.")
    h2h = comparisons[comparisons["call"] == "head to head"] if len(comparisons) else comparisons
    for r in h2h.itertuples():
        ci = f"CI {pct(r.ci_low)} to {pct(r.ci_high)}" if math.isfinite(r.ci_low) else f"no interval: {r.n_pairs} paired seed"
        parts.append({"worse": f"{r.experiment} is significantly worse than the leader {leader} ({name} {pct(r.rel_change)}, {ci}): out.",
                      "similar": f"{r.experiment} is equivalent to the leader {leader} within ±{tol:.0%} ({r.eq_level:.0%} CI "
                      f"{pct(r.eq_low)} to {pct(r.eq_high)}).",
                      "better": f"{r.experiment} is better than the leader {leader} by the seeds they share ({ci}): not told apart.",
                      "unclear": f"{r.experiment} and the leader {leader} cannot be told apart yet ({name} {pct(r.rel_change)}, {ci}, "
                      f"not inside ±{tol:.0%})."}[r.change])
    any_aux = any(heads.get(e) for e in experiments)
    simplify = " (simplify to RGB-only)" if winner == baseline and not heads.get(baseline) and any_aux else ""
    tied = f" among {', '.join(contenders)}" if len(contenders) > 1 else ""
    parts.append(f"Winner{' (provisional)' if status != 'decided' else ''}: {winner}{simplify}, by the rule: {rule}{tied}.")
    return " ".join(parts)


def _sureness(by, experiments, status, need, rules, gaps, open_pairs, look, final, between=False) -> str:
    ns = {e: len(by[e]) for e in experiments if len(by[e])}
    lo, hi = min(ns.values()), max(ns.values())
    seeds = f"{lo}" if lo == hi else f"{lo} to {hi}"
    if hi < 2:
        return (f"Not sure: each experiment has {seeds} finished seed, so no confidence interval exists and the "
                f"ranking is a single draw that may be seed noise (gaps of 8-10% from one seed each have been noise "
                f"before). Confidence intervals need at least 2 and usefully 3 or more seeds per experiment.")
    s = f"{seeds} finished seeds per experiment; t-intervals across seeds, paired by seed where the seeds match."
    if lo < 3:
        s += " With 2 seeds a t-interval is very wide; 3 or more seeds are needed for a useful interval."
    if status == "decided":
        return f"Sure enough to pick the winner: every other candidate is out or equivalent at the corrected level. {s}"
    sequential = rules.alpha_spending != "none"
    cap = rules.max_seeds if sequential else 200
    if final and open_pairs and not gaps:
        more = (f"the design's last look ({rules.max_seeds} seeds) leaves them open: at this noise they cannot be told "
                "apart, so the preference order picks, provisionally; more seeds would need a new design")
    elif need and need <= cap:
        more = (f"needs more seeds (≈{need} per experiment, {max(0, need - hi)} more" +
                (": the planned look at which the design would settle it)" if sequential else ")"))
    elif need:
        more = "needs more seeds (the observed change sits on a boundary: more than 200 seeds would be needed; treat them as equal)"
    else:
        more = "needs more seeds (≥ 3 per experiment)"
    why = []
    if open_pairs:
        why.append(f"{', '.join(r['experiment'] for r in open_pairs)} cannot be told apart from the leader")
    if between:
        why.append(f"{hi} seeds is not a planned look ({', '.join(map(str, rules.looks))})")
    why += gaps
    return f"Not sure yet: {'; '.join(why)}; {more}. {s}"
