"""Statistics across seeds and the per-run stability numbers: t-intervals, the paired and Welch comparisons with
their equivalence tests (scipy), Holm's correction, the alpha spent at each look of the add-seeds design, the
seeds-needed estimate, MSE spikes, late roughness and epochs to a common target. Plain functions of numbers and frames.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import special
from scipy import stats as st

from imginav_lib import heads as H

STABILITY = {
    "spikes": "MSE spikes: logged training steps whose MSE term (steps.csv `mse`, not the weighted total) exceeds 3x "
    "the median of the previous 20 logged steps",
    "late_wobble": "late roughness: SD of the second differences of log val MSE over the second half of the epochs, "
    "/ sqrt(6) (for noise of relative SD s around any smooth curve this is about s; a smooth slower curve scores ~0)",
    "seed_spread": "seed spread: SD of the final val MSE across seeds, in % of its mean (one value per experiment)",
    "epochs_to_target": "epochs to the common target: first epoch whose val MSE is within 10% of the best val MSE of "
    "the baseline's run with the same seed (epochs run + 1 when never reached)",
}
STABILITY_COLUMNS = ("spikes", "late_wobble", "epochs_to_target")
SPIKE_FACTOR, SPIKE_WINDOW = 3.0, 20
TARGET_FRAC = 0.10


def count_spikes(mse: np.ndarray, factor: float = SPIKE_FACTOR, window: int = SPIKE_WINDOW) -> int:
    """Logged steps whose MSE exceeds `factor` x the running median of the previous `window` logged steps."""
    s = pd.Series(np.asarray(mse, dtype=float))
    median = s.shift(1).rolling(window, min_periods=min(5, window)).median()
    return int((s > factor * median).sum())


def late_wobble(val_mse: np.ndarray) -> float:
    """Roughness of the second half of a val MSE curve: SD of the second differences of log val MSE / sqrt(6).

    A smooth curve (still bending or flat, fast or slow) has second differences near 0; independent noise of
    relative SD s gives second differences of SD s * sqrt(6). NaN with fewer than 4 finite values.
    """
    half = np.asarray(val_mse, dtype=float)[len(val_mse) // 2 :]
    half = half[np.isfinite(half) & (half > 0)]
    if len(half) < 4:
        return math.nan
    return float(np.diff(np.log(half), 2).std(ddof=1) / math.sqrt(6))


def epochs_to_target(epochs: np.ndarray, val_mse: np.ndarray, target: float) -> float:
    """First epoch whose val MSE is at or below `target`; epochs run + 1 when never reached (censored: slower than
    every epoch it ran); NaN without a target or a finite value."""
    v, ep = np.asarray(val_mse, dtype=float), np.asarray(epochs, dtype=float)
    ok = np.isfinite(v)
    if not ok.any() or not math.isfinite(target):
        return math.nan
    hit = v[ok] <= target
    return float(ep[ok][np.argmax(hit)]) if hit.any() else float(np.nanmax(ep) + 1)


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
    if sd == 0:
        return mean, 0.0, mean, mean, n
    ci = st.ttest_1samp(x, 0.0).confidence_interval(level)
    return mean, sd, float(ci.low), float(ci.high), n


def t_quantile(q: float, dof: float) -> float:
    return float(st.t.ppf(q, dof))


def t_pvalue(t: float, dof: float) -> float:
    """Two-sided p-value of a t statistic."""
    return float(2 * st.t.sf(abs(t), dof))


def summarize(table: pd.DataFrame, experiments: list[str], level: float = 0.95) -> pd.DataFrame:
    """Per experiment and metric: n seeds, mean, SD and the t-interval (NaN with 1 seed: no interval exists)."""
    rows = []
    test_cols = {c: c.replace("_", " ") for c in table.columns if c.startswith("test_")}
    for exp in experiments:
        t = table[table["experiment"] == exp]
        for col, label in {**H.run_metrics(), **test_cols, "spikes": "MSE spikes per run", "late_wobble": "late roughness",
                           "epochs_to_target": "epochs to within 10% of the baseline's best"}.items():
            mean, sd, lo, hi, n = t_interval(t[col] if col in t else [], level)
            rows.append({"experiment": exp, "metric": col, "label": label, "n": n, "mean": mean, "sd": sd,
                         "ci_low": lo, "ci_high": hi})
        mean, sd, *_ , n = t_interval(t["final_val_mse"] if len(t) else [], level)
        rows.append({"experiment": exp, "metric": "seed_spread", "label": "seed spread of final val MSE", "n": n,
                     "mean": sd / mean if n >= 2 else math.nan, "sd": math.nan, "ci_low": math.nan, "ci_high": math.nan})
    return pd.DataFrame(rows)


class Comparison(dict):
    """A compare() result (a dict of numbers, the table row) that can also give its intervals at any level."""

    _interval = _tost = None  # set by compare: level -> (low, high); tol -> TOST p-value

    def update(self, *args, _interval=None, _tost=None, **kw):
        self._interval = _interval or self._interval
        self._tost = _tost or self._tost
        super().update(*args, **kw)

    def interval(self, level: float) -> tuple[float, float]:
        """The two-sided interval of the relative change at `level` (NaN without one)."""
        return self._interval(level) if self._interval else (math.nan, math.nan)

    def equivalence_p(self, tol: float) -> float:
        """TOST p-value of |true relative change| < tol: the larger of the two one-sided p-values (NaN without a test)."""
        return self._tost(tol) if self._tost else math.nan


def _degenerate(r: float):
    """Identical per-seed changes: an interval of no width; p 0 unless the change is 0."""
    return (lambda level: (r, r)), (0.0 if r != 0 else 1.0), (lambda tol: 0.0 if abs(r) < tol else 1.0)


def compare(x: np.ndarray, b: np.ndarray, level: float = 0.95) -> Comparison:
    """Relative change of x versus b (fractions), paired where both are given per seed; lower is better.

    x, b: aligned arrays by seed with NaN where a seed is missing. Paired (>= 2 common seeds): the per-seed ratio
    x_s / b_s against 1 with scipy's ttest_rel (the one-sample t of the relative change x_s / b_s - 1), its
    interval, Cohen's d_z. Otherwise with >= 2 seeds each: scipy's ttest_ind(equal_var=False) (Welch), the
    interval of the difference of means over b's mean, Hedges' g. The result also gives the interval at any
    level (`interval`) and the two one-sided tests of equivalence within ±tol (`equivalence_p`).
    """
    x, b = np.asarray(x, float), np.asarray(b, float)
    both = np.isfinite(x) & np.isfinite(b)
    xs, bs = x[np.isfinite(x)], b[np.isfinite(b)]
    out = Comparison({"n": len(xs), "n_baseline": len(bs), "n_pairs": int(both.sum()), "rel_change": math.nan,
                      "ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan, "effect_size": math.nan,
                      "sd_rel": math.nan, "test": "none", "p_improve": math.nan, "wins": 0})
    if len(xs) == 0 or len(bs) == 0:
        out["test"] = "no finished runs"
        return out
    out["p_improve"], out["wins"] = probability_of_improvement(x, b)
    if out["n_pairs"] >= 2:
        ratio = x[both] / b[both]
        r, n = ratio - 1, len(ratio)
        mean, sd = float(r.mean()), float(r.std(ddof=1))
        if sd > 0:
            ones = np.ones(n)
            res = st.ttest_rel(ratio, ones)
            p = float(res.pvalue)
            interval = lambda lv: tuple(float(v) for v in res.confidence_interval(lv))  # noqa: E731  (of ratio - 1)
            tost = lambda tol: float(max(st.ttest_rel(ratio, ones - tol, alternative="greater").pvalue,  # noqa: E731
                                         st.ttest_rel(ratio, ones + tol, alternative="less").pvalue))
        else:
            interval, p, tost = _degenerate(mean)
        out.update(rel_change=mean, p_value=p, effect_size=mean / sd if sd > 0 else math.nan, sd_rel=sd,
                   test=f"paired t ({n} seeds)", _interval=interval, _tost=tost)
    elif len(xs) >= 2 and len(bs) >= 2:
        mb = float(bs.mean())
        diff = float(xs.mean()) - mb
        pooled = math.sqrt(((len(xs) - 1) * xs.var(ddof=1) + (len(bs) - 1) * bs.var(ddof=1)) / (len(xs) + len(bs) - 2))
        if xs.var(ddof=1) + bs.var(ddof=1) > 0:
            res = st.ttest_ind(xs, bs, equal_var=False)
            p = float(res.pvalue)
            interval = lambda lv: tuple(float(v) / mb for v in res.confidence_interval(lv))  # noqa: E731
            # H0: change <= -tol (x + tol * mb not above b) and H0: change >= tol, b's mean taken as the scale.
            tost = lambda tol: float(max(st.ttest_ind(xs + tol * mb, bs, equal_var=False, alternative="greater").pvalue,  # noqa: E731
                                         st.ttest_ind(xs - tol * mb, bs, equal_var=False, alternative="less").pvalue))
        else:
            interval, p, tost = _degenerate(diff / mb)
        g = diff / pooled * (1 - 3 / (4 * (len(xs) + len(bs)) - 9)) if pooled > 0 else math.nan
        out.update(rel_change=diff / mb, p_value=p, effect_size=g, sd_rel=math.sqrt(xs.var(ddof=1) + bs.var(ddof=1)) / mb,
                   test="Welch t (seeds not paired)", _interval=interval, _tost=tost)
    else:
        out.update(rel_change=xs.mean() / bs.mean() - 1, test="none: 1 seed, no interval")
    out["ci_low"], out["ci_high"] = out.interval(level)
    return out


def compare_paired_difference(x: np.ndarray, b: np.ndarray) -> dict:
    """Paired difference x_s - b_s (absolute units, e.g. spikes per run) over the seeds both have: scipy's
    ttest_rel, its p-value and `interval(level)`. NaN p with fewer than 2 pairs."""
    x, b = np.asarray(x, float), np.asarray(b, float)
    both = np.isfinite(x) & np.isfinite(b)
    d = x[both] - b[both]
    out = Comparison({"n_pairs": int(both.sum()), "diff": float(d.mean()) if len(d) else math.nan, "p_value": math.nan,
                      "test": f"paired t ({int(both.sum())} seeds)"})
    if len(d) < 2:
        out["test"] = f"none: {len(d)} paired seed{'s' if len(d) != 1 else ''}"
        return out
    if d.std(ddof=1) > 0:
        res = st.ttest_rel(x[both], b[both])
        out.update(p_value=float(res.pvalue), _interval=lambda lv: tuple(float(v) for v in res.confidence_interval(lv)))
    else:
        interval, p, _ = _degenerate(float(d.mean()))
        out.update(p_value=p, _interval=interval)
    return out


def holm(pvalues: list[float], alpha: float) -> tuple[list[float], list[float]]:
    """Holm's step-down correction: (adjusted p-values, the level each hypothesis is tested at: alpha / (m - rank)).

    A hypothesis is rejected when its adjusted p-value is <= alpha. NaN p-values (no test) take no part and stay NaN.
    """
    idx = [i for i, p in enumerate(pvalues) if math.isfinite(p)]
    m = len(idx)
    adj, levels = [math.nan] * len(pvalues), [math.nan] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adj[i], levels[i] = running, alpha / (m - rank)
    return adj, levels


def spending(t: float, alpha: float, kind: str) -> float:
    """Alpha spent by information fraction t in (0, 1] (Lan-DeMets): pocock alpha ln(1 + (e - 1) t), obrien_fleming
    2 - 2 Phi(z_{1-alpha/2} / sqrt(t))."""
    t = min(max(t, 0.0), 1.0)
    if kind == "pocock":
        return alpha * math.log(1 + (math.e - 1) * t)
    if kind == "obrien_fleming":
        return 0.0 if t == 0 else float(2 - 2 * special.ndtr(special.ndtri(1 - alpha / 2) / math.sqrt(t)))
    raise ValueError(f"invalid spending: {kind!r}")


def look_reached(n: int, looks: list[int]) -> int | None:
    """The largest planned look (a seed count) at or below n; None before the first."""
    return max((lk for lk in looks if lk <= n), default=None)


def look_alpha(n: int, looks: list[int], alpha: float, kind: str) -> float:
    """The family alpha of the look reached with n seeds in the add-seeds design with planned looks `looks`.

    The look at L_k seeds gets the increment of the spending function, spending(L_k / L_K) - spending(L_{k-1} / L_K)
    (L_K the last look; the first look all that is spent by then); the increments sum to alpha, so by the union
    bound the chance of any false call over all the looks stays <= alpha however the seeds are added, as long as a
    verdict is decided only at a planned look. Before the first look: the first look's; past the last: the last's.
    kind "none": alpha at every look (a fixed design tested again: its error rate grows with the looks).
    """
    if kind == "none":
        return alpha
    k = max([i for i, lk in enumerate(looks) if lk <= n], default=0)
    last = looks[-1]
    return spending(looks[k] / last, alpha, kind) - (spending(looks[k - 1] / last, alpha, kind) if k else 0.0)


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


def seeds_needed(rel_change: float, sd_rel: float, tol: float, alpha_at, power: float = 0.8, max_n: int = 200,
                 margin: float | None = None, start: int = 2) -> int | None:
    """Seeds per experiment for the interval of the relative change to clear a decisive boundary.

    Taking the observed change m as the truth, the nearest decisive call needs a half-width below `margin`;
    by default max(tol - |m|, |m|) (equivalent when |m| < tol, different when m is clear of 0). n (from `start`)
    solves (t_{1-a(n)/2,n-1} + z_power) sd / sqrt(n) <= margin, a(n) = alpha_at(n) (a number: the same at every n).
    None: no spread is known (1 seed). max_n + 1: not within max_n seeds.
    """
    if not (math.isfinite(rel_change) and math.isfinite(sd_rel)):
        return None
    margin = max(tol - abs(rel_change), abs(rel_change)) if margin is None else margin
    if sd_rel == 0:
        return max(2, start)
    a = alpha_at if callable(alpha_at) else (lambda n: alpha_at)
    z = float(special.ndtri(power))
    for n in range(max(2, start), max_n + 1):
        if (t_quantile(1 - a(n) / 2, n - 1) + z) * sd_rel / math.sqrt(n) <= margin:
            return n
    return max_n + 1


def classify_change(lo: float, hi: float, tol: float, eq_lo: float | None = None, eq_hi: float | None = None,
                    differs: bool | None = None, equivalent: bool | None = None) -> str:
    """better / similar / worse / unclear from the intervals of the relative change of the primary metric.

    lo, hi: the two-sided interval: better / worse when it is clear of 0 (below / above); eq_lo, eq_hi: the
    (1 - 2 alpha) interval (default: lo, hi): similar when it lies inside ±tol (two one-sided tests). differs /
    equivalent, when given, are the tests' results after a correction (Holm) and override the intervals' verdict.
    """
    eq_lo, eq_hi = (lo, hi) if eq_lo is None else (eq_lo, eq_hi)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "unclear"
    diff = (hi < 0 or lo > 0) if differs is None else differs
    if diff:
        return "better" if (lo + hi) / 2 < 0 else "worse"
    eq = (math.isfinite(eq_lo) and math.isfinite(eq_hi) and -tol < eq_lo and eq_hi < tol) if equivalent is None else equivalent
    return "similar" if eq else "unclear"
