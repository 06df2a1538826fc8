"""What the evidence behind a verdict covers and lacks, in words: experiments whose runs are identical per seed
(and why), which sources of variance the intervals cover, and what the seeds the verdict asks for would cost.

These need the phase folder (the runs' curves, run.json counts, the params), so they are added to the verdict of
`decision.decide` (which sees only the per-run table) by `with_evidence`.
"""
from __future__ import annotations

import dataclasses
import math
import shlex
from pathlib import Path

import numpy as np
import pandas as pd

from imginav_lib import heads as H
from imginav_lib.analysis.decision import Verdict
from imginav_lib.analysis.phase import PhaseRuns, resolved_section


def identical_experiments(pr: PhaseRuns) -> list[tuple[str, str, list[int]]]:
    """(earlier, later, seeds): experiments whose finished runs have the same val MSE at every epoch in every seed
    they share. Each later experiment is paired with the first earlier one it repeats."""
    m = pr.metrics[pr.metrics["state"] == "done"] if len(pr.metrics) else pr.metrics
    if not len(m) or "val_mse" not in m:
        return []
    curves = {k: g.sort_values("epoch")["val_mse"].to_numpy() for k, g in m.groupby(["experiment", "seed"])}
    seeds = {e: {s for x, s in curves if x == e} for e in pr.experiments}
    out = []
    for i, b in enumerate(pr.experiments):
        for a in pr.experiments[:i]:
            common = sorted(seeds[a] & seeds[b])
            if common and all(np.array_equal(curves[(a, s)], curves[(b, s)]) for s in common):
                out.append((a, b, common))
                break
    return out


def identical_sentence(pr: PhaseRuns, a: str, b: str, seeds: list[int]) -> str:
    """Why b's runs repeat a's: a loss term of b that had no target in this data, else only that they do."""
    la, lb = resolved_section(pr, a, "loss"), resolved_section(pr, b, "loss")
    added = [h for h in H.HEADS if la.get(h.loss_weight, 0) != lb.get(h.loss_weight, 0)]
    runs = pr.done[pr.done["experiment"] == b]
    counts = {h.name: runs[h.scored_on[0]] for h in added if h.scored_on and h.scored_on[0] in runs}
    n_seeds = f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''}"
    if added and all(h.name in counts and (counts[h.name] == 0).all() for h in added):
        n_train = runs["n_train"].max() if "n_train" in runs and runs["n_train"].notna().any() else math.nan
        of = f"0 of {n_train:.0f}" if math.isfinite(n_train) else "none of the"
        what = " and ".join(h.label for h in added)
        targets = " or ".join(dict.fromkeys(h.target for h in added))
        return (f"{a} and {b} gave identical results in every seed ({n_seeds}): {b}'s {what} loss had no labelled "
                f"image to learn from in this data ({of} training images have {targets}), so {b} is {a} here: "
                f"one result, not two.")
    return (f"{a} and {b} gave identical val MSE at every epoch of every seed ({n_seeds}): they trained the same "
            f"model, so they are one result, not two (check their loss settings in the params file).")


def variance_sentence(pr: PhaseRuns) -> str:
    """Which sources of seed-to-seed variance the intervals cover."""
    if pr.params is None:
        return ""
    d = pr.params.data
    if d.split == "per_seed":
        return ("The intervals cover the variation between seeds of weight initialisation and data order, and the "
                "train/validation split (data.split: per_seed).")
    return ("The intervals cover the variation between seeds of weight initialisation and data order; the "
            f"train/validation split is the same for every seed (split_seed {d.split_seed}), so its variance is not "
            "in them (data.split: per_seed would add it).")


def _run_command(pr: PhaseRuns) -> str:
    cmd = ["imginav", "run", str(pr.params_file)]
    if Path(pr.params.runs_root).resolve() != pr.runs_dir.parent:
        cmd += ["--runs-root", str(pr.runs_dir.parent)]
    return shlex.join(cmd)


def more_seeds(pr: PhaseRuns, verdict: Verdict, table: pd.DataFrame) -> str:
    """The command that adds the seeds the verdict asks for, how many more runs that is and its GPU-hours at the
    measured epoch time ("" when none are asked for or the params are unknown)."""
    need = verdict.seeds_needed
    if verdict.status != "provisional" or not need or need > 200 or pr.params is None or pr.params_file is None:
        return ""
    listed = list(pr.params.seeds)
    extra = [max(listed) + 1 + i for i in range(max(0, need - len(listed)))]
    seeds = listed + extra
    done = set(zip(pr.done["experiment"], pr.done["seed"]))
    todo = [(e, s) for e in pr.experiments for s in seeds if (e, s) not in done]
    if not todo:
        return ""
    measured = table["epoch_time_s"].dropna() if "epoch_time_s" in table else pd.Series(dtype=float)
    per_exp = table.groupby("experiment")["epoch_time_s"].mean() if len(measured) else pd.Series(dtype=float)
    seconds = 0.0
    for e, _ in todo:
        t = per_exp.get(e, measured.mean() if len(measured) else math.nan)
        seconds += t * resolved_section(pr, e, "training").get("epochs", pr.params.training.epochs)
    cost = (f"≈ {seconds / 3600:.1f} GPU-hours at the measured {measured.mean():.0f} s per epoch"
            if math.isfinite(seconds) else "GPU-hours unknown (no epoch time measured yet)")
    runs = f"{len(todo)} more run{'s' if len(todo) != 1 else ''}"
    step = f"set `seeds: [{', '.join(map(str, seeds))}]` in {pr.params_file} and run" if extra else "run"
    return f"To add them, {step} `{_run_command(pr)}` (finished runs are skipped): {runs}, {cost}."


def with_evidence(verdict: Verdict, pr: PhaseRuns, table: pd.DataFrame) -> Verdict:
    """The verdict with the identical-results sentences, the sources of variance and the more-seeds command."""
    same = [identical_sentence(pr, a, b, s) for a, b, s in identical_experiments(pr)]
    paragraph = " ".join([verdict.paragraph, *same]) if same else verdict.paragraph
    var = variance_sentence(pr) if verdict.status != "no results" else ""
    sureness = f"{verdict.sureness} {var}" if var else verdict.sureness
    return dataclasses.replace(verdict, paragraph=paragraph, sureness=sureness, more_seeds=more_seeds(pr, verdict, table))
