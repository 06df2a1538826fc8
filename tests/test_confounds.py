"""The hardware and software of a comparison: a phase whose F3 runs name another GPU than F1/F2 gets a verdict
("how sure we are", in the report) that names the confound; one where every run shares them names none. And the
runs table's best epoch is the epoch of the checkpoint its metrics come from."""
from __future__ import annotations

import json

from imginav_lib.analysis import analyse
from imginav_lib.analysis.confounds import confound_sentences
from imginav_lib.analysis.phase import load_phase_runs, run_table
from imginav_lib.report.sections import verdict_html
from imginav_lib.testing.synthetic import write_synthetic_phase

F1, F2, F3 = "F1_rgb_only", "F2_rgb_seg", "F3_rgb_seg_cls"


def test_a_phase_whose_f3_runs_name_another_gpu_gets_a_report_naming_the_confound(tmp_path):
    runs = write_synthetic_phase(tmp_path, environments={F3: {"gpu": "NVIDIA L40S", "capability": "8.9"}})
    a = analyse(runs)
    html = verdict_html(a)
    sure = html.split("How sure we are:")[1]
    assert f"{F1} and {F3} did not run on the same hardware" in sure
    assert f"{F2} and {F3} did not run on the same hardware" in sure
    assert "GPU model" in sure and "NVIDIA L40S" in sure and "Tesla V100-SXM2-32GB" in sure and "seeds 1, 2, 3" in sure
    assert f"{F1} and {F2} did not" not in sure  # the comparison on one GPU is not named


def test_precision_and_library_versions_are_named_too_and_nothing_when_all_agree(tmp_path):
    same = write_synthetic_phase(tmp_path / "same")
    assert confound_sentences(load_phase_runs(same)) == []
    assert "did not run on the same hardware" not in analyse(same).verdict.sureness
    mixed = write_synthetic_phase(tmp_path / "mixed", environments={F2: {"precision": "bfloat16", "cudnn": "90100"}})
    (sentence_12, sentence_23) = confound_sentences(load_phase_runs(mixed))
    assert sentence_12.startswith(f"{F1} and {F2}") and sentence_23.startswith(f"{F2} and {F3}")
    assert "precision (F1_rgb_only: float16; F2_rgb_seg: bfloat16" in sentence_12 and "cuDNN version" in sentence_12


def test_a_run_resumed_on_another_gpu_is_named(tmp_path):
    runs = write_synthetic_phase(tmp_path)
    info_path = runs / F3 / "seed2" / "run.json"
    info = json.loads(info_path.read_text())
    info["environments"].append({**info["environments"][0], "attempt": 2, "gpu": "NVIDIA A100-SXM4-80GB"})
    info_path.write_text(json.dumps(info))
    sentences = confound_sentences(load_phase_runs(runs))
    assert any("NVIDIA A100-SXM4-80GB" in s and "seed 2)" in s for s in sentences), sentences


def test_runs_table_best_epoch_is_the_epoch_of_the_checkpoint_its_metrics_come_from(tmp_path):
    runs = write_synthetic_phase(tmp_path, seeds=(1,))
    ev_path = runs / F1 / "seed1" / "eval.json"
    ev = json.loads(ev_path.read_text())
    ev["epoch"] = 4  # early stopping's best: a later epoch was lower by less than min_delta
    ev_path.write_text(json.dumps(ev))
    t = run_table(load_phase_runs(runs)).set_index("experiment")
    assert t.loc[F1, "best_epoch"] == 4 and t.loc[F2, "best_epoch"] != 4
