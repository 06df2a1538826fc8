"""Each added loss on its own (decision.steps), the boundary row of the criteria, the latent in the hand-off, and
the verdict's wording for a phase that compares architectures; on synthetic phase folders with planted effects."""
from __future__ import annotations

import pytest
import yaml

from imginav_lib.analysis import analyse
from imginav_lib.analysis.handoff import write_handoff
from imginav_lib.report.sections import steps_html
from imginav_lib.analysis.ablation import what_is_added
from imginav_lib.testing.synthetic import write_synthetic_phase

EXPS = {"F1": {}, "F2": {"seg": 0.05}, "F3": {"seg": 0.05, "cls": 0.01}}


def _set_params(runs, **decision):
    p = runs / "params.yaml"
    params = yaml.safe_load(p.read_text())
    params["decision"] = {**params.get("decision", {}), **decision}
    p.write_text(yaml.safe_dump(params))
    index = runs / "index.json"
    import json

    from imginav_lib.config.params import params_hash

    data = json.loads(index.read_text())
    data["params_hash"] = params_hash(p)
    index.write_text(json.dumps(data))


def test_classification_step_is_tested_against_the_experiment_it_extends(tmp_path):
    # F3 = F2 + classification, planted 15% worse than F2; F2 equal to F1.
    runs = write_synthetic_phase(tmp_path, experiments=EXPS, seeds=(1, 2, 3, 4), effects={"F3": {"mse": 1.15}}, noise=0.01)
    _set_params(runs, steps=[["F1", "F2"], ["F2", "F3"]])
    a = analyse(runs)
    st = a.steps.set_index("later")
    assert st.loc["F2", "added"] == "adds the segmentation loss" and st.loc["F3", "added"] == "adds the classification loss"
    assert st.loc["F3", "earlier"] == "F2" and st.loc["F3", "n_pairs"] == 4 and st.loc["F3", "test"] == "paired t (4 seeds)"
    assert st.loc["F3", "change"] == "worse" and 0.10 < st.loc["F3", "rel_change"] < 0.20
    assert "The classification loss on its own (F3 against F2, paired by seed) degrades reconstruction" in a.verdict.paragraph
    assert "95% CI" in a.verdict.paragraph.split("classification loss on its own")[1]
    html = steps_html(a)
    assert "decision.steps in the params" in html and "adds the classification loss" in html


def test_steps_default_to_each_experiment_against_the_baseline(tmp_path):
    runs = write_synthetic_phase(tmp_path, experiments=EXPS, seeds=(1, 2))
    a = analyse(runs)
    assert list(zip(a.steps.earlier, a.steps.later)) == [("F1", "F2"), ("F1", "F3")]
    assert a.steps.loc[1, "added"] == "adds the segmentation and classification losses"
    assert "on its own" not in a.verdict.paragraph  # no step isolates the classification loss


def test_boundary_f_is_an_informative_criterion_unless_the_decision_asks_for_it(tmp_path):
    runs = write_synthetic_phase(tmp_path, experiments=EXPS, seeds=(1, 2, 3))
    crit = analyse(runs).verdict.criteria
    rows = crit[crit.criterion.str.contains("boundary F")]
    assert set(rows.result) == {"info"} and set(rows.experiment) == {"F2", "F3"}
    _set_params(runs, boundary_not_worse=True)
    crit = analyse(runs).verdict.criteria
    rows = crit[crit.criterion.str.contains("boundary F")]
    assert set(rows.result) <= {"pass", "fail", "unclear"} and len(rows) == 2


def test_what_is_added_names_losses_and_other_settings():
    a = {"loss": {"mse": 1, "seg": 0, "cls": 0}, "architecture": {"latent_channels": 4}}
    b = {"loss": {"mse": 1, "seg": 0.05, "cls": 0}, "architecture": {"latent_channels": 4}}
    c = {"loss": {"mse": 1, "seg": 0, "cls": 0}, "architecture": {"latent_channels": 8}}
    assert what_is_added(a, b) == "adds the segmentation loss"
    assert what_is_added(b, a) == "drops the segmentation loss"
    assert what_is_added(a, c) == "changes architecture.latent_channels 4 → 8"


def test_architecture_phase_verdict_speaks_of_the_architecture_and_hands_on_the_latent_scale(tmp_path):
    runs = write_synthetic_phase(tmp_path, phase="arch", experiments={"A": {}, "B": {}}, seeds=(1, 2, 3),
                                 effects={"B": {"mse": 0.8}}, noise=0.01)  # fmt: skip
    for seed in (1, 2, 3):
        cfg_path = runs / "B" / f"seed{seed}" / "config.yaml"
        cfg = yaml.safe_load(cfg_path.read_text())
        cfg["architecture"]["latent_channels"] = 8
        cfg_path.write_text(yaml.safe_dump(cfg))
    _set_params(runs, handoff=None)
    a = analyse(runs)
    assert a.verdict.winner == "B"
    assert "changes architecture.latent_channels 4 → 8, which does not hurt and helps" in a.verdict.paragraph
    assert "auxiliary" not in a.verdict.paragraph and "RGB-only" not in a.verdict.paragraph
    written = write_handoff(a.runs, a.verdict, a.summary)
    assert set(written) == {"winner"}  # handoff: null: no next-phase params
    winner = yaml.safe_load(written["winner"].read_text())
    best_seed = winner["best_seed"]
    import json

    ev = json.loads((runs / "B" / f"seed{best_seed}" / "eval.json").read_text())
    assert winner["latent_scale"] == ev["latent"]["scaling_factor"] and winner["architecture"]["latent_channels"] == 8


def test_latent_statistics_are_labelled_with_their_model_and_the_next_phase_measures_its_own(tmp_path):
    """winner.yaml's latent statistics name the checkpoint they were measured on; the next phase's params do not
    hand them on as if they described its retrained model (its runs measure their own), and say so."""
    runs = write_synthetic_phase(tmp_path, experiments=EXPS, seeds=(1, 2, 3))
    a = analyse(runs)
    written = write_handoff(a.runs, a.verdict, a.summary)
    winner = yaml.safe_load(written["winner"].read_text())
    lat = winner["latent"]
    assert lat["measured_on"].startswith(f"synthetic {winner['winner']} seed {winner['best_seed']}, checkpoint of epoch ")
    assert lat["scaling_factor"] == winner["latent_scale"] > 0 and len(lat["channel_shift"]) == len(lat["channel_scale"]) == 4
    text = written["next_params"].read_text()
    nxt = yaml.safe_load(text)
    assert "latent_scale" not in nxt
    assert "every run of phase1_5 measures its own on its final checkpoint" in text
    assert f"were measured\n# on {lat['measured_on']}: another model" in text


def test_the_call_of_an_experiment_with_the_baselines_heads_is_said_of_what_it_changes():
    from imginav_lib.analysis.decision import _same_heads_call

    what = "changes architecture.latent_channels 4 → 8"
    assert _same_heads_call("helps", "similar", False, what) == f"it {what}, which does not hurt"
    assert _same_heads_call("helps", "better", True, what) == f"it {what}, which does not hurt and helps"
    assert _same_heads_call("hurts", "worse", False, what) == f"it {what}, which hurts"
    assert _same_heads_call("hurts", "similar", False, what) == (
        f"it {what}, which hurts (training is less stable or slower: see the criteria)")
    assert _same_heads_call("no gain", "similar", False, what) == f"it {what}, which gives no gain"
    assert _same_heads_call("unclear", "unclear", False, what) == f"it {what}; undecided"


def test_what_each_step_adds_on_known_configs():
    none, seg, both = {"loss": {"mse": 1.0}}, {"loss": {"mse": 1.0, "seg": 0.05}}, {"loss": {"mse": 1.0, "seg": 0.05, "cls": 0.01}}
    assert what_is_added(none, seg) == "adds the segmentation loss"
    assert what_is_added(seg, both) == "adds the classification loss"
    assert what_is_added(none, both) == "adds the segmentation and classification losses"
    assert what_is_added(both, none) == "drops the segmentation and classification losses"
    assert what_is_added(both, seg) == "drops the classification loss"
    assert what_is_added(seg, {"loss": {"mse": 1.0, "seg": 0.1}}) == "changes loss.seg 0.05 → 0.1"
    assert what_is_added({**seg, "architecture": {"latent_channels": 4, "base": 32}},
                         {**both, "architecture": {"latent_channels": 8, "base": 32}}) == (
        "adds the classification loss; changes architecture.latent_channels 4 → 8")  # fmt: skip
    assert what_is_added(seg, dict(seg)) == "changes nothing in loss or architecture"
    assert what_is_added({}, {"architecture": {"latent_channels": 8}}) == "changes architecture.latent_channels None → 8"


def test_what_is_added_with_a_missing_section_and_several_changes():
    """A section the later config lacks reads as None there; several changed settings are listed with commas."""
    assert what_is_added({"architecture": {"latent_channels": 4}}, {}) == "changes architecture.latent_channels 4 → None"
    earlier, later = {"architecture": {"latent_channels": 4, "base": 32}}, {"architecture": {"latent_channels": 8, "base": 64}}
    assert what_is_added(earlier, later) == "changes architecture.base 32 → 64, architecture.latent_channels 4 → 8"


def test_step_rows_and_sentences_on_known_values():
    """F2 against F1: per-seed changes -4/-5/-6% (mean -5%, 95% CI -7.48% to -2.52%: better). F3 against F2:
    +1/+1/+1% exactly (similar). F3 against F1 with one seed of F1: no interval, the ratio of the means
    (0.0039349 / 0.0040 - 1 = -1.6%)."""
    import pandas as pd

    from imginav_lib.config.schema import Decision
    from imginav_lib.analysis.ablation import classification_sentence, compare_steps, step_sentence

    base = {1: 0.0040, 2: 0.0046, 3: 0.0037}
    f2 = {s: base[s] * (1 + c) for s, c in zip(base, (-0.04, -0.05, -0.06))}
    f3 = {s: f2[s] * 1.01 for s in base}
    rows = [{"experiment": e, "seed": s, "best_val_mse": v[s]} for e, v in (("F1", base), ("F2", f2), ("F3", f3)) for s in base]
    configs = {e: {"loss": {"mse": 1.0, **w}} for e, w in EXPS.items()}
    rules = Decision()
    steps = compare_steps(pd.DataFrame(rows), [("F1", "F2"), ("F2", "F3")], configs, rules, 0.95)
    assert steps[["earlier", "later", "added", "n_pairs", "change"]].values.tolist() == [
        ["F1", "F2", "adds the segmentation loss", 3, "better"], ["F2", "F3", "adds the classification loss", 3, "similar"]]
    assert steps.rel_change.tolist() == pytest.approx([-0.05, 0.01])
    assert steps.ci_low.tolist() == pytest.approx([-0.05 - 4.302653 * 0.01 / 3**0.5, 0.01], abs=1e-6)
    assert step_sentence(steps.iloc[0], rules, 0.95) == (
        "F2 against F1 (adds the segmentation loss) improves reconstruction: val MSE -5.0%, 95% CI -7.5% to -2.5%, paired t (3 seeds).")
    assert classification_sentence(steps, rules, 0.95) == (
        "The classification loss on its own (F3 against F2, paired by seed) does not degrade reconstruction (similar within "
        "±2%): val MSE +1.0%, 95% CI +1.0% to +1.0%, paired t (3 seeds).")
    one = compare_steps(pd.DataFrame([r for r in rows if r["experiment"] != "F1" or r["seed"] == 1]), [("F1", "F3")],
                        configs, rules, 0.9)  # fmt: skip
    assert one.change.tolist() == ["unclear"]
    assert step_sentence(one.iloc[0], rules, 0.9) == (
        "F3 against F1 (adds the segmentation and classification losses) may or may not degrade reconstruction: the interval "
        "is too wide to call it similar (±2%) or worse: val MSE -1.6%, no interval: fewer than 2 seeds.")  # mean of F3 over F1 of seed 1
    worse = steps.iloc[0].copy()
    worse["change"] = "worse"
    assert step_sentence(worse, Decision(similar_tolerance=0.05), 0.95).startswith("F2 against F1 (adds the segmentation loss) degrades reconstruction: ")
    assert classification_sentence(steps.iloc[:1], rules, 0.95) is None


def test_step_columns_level_and_steps_without_runs_or_configs():
    """F2 against F1 at the 90% level: per-seed changes -4/-5/-6% (mean -5%, SD 1%), interval
    -5% -+ t_{0.95,2} x 1% / sqrt(3) = -5% -+ 2.919986 x 0.57735%. F9 has no finished run and no experiment has a
    config: the step says n/a and what it adds is "nothing". No pairs: an empty table with the step columns."""
    import pandas as pd

    from imginav_lib.config.schema import Decision
    from imginav_lib.analysis.ablation import COLUMNS, compare_steps, step_sentence

    base = {1: 0.0040, 2: 0.0046, 3: 0.0037}
    f2 = {s: base[s] * (1 + c) for s, c in zip(base, (-0.04, -0.05, -0.06))}
    rows = [{"experiment": e, "seed": s, "best_val_mse": v[s]} for e, v in (("F1", base), ("F2", f2)) for s in base]
    table = pd.DataFrame(rows)
    rules = Decision()
    steps = compare_steps(table, [("F1", "F2"), ("F1", "F9")], {}, rules, 0.90)
    assert list(steps.columns) == ["earlier", "later", "added", "n_pairs", "rel_change", "ci_low", "ci_high", "p_value", "test",
                                   "change", "n", "n_baseline", "effect_size", "sd_rel", "p_improve", "wins"]
    half = 2.919986 * 0.01 / 3**0.5
    assert (steps.ci_low[0], steps.ci_high[0]) == pytest.approx((-0.05 - half, -0.05 + half), abs=1e-6)
    assert steps.added.tolist() == ["changes nothing in loss or architecture"] * 2
    assert steps.test[1] == "no finished runs" and steps.change[1] == "unclear"
    assert step_sentence(steps.iloc[1], rules, 0.90) == (
        "F9 against F1 (changes nothing in loss or architecture) may or may not degrade reconstruction: the interval is too "
        "wide to call it similar (±2%) or worse: val MSE n/a, no interval: fewer than 2 seeds.")
    empty = compare_steps(table, [], {}, rules, 0.95)
    assert len(empty) == 0 and list(empty.columns) == COLUMNS
