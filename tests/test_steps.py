"""Each added loss on its own (decision.steps), the boundary row of the criteria, the latent in the hand-off, and
the verdict's wording for a phase that compares architectures; on synthetic phase folders with planted effects."""
from __future__ import annotations

import yaml

from imginav_lib.analysis import analyse
from imginav_lib.handoff import write_handoff
from imginav_lib.report import steps_html
from imginav_lib.steps import what_is_added
from imginav_lib.synthetic import write_synthetic_phase

EXPS = {"F1": {}, "F2": {"seg": 0.05}, "F3": {"seg": 0.05, "cls": 0.01}}


def _set_params(runs, **decision):
    p = runs / "params.yaml"
    params = yaml.safe_load(p.read_text())
    params["decision"] = {**params.get("decision", {}), **decision}
    p.write_text(yaml.safe_dump(params))
    index = runs / "index.json"
    import json

    from imginav_lib.params import params_hash

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


def test_next_phase_params_carry_the_winners_latent_scale(tmp_path):
    runs = write_synthetic_phase(tmp_path, experiments=EXPS, seeds=(1, 2, 3))
    a = analyse(runs)
    written = write_handoff(a.runs, a.verdict, a.summary)
    nxt = yaml.safe_load(written["next_params"].read_text())
    assert nxt["latent_scale"] == yaml.safe_load(written["winner"].read_text())["latent_scale"] > 0
