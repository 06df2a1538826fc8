"""Step comparisons: each experiment against the one it extends, so that each added loss is tested on its own.

F2 against F1 is the segmentation loss, F3 against F2 the classification loss. Which pairs is read from the
params (`decision.steps: [[F1, F2], [F2, F3]]`), defaulting to each experiment against the baseline. Each pair is
compared like the baseline comparison: the relative change of best val MSE, paired by seed, its interval and
the same better / similar / worse / unclear call (stats.compare, stats.classify_change).
"""
from __future__ import annotations

import math

import pandas as pd

from imginav_lib import heads as H
from imginav_lib.text import pct
from imginav_lib.config.schema import Decision
from imginav_lib.analysis.stats import classify_change, compare

COLUMNS = ["earlier", "later", "added", "n_pairs", "rel_change", "ci_low", "ci_high", "p_value", "test", "change", "level"]


def step_pairs(rules: Decision, experiments: list[str], baseline: str) -> list[tuple[str, str]]:
    """The (earlier, later) pairs to test: decision.steps, else each experiment against the baseline."""
    if rules.steps:
        return [(a, b) for a, b in rules.steps]
    return [(baseline, e) for e in experiments if e != baseline]


def what_is_added(earlier: dict, later: dict) -> str:
    """What the later config changes, in words: "adds the classification loss", "changes architecture.latent_channels
    4 → 8". earlier, later: resolved sections {"loss": {...}, "architecture": {...}} (a run's config.yaml)."""
    le, ll = earlier.get("loss", {}), later.get("loss", {})
    added = [h.label for h in H.HEADS if not le.get(h.loss_weight) and ll.get(h.loss_weight)]
    dropped = [h.label for h in H.HEADS if le.get(h.loss_weight) and not ll.get(h.loss_weight)]
    switched = {h.loss_weight for h in H.HEADS if h.label in added + dropped}
    changed = [f"{section}.{k} {earlier.get(section, {}).get(k)} → {later.get(section, {}).get(k)}"
               for section in ("loss", "architecture")
               for k in sorted(set(earlier.get(section, {})) | set(later.get(section, {})))
               if earlier.get(section, {}).get(k) != later.get(section, {}).get(k) and not (section == "loss" and k in switched)]  # fmt: skip
    loss = lambda names: " and ".join(names) + (" losses" if len(names) > 1 else " loss")  # noqa: E731
    parts = ([f"adds the {loss(added)}"] if added else []) + ([f"drops the {loss(dropped)}"] if dropped else [])
    parts += [f"changes {', '.join(changed)}"] if changed else []
    return "; ".join(parts) or "changes nothing in loss or architecture"


def compare_steps(table: pd.DataFrame, pairs: list[tuple[str, str]], configs: dict, rules: Decision,
                  level: float, metric: str = "best_val_mse", tests: dict | None = None) -> pd.DataFrame:  # fmt: skip
    """One row per pair: the relative change of `metric` (later / earlier - 1), paired by seed, and its call.

    table: run_table() rows of finished runs; configs: experiment -> its resolved {"loss", "architecture"}.
    tests: (earlier, later) -> the step's row from decision.decide (Verdict.steps): its interval at the level after
    the family's correction and its class from the corrected tests. Without it: `level`, uncorrected (the
    two-sided interval for better/worse, the (1 - 2 alpha) interval inside ±tolerance for similar).
    """
    rows = []
    for a, b in pairs:
        ta, tb = (table[table["experiment"] == e].set_index("seed")[metric] for e in (a, b))
        seeds = sorted(set(ta.index) | set(tb.index))
        c = compare(tb.reindex(seeds).to_numpy(), ta.reindex(seeds).to_numpy(), level)
        got = (tests or {}).get((a, b))
        if got is not None:
            row = {k: got[k] for k in (*c.keys(), "level", "change") if k in got and not k.startswith("_")}
        else:
            eq_lo, eq_hi = c.interval(1 - 2 * (1 - level))
            row = {**{k: v for k, v in c.items() if not k.startswith("_")}, "level": level,
                   "change": classify_change(c["ci_low"], c["ci_high"], rules.similar_tolerance, eq_lo, eq_hi)}
        rows.append({"earlier": a, "later": b, "added": what_is_added(configs.get(a, {}), configs.get(b, {})), **row})
    return pd.DataFrame(rows, columns=list(dict.fromkeys(COLUMNS + (list(rows[0]) if rows else []))))


def _interval(row, level: float) -> str:
    level = getattr(row, "level", level)
    if not math.isfinite(row.ci_low):
        return f"MSE {pct(row.rel_change)}, no interval: fewer than 2 seeds"
    words = f"{level:.0%}" if abs(level * 100 - round(level * 100)) < 1e-9 else f"{level:.2%}"
    return f"MSE {pct(row.rel_change)}, {words} CI {pct(row.ci_low)} to {pct(row.ci_high)}, {row.test}"


def _verb(change: str, rules: Decision) -> str:
    tol = f"±{rules.similar_tolerance:.0%}"
    return {
        "better": "improves reconstruction",
        "similar": f"does not degrade reconstruction (equivalent within {tol}: two one-sided tests)",
        "worse": "degrades reconstruction (interval clear of 0)",
        "unclear": f"may or may not degrade reconstruction: the interval is neither clear of 0 nor inside {tol}",
    }[change]


def step_sentence(row, rules: Decision, level: float) -> str:
    """One step in words: what the later experiment changes, whether that degrades reconstruction, the interval."""
    return f"{row.later} against {row.earlier} ({row.added}) {_verb(row.change, rules)}: {_interval(row, level)}."


def classification_sentence(steps: pd.DataFrame, rules: Decision, level: float) -> str | None:
    """Whether the classification loss on its own degrades reconstruction; None when no step isolates it."""
    cls = H.head("cls")
    for row in steps.itertuples():
        if row.added == f"adds the {cls.label} loss":
            return (f"The {cls.label} loss on its own ({row.later} against {row.earlier}, paired by seed) "
                    f"{_verb(row.change, rules)}: {_interval(row, level)}.")
    return None
