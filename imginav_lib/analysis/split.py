"""Which images each number of the report comes from: how each run's data was split (run.json `split`: the
group column, the images and groups on each side) and the held-out test metrics of the selected checkpoints
(eval.json `test`). Selection (early stopping, best.pt, the best epoch) used validation only."""
from __future__ import annotations

import math

import pandas as pd

from imginav_lib.analysis.phase import PhaseRuns
from imginav_lib.runs.runfolder import RunFolder

SIDES = ("train", "val", "test")


def run_splits(pr: PhaseRuns) -> pd.DataFrame:
    """One row per finished run with a recorded split: seed, split_seed, group_by, images and groups per side."""
    rows = []
    for r in pr.done.itertuples():
        sp = RunFolder(r.run_dir).read_info().get("split")
        if not isinstance(sp, dict):
            continue
        row = {"experiment": r.experiment, "seed": int(r.seed), "split_seed": sp.get("split_seed"), "group_by": sp.get("group_by")}
        for side in SIDES:
            row[f"{side}_images"] = (sp.get("images") or {}).get(side)
            row[f"{side}_groups"] = (sp.get("groups") or {}).get(side)
        rows.append(row)
    return pd.DataFrame(rows)


def split_sentence(pr: PhaseRuns) -> str:
    """How the split was made, in words, with the images and groups on each side (ranges over the seeds)."""
    t = run_splits(pr)
    if not len(t):
        return "How the data was split is not recorded in these runs' run.json (runs made before it was)."
    t = t.drop_duplicates("seed")  # the experiments of a seed share its split

    def span(col):
        lo, hi = int(t[col].min()), int(t[col].max())
        return f"{lo}" if lo == hi else f"{lo}–{hi}"

    group = t["group_by"].dropna()
    how = (f"grouped by {group.iloc[0]}: no {group.iloc[0]} has images on two sides" if len(group)
           else "image by image (the manifest has no group column, or data.group_by is null)")
    per = f"{t['split_seed'].nunique()} splits (data.split per_seed, {len(t)} seeds)" if t["split_seed"].nunique() > 1 \
        else f"one split (split_seed {int(t['split_seed'].iloc[0])}) for every seed"
    sides = []
    for side in SIDES:
        if t[f"{side}_images"].max() == 0 or math.isnan(t[f"{side}_images"].max()):
            continue
        groups = f" in {span(f'{side}_groups')} groups" if len(group) else ""
        sides.append(f"{side} {span(f'{side}_images')} images{groups}")
    return f"Split {how}; {per}: {', '.join(sides)}."


def test_results(pr: PhaseRuns) -> pd.DataFrame:
    """eval.json's `test` of every finished run (the selected checkpoint on the held-out test split), one row each."""
    rows = []
    for r in pr.done.itertuples():
        ev = pr.evals.get((r.experiment, int(r.seed))) or {}
        test = ev.get("test")
        if isinstance(test, dict):
            rows.append({"experiment": r.experiment, "seed": int(r.seed), "epoch": ev.get("epoch"), "n_test": ev.get("n_test"),
                         **{k: v for k, v in test.items() if isinstance(v, (int, float))}})  # fmt: skip
    return pd.DataFrame(rows)
