"""Statistics across seeds and the per-run stability numbers: t-intervals, the paired and Welch comparisons,
the seeds-needed estimate, loss spikes, late wobble and epochs to converge. Plain functions of numbers and frames.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import special

from imginav_lib import heads as H

STABILITY = {
    "spikes": "loss spikes: logged training steps whose loss exceeds 3x the median of the previous 20 logged steps",
    "late_wobble": "late val wobble: SD of val MSE around its straight-line trend over the second half of the "
    "epochs, in % of its mean (the variance of the late val loss, made comparable across experiments)",
    "seed_spread": "seed spread: SD of the final val MSE across seeds, in % of its mean (one value per experiment)",
    "epochs_to_10pct": "epochs to converge: first epoch whose val MSE is within 10% of the run's best val MSE",
}
SPIKE_FACTOR, SPIKE_WINDOW = 3.0, 20


def count_spikes(loss: np.ndarray, factor: float = SPIKE_FACTOR, window: int = SPIKE_WINDOW) -> int:
    """Logged steps whose loss exceeds `factor` x the running median of the previous `window` logged steps."""
    s = pd.Series(np.asarray(loss, dtype=float))
    median = s.shift(1).rolling(window, min_periods=min(5, window)).median()
    return int((s > factor * median).sum())


def late_wobble(val_mse: np.ndarray) -> float:
    """SD of val MSE around a straight-line fit over the second half of the epochs, as a fraction of its mean."""
    half = np.asarray(val_mse, dtype=float)[len(val_mse) // 2 :]
    half = half[np.isfinite(half)]
    if len(half) < 3:
        return math.nan
    x = np.arange(len(half))
    resid = half - np.polyval(np.polyfit(x, half, 1), x)
    return float(np.sqrt((resid**2).sum() / (len(half) - 2)) / half.mean())


def epochs_to_within(epochs: np.ndarray, val_mse: np.ndarray, frac: float = 0.10) -> float:
    v = np.asarray(val_mse, dtype=float)
    ok = np.isfinite(v)
    if not ok.any():
        return math.nan
    return float(np.asarray(epochs)[ok][np.argmax(v[ok] <= (1 + frac) * v[ok].min())])


def t_interval(x, level: float = 0.95) -> tuple[float, float, float, float, int]:
    """(mean, sd, ci_low, ci_high, n) of the finite values; the CI is NaN with fewer than 2 values."""
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return (math.nan,) * 4 + (0,)
    mean = float(x.mean())
    if n < 2:
        return mean, math.nan, math.nan, math.nan, 1
    sd = float(x.std(ddof=1))
    h = t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return mean, sd, mean - h, mean + h, n


def t_quantile(q: float, dof: float) -> float:
    return float(special.stdtrit(dof, q))


def t_pvalue(t: float, dof: float) -> float:
    """Two-sided p-value of a t statistic."""
    return float(2 * special.stdtr(dof, -abs(t)))


def summarize(table: pd.DataFrame, experiments: list[str], level: float = 0.95) -> pd.DataFrame:
    """Per experiment and metric: n seeds, mean, SD and the t-interval (NaN with 1 seed: no interval exists)."""
    rows = []
    for exp in experiments:
        t = table[table["experiment"] == exp]
        for col, label in {**H.run_metrics(), "spikes": "loss spikes per run", "late_wobble": "late val wobble",
                           "epochs_to_10pct": "epochs to within 10% of best"}.items():
            mean, sd, lo, hi, n = t_interval(t[col] if col in t else [], level)
            rows.append({"experiment": exp, "metric": col, "label": label, "n": n, "mean": mean, "sd": sd,
                         "ci_low": lo, "ci_high": hi})
        mean, sd, *_ , n = t_interval(t["final_val_mse"] if len(t) else [], level)
        rows.append({"experiment": exp, "metric": "seed_spread", "label": "seed spread of final val MSE", "n": n,
                     "mean": sd / mean if n >= 2 else math.nan, "sd": math.nan, "ci_low": math.nan, "ci_high": math.nan})
    return pd.DataFrame(rows)


def compare(x: np.ndarray, b: np.ndarray, level: float = 0.95) -> dict:
    """Relative change of x versus baseline b (fractions), paired where both are given per seed.

    x, b: aligned arrays by seed with NaN where a seed is missing; lower is better. Paired (>= 2 common seeds): the per-seed
    relative change x_s / b_s - 1, its mean, t-interval, one-sample t-test and Cohen's d_z. Otherwise with
    >= 2 seeds each: Welch's t-test, the interval of the difference of means over the baseline mean, Hedges' g.
    """
    x, b = np.asarray(x, float), np.asarray(b, float)
    both = np.isfinite(x) & np.isfinite(b)
    xs, bs = x[np.isfinite(x)], b[np.isfinite(b)]
    out = {"n": len(xs), "n_baseline": len(bs), "n_pairs": int(both.sum()), "rel_change": math.nan, "ci_low": math.nan,
           "ci_high": math.nan, "p_value": math.nan, "effect_size": math.nan, "sd_rel": math.nan, "test": "none",
           "p_improve": math.nan, "wins": 0}
    if len(xs) == 0 or len(bs) == 0:
        out["test"] = "no finished runs"
        return out
    out["p_improve"], out["wins"] = probability_of_improvement(x, b)
    if out["n_pairs"] >= 2:
        r = x[both] / b[both] - 1
        mean, sd, lo, hi, n = t_interval(r, level)
        if sd > 0:
            p = t_pvalue(mean / (sd / math.sqrt(n)), n - 1)
        else:  # identical per-seed changes: the interval has no width
            p = 0.0 if mean != 0 else 1.0
        out.update(rel_change=mean, ci_low=lo, ci_high=hi, p_value=p, effect_size=mean / sd if sd > 0 else math.nan,
                   sd_rel=sd, test=f"paired t ({n} seeds)")
    elif len(xs) >= 2 and len(bs) >= 2:
        mb = bs.mean()
        diff = xs.mean() - mb
        vx, vb = xs.var(ddof=1) / len(xs), bs.var(ddof=1) / len(bs)
        se = math.sqrt(vx + vb)
        dof = se**4 / (vx**2 / (len(xs) - 1) + vb**2 / (len(bs) - 1)) if se > 0 else len(xs) + len(bs) - 2
        h = t_quantile(0.5 + level / 2, dof) * se
        pooled = math.sqrt(((len(xs) - 1) * xs.var(ddof=1) + (len(bs) - 1) * bs.var(ddof=1)) / (len(xs) + len(bs) - 2))
        g = diff / pooled * (1 - 3 / (4 * (len(xs) + len(bs)) - 9)) if pooled > 0 else math.nan
        p = t_pvalue(diff / se, dof) if se > 0 else float(diff == 0)
        out.update(rel_change=diff / mb, ci_low=(diff - h) / mb, ci_high=(diff + h) / mb, p_value=p, effect_size=g,
                   sd_rel=math.sqrt(xs.var(ddof=1) + bs.var(ddof=1)) / mb, test="Welch t (seeds not paired)")
    else:
        out.update(rel_change=xs.mean() / bs.mean() - 1, test="none: 1 seed, no interval")
    return out


def probability_of_improvement(x: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    """(P, wins): the estimated probability that a run of x beats (is lower than) the run of b with the same seed,
    and in how many seeds it did; a tie counts one half. Without common seeds, over all pairs of runs (as
    rliable's P(X > Y); Bouthillier et al. 2021 pair by seed as here)."""
    x, b = np.asarray(x, float), np.asarray(b, float)
    both = np.isfinite(x) & np.isfinite(b)
    if both.any():
        xs, bs = x[both], b[both]
        wins = int((xs < bs).sum())
        return float((wins + 0.5 * (xs == bs).sum()) / both.sum()), wins
    xs, bs = x[np.isfinite(x)][:, None], b[np.isfinite(b)][None, :]
    if not (xs.size and bs.size):
        return math.nan, 0
    return float(((xs < bs) + 0.5 * (xs == bs)).mean()), 0


def seeds_needed(rel_change: float, sd_rel: float, tol: float, alpha: float, power: float = 0.8, max_n: int = 200,
                 margin: float | None = None) -> int | None:
    """Seeds per experiment for the interval of the relative change to clear a decisive boundary.

    Taking the observed change m as the truth, the nearest decisive call needs a half-width below `margin`;
    by default max(tol - m, m) (similar when m < tol, worse when m is clear of 0). n solves
    (t_{1-a/2,n-1} + z_power) sd / sqrt(n) <= margin. None: no spread is known (1 seed). max_n + 1: the change
    sits on a boundary.
    """
    if not (math.isfinite(rel_change) and math.isfinite(sd_rel)):
        return None
    margin = max(tol - rel_change, rel_change) if margin is None else margin
    if sd_rel == 0:
        return 2
    z = float(special.ndtri(power))
    for n in range(2, max_n + 1):
        if (t_quantile(1 - alpha / 2, n - 1) + z) * sd_rel / math.sqrt(n) <= margin:
            return n
    return max_n + 1


def classify_change(lo: float, hi: float, tol: float) -> str:
    """better / similar / worse / unclear from the interval of the relative change of the primary metric."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "unclear"
    if hi < 0:
        return "better"
    if hi <= tol:
        return "similar"
    if lo > 0:
        return "worse"
    return "unclear"
