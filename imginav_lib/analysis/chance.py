"""A classification head that never left chance level: its loss gave the encoder no signal.

A run's head is at chance when, in every epoch metrics.csv logged with a validation CE, both hold:
- its validation CE is at least (1 - CE_TOL) x the chance CE: the CE of the best constant answer, the entropy of
  the validation class shares (with 2 classes the majority-class rate fixes them; ln K where it is not logged);
- its balanced accuracy is at most 1 / K + MARGIN (a constant answer scores 1 / K, whatever the class shares).
A head that beats either once has learned something. The segmentation head is not judged: its chance CE would
need the pixel shares of the classes, which metrics.csv does not log.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from imginav_lib import heads as H
from imginav_lib.palette import SCENE_TYPES

MARGIN = 0.05  # balanced accuracy above 1/K + this is more than chance (K = 2: above 0.55)
CE_TOL = 0.02  # a val CE below 98% of the chance CE is more than chance
COLUMNS = ["experiment", "seed", "epochs", "min_ce", "chance_ce", "max_bacc", "at_chance"]


def chance_ce(majority: float, k: int = len(SCENE_TYPES)) -> float:
    """The CE (nats) of always answering the class shares: their entropy. With 2 classes the majority-class rate
    p fixes them (-p ln p - (1-p) ln(1-p)); ln k when the rate is unknown (or with more classes: an upper bound)."""
    if k != 2 or not math.isfinite(majority):
        return math.log(k)
    p = min(max(majority, 1e-12), 1 - 1e-12)
    return -p * math.log(p) - (1 - p) * math.log(1 - p)


def runs_at_chance(metrics: pd.DataFrame, heads: dict) -> pd.DataFrame:
    """One row per finished run that trains the classification head and logged a validation CE (COLUMNS).

    metrics: metrics.csv rows with experiment, seed and state (PhaseRuns.metrics). heads: experiment -> trained heads.
    """
    cls, k = H.head("cls"), len(SCENE_TYPES)
    ce_col, bacc_col = f"val_{cls.loss_term}", cls.gate
    rows = []
    if not len(metrics) or ce_col not in metrics or bacc_col not in metrics:
        return pd.DataFrame(rows, columns=COLUMNS)
    done = metrics[metrics["state"] == "done"] if "state" in metrics else metrics
    for (e, s), m in done.groupby(["experiment", "seed"], sort=False):
        m = m[np.isfinite(pd.to_numeric(m[ce_col], errors="coerce"))]
        if "cls" not in heads.get(e, ()) or not len(m) or not m[bacc_col].notna().all():
            continue
        majority = m["val_cls_majority"].dropna() if "val_cls_majority" in m else pd.Series(dtype=float)
        chance = chance_ce(float(majority.iloc[-1]) if len(majority) else math.nan, k)
        min_ce, max_bacc = float(m[ce_col].min()), float(m[bacc_col].max())
        rows.append({"experiment": e, "seed": s, "epochs": len(m), "min_ce": min_ce, "chance_ce": chance, "max_bacc": max_bacc,
                     "at_chance": min_ce >= (1 - CE_TOL) * chance and max_bacc <= 1 / k + MARGIN})
    return pd.DataFrame(rows, columns=COLUMNS)


def chance_words(runs: pd.DataFrame) -> dict[str, str]:
    """experiment -> the sentence that names its classification head, for experiments whose every finished run
    (runs_at_chance rows) stayed at chance level; experiments with a run that learned are left out."""
    out = {}
    for e, g in runs.groupby("experiment", sort=False):
        if not g["at_chance"].all():
            continue
        chance = float(g["chance_ce"].mean())
        level = f"{chance:.2f} ≈ ln 2" if abs(chance - math.log(2)) < 0.005 else f"{chance:.2f}, the entropy of the class shares"
        seeds = f"{len(g)} seed" + ("s" if len(g) > 1 else "")
        out[e] = (f"the classification head of {e} stayed at chance level (val CE {g['min_ce'].min():.2f} or more, chance "
                  f"{level}; balanced accuracy at most {g['max_bacc'].max():.2f}; in every epoch of {seeds}): its loss gave "
                  "the encoder no signal")
    return out
