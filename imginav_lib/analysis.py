"""The phase analysis in one call: load the phase folder, the per-run table, the summary across seeds, the verdict.

The pieces live in `phase` (loading), `stats` (intervals, comparisons, stability), `decision` (the verdict) and
`handoff` (winner.yaml and the next phase's params); the report (`report`, `figures`, `browser`) shows an `Analysis`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .decision import Verdict, decide
from .evidence import with_evidence
from .phase import PhaseRuns, load_phase_runs, run_table
from .stats import summarize


@dataclass
class Analysis:
    """What the notebook shows: the loaded runs, per-run table, summary, verdict."""

    runs: PhaseRuns
    table: pd.DataFrame
    summary: pd.DataFrame
    verdict: Verdict


def analyse(runs_dir: str | Path, params_file: str | Path | None = None) -> Analysis:
    """The analysis API (docs/analysis.md): any folder that follows docs/run-folder.md, in any state."""
    pr = load_phase_runs(runs_dir, params_file)
    table = run_table(pr)
    summary = summarize(table, pr.experiments, 1 - pr.decision.alpha)
    verdict = with_evidence(decide(table, pr.experiments, pr.baseline, pr.heads, pr.decision), pr, table)
    return Analysis(pr, table, summary, verdict)
