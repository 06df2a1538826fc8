"""The phase analysis in one call: load the phase folder, the per-run table, the summary across seeds, the verdict.

The pieces live in `phase` (loading), `stats` (intervals, comparisons, stability), `decision` (the verdict) and
`handoff` (winner.yaml and the next phase's params); the report (`report`, `figures`, `browser`) shows an `Analysis`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from imginav_lib.analysis.decision import Verdict, decide
from imginav_lib.analysis.evidence import with_evidence
from imginav_lib.analysis.phase import PhaseRuns, load_phase_runs, resolved_section, run_table
from imginav_lib.analysis.stats import summarize
from imginav_lib.analysis.ablation import classification_sentence, compare_steps, step_pairs, what_is_added
from imginav_lib.analysis.confounds import confound_sentences
from imginav_lib.analysis.chance import chance_words, runs_at_chance


@dataclass
class Analysis:
    """What the notebook shows: the loaded runs, per-run table, summary, verdict, step comparisons."""

    runs: PhaseRuns
    table: pd.DataFrame
    summary: pd.DataFrame
    verdict: Verdict
    steps: pd.DataFrame = None  # steps.compare_steps: each experiment against the one it extends


def analyse(runs_dir: str | Path, params_file: str | Path | None = None) -> Analysis:
    """The analysis API (docs/analysis.md): any folder that follows docs/run-folder.md, in any state."""
    pr = load_phase_runs(runs_dir, params_file)
    table = run_table(pr)
    level = 1 - pr.decision.alpha
    summary = summarize(table, pr.experiments, level)
    configs = {x: {s: resolved_section(pr, x, s) for s in ("loss", "architecture")} for x in pr.experiments}
    changes = {x: what_is_added(configs[pr.baseline], configs[x]) for x in pr.experiments}
    pairs = step_pairs(pr.decision, pr.experiments, pr.baseline)
    chance = chance_words(runs_at_chance(pr.metrics, pr.heads))  # heads whose loss never left chance level
    verdict = with_evidence(decide(table, pr.experiments, pr.baseline, pr.heads, pr.decision, changes, pairs, chance), pr, table)
    # The steps' tests are in the verdict's family: their intervals and classes after the one correction.
    steps = compare_steps(table, pairs, configs, pr.decision, verdict.level, verdict.primary, verdict.steps)
    sentence = classification_sentence(steps, pr.decision, level)
    if sentence:  # the question the researchers ask of the classification loss, answered in the verdict
        verdict.paragraph += " " + sentence
    confounds = confound_sentences(pr)  # another GPU, precision or torch/CUDA/cuDNN within a comparison
    if confounds:
        verdict.sureness = " ".join([verdict.sureness, *confounds])
    return Analysis(pr, table, summary, verdict, steps)
