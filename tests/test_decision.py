"""The decision read through the public analysis API, on phase folders written from docs/run-folder.md with the
trainer's own writers (runfolder.py): every state the trainer leaves, calls that are monotone in the evidence,
head-to-head winners, the probability of improvement, and "decided" only with the evidence for it."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import yaml

from imginav_lib import analysis as A
from imginav_lib.analysis.decision import decide
from imginav_lib.text import pct
from imginav_lib.testing.synthetic import simulate_decisions
from imginav_lib.model.metrics import metric_columns
from imginav_lib.config.params import params_hash
from imginav_lib.config.schema import Decision
from imginav_lib.runs.runfolder import write_csv, write_json

F1, F2, F3 = "F1_rgb_only", "F2_rgb_seg", "F3_rgb_seg_cls"
LOSS = {F1: {}, F2: {"seg": 0.05}, F3: {"seg": 0.05, "cls": 0.01}}
BASE = {1: 0.0040, 2: 0.0046, 3: 0.0037, 4: 0.0043, 5: 0.0041}  # the baseline's best val MSE per seed


def write_phase(root, values: dict, heads: dict | None = None, states: dict | None = None, decision: dict | None = None,
                epochs: int = 4, epoch_time_s: float = 30.0, phase: str = "p"):
    """A phase folder as docs/run-folder.md describes it, written with the trainer's writers.

    values: experiment -> {seed: best val MSE} (done runs; val MSE falls to it over `epochs`).
    heads: experiment -> {"val_seg_miou": x, "val_cls_acc": y, "val_cls_bacc": z} at every epoch (default: good heads).
    states: (experiment, seed) -> (status, rows): a run that stopped in that state after `rows` completed epochs.
    """
    heads, states = heads or {}, states or {}
    d = root / phase
    d.mkdir(parents=True)
    seeds = sorted({s for v in values.values() for s in v} | {s for _, s in states})
    params = {"phase": phase, "data": {"manifest": "data/manifest.csv", "image_size": 32},
              "training": {"epochs": epochs}, "seeds": seeds,
              "experiments": {e: ({"loss": LOSS[e]} if LOSS.get(e) else {}) for e in values},
              "decision": {"baseline": F1, **(decision or {})}}
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    index = {"phase": phase, "params_file": str(d / "params.yaml"), "params_hash": params_hash(d / "params.yaml"), "runs": []}
    for e in values:
        for s in seeds:
            run = d / e / f"seed{s}"
            index["runs"].append({"experiment": e, "seed": s, "run_dir": str(run)})
            status, n_rows = states.get((e, s), ("done", epochs) if s in values[e] else (None, 0))
            if status is None:
                continue  # listed, never started: no folder
            run.mkdir(parents=True)
            best = values[e].get(s, 0.004)
            rows = []
            for ep in range(1, n_rows + 1):
                r = {"epoch": ep, "lr": 1e-4, "epoch_time_s": epoch_time_s, "train_mse": best * 1.1,
                     "val_mse": best * (1 + 0.5 * (epochs - ep) / epochs), "val_psnr": 20.0, "val_ssim": 0.9,
                     "val_sem_acc": 0.9, "val_sem_miou": 0.6}
                if "seg" in LOSS.get(e, {}):
                    r["val_seg_miou"] = heads.get(e, {}).get("val_seg_miou", 0.7)
                if "cls" in LOSS.get(e, {}):
                    r["val_cls_acc"] = heads.get(e, {}).get("val_cls_acc", 0.9)
                    r["val_cls_bacc"] = heads.get(e, {}).get("val_cls_bacc", 0.9)
                rows.append(r)
            write_csv(run / "metrics.csv", rows, metric_columns())  # header only when no epoch completed
            write_csv(run / "steps.csv", [], ["global_step", "epoch", "step", "loss", "mse", "seg_ce", "cls_ce", "kl", "lr"])
            (run / "config.yaml").write_text(yaml.safe_dump({"loss": {"mse": 1.0, "seg": 0.0, "cls": 0.0, "kl": 1e-6, **LOSS.get(e, {})}}))
            write_json(run / "run.json", {"status": status, "epoch": n_rows, "epochs": epochs,
                                          "epoch_time_s": epoch_time_s if n_rows else None,
                                          "error": None if status in ("done", "running") else f"{status} in epoch {n_rows + 1}"})
    write_json(d / "index.json", index)
    return d


def per_seed(changes: list[float], seeds=(1, 2, 3, 4, 5)) -> dict:
    """{seed: baseline x (1 + change)} for the first len(changes) seeds."""
    return {s: BASE[s] * (1 + c) for s, c in zip(seeds, changes)}


def base(n: int) -> dict:
    return {s: BASE[s] for s in list(BASE)[:n]}


# ---------------------------------------------------------------------------------------------------------
# Every folder the trainer can leave


@pytest.mark.parametrize("status", ["running", "failed", "preempted", "diverged", "done"])
def test_a_run_that_ended_before_its_first_epoch_does_not_take_the_report_down(tmp_path, status):
    # The trainer writes metrics.csv (header only) at the start of every attempt: out of memory at step 1 leaves it.
    d = write_phase(tmp_path, {F1: base(3), F2: per_seed([-0.05, -0.04, -0.06])},
                    states={(F2, 4): (status, 0), (F1, 4): ("failed", 0)}, decision=PLAIN)
    a = A.analyse(d, d / "params.yaml")
    state = a.runs.runs.set_index(["experiment", "seed"])["state"]
    assert state[(F2, 4)] == (status if status != "done" else "unreadable") and state[(F1, 4)] == "failed"
    assert sorted(a.table["seed"].unique()) == [1, 2, 3]
    assert a.verdict.calls[F2] == "helps"


def test_a_run_with_rows_in_every_state_is_listed_and_left_out(tmp_path):
    states = {(F2, 4): ("running", 2), (F2, 5): ("preempted", 1), (F1, 4): ("diverged", 3), (F1, 5): ("failed", 2)}
    d = write_phase(tmp_path, {F1: base(3), F2: per_seed([-0.05, -0.04, -0.06])}, states=states)
    a = A.analyse(d, d / "params.yaml")
    got = a.runs.runs.set_index(["experiment", "seed"])["state"].to_dict()
    assert {k: got[k] for k in states} == {k: v[0] for k, v in states.items()}
    assert len(a.table) == 6


# ---------------------------------------------------------------------------------------------------------
# The rules, at a plain level (no alpha spending, no correction: hand-computable 95% and 90% intervals); the design
# and the correction have their own tests below.

PLAIN = {"alpha_spending": "none", "correction": "none"}
RANK = {"hurts": 0, "unclear": 1, "no gain": 1, "helps": 2}  # "no gain" (equivalent) and "unclear" are not ordered


def _table(values: dict, heads: dict, stability: dict | None = None) -> pd.DataFrame:
    """Finished runs: values is experiment -> {seed: best val MSE}; heads is experiment -> {gate column: value}
    (every seed); stability: experiment -> {column: {seed: value}} (default: the baseline's numbers)."""
    rows = []
    for e, per in values.items():
        for s, v in per.items():
            st = {c: (stability or {}).get(e, {}).get(c, {}).get(s, d) for c, d in (("spikes", 0.0), ("late_wobble", 0.01), ("epochs_to_target", 5.0))}
            rows.append({"experiment": e, "seed": s, "best_val_mse": v, **heads.get(e, {}), **st})
    return pd.DataFrame(rows)


HEADS = {F1: (), F2: ("seg",), F3: ("seg", "cls"), "F4": ()}
GOOD = {F2: {"val_seg_miou": 0.7}, F3: {"val_seg_miou": 0.7, "val_cls_bacc": 0.9}}


def _verdict(f2: np.ndarray, f3: np.ndarray | None, miou: float, rules: Decision):
    """decide() on a table of per-seed best val MSE: the baseline is BASE, f2/f3 are relative changes per seed."""
    seeds = list(BASE)[: len(f2)]
    values = {F1: {s: BASE[s] for s in seeds}, F2: {s: BASE[s] * (1 + c) for s, c in zip(seeds, f2)}}
    heads = {F2: {"val_seg_miou": miou}}
    if f3 is not None:
        values[F3], heads[F3] = {s: BASE[s] * (1 + c) for s, c in zip(seeds, f3)}, GOOD[F3]
    exps = list(values)
    return decide(_table(values, heads), exps, F1, {e: HEADS[e] for e in exps}, rules)


def test_calls_are_monotone_in_the_evidence():
    """Moving an experiment's per-seed values in its favour (every seed by the same factor, or its head metric up)
    never gives it a worse call. A seeded randomised search over the default rules (design and Holm included)."""
    rng = np.random.default_rng(12)
    checked = 0
    for _ in range(150):
        n = int(rng.integers(2, 6))
        f2 = rng.normal(rng.uniform(-0.08, 0.06), rng.uniform(0.002, 0.05), n)
        f3 = rng.normal(rng.uniform(-0.08, 0.06), rng.uniform(0.002, 0.05), n) if rng.random() < 0.5 else None
        miou = float(rng.choice([0.2, 0.45, 0.7]))
        rules = Decision() if rng.random() < 0.5 else Decision(**PLAIN)
        before = _verdict(f2, f3, miou, rules)
        for after in (_verdict((1 + f2) * (1 - rng.uniform(0.001, 0.05)) - 1, f3, miou, rules),
                      _verdict(f2, f3, min(1.0, miou + 0.3), rules)):
            b, a = before.calls[F2], after.calls[F2]
            assert RANK[a] >= RANK[b], (f2, f3, miou, b, a)
            checked += 1
    assert checked == 300


def test_equivalent_configurations_simplify_to_the_baseline_row_by_row():
    """Per-seed changes 0/+0.5/+1% for F2 and F3 (mean 0.5%, SD 0.5%): the 95% interval is 0.5% ± 4.3027 x 0.5% /
    sqrt(3) = -0.74% to +1.74% (not clear of 0), the 90% one 0.5% ± 2.9200 x 0.5% / sqrt(3) = -0.34% to +1.34%,
    inside ±2%: similar (two one-sided tests). F2's heads are good but its training is not shown to be more stable
    (identical stability numbers): no gain. F3's seg mIoU misses the bar: no gain. The leader is F1 (lowest mean); F2
    and F3 are equivalent to it, so the preference picks: fewest auxiliary losses, F1, decided."""
    from scipy import stats

    change = {1: 0.0, 2: 0.005, 3: 0.01}
    mse = {s: BASE[s] * (1 + c) for s, c in change.items()}
    table = _table({F1: base(3), F2: mse, F3: mse}, {F2: {"val_seg_miou": 0.5}, F3: {"val_seg_miou": 0.45, "val_cls_bacc": 0.9}})
    v = decide(table, [F1, F2, F3], F1, HEADS, Decision(**PLAIN))
    assert v.calls == {F1: "baseline", F2: "no gain", F3: "no gain"}
    assert (v.winner, v.status, v.seeds_needed, v.rule) == (F1, "decided", None, "fewest auxiliary losses")
    p = stats.ttest_1samp([0.0, 0.005, 0.01], 0).pvalue
    crit = v.criteria.set_index(["experiment", "criterion"])
    not_worse = crit.loc[(F2, "val MSE not worse than baseline")]
    assert (not_worse["value"], not_worse["result"], not_worse["level"]) == (f"+0.5% (CI -0.7% to +1.7%), p = {p:.2g}", "pass", "95.00%")
    similar = crit.loc[(F2, "val MSE similar (within ±2%) or better")]
    assert (similar["value"], similar["result"], similar["level"]) == ("+0.5% (90.0% CI -0.3% to +1.3%)", "pass", "90.00%")
    assert similar["test"] == "TOST, paired t (3 seeds), not corrected"
    assert crit.loc[(F2, "seg mIoU good"), "result"] == "pass" and crit.loc[(F3, "seg mIoU good"), "result"] == "fail"
    assert crit.loc[(F2, "MSE spikes per run: more stable than baseline"), "result"] == "unclear"
    assert "Winner: F1_rgb_only (simplify to RGB-only), by the rule: fewest auxiliary losses" in v.paragraph


def test_an_auxiliary_loss_helps_only_with_more_stable_training_on_paired_evidence():
    """F2 equivalent to F1 (0/+0.5/+1%) with good heads. Epochs to the common target 3.0/3.2/2.8 against 5: the paired
    difference -2 ± 4.3027 x 0.2 / sqrt(3) = -2.50 to -1.50, clear of 0: more stable, so F2 helps and wins by rule 2.
    The same difference the other way (7.0/6.8/7.2): less stable, F2 hurts."""
    change = {1: 0.0, 2: 0.005, 3: 0.01}
    mse = {s: BASE[s] * (1 + c) for s, c in change.items()}
    faster = {F2: {"epochs_to_target": {1: 3.0, 2: 3.2, 3: 2.8}}}
    v = decide(_table({F1: base(3), F2: mse}, GOOD, faster), [F1, F2], F1, HEADS, Decision(**PLAIN))
    assert (v.calls[F2], v.winner, v.status) == ("helps", F2, "decided") and v.rule.startswith("an auxiliary loss helps")
    row = v.criteria.set_index(["experiment", "criterion"]).loc[(F2, "epochs to within 10% of the baseline's best: more stable than baseline")]
    assert row["result"] == "pass" and "difference -2.0 (CI -2.5 to -1.5)" in row["value"]
    slower = {F2: {"epochs_to_target": {1: 7.0, 2: 6.8, 3: 7.2}}}
    v = decide(_table({F1: base(3), F2: mse}, GOOD, slower), [F1, F2], F1, HEADS, Decision(**PLAIN))
    assert (v.calls[F2], v.winner) == ("hurts", F1)
    # Without the stability rule the rows only inform, and an equivalent MSE with good heads helps.
    v = decide(_table({F1: base(3), F2: mse}, GOOD, slower), [F1, F2], F1, HEADS, Decision(stability_not_worse=False, **PLAIN))
    assert v.calls[F2] == "helps" and set(v.criteria[v.criteria.criterion.str.contains("more stable")]["result"]) == {"info"}


def test_candidates_that_cannot_be_told_apart_are_picked_by_preference_and_provisional():
    """F3 -4/-5/-9% (lowest mean: the leader), F2 -5/-1/-4%: F2 against F3 is -1.0/+4.2/+5.5% per seed (mean +2.9%,
    interval about -5.6% to +11.4%), F1 against F3 +4.2/+5.3/+9.9%: neither clear of 0 nor inside ±2%. Not told
    apart: the preference picks among them, provisionally."""
    values = {F1: base(3), F2: {s: BASE[s] * (1 + c) for s, c in zip((1, 2, 3), (-0.05, -0.01, -0.04))},
              F3: {s: BASE[s] * (1 + c) for s, c in zip((1, 2, 3), (-0.04, -0.05, -0.09))}}
    v = decide(_table(values, GOOD), [F1, F2, F3], F1, HEADS, Decision(**PLAIN))
    h2h = v.comparisons[v.comparisons.call == "head to head"].set_index("experiment")
    assert (h2h["versus"] == F3).all() and set(h2h["change"]) == {"unclear"}
    assert (v.winner, v.status) == (F1, "provisional") and 3 < v.seeds_needed <= 200
    assert "cannot be told apart from the leader" in v.sureness
    v = decide(_table(values, GOOD), [F1, F2, F3], F1, HEADS, Decision(preference=[F3, F2, F1], **PLAIN))
    assert (v.winner, v.status, v.rule) == (F3, "provisional", "decision.preference")


def test_a_candidate_every_other_is_significantly_worse_than_wins_decided():
    f2 = {s: BASE[s] * (1 + c) for s, c in zip(range(1, 6), (-0.03, -0.035, -0.025, -0.03, -0.032))}
    f3 = {s: BASE[s] * (1 + c) for s, c in zip(range(1, 6), (-0.08, -0.085, -0.075, -0.08, -0.082))}
    v = decide(_table({F1: base(5), F2: f2, F3: f3}, GOOD), [F1, F2, F3], F1, HEADS, Decision())
    assert (v.winner, v.status) == (F3, "decided") and v.rule.startswith("best primary metric")
    h2h = v.comparisons[v.comparisons.call == "head to head"].set_index("experiment")
    assert h2h.loc[F2, "versus"] == F3 and h2h.loc[F2, "ci_low"] > 0 and h2h.loc[F2, "n_pairs"] == 5


def test_one_seed_against_the_baseline_asks_for_three():
    table = _table({F1: base(3), F2: {1: BASE[1] * 1.01}}, GOOD)
    v = decide(table, [F1, F2], F1, HEADS, Decision())
    assert v.calls[F2] == "unclear" and v.seeds_needed == 3 and v.status == "provisional"


def test_what_is_missing_is_said_comparison_by_comparison():
    table = _table({F1: base(3), F2: {1: BASE[1]}, F3: {2: BASE[2]}}, GOOD)
    v = decide(table, [F1, F2, F3], F1, HEADS, Decision(**PLAIN))
    assert v.status == "provisional"
    assert f"{F2} against {F1} rests on 1 paired seed" in v.sureness and f"{F3} against {F1} rests on 1 paired seed" in v.sureness


# ---------------------------------------------------------------------------------------------------------
# The correction and the sequential design, on known values


def test_holm_and_the_alpha_spent_per_look_on_known_values():
    from imginav_lib.analysis.stats import holm, look_alpha, spending

    adj, levels = holm([0.01, 0.04, 0.03, math.nan], 0.05)
    # Sorted 0.01, 0.03, 0.04: 3 x 0.01 = 0.03, 2 x 0.03 = 0.06, max(0.06, 1 x 0.04) = 0.06.
    assert adj[:3] == pytest.approx([0.03, 0.06, 0.06]) and math.isnan(adj[3])
    assert levels[:3] == pytest.approx([0.05 / 3, 0.05 / 1, 0.05 / 2]) and math.isnan(levels[3])
    # Pocock-type spending alpha ln(1 + (e - 1) t) over the looks 3, 5, 10, 20: the first look gets
    # 0.05 ln(1 + 1.718282 x 0.15) = 0.0114659; 4 seeds is still look 3; the last gets 0.05 (1 - ln(1.859141)) = 0.0189943.
    looks = [3, 5, 10, 20]
    assert look_alpha(3, looks, 0.05, "pocock") == pytest.approx(0.0114659, abs=1e-7) == look_alpha(4, looks, 0.05, "pocock")
    assert look_alpha(2, looks, 0.05, "pocock") == look_alpha(3, looks, 0.05, "pocock")  # before the first look: its alpha
    assert look_alpha(20, looks, 0.05, "pocock") == pytest.approx(0.0189943, abs=1e-7)
    for kind in ("pocock", "obrien_fleming"):  # the planned looks spend exactly alpha: the union bound holds
        assert sum(look_alpha(n, looks, 0.05, kind) for n in looks) == pytest.approx(0.05)
        assert look_alpha(25, looks, 0.05, kind) == look_alpha(20, looks, 0.05, kind)  # past the design: its last look
    assert look_alpha(7, looks, 0.05, "none") == 0.05
    with pytest.raises(Exception, match="invalid looks"):
        Decision(looks=[5, 3])
    assert spending(1.0, 0.05, "obrien_fleming") == pytest.approx(0.05)


def test_the_equivalence_test_is_scipys_two_one_sided_tests():
    from scipy import stats

    from imginav_lib.analysis.stats import compare

    x, b = np.array([1.01, 1.215, 0.995, 1.205]), np.array([1.0, 1.2, 1.0, 1.2])
    c = compare(x, b)
    r = x / b - 1
    p_tost = max(stats.ttest_1samp(r, -0.02, alternative="greater").pvalue, stats.ttest_1samp(r, 0.02, alternative="less").pvalue)
    assert c.equivalence_p(0.02) == pytest.approx(p_tost)
    lo, hi = c.interval(0.90)
    half = stats.t.ppf(0.95, 3) * r.std(ddof=1) / 2
    assert (lo, hi) == pytest.approx((r.mean() - half, r.mean() + half))
    w = compare(np.array([1.1, 1.2, 1.3, np.nan, np.nan]), np.array([np.nan, np.nan, np.nan, 1.0, 1.1]))
    ci = stats.ttest_ind([1.1, 1.2, 1.3], [1.0, 1.1], equal_var=False).confidence_interval(0.95)
    assert (w["ci_low"], w["ci_high"]) == pytest.approx((ci.low / 1.05, ci.high / 1.05))


def test_the_seeds_asked_for_follow_the_design():
    """An open head to head asks for the first planned look at which the design would settle it: the smallest look L
    after this one with (t_{1-a(L)/2, L-1} + z_0.8) SD / sqrt(L) <= max(|m|, tol - |m|), a(L) = that look's spent alpha
    / the family size (the strictest Holm step); past the last look: the last look."""
    from scipy import stats

    from imginav_lib.analysis.stats import look_alpha

    values = {F1: base(3), F2: {s: BASE[s] * (1 + c) for s, c in zip((1, 2, 3), (0.0, -0.01, -0.03))}}
    v = decide(_table(values, GOOD), [F1, F2], F1, HEADS, Decision())
    r = v.comparisons[v.comparisons.call == "head to head"].iloc[0]
    m = int(v.family["p"].notna().sum())
    a = lambda n: look_alpha(n, [3, 5, 10, 20], 0.05, "pocock") / m  # noqa: E731
    margin = max(abs(r.rel_change), 0.02 - abs(r.rel_change))
    want = next((n for n in (5, 10, 20) if (stats.t.ppf(1 - a(n) / 2, n - 1) + stats.norm.ppf(0.8)) * r.sd_rel / math.sqrt(n) <= margin), 20)
    assert v.status == "provisional" and v.seeds_needed == want
    assert f"≈{want} per experiment" in v.sureness

def test_probability_of_improvement_is_in_the_comparisons_and_the_verdict(tmp_path):
    d = write_phase(tmp_path, {F1: base(3), F2: per_seed([-0.05, -0.03, 0.01])})
    v = A.analyse(d, d / "params.yaml").verdict
    row = v.comparisons.set_index("experiment").loc[F2]
    assert row.p_improve == pytest.approx(2 / 3)  # F2 beats F1 in seeds 1 and 2, not in seed 3
    assert "beats F1_rgb_only in 2 of 3 seeds" in v.paragraph


def test_decided_needs_every_experiment_finished_and_two_paired_seeds(tmp_path):
    # Issue 14: 1 seed of F1 and no F2/F3 run said "decided" while its own text said "Not sure".
    d = write_phase(tmp_path / "a", {F1: base(1), F2: {}, F3: {}}, decision=PLAIN)
    v = A.analyse(d, d / "params.yaml").verdict
    assert v.status == "provisional" and v.winner == F1
    # Every experiment finished, but F3 only in 1 seed: no interval, so nothing about F3 is certain.
    d = write_phase(tmp_path / "b", {F1: base(3), F2: per_seed([0.10, 0.11, 0.09]), F3: per_seed([0.10])}, decision=PLAIN)
    v = A.analyse(d, d / "params.yaml").verdict
    assert v.status == "provisional"
    # And with the evidence, it is decided.
    d = write_phase(tmp_path / "c", {F1: base(3), F2: per_seed([0.10, 0.11, 0.09]), F3: per_seed([0.10, 0.12, 0.11])}, decision=PLAIN)
    v = A.analyse(d, d / "params.yaml").verdict
    assert v.status == "decided" and v.winner == F1


def test_asking_for_more_seeds_gives_the_command_the_runs_and_the_gpu_hours(tmp_path):
    d = write_phase(tmp_path, {F1: base(3), F2: per_seed([-0.06, 0.05, 0.0])}, epochs=4, epoch_time_s=90.0)
    v = A.analyse(d, d / "params.yaml").verdict
    assert v.status == "provisional" and v.seeds_needed and 3 < v.seeds_needed <= 20  # the design ends at 20 seeds
    more = v.seeds_needed - 3
    new = ", ".join(str(s) for s in range(4, 4 + more))
    assert f"seeds: [1, 2, 3, {new}]" in v.more_seeds and f"imginav run {d / 'params.yaml'}" in v.more_seeds
    hours = 2 * more * 4 * 90 / 3600
    assert f"{2 * more} more runs" in v.more_seeds and f"{hours:.1f} GPU-hours" in v.more_seeds


def test_the_report_says_which_variance_the_intervals_cover(tmp_path):
    d = write_phase(tmp_path / "a", {F1: base(3), F2: per_seed([-0.05, -0.04, -0.06])})
    assert "the train/validation split is the same for every seed" in A.analyse(d, d / "params.yaml").verdict.sureness
    d = write_phase(tmp_path / "b", {F1: base(3), F2: per_seed([-0.05, -0.04, -0.06])})
    raw = yaml.safe_load((d / "params.yaml").read_text())
    raw["data"]["split"] = "per_seed"
    (d / "params.yaml").write_text(yaml.safe_dump(raw))
    assert "and the train/validation split (data.split: per_seed)" in A.analyse(d, d / "params.yaml").verdict.sureness


def test_a_per_seed_split_differs_between_seeds_and_is_shared_by_experiments(tmp_path, real_manifest):
    from conftest import tiny_params
    from imginav_lib.config.params import resolve_run
    from imginav_lib.train.trainer import load_run_data

    params = tiny_params(tmp_path, real_manifest, data={"split": "per_seed"})
    val = {(e, s): load_run_data(resolve_run(params, e, s), progress=False).val_idx.tolist() for e in ("F1", "F3") for s in (1, 2)}
    assert val[("F1", 1)] == val[("F3", 1)] and val[("F1", 2)] == val[("F3", 2)] and val[("F1", 1)] != val[("F1", 2)]
    fixed = tiny_params(tmp_path / "fixed", real_manifest)
    assert load_run_data(resolve_run(fixed, "F1", 1), progress=False).val_idx.tolist() == \
        load_run_data(resolve_run(fixed, "F1", 2), progress=False).val_idx.tolist()


def test_the_default_seed_count_of_phase1_4_buys_the_power_its_comment_claims():
    """phase1_4.yaml's comment: with its seeds and the add-seeds design up to 20, F2 10% better is decided the winner
    in >= 90% of draws at the demo noise (bench/report_bench.py prints the full table)."""
    from pathlib import Path

    raw = yaml.safe_load((Path(__file__).parents[1] / "params" / "phase1_4.yaml").read_text())
    n = len(raw["seeds"])
    better = simulate_decisions({"F2": -0.10, "F3": 0.0}, n_seeds=n, draws=100, rng_seed=3, add_seeds=True, **DEMO_NOISE)
    assert better["rates"]["decided"] - better["rates"]["decided wrong"] >= 0.90

# The demo's seed noise (3 seeds x 3 experiments, 8 epochs on 64 px layouts): SD of log best val MSE shared by
# the experiments of a seed, and the remaining per-run SD (from the paired differences).
DEMO_NOISE = {"seed_sd": 0.094, "run_sd": 0.022}


def test_status_says_how_many_more_runs_the_seeds_cost(tmp_path, capsys):
    from imginav_lib.cli import main

    d = write_phase(tmp_path, {F1: base(3), F2: per_seed([0.06, 0.02, 0.10])}, epochs=4, epoch_time_s=90.0)
    assert main(["status", str(d)]) == 0
    out = capsys.readouterr().out
    assert "GPU-hours" in out and "more runs" in out and f"imginav run {d / 'params.yaml'}" in out


# ---------------------------------------------------------------------------------------------------------
# The criteria table, value by value (each row worked out by hand from the rules' defaults)




def test_the_rule_functions_on_their_edges():
    from imginav_lib.analysis.decision import _Family, aux_helps, pick, stability_call
    from imginav_lib.analysis.stats import compare_paired_difference

    rules = Decision()
    # Rule 2 holds for a similar or a better MSE, with good heads and more stable training; an experiment with no
    # heads beyond the baseline's (or missing from the heads table) is no auxiliary loss.
    assert aux_helps(F2, {F2: ("seg",)}, F1, "better", True, "more stable", rules)
    assert aux_helps(F2, {F2: ("seg",)}, F1, "similar", True, "more stable", rules)
    assert not aux_helps(F2, {F2: ("seg",)}, F1, "similar", True, "unclear", rules)
    assert not aux_helps(F2, {F2: ("seg",)}, F1, "unclear", True, "more stable", rules)
    assert not aux_helps(F2, {F2: ("seg",)}, F1, "similar", False, "more stable", rules)
    assert not aux_helps("F4", {F1: ()}, F1, "similar", True, "more stable", rules)
    assert aux_helps(F2, {F2: ("seg",)}, F1, "similar", True, "unclear", Decision(stability_not_worse=False))
    assert pick(F2, {F1: "similar"}, [F2], [F1, F2], HEADS, rules) == (
        F2, "an auxiliary loss helps: its MSE is similar or better, its heads are good and its training more stable", [F2, F1])
    assert pick(F2, {F1: "worse"}, [], [F1, F2], HEADS, rules)[1] == "best primary metric: every other candidate is significantly worse"
    assert pick(F2, {F1: "unclear"}, [], [F1, F2], HEADS, rules)[:2] == (F1, "fewest auxiliary losses")
    # The stability call from the corrected paired tests.
    fam = _Family()
    same = compare_paired_difference(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0]))
    lower = compare_paired_difference(np.array([1.0, 1.1, 0.9]), np.array([3.0, 3.0, 3.0]))
    tests = {"spikes": (same, fam.add("a", "d", same["p_value"])), "epochs_to_target": (lower, fam.add("b", "d", lower["p_value"]))}
    fam.correct(0.05, "holm")
    assert stability_call(tests, fam) == ("more stable", {"spikes": "unclear", "epochs_to_target": "more stable"})
    assert stability_call({"spikes": tests["spikes"]}, fam) == ("unclear", {"spikes": "unclear"})
    assert stability_call({}, fam) == ("n/a", {})


def test_the_pick_names_fewest_auxiliary_losses_only_where_the_candidates_differ_in_them():
    from imginav_lib.analysis.decision import pick

    rules = Decision()
    heads = {F1: (), F2: ("seg",), F3: ("seg", "cls")}
    assert pick(F1, {F2: "similar"}, [], [F1, F2, F3], heads, rules)[:2] == (F1, "fewest auxiliary losses")
    same = {"A_lat4": (), "B_lat8": ()}  # an architecture phase: every candidate trains the same heads
    assert pick("B_lat8", {"A_lat4": "unclear"}, [], ["A_lat4", "B_lat8"], same, rules)[:2] == ("A_lat4", "the params' order")
    assert pick("B_lat8", {"A_lat4": "worse"}, [], ["A_lat4", "B_lat8"], same, rules)[0] == "B_lat8"


def test_an_auxiliary_loss_is_one_the_baseline_does_not_train():
    from imginav_lib.analysis.decision import aux_helps

    heads = {F2: ("seg",), "F2b": ("seg",), F3: ("seg", "cls")}  # a baseline that trains seg already
    assert not aux_helps("F2b", heads, F2, "similar", True, "more stable", Decision())
    assert aux_helps(F3, heads, F2, "similar", True, "more stable", Decision())


def test_the_gaps_ask_for_two_paired_seeds_per_comparison():
    from imginav_lib.analysis.decision import _gaps

    by = {F1: pd.DataFrame(index=[1, 2]), F2: pd.DataFrame(index=[1, 2])}
    rows = lambda n: pd.DataFrame([{"experiment": F2, "versus": F1, "n": 2, "n_baseline": 2, "n_pairs": n}])  # noqa: E731
    assert _gaps([F1, F2], by, rows(2)) == []
    assert _gaps([F1, F2], by, rows(1)) == [f"{F2} against {F1} rests on 1 paired seed"]
    assert _gaps([F1, F2], by, rows(0)) == [f"{F2} against {F1} rests on 0 paired seeds"]


def test_the_leader_without_shared_seeds_is_the_lowest_plain_mean():
    from imginav_lib.analysis.decision import _leader

    by = {F1: pd.DataFrame({"m": [3.0, 3.0]}, index=[1, 2]), F2: pd.DataFrame({"m": [2.0, 2.5]}, index=[3, 4])}
    assert _leader(by, [F1, F2], "m", [F1, F2]) == F2
    by[F2].loc[5] = 9.0  # a shared seed would make it paired: not here
    assert _leader(by, [F1, F2], "m", [F1, F2]) == F1


def test_the_primary_metric_is_validation_where_a_test_value_is_missing_or_not_a_number():
    from imginav_lib.analysis.decision import primary_metric

    assert primary_metric(pd.DataFrame({"best_val_mse": [1.0, 2.0], "test_mse": [1.0, 2.0]})) == "test_mse"
    assert primary_metric(pd.DataFrame({"best_val_mse": [1.0, 2.0], "test_mse": [1.0, math.nan]})) == "best_val_mse"
    assert primary_metric(pd.DataFrame({"best_val_mse": [1.0], "test_mse": ["n/a"]})) == "best_val_mse"
    assert primary_metric(pd.DataFrame({"best_val_mse": [1.0]})) == "best_val_mse"


# ---------------------------------------------------------------------------------------------------------
# The answer in ten seconds: one sentence, at most three lines (issue 23)


def _words(r) -> str:
    """What the headline must say of a comparisons row: the change and its interval at the corrected level."""
    level = f"{r.level:.0%}" if abs(r.level * 100 - round(r.level * 100)) < 1e-9 else f"{r.level:.2%}"
    return f"val MSE {pct(r.rel_change)} vs {F1} ({level} interval {pct(r.ci_low)} to {pct(r.ci_high)})"


def test_the_headline_gives_the_winner_its_status_and_its_change_with_the_corrected_interval():
    f2 = {s: BASE[s] * (1 + c) for s, c in zip(range(1, 6), (-0.03, -0.035, -0.025, -0.03, -0.032))}
    f3 = {s: BASE[s] * (1 + c) for s, c in zip(range(1, 6), (-0.08, -0.085, -0.075, -0.08, -0.082))}
    v = decide(_table({F1: base(5), F2: f2, F3: f3}, GOOD), [F1, F2, F3], F1, HEADS, Decision())
    r = v.comparisons[(v.comparisons.experiment == F3) & (v.comparisons.versus == F1)].iloc[0]
    assert r.level > 0.95  # after Holm's correction: the interval the headline gives is the corrected one
    assert v.headline == f"Winner: {F3} (decided): {_words(r)}."
    assert 1 <= len(v.lines) <= 3 and v.lines[0] == f"It wins by the rule: {v.rule}." and v.lines[-1].startswith("Decided")


def test_when_the_baseline_wins_the_headline_gives_the_best_rivals_change():
    worse = lambda c: {s: BASE[s] * (1 + c + 0.002 * s) for s in range(1, 4)}  # noqa: E731
    v = decide(_table({F1: base(3), F2: worse(0.10), F3: worse(0.04)}, GOOD), [F1, F2, F3], F1, HEADS, Decision())
    assert v.winner == F1
    r = v.comparisons[(v.comparisons.experiment == F3) & (v.comparisons.versus == F1)].iloc[0]
    assert v.headline == f"Winner: {F1} ({v.status}), the baseline; the best rival {F3} has {_words(r)}."
    assert len(v.lines) <= 3 and all(line.endswith(".") and line.count(". ") == 0 for line in v.lines)


def test_the_lines_say_what_the_heads_reach_and_how_many_seeds_would_settle_it():
    table = _table({F1: base(3), F2: {1: BASE[1] * 1.01}}, GOOD)
    v = decide(table, [F1, F2], F1, HEADS, Decision())
    assert v.status == "provisional" and v.seeds_needed == 3
    assert v.lines[1:] == [f"Heads: {F2} segments at mIoU 0.70.", "To settle it: ≈3 seeds per experiment (0 more)."]
    said = f"the classification head of {F3} stayed at chance level (...): its loss gave the encoder no signal"
    v = decide(_table({F1: base(3), F3: base(3)}, GOOD), [F1, F3], F1, HEADS, Decision(), chance={F3: said})
    assert v.lines[1] == said[0].upper() + said[1:] + "." and len(v.lines) <= 3
    assert "classifies" not in " ".join(v.lines)  # a head at chance is named as such, not with its accuracy


def _cls_rows(e: str, seed: int, ce: list[float], bacc: list[float], majority: float = 0.5) -> list[dict]:
    return [{"experiment": e, "seed": seed, "state": "done", "epoch": i + 1, "val_cls_ce": c, "val_cls_bacc": b,
             "val_cls_majority": majority} for i, (c, b) in enumerate(zip(ce, bacc))]


def test_a_classification_head_that_never_left_chance_level_is_named_and_one_that_learned_is_not():
    from imginav_lib.analysis.chance import chance_ce, chance_words, runs_at_chance

    assert chance_ce(0.5) == pytest.approx(math.log(2)) and chance_ce(math.nan) == pytest.approx(math.log(2))
    assert chance_ce(0.85) == pytest.approx(-0.85 * math.log(0.85) - 0.15 * math.log(0.15))
    flat = [0.70, 0.69, 0.695, 0.70]
    metrics = pd.DataFrame(
        _cls_rows("stuck", 1, flat, [0.5, 0.52, 0.49, 0.5]) + _cls_rows("stuck", 2, flat, [0.5] * 4)
        + _cls_rows("learned", 1, [0.69, 0.55, 0.45, 0.40], [0.5, 0.6, 0.72, 0.8])
        + _cls_rows("ce_only", 1, [0.69, 0.66, 0.62, 0.60], [0.5] * 4)  # better calibrated than the prior: a signal
        + _cls_rows("bacc_only", 1, flat, [0.5, 0.56, 0.5, 0.5])  # one epoch above chance + margin
        + _cls_rows("imbalanced", 1, [0.45, 0.44, 0.44, 0.43], [0.5] * 4, majority=0.85)  # the prior's CE is 0.42
        + _cls_rows("no_cls", 1, flat, [0.5] * 4))
    heads = {e: ("seg", "cls") for e in ("stuck", "learned", "ce_only", "bacc_only", "imbalanced")} | {"no_cls": ("seg",)}
    runs = runs_at_chance(metrics, heads)
    assert dict(zip(runs.experiment + "/" + runs.seed.astype(str), runs.at_chance)) == {
        "stuck/1": True, "stuck/2": True, "learned/1": False, "ce_only/1": False, "bacc_only/1": False, "imbalanced/1": True}
    words = chance_words(runs)
    assert sorted(words) == ["imbalanced", "stuck"]
    assert words["stuck"].startswith("the classification head of stuck stayed at chance level (val CE 0.69 or more, chance 0.69 ≈ ln 2")
    assert "in every epoch of 2 seeds" in words["stuck"] and words["stuck"].endswith("its loss gave the encoder no signal")
    assert "the entropy of the class shares" in words["imbalanced"]
    half = pd.concat([metrics, pd.DataFrame(_cls_rows("stuck", 3, [0.69, 0.5, 0.4, 0.3], [0.5, 0.7, 0.8, 0.9]))])
    assert "stuck" not in chance_words(runs_at_chance(half, heads))  # one seed that learned: not named
