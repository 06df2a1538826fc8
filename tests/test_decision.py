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
    heads: experiment -> {"val_seg_miou": x, "val_cls_acc": y} at every epoch (default: good heads).
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
                    states={(F2, 4): (status, 0), (F1, 4): ("failed", 0)})
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
# Calls are monotone in the evidence

RANK = {"hurts": 0, "no gain": 1, "unclear": 2, "helps": 3}


def test_weak_heads_with_an_interval_reaching_past_the_tolerance_stay_unclear(tmp_path):
    # Issue 12's example: -6/-4/-2% (CI -9.0% to +1.0%) was "no gain, decided" while the weaker -6/-4/0% stayed open.
    weak = {F2: {"val_seg_miou": 0.2}}
    stronger = A.analyse(d := write_phase(tmp_path / "a", {F1: base(3), F2: per_seed([-0.06, -0.04, -0.02])}, weak),
                         d / "params.yaml").verdict
    weaker = A.analyse(d := write_phase(tmp_path / "b", {F1: base(3), F2: per_seed([-0.06, -0.04, 0.0])}, weak),
                       d / "params.yaml").verdict
    assert weaker.calls[F2] == "unclear" and stronger.calls[F2] == "unclear"
    assert stronger.status == "provisional" and "no other experiment can still beat it" not in stronger.sureness


def test_weak_heads_win_only_with_a_significantly_better_reconstruction(tmp_path):
    weak = {F2: {"val_seg_miou": 0.2}}
    better = A.analyse(d := write_phase(tmp_path / "a", {F1: base(3), F2: per_seed([-0.10, -0.09, -0.11])}, weak),
                       d / "params.yaml").verdict
    assert better.calls[F2] == "helps" and better.winner == F2 and "below the bar" in better.paragraph
    # Within the tolerance on both sides: any gain is too small to outweigh the weak head.
    same = A.analyse(d := write_phase(tmp_path / "b", {F1: base(5), F2: per_seed([0.001, -0.002, 0.0, 0.002, -0.001])}, weak),
                     d / "params.yaml").verdict
    assert same.calls[F2] == "no gain" and same.winner == F1 and same.status == "decided"


def _verdict(f2: np.ndarray, f3: np.ndarray | None, miou: float, acc: float, rules: Decision):
    """decide() on a table of per-seed best val MSE: the baseline is BASE, f2/f3 are relative changes per seed."""
    seeds = list(BASE)[: len(f2)]
    rows = [{"experiment": F1, "seed": s, "best_val_mse": BASE[s]} for s in seeds]
    rows += [{"experiment": F2, "seed": s, "best_val_mse": BASE[s] * (1 + c), "val_seg_miou": miou} for s, c in zip(seeds, f2)]
    exps, heads = [F1, F2], {F1: (), F2: ("seg",)}
    if f3 is not None:
        rows += [{"experiment": F3, "seed": s, "best_val_mse": BASE[s] * (1 + c), "val_seg_miou": 0.7, "val_cls_acc": acc}
                 for s, c in zip(seeds, f3)]
        exps, heads = exps + [F3], {**heads, F3: ("seg", "cls")}
    table = pd.DataFrame(rows).assign(spikes=0.0, late_wobble=0.01, epochs_to_10pct=3.0)
    return decide(table, exps, F1, heads, rules)


def test_calls_are_monotone_in_the_evidence():
    """Moving an experiment's per-seed values in its favour (every seed by the same factor, or its head metric up)
    never gives it a worse call, and never makes the baseline's win more certain. A seeded randomised search."""
    rng = np.random.default_rng(12)
    rules = Decision()
    checked = 0
    for _ in range(150):
        n = int(rng.integers(2, 6))
        f2 = rng.normal(rng.uniform(-0.08, 0.06), rng.uniform(0.002, 0.05), n)
        f3 = rng.normal(rng.uniform(-0.08, 0.06), rng.uniform(0.002, 0.05), n) if rng.random() < 0.5 else None
        miou = float(rng.choice([0.2, 0.45, 0.7]))
        before = _verdict(f2, f3, miou, 0.9, rules)
        for after in (_verdict((1 + f2) * (1 - rng.uniform(0.001, 0.05)) - 1, f3, miou, 0.9, rules),
                      _verdict(f2, f3, min(1.0, miou + 0.3), 0.9, rules)):
            b, a = before.calls[F2], after.calls[F2]
            assert RANK[a] >= RANK[b], (f2, f3, miou, b, a)
            if before.winner != F1 or before.status != "decided":
                assert not (after.winner == F1 and after.status == "decided"), (f2, f3, miou)
            checked += 1
    assert checked == 300


# ---------------------------------------------------------------------------------------------------------
# The winner among the non-baseline experiments


def test_candidates_that_cannot_be_told_apart_are_picked_by_preference_and_provisional(tmp_path):
    # Both similar to F1; F3's mean is 0.6% lower than F2's, but F3 vs F2 per seed swings both ways
    # (interval about -2.9% to +1.6%): a coin flip, not a winner.
    f2, f3 = [0.002, -0.004, 0.001], [-0.008, 0.0, -0.012]
    d = write_phase(tmp_path, {F1: base(3), F2: per_seed(f2), F3: per_seed(f3)})
    v = A.analyse(d, d / "params.yaml").verdict
    assert v.calls[F2] == v.calls[F3] == "helps"
    assert v.winner == F2  # the default preference: fewest auxiliary losses
    assert v.status == "provisional"
    assert f"{F2} and {F3} are indistinguishable (interval" in v.paragraph


def test_candidates_equal_within_the_tolerance_are_picked_by_preference_and_decided(tmp_path):
    f = [-0.05, -0.04, -0.06, -0.05, -0.045]
    d = write_phase(tmp_path, {F1: base(5), F2: per_seed(f), F3: per_seed([c + 0.001 * (-1) ** i for i, c in enumerate(f)])})
    v = A.analyse(d, d / "params.yaml").verdict
    assert v.winner == F2 and v.status == "decided"
    assert f"{F2} and {F3} are equivalent" in v.paragraph


def test_the_declared_preference_order_decides_between_indistinguishable_candidates(tmp_path):
    f2, f3 = [0.002, -0.004, 0.001], [-0.008, 0.0, -0.012]
    d = write_phase(tmp_path, {F1: base(3), F2: per_seed(f2), F3: per_seed(f3)}, decision={"preference": [F3, F2, F1]})
    v = A.analyse(d, d / "params.yaml").verdict
    assert v.winner == F3 and v.status == "provisional"


def test_a_candidate_that_beats_the_other_head_to_head_wins(tmp_path):
    f2, f3 = [-0.03, -0.035, -0.025, -0.03, -0.032], [-0.08, -0.085, -0.075, -0.08, -0.082]
    d = write_phase(tmp_path, {F1: base(5), F2: per_seed(f2), F3: per_seed(f3)})
    v = A.analyse(d, d / "params.yaml").verdict
    assert v.winner == F3 and v.status == "decided"
    h2h = v.comparisons.set_index(["experiment", "versus"]).loc[(F3, F2)]
    assert h2h.ci_high < 0 and h2h.n_pairs == 5


# ---------------------------------------------------------------------------------------------------------
# Probability of improvement, seeds, variance


def test_probability_of_improvement_is_in_the_comparisons_and_the_verdict(tmp_path):
    d = write_phase(tmp_path, {F1: base(3), F2: per_seed([-0.05, -0.03, 0.01])})
    v = A.analyse(d, d / "params.yaml").verdict
    row = v.comparisons.set_index("experiment").loc[F2]
    assert row.p_improve == pytest.approx(2 / 3)  # F2 beats F1 in seeds 1 and 2, not in seed 3
    assert "beats F1_rgb_only in 2 of 3 seeds" in v.paragraph


def test_decided_needs_every_experiment_finished_and_two_paired_seeds(tmp_path):
    # Issue 14: 1 seed of F1 and no F2/F3 run said "decided" while its own text said "Not sure".
    d = write_phase(tmp_path / "a", {F1: base(1), F2: {}, F3: {}})
    v = A.analyse(d, d / "params.yaml").verdict
    assert v.status == "provisional" and v.winner == F1
    # Every experiment finished, but F3 only in 1 seed: no interval, so nothing about F3 is certain.
    d = write_phase(tmp_path / "b", {F1: base(3), F2: per_seed([0.10, 0.11, 0.09]), F3: per_seed([0.10])})
    v = A.analyse(d, d / "params.yaml").verdict
    assert v.status == "provisional"
    # And with the evidence, it is decided.
    d = write_phase(tmp_path / "c", {F1: base(3), F2: per_seed([0.10, 0.11, 0.09]), F3: per_seed([0.10, 0.12, 0.11])})
    v = A.analyse(d, d / "params.yaml").verdict
    assert v.status == "decided" and v.winner == F1


def test_asking_for_more_seeds_gives_the_command_the_runs_and_the_gpu_hours(tmp_path):
    d = write_phase(tmp_path, {F1: base(3), F2: per_seed([-0.06, 0.05, 0.0])}, epochs=4, epoch_time_s=90.0)
    v = A.analyse(d, d / "params.yaml").verdict
    assert v.status == "provisional" and v.seeds_needed and v.seeds_needed > 3
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
    from pathlib import Path

    raw = yaml.safe_load((Path(__file__).parents[1] / "params" / "phase1_4.yaml").read_text())
    n = len(raw["seeds"])
    better = simulate_decisions({"F2": -0.10}, n_seeds=n, draws=200, rng_seed=3, **DEMO_NOISE)
    assert better["winner"].get("F2", 0) >= 0.95


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


def test_criteria_rows_are_the_rules_applied_by_hand():
    """Per-seed changes -4/-5/-6% for every experiment: mean -5%, SD 1%, t(0.975, 2) = 4.3027, so the 95% interval
    is -5% ± 4.3027 x 1% / sqrt(3) = -7.48% to -2.52%. Head gates and stability values sit on the thresholds (equal
    passes) or past them, and the two kinds of n/a each have their reason."""
    seeds, change = [1, 2, 3], {1: -0.04, 2: -0.05, 3: -0.06}
    rows = [{"experiment": F1, "seed": s, "best_val_mse": BASE[s], "spikes": 0.0, "late_wobble": 0.01, "epochs_to_10pct": 3.0}
            for s in seeds]
    own = {F2: {"val_seg_miou": 0.45, "spikes": 1.0, "late_wobble": 0.021, "epochs_to_10pct": 5.0},
           F3: {"val_seg_miou": 0.5, "val_cls_acc": math.nan, "n_val_labelled": 0, "spikes": 1.5, "late_wobble": 0.01,
                "epochs_to_10pct": 3.0},
           "F4": {"spikes": 0.0, "late_wobble": 0.0211, "epochs_to_10pct": 5.5},
           # seg never logged (its row comes first, n/a), cls scored; spikes never logged (first stability row)
           "F5": {"val_cls_acc": 0.9, "n_val_labelled": 40, "spikes": math.nan, "late_wobble": 0.01, "epochs_to_10pct": 3.0}}  # fmt: skip
    rows += [{"experiment": e, "seed": s, "best_val_mse": BASE[s] * (1 + change[s]), **v} for e, v in own.items() for s in seeds]
    # Worse: +5/+6/+7% (CI +3.5% to +8.5%). Unclear: 0/+2/+4% (mean 2%, SD 2%: CI -2.97% to +6.97%).
    for e, ch in (("F6", {1: 0.05, 2: 0.06, 3: 0.07}), ("F7", {1: 0.0, 2: 0.02, 3: 0.04})):
        rows += [{"experiment": e, "seed": s, "best_val_mse": BASE[s] * (1 + ch[s]), "spikes": 0.0, "late_wobble": 0.01,
                  "epochs_to_10pct": 3.0} for s in seeds]  # fmt: skip
    heads = {F1: (), F2: ("seg",), F3: ("seg", "cls"), "F4": ("cls",), "F5": ("seg", "cls"), "F6": (), "F7": ()}
    v = decide(pd.DataFrame(rows), [F1, F2, F3, "F4", "F5", "F6", "F7"], F1, heads, Decision())
    ci = "-5.0% (CI -7.5% to -2.5%)"
    mse = [("val MSE not worse than baseline", ci, "CI not entirely above 0 and reaching past +2.0%", "pass"),
           ("val MSE similar (within ±2%) or better", ci, "CI upper ≤ +2.0%", "pass")]
    expected = {
        F2: mse + [("seg mIoU good", "0.450", "≥ 0.5", "fail"),
                   ("loss spikes per run not worse", "1.0", "≤ 1.0 (baseline 0.0)", "pass"),
                   ("late val wobble not worse", "2.10%", "≤ 2.10% (baseline 1.00%)", "pass"),
                   ("epochs to within 10% of best not worse", "5.0", "≤ 5.0 (baseline 3.0)", "pass")],
        F3: mse + [("seg mIoU good", "0.500", "≥ 0.5", "pass"),
                   ("cls accuracy good", "n/a: no validation image has a room/scene label", "≥ 0.8", "n/a"),
                   ("loss spikes per run not worse", "1.5", "≤ 1.0 (baseline 0.0)", "fail"),
                   ("late val wobble not worse", "1.00%", "≤ 2.10% (baseline 1.00%)", "pass"),
                   ("epochs to within 10% of best not worse", "3.0", "≤ 5.0 (baseline 3.0)", "pass")],
        "F4": mse + [("cls accuracy good", "n/a: not logged by any run", "≥ 0.8", "n/a"),
                     ("loss spikes per run not worse", "0.0", "≤ 1.0 (baseline 0.0)", "pass"),
                     ("late val wobble not worse", "2.11%", "≤ 2.10% (baseline 1.00%)", "fail"),
                     ("epochs to within 10% of best not worse", "5.5", "≤ 5.0 (baseline 3.0)", "fail")],
    }
    stable = [("loss spikes per run not worse", "0.0", "≤ 1.0 (baseline 0.0)", "pass"),
              ("late val wobble not worse", "1.00%", "≤ 2.10% (baseline 1.00%)", "pass"),
              ("epochs to within 10% of best not worse", "3.0", "≤ 5.0 (baseline 3.0)", "pass")]
    expected["F5"] = mse + [("seg mIoU good", "n/a: not logged by any run", "≥ 0.5", "n/a"),
                            ("cls accuracy good", "0.900", "≥ 0.8", "pass"),
                            ("loss spikes per run not worse", "n/a", "", "n/a")] + stable[1:]
    worse = "+6.0% (CI +3.5% to +8.5%)"
    expected["F6"] = [("val MSE not worse than baseline", worse, "CI not entirely above 0 and reaching past +2.0%", "fail"),
                      ("val MSE similar (within ±2%) or better", worse, "CI upper ≤ +2.0%", "fail")] + stable
    unclear = "+2.0% (CI -3.0% to +7.0%)"
    expected["F7"] = [("val MSE not worse than baseline", unclear, "CI not entirely above 0 and reaching past +2.0%", "unclear"),
                      ("val MSE similar (within ±2%) or better", unclear, "CI upper ≤ +2.0%", "unclear")] + stable
    crit = v.criteria
    for e, want in expected.items():
        got = [tuple(r) for r in crit[crit.experiment == e][["criterion", "value", "threshold", "result"]].itertuples(index=False)]
        assert got == want, e
    assert crit[crit.experiment == F1][["criterion", "value", "result"]].values.tolist() == [
        ["val MSE (baseline, 3 seeds)", f"{np.mean([BASE[s] for s in seeds]):.4g}", "baseline"]]
    # Clearly better with a weak seg head: helps (the bar is waived for a significantly better reconstruction);
    # less stable: hurts; an n/a head neither helps nor hurts, but the wobble and convergence do.
    assert v.calls == {F1: "baseline", F2: "helps", F3: "hurts", "F4": "hurts", "F5": "helps", "F6": "hurts", "F7": "unclear"}
    # A gate column that no run has at all (not even empty): n/a, not a crash.
    only = pd.DataFrame([r for r in rows if r["experiment"] in (F1, "F6")])
    assert "val_cls_acc" not in only and "n_val_labelled" not in only
    v = decide(only.replace({"F6": "F4"}), [F1, "F4"], F1, {F1: (), "F4": ("cls",)}, Decision())
    assert v.criteria[v.criteria.criterion == "cls accuracy good"][["value", "result"]].values.tolist() == [
        ["n/a: not logged by any run", "n/a"]]


def test_without_the_stability_rule_the_stability_rows_only_inform():
    seeds = [1, 2, 3]
    rows = [{"experiment": F1, "seed": s, "best_val_mse": BASE[s], "spikes": 0.0, "late_wobble": 0.01, "epochs_to_10pct": 3.0}
            for s in seeds]
    rows += [{"experiment": F2, "seed": s, "best_val_mse": BASE[s] * 0.9, "val_seg_miou": 0.7, "spikes": 5.0,
              "late_wobble": 0.5, "epochs_to_10pct": 9.0} for s in seeds]  # fmt: skip
    v = decide(pd.DataFrame(rows), [F1, F2], F1, {F1: (), F2: ("seg",)}, Decision(stability_not_worse=False))
    crit = v.criteria[v.criteria.experiment == F2].set_index("criterion")["result"]
    assert [crit[c] for c in ("loss spikes per run not worse", "late val wobble not worse",
                              "epochs to within 10% of best not worse")] == ["info"] * 3  # fmt: skip
    assert v.calls[F2] == "helps"


def test_interval_classes_at_their_exact_boundaries():
    from imginav_lib.analysis.stats import classify_change

    tol = 0.02
    assert classify_change(-0.05, -0.001, tol) == "better"
    assert classify_change(-0.05, 0.0, tol) == "similar"  # an upper end of exactly 0 is not better
    assert classify_change(-0.05, tol, tol) == "similar"  # up to the tolerance, included
    assert classify_change(0.0, 0.05, tol) == "unclear"  # a lower end of exactly 0 is not worse
    assert classify_change(0.001, 0.05, tol) == "worse"
    assert classify_change(math.nan, -0.05, tol) == "unclear" and classify_change(-0.05, math.nan, tol) == "unclear"


def _seeds_reference(changes, tol=0.02, alpha=0.05, power=0.8, margin=None):
    """The seeds that settle a comparison, from the formula with scipy's quantiles: the smallest n with
    (t_{1-alpha/2, n-1} + z_power) x SD / sqrt(n) <= margin."""
    from scipy import stats

    m, sd = float(np.mean(changes)), float(np.std(changes, ddof=1))
    margin = max(tol - m, m) if margin is None else margin(m, tol)
    return next(n for n in range(2, 201) if (stats.t.ppf(1 - alpha / 2, n - 1) + stats.norm.ppf(power)) * sd / math.sqrt(n) <= margin)


def test_the_seeds_asked_for_follow_the_open_question():
    # Weak seg head, val MSE -2% ± 1% (CI -4.5% to +0.5%): unclear until significantly better (upper end < 0) or
    # any gain is within the tolerance (lower end >= -2%): margin max(-m, m + tol) = 2% = 2 SD, so 5 seeds.
    weak = np.array([-0.03, -0.01, -0.02])
    v = _verdict(weak, None, 0.2, 0.9, Decision())
    assert v.calls[F2] == "unclear" and v.seeds_needed == 5 == _seeds_reference(weak, margin=lambda m, tol: max(-m, m + tol))
    # At zero the other end decides: m = 0 (CI -2.5% to +2.5%), margin max(-m, m + tol) = 2%.
    near = np.array([0.01, -0.01, 0.0])
    v = _verdict(near, None, 0.2, 0.9, Decision())
    assert v.calls[F2] == "unclear" and v.seeds_needed == _seeds_reference(near, margin=lambda m, tol: max(-m, m + tol))
    # Good heads, interval straddling the tolerance: similar (upper end <= tol) or worse (lower end > 0), by default.
    open_ = np.array([0.03, 0.0, 0.015])
    v = _verdict(open_, None, 0.7, 0.9, Decision())
    assert v.calls[F2] == "unclear" and v.seeds_needed == _seeds_reference(open_)
    v9 = _verdict(open_, None, 0.7, 0.9, Decision(power=0.9))
    assert v9.seeds_needed == _seeds_reference(open_, power=0.9) > v.seeds_needed
    # Clearly better with good heads: nothing is open.
    assert _verdict(np.array([-0.10, -0.11, -0.09]), None, 0.7, 0.9, Decision()).seeds_needed is None


def test_one_seed_against_the_baseline_asks_for_three():
    rows = [{"experiment": F1, "seed": s, "best_val_mse": BASE[s]} for s in (1, 2, 3)]
    rows += [{"experiment": F2, "seed": 1, "best_val_mse": BASE[1] * 1.01, "val_seg_miou": 0.7}]
    table = pd.DataFrame(rows).assign(spikes=0.0, late_wobble=0.01, epochs_to_10pct=3.0)
    v = decide(table, [F1, F2], F1, {F1: (), F2: ("seg",)}, Decision())
    assert v.calls[F2] == "unclear" and v.seeds_needed == 3  # no spread is known: the minimum that gives an interval


def test_head_to_head_on_known_values():
    """Two helpers, both 10% better than the baseline. Identical per seed: equivalent (interval [0, 0]) even with
    a tolerance of 0, and the one with fewer auxiliary losses wins. Different seeds with one in common: the
    unpaired (Welch) comparison over all their seeds."""
    seeds = (1, 2, 3)
    rows = [{"experiment": F1, "seed": s, "best_val_mse": BASE[s]} for s in seeds]
    rows += [{"experiment": e, "seed": s, "best_val_mse": BASE[s] * 0.9, "val_seg_miou": 0.7, "val_cls_acc": 0.9}
             for e in (F2, F3) for s in seeds]  # fmt: skip
    table = pd.DataFrame(rows).assign(spikes=0.0, late_wobble=0.01, epochs_to_10pct=3.0)
    heads = {F1: (), F2: ("seg",), F3: ("seg", "cls")}
    v = decide(table, [F1, F2, F3], F1, heads, Decision(similar_tolerance=0.0))
    h2h = v.comparisons[v.comparisons.call == "head to head"]
    assert h2h[["experiment", "versus", "change", "n_pairs"]].values.tolist() == [[F2, F3, "equivalent", 3]]
    assert (h2h.ci_low.item(), h2h.ci_high.item()) == (0.0, 0.0) and v.winner == F2
    # F3 1% better than F2 in every seed: significantly better head to head, so F3 wins despite its extra loss.
    better = table.assign(best_val_mse=np.where(table.experiment == F3, table.best_val_mse * 0.99, table.best_val_mse))
    v = decide(better, [F1, F2, F3], F1, heads, Decision())
    h2h = v.comparisons[v.comparisons.call == "head to head"]
    assert h2h[["experiment", "versus", "change"]].values.tolist() == [[F3, F2, "better"]] and v.winner == F3
    assert h2h.rel_change.item() == pytest.approx(-0.01)
    # F2 in seeds 1, 2 and F3 in seeds 2, 3 (one common seed): Welch over both seeds of each.
    split = table[~((table.experiment == F2) & (table.seed == 3)) & ~((table.experiment == F3) & (table.seed == 1))]
    split = split.assign(best_val_mse=np.where(split.experiment == F3, split.best_val_mse * 0.99, split.best_val_mse))
    v = decide(split, [F1, F2, F3], F1, heads, Decision())
    h2h = v.comparisons[v.comparisons.call == "head to head"].iloc[0]
    f2, f3 = np.array([BASE[1], BASE[2]]) * 0.9, np.array([BASE[2], BASE[3]]) * 0.9 * 0.99
    lead, other = (f3, f2) if f3.mean() < f2.mean() else (f2, f3)
    assert h2h.test.startswith("Welch") and h2h.n == 2 and h2h.n_baseline == 2 and h2h.n_pairs == 1
    assert h2h.rel_change == pytest.approx(lead.mean() / other.mean() - 1)


def _table(values: dict, heads: dict) -> pd.DataFrame:
    """Finished runs: values is experiment -> {seed: best val MSE}; heads is experiment -> {gate column: value} (every
    seed); the stability columns equal the baseline's."""
    rows = [{"experiment": e, "seed": s, "best_val_mse": v, **heads.get(e, {})} for e, per in values.items() for s, v in per.items()]
    return pd.DataFrame(rows).assign(spikes=0.0, late_wobble=0.01, epochs_to_10pct=3.0)


HEADS = {F1: (), F2: ("seg",), F3: ("seg", "cls"), "F4": ()}
GOOD = {F2: {"val_seg_miou": 0.7}, F3: {"val_seg_miou": 0.7, "val_cls_acc": 0.9}}
SURE = "Sure enough to pick the winner: no other experiment can still beat it at this level. "
INTERVALS = "95% confidence intervals (t-interval across seeds, paired by seed where the seeds match)."
TWO_SEEDS = " With 2 seeds a t-interval is very wide (t = 12.7); 3 or more seeds are needed for a useful interval."


def test_head_gates_on_the_bar_and_a_similar_reconstruction():
    """Per-seed changes 0/+0.5/+1% for F2 and F3 (mean 0.5%, SD 0.5%): the 95% interval is 0.5% ± 4.3027 x 0.5% /
    sqrt(3) = -0.74% to +1.74%, inside ±2%: similar, which passes both val MSE rows. F2's seg mIoU sits exactly on the
    bar (0.5 passes): helps. F3's seg mIoU misses it (0.45) while its cls accuracy passes (0.9): one weak gate is
    enough for "no gain", and with a similar interval nothing about F3 stays open. F2 is the only helper: decided.
    Means: (0.0040 + 0.0046 x 1.005 + 0.0037 x 1.01) / 3 = 0.00412 against (0.0040 + 0.0046 + 0.0037) / 3 = 0.0041."""
    change = {1: 0.0, 2: 0.005, 3: 0.01}
    mse = {s: BASE[s] * (1 + c) for s, c in change.items()}
    table = _table({F1: base(3), F2: mse, F3: mse}, {F2: {"val_seg_miou": 0.5}, F3: {"val_seg_miou": 0.45, "val_cls_acc": 0.9}})
    v = decide(table, [F1, F2, F3], F1, HEADS, Decision())
    assert v.calls == {F1: "baseline", F2: "helps", F3: "no gain"}
    assert (v.winner, v.status, v.seeds_needed) == (F2, "decided", None)
    ci = "+0.5% (CI -0.7% to +1.7%)"
    crit = v.criteria
    got = {e: [tuple(r) for r in crit[crit.experiment == e][["criterion", "value", "result"]].itertuples(index=False)][:4]
           for e in (F2, F3)}
    mse_rows = [("val MSE not worse than baseline", ci, "pass"), ("val MSE similar (within ±2%) or better", ci, "pass")]
    assert got[F2] == mse_rows + [("seg mIoU good", "0.500", "pass"), ("loss spikes per run not worse", "0.0", "pass")]
    assert got[F3] == mse_rows + [("seg mIoU good", "0.450", "fail"), ("cls accuracy good", "0.900", "pass")]
    assert v.sureness == SURE + "3 finished seeds per experiment; " + INTERVALS
    row = v.comparisons.set_index("experiment").loc[F2]
    assert row["mean"] == pytest.approx(0.00412) and row.mean_baseline == pytest.approx(0.0041)


def test_a_weak_head_with_an_open_val_mse_cannot_win_and_says_what_stays_open():
    """Weak seg head, per-seed changes 0/+1/+2% (mean 1%, SD 1%): interval 1% ± 4.3027 x 1% / sqrt(3) = -1.48% to
    +3.48%: unclear (past +2%, not above 0), but any gain is within -2%: no gain, and the baseline wins, decided.
    Whether F2 hurts stays open: similar needs a half-width below tol - m = 1%, worse one below m = 1%, so 1 SD:
    the smallest n with t(0.975, n-1) + z(0.8) <= sqrt(n) is 10 (2.262 + 0.842 = 3.104 <= 3.162; n = 9: 3.148 > 3).
    Those seeds are not asked for: F2 cannot win either way."""
    v = _verdict(np.array([0.0, 0.01, 0.02]), None, 0.2, 0.9, Decision())
    assert (v.calls[F2], v.winner, v.status, v.seeds_needed) == ("no gain", F1, "decided", None)
    assert v.sureness == (SURE + "3 finished seeds per experiment; " + INTERVALS + f" Whether {F2} hurts reconstruction "
                          "stays open (its val MSE interval is too wide; ≈10 seeds per experiment would tell), but it "
                          "cannot win with its heads below the bar.")


def test_a_comparison_counts_every_finished_seed_of_each_side():
    """F2 finished seeds 1-4, the baseline 1-3: paired over the 3 common seeds (each exactly -10%), with n = 4 and
    n_baseline = 3; each mean is over all of its side's seeds: 0.9 x (0.0040 + 0.0046 + 0.0037 + 0.0043) / 4 = 0.003735
    against (0.0040 + 0.0046 + 0.0037) / 3 = 0.0041."""
    table = _table({F1: base(3), F2: {s: BASE[s] * 0.9 for s in (1, 2, 3, 4)}}, GOOD)
    v = decide(table, [F1, F2], F1, HEADS, Decision())
    row = v.comparisons.set_index("experiment").loc[F2]
    assert (row.versus, row.n, row.n_baseline, row.n_pairs, row.test, row.change, row.call) == (
        F1, 4, 3, 3, "paired t (3 seeds)", "better", "helps")
    assert row.rel_change == pytest.approx(-0.1) and row["mean"] == pytest.approx(0.003735) and row.mean_baseline == pytest.approx(0.0041)


def test_two_paired_seeds_can_decide():
    """F2 10% below the baseline in both of 2 seeds: the interval has no width, better, helps; 2 paired seeds are
    enough to decide, with the caveat on 2-seed intervals."""
    v = _verdict(np.array([-0.10, -0.10]), None, 0.7, 0.9, Decision())
    assert (v.calls[F2], v.winner, v.status, v.seeds_needed) == ("helps", F2, "decided", None)
    assert v.sureness == SURE + "2 finished seeds per experiment; " + INTERVALS + TWO_SEEDS


def test_what_is_missing_is_said_comparison_by_comparison():
    """Baseline seeds 1-3. F2 finished only seed 1 and F3 only seed 2: 1 paired seed each, no interval, unclear, and
    with no spread known the minimum of 3 seeds is asked for. F4 (no auxiliary loss) finished seeds 4 and 5 at half
    the baseline's val MSE: 0 paired seeds, but Welch over 2 against 3 seeds is clearly better (about -49% ± 27%),
    so F4 wins, provisionally. Seeds per experiment run from 1 to 3."""
    table = _table({F1: base(3), F2: {1: BASE[1]}, F3: {2: BASE[2]}, "F4": {4: BASE[4] * 0.5, 5: BASE[5] * 0.5}}, GOOD)
    v = decide(table, [F1, F2, F3, "F4"], F1, HEADS, Decision())
    assert v.calls == {F1: "baseline", F2: "unclear", F3: "unclear", "F4": "helps"}
    assert (v.winner, v.status, v.seeds_needed) == ("F4", "provisional", 3)
    assert v.comparisons.set_index("experiment").loc["F4", ["n_pairs", "test", "change"]].tolist() == [
        0, "Welch t (seeds not paired)", "better"]
    assert v.sureness == (f"Not sure yet: the intervals of {F2}, {F3} are too wide to decide; {F2} against {F1} rests on "
                          f"1 paired seed; {F3} against {F1} rests on 1 paired seed; F4 against {F1} rests on 0 paired "
                          "seeds; needs more seeds (≈3 per experiment). 1 to 3 finished seeds per experiment; "
                          + INTERVALS + TWO_SEEDS)


def test_the_seeds_asked_for_in_words_up_to_the_cap():
    """Up to 200 seeds the count is given; past it (seeds_needed's 201) the change sits on a boundary; with no count
    (nothing undecided to size) at least 3."""
    from imginav_lib.analysis.decision import _sureness

    by = {F1: pd.DataFrame(index=[1, 2, 3]), F2: pd.DataFrame(index=[1, 2, 3])}
    for need, more in ((200, "needs more seeds (≈200 per experiment)"),
                       (201, "needs more seeds (the observed change sits on a boundary: more than 200 seeds would be "
                             "needed; treat them as equal)"),
                       (None, "needs more seeds (≥ 3 per experiment)")):
        assert _sureness(by, [F1, F2], F1, "provisional", need, Decision(), [F2], [], False) == (
            f"Not sure yet: the intervals of {F2} are too wide to decide; {more}. 3 finished seeds per experiment; " + INTERVALS)


def test_weak_heads_give_no_gain_from_a_lower_end_exactly_at_the_tolerance():
    from imginav_lib.analysis.decision import call_for

    assert call_for("unclear", -0.02, False, True, 0.02) == "no gain"  # any gain within -tol, the end included
    assert call_for("unclear", -0.0201, False, True, 0.02) == "unclear"
    assert call_for("unclear", math.nan, False, True, 0.02) == "unclear"


def test_indistinguishable_candidates_ask_for_the_seeds_that_would_tell_them_apart():
    """F2 is 10% below the baseline in every seed, F3 is F2 x (1 - 1/0/2%): F3 against F2 has mean -1%, SD 1%, interval
    -1% ± 4.3027 x 1% / sqrt(3) = -3.48% to +1.48%, past -2%: indistinguishable. Telling them apart needs a half-width
    below max(|m|, tol - |m|) = 1% = 1 SD: the smallest n with t(0.975, n-1) + z(power) <= sqrt(n), 10 at power 0.8
    (2.262 + 0.842 = 3.104 <= 3.162; n = 9: 3.148 > 3) and 13 at power 0.9 (2.179 + 1.282 = 3.460 <= 3.606; n = 12:
    3.483 > 3.464). Means: 0.9 x (0.0040 x 0.99 + 0.0046 + 0.0037 x 0.98) / 3 = 0.0036558 (F3, the lead) against
    0.9 x 0.0041 = 0.00369. F3 is listed before F2, and the sentence names them in that order."""
    d = {1: -0.01, 2: 0.0, 3: -0.02}
    table = _table({F1: base(3), F2: {s: BASE[s] * 0.9 for s in d}, F3: {s: BASE[s] * 0.9 * (1 + c) for s, c in d.items()}}, GOOD)
    exps = [F1, F3, F2]
    v = decide(table, exps, F1, HEADS, Decision())
    assert v.calls == {F1: "baseline", F3: "helps", F2: "helps"}
    h2h = v.comparisons[v.comparisons.call == "head to head"]
    assert h2h[["experiment", "versus", "change", "n_pairs"]].values.tolist() == [[F3, F2, "indistinguishable", 3]]
    assert (h2h["mean"].item(), h2h.mean_baseline.item()) == (pytest.approx(0.0036558), pytest.approx(0.00369))
    assert (v.winner, v.status, v.seeds_needed) == (F2, "provisional", 10)
    tie = (f"{F3} and {F2} are indistinguishable (interval -3.5% to +1.5% of {F3}'s val MSE against {F2}'s): "
           "{} is picked by {}, provisionally.")
    assert tie.format(F2, "fewest auxiliary losses") in v.paragraph
    assert v.sureness == ("Not sure yet: the best candidates cannot be told apart head to head; needs more seeds (≈10 per "
                          "experiment). 3 finished seeds per experiment; " + INTERVALS)
    v = decide(table, exps, F1, HEADS, Decision(power=0.9, preference=[F3, F2, F1]))
    assert (v.winner, v.status, v.seeds_needed) == (F3, "provisional", 13)
    assert tie.format(F3, "decision.preference") in v.paragraph


def test_head_to_head_at_the_rules_level_and_every_pair_said():
    """alpha = 0.1: 90% intervals, t(0.95, 2) = 2.9200. F2 is 10% below the baseline in every seed; F3 is F2 x
    (1 - 1/2/3%): mean -2%, SD 1%, interval -2% ± 2.92 x 1% / sqrt(3) = -3.69% to -0.31%, so F3 beats F2 (a 95%
    interval would reach +0.48%). F4 (no auxiliary loss) equals F3 in every seed: equivalent (interval [0, 0]), and
    the fewest auxiliary losses pick F4. Both head-to-head sentences are said, in the order of the experiments."""
    d = {1: -0.01, 2: -0.02, 3: -0.03}
    f3 = {s: BASE[s] * 0.9 * (1 + c) for s, c in d.items()}
    table = _table({F1: base(3), F2: {s: BASE[s] * 0.9 for s in d}, F3: f3, "F4": f3}, GOOD)
    v = decide(table, [F1, F2, F3, "F4"], F1, HEADS, Decision(alpha=0.1))
    h2h = v.comparisons[v.comparisons.call == "head to head"]
    assert h2h[["experiment", "versus", "change"]].values.tolist() == [[F3, F2, "better"], [F3, "F4", "equivalent"]]
    assert (v.winner, v.status, v.seeds_needed) == ("F4", "decided", None)
    assert (f"{F3} beats {F2} head to head: val MSE -2.0% (CI -3.7% to -0.3%, paired by seed). {F3} and F4 are "
            f"equivalent (interval +0.0% to +0.0% of {F3}'s val MSE against F4's, within ±2%): F4 is picked by fewest "
            "auxiliary losses.") in v.paragraph
