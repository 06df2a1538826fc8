"""Phase analysis: load a phase folder, statistics across seeds, stability, the decision and the hand-off.

Everything here reads the run-folder contract (docs/run-folder.md) and nothing else. Runs that are not `done`
are listed with their state and left out of every statistic. The figures and the HTML report live in
`report.py`; `build_report` (called by `imginav report` and `imginav run`) is re-exported at the bottom.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy import special

from .errors import InputError
from .files import atomic_path, atomic_write_text
from .palette import CLASS_NAMES
from .params import Decision, Phase, Training, _deep_merge, load_phase, params_hash

STATES = ("done", "running", "preempted", "failed", "diverged", "missing", "unreadable")
LOSS_COMPONENTS = ("mse", "seg_ce", "cls_ce", "kl")  # unweighted parts logged in metrics.csv and steps.csv
# Per-run numbers summarised across seeds: column -> what the report calls it.
RUN_METRICS = {
    "best_val_mse": "best val MSE",
    "final_val_mse": "final val MSE",
    "val_psnr": "PSNR (dB)",
    "val_ssim": "SSIM",
    "val_sem_acc": "semantic fidelity: pixel accuracy",
    "val_sem_miou": "semantic fidelity: mIoU",
    "val_seg_acc": "seg head: pixel accuracy",
    "val_seg_miou": "seg head: mIoU",
    "val_cls_acc": "cls head: accuracy",
}
STABILITY = {
    "spikes": "loss spikes: logged training steps whose loss exceeds 3x the median of the previous 20 logged steps",
    "late_wobble": "late val wobble: SD of val MSE around its straight-line trend over the second half of the "
    "epochs, in % of its mean (the variance of the late val loss, made comparable across experiments)",
    "seed_spread": "seed spread: SD of the final val MSE across seeds, in % of its mean (one value per experiment)",
    "epochs_to_10pct": "epochs to converge: first epoch whose val MSE is within 10% of the run's best val MSE",
}
SPIKE_FACTOR, SPIKE_WINDOW = 3.0, 20


class ReportError(InputError):
    """The analysis notebook or the hand-off failed; the message says where to look."""


# ---------------------------------------------------------------------------------------------------------
# Loading


@dataclass
class PhaseRuns:
    """Everything a phase folder holds, as tidy frames. `runs` has one row per index entry, whatever its state."""

    phase: str
    runs_dir: Path
    params_file: Path | None  # the params file the analysis uses (None: none found, defaults apply)
    params: Phase | None
    params_hash: str | None
    decision: Decision
    experiments: list[str]  # index order
    baseline: str
    heads: dict[str, tuple[str, ...]]  # experiment -> trained auxiliary heads ("seg", "cls")
    notes: dict[str, str]
    runs: pd.DataFrame  # experiment, seed, run_dir, state, error, host, device, git_commit, started, ended, ...
    metrics: pd.DataFrame  # metrics.csv rows of every run that wrote one, plus experiment, seed, state
    steps: pd.DataFrame  # steps.csv rows, plus experiment, seed, state
    evals: dict = field(default_factory=dict)  # (experiment, seed) -> eval.json
    configs: dict = field(default_factory=dict)  # (experiment, seed) -> config.yaml, the first readable per experiment
    samples: pd.DataFrame = None  # experiment, seed, epoch, npz
    warnings: list[str] = field(default_factory=list)

    @property
    def done(self) -> pd.DataFrame:
        return self.runs[self.runs["state"] == "done"]


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def _resolve_params_file(runs_dir: Path, index: dict, params_file) -> Path | None:
    if params_file is not None:
        if not Path(params_file).is_file():
            raise InputError(f"params file not found: {params_file}")
        return Path(params_file).resolve()
    for cand in (index.get("params_file"), runs_dir / "params.yaml"):
        if cand and Path(cand).is_file():
            return Path(cand).resolve()
    return None


def _discover_index(runs_dir: Path) -> dict:
    """No index.json: every <experiment>/seed<k>/ folder with a run.json or metrics.csv is a run."""
    runs = []
    for d in sorted(runs_dir.glob("*/seed*")):
        if d.is_dir() and d.name[4:].lstrip("-").isdigit():
            runs.append({"experiment": d.parent.name, "seed": int(d.name[4:]), "run_dir": str(d)})
    return {"phase": runs_dir.name, "runs": runs}


def load_phase_runs(runs_dir: str | Path, params_file: str | Path | None = None) -> PhaseRuns:
    """Read a phase folder. A run whose files are missing or unreadable gets that state; nothing raises for it."""
    runs_dir = Path(runs_dir).resolve()
    if not runs_dir.is_dir():
        raise InputError(f"runs folder not found: {runs_dir}")
    warnings = []
    index_path = runs_dir / "index.json"
    if index_path.is_file():
        try:
            index = _read_json(index_path)
        except (OSError, ValueError) as e:
            raise InputError(f"{index_path}: cannot read: {e}") from None
    else:
        index = _discover_index(runs_dir)
        warnings.append(f"no index.json in {runs_dir}: runs were found by folder name")
    if not index.get("runs"):
        raise InputError(f"{runs_dir}: no runs listed in index.json and no <experiment>/seed<k>/ folders")

    pfile = _resolve_params_file(runs_dir, index, params_file)
    params = None
    if pfile is not None:
        try:
            params = load_phase(pfile, check_files=False)
        except InputError as e:
            if params_file is not None:
                raise
            warnings.append(f"params file not usable, decision defaults apply: {e}")
    else:
        warnings.append("no params file found: decision defaults apply")
    decision = params.decision if params else Decision()

    rows, metrics, steps, evals, configs, samples = [], [], [], {}, {}, []
    load_yaml = lambda p: yaml.load(p.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: E731
    for entry in index["runs"]:
        exp, seed = entry["experiment"], int(entry["seed"])
        # The index may hold cluster paths; the folder next to index.json is what we have here.
        d = runs_dir / exp / f"seed{seed}"
        if not d.is_dir() and Path(entry.get("run_dir", "")).is_dir():
            d = Path(entry["run_dir"])
        row = {"experiment": exp, "seed": seed, "run_dir": str(d), "state": "missing", "error": None}
        info_path = d / "run.json"
        if not d.is_dir():
            row["error"] = "run folder not found"
        elif not info_path.is_file():
            row["error"] = "no run.json (never started?)"
        else:
            try:
                info = _read_json(info_path)
                row.update({k: v for k, v in info.items() if k not in ("experiment", "seed", "phase")})
                row["state"] = info.get("status") if info.get("status") in STATES else "unreadable"
                if row["state"] == "unreadable":
                    row["error"] = f"unknown status {info.get('status')!r}"
            except (OSError, ValueError) as e:
                row.update(state="unreadable", error=f"run.json: {e}")
        has_metrics = False
        for name, sink in (("metrics.csv", metrics), ("steps.csv", steps)):
            p = d / name
            if p.is_file() and p.stat().st_size:
                try:
                    df = pd.read_csv(p)
                except Exception as e:  # pandas raises several types for a malformed CSV
                    row.update(state="unreadable", error=f"{name}: {e}")
                    continue
                sink.append(df.assign(experiment=exp, seed=seed))
                has_metrics |= name == "metrics.csv" and "val_mse" in df and bool(np.isfinite(df["val_mse"]).any())
        if row["state"] == "done" and not has_metrics:
            row.update(state="unreadable", error="status done but metrics.csv has no finite val_mse")
        for name, sink, load in (("eval.json", evals, _read_json), ("config.yaml", configs, load_yaml)):
            p = d / name
            if name == "config.yaml" and any(e == exp for e, _ in configs):
                continue  # one per experiment is enough (heads, architecture, loss), and YAML is slow to parse
            if p.is_file():
                try:
                    sink[(exp, seed)] = load(p)
                except Exception as e:  # a truncated file from a killed job: list it, don't stop
                    warnings.append(f"{exp}/seed{seed}/{name}: unreadable ({e})")
        for npz in sorted((d / "samples").glob("epoch_*.npz")):
            samples.append({"experiment": exp, "seed": seed, "epoch": int(npz.stem[6:]), "npz": str(npz)})
        rows.append(row)

    runs = pd.DataFrame(rows)
    state = {(r["experiment"], r["seed"]): r["state"] for r in rows}

    def tidy(frames):
        if not frames:
            return pd.DataFrame(columns=["experiment", "seed", "epoch", "state"])
        for f in frames:
            f["state"] = state[(f["experiment"].iat[0], f["seed"].iat[0])] if len(f) else "missing"
        return pd.concat(frames, ignore_index=True)

    experiments = list(dict.fromkeys(runs["experiment"]))
    if params:
        experiments = [e for e in params.experiments if e in experiments] + [e for e in experiments if e not in params.experiments]
    baseline = decision.baseline if decision.baseline in experiments else experiments[0]
    metrics_df, steps_df = tidy(metrics), tidy(steps)
    return PhaseRuns(
        phase=index.get("phase") or (params.phase if params else runs_dir.name),
        runs_dir=runs_dir,
        params_file=pfile,
        params=params,
        params_hash=index.get("params_hash") or (params_hash(pfile) if pfile else None),
        decision=decision,
        experiments=experiments,
        baseline=baseline,
        heads={e: _heads(e, params, configs, metrics_df) for e in experiments},
        notes={e: params.experiments[e].note for e in experiments if params and e in params.experiments},
        runs=runs,
        metrics=metrics_df,
        steps=steps_df,
        evals=evals,
        configs=configs,
        samples=pd.DataFrame(samples, columns=["experiment", "seed", "epoch", "npz"]),
        warnings=warnings,
    )


def _heads(exp: str, params: Phase | None, configs: dict, metrics: pd.DataFrame) -> tuple[str, ...]:
    """The auxiliary heads an experiment trains: from its runs' config.yaml, else the params, else the metrics."""
    loss = next((c.get("loss") for (e, _), c in configs.items() if e == exp and isinstance(c, dict)), None)
    if loss is None and params and exp in params.experiments:
        loss = _deep_merge(params.loss.model_dump(), params.experiments[exp].loss)
    if loss is not None:
        return tuple(h for h in ("seg", "cls") if loss.get(h, 0) > 0)
    m = metrics[metrics["experiment"] == exp] if len(metrics) else metrics
    return tuple(h for h, col in (("seg", "val_seg_miou"), ("cls", "val_cls_acc")) if col in m and m[col].notna().any())


# ---------------------------------------------------------------------------------------------------------
# Per-run numbers: outcome and stability


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


def run_table(pr: PhaseRuns) -> pd.DataFrame:
    """One row per finished (`done`) run: outcome metrics at the best epoch and the stability numbers."""
    rows = []
    met = pr.metrics.groupby(["experiment", "seed"]) if len(pr.metrics) else {}
    stp = dict(list(pr.steps.groupby(["experiment", "seed"]))) if len(pr.steps) else {}
    for r in pr.done.itertuples():
        key = (r.experiment, r.seed)
        m = met.get_group(key).sort_values("epoch") if key in getattr(met, "groups", {}) else None
        if m is None or "val_mse" not in m or m["val_mse"].notna().sum() == 0:
            continue
        best_i = m["val_mse"].idxmin()
        at_best = m.loc[best_i].to_dict()
        ev = (pr.evals.get(key) or {}).get("val") or {}
        out = {"experiment": r.experiment, "seed": r.seed, "epochs_run": int(m["epoch"].max()),
               "best_epoch": int(at_best["epoch"]), "best_val_mse": float(ev.get("val_mse", m["val_mse"].min())),
               "final_val_mse": float(m["val_mse"].iloc[-1])}
        for col in [c for c in RUN_METRICS if c.startswith("val_")] + [f"val_{h}_iou_{c}" for h in ("seg", "sem") for c in CLASS_NAMES]:
            v = ev.get(col, at_best.get(col, math.nan))
            out[col] = float(v) if v is not None else math.nan
        s = stp.get(key)
        out["spikes"] = count_spikes(s.sort_values("global_step")["loss"].to_numpy()) if s is not None and "loss" in s else math.nan
        out["late_wobble"] = late_wobble(m["val_mse"].to_numpy())
        out["epochs_to_10pct"] = epochs_to_within(m["epoch"].to_numpy(), m["val_mse"].to_numpy())
        out["epoch_time_s"] = float(m["epoch_time_s"].mean()) if "epoch_time_s" in m else math.nan
        rows.append(out)
    cols = ["experiment", "seed", "epochs_run", "best_epoch", *RUN_METRICS, "spikes", "late_wobble", "epochs_to_10pct"]
    return pd.DataFrame(rows, columns=list(dict.fromkeys(cols + (list(rows[0]) if rows else []))))


# ---------------------------------------------------------------------------------------------------------
# Statistics across seeds


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
        for col, label in {**RUN_METRICS, "spikes": "loss spikes per run", "late_wobble": "late val wobble",
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

    x, b: aligned arrays by seed with NaN where a seed is missing. Paired (>= 2 common seeds): the per-seed
    relative change x_s / b_s - 1, its mean, t-interval, one-sample t-test and Cohen's d_z. Otherwise with
    >= 2 seeds each: Welch's t-test, the interval of the difference of means over the baseline mean, Hedges' g.
    """
    x, b = np.asarray(x, float), np.asarray(b, float)
    both = np.isfinite(x) & np.isfinite(b)
    xs, bs = x[np.isfinite(x)], b[np.isfinite(b)]
    out = {"n": len(xs), "n_baseline": len(bs), "n_pairs": int(both.sum()), "rel_change": math.nan, "ci_low": math.nan,
           "ci_high": math.nan, "p_value": math.nan, "effect_size": math.nan, "sd_rel": math.nan, "test": "none"}
    if len(xs) == 0 or len(bs) == 0:
        out["test"] = "no finished runs"
        return out
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


def seeds_needed(rel_change: float, sd_rel: float, tol: float, alpha: float, power: float = 0.8, max_n: int = 200) -> int | None:
    """Seeds per experiment for the interval of the relative change to clear a decisive boundary.

    Taking the observed change m as the truth, the nearest decisive call needs a half-width below
    max(tol - m, m) (similar when m < tol, worse when m is clear of 0); n solves (t_{1-a/2,n-1} + z_power) sd / sqrt(n)
    <= that margin. None: no spread is known (1 seed). max_n + 1: the change sits on the tolerance.
    """
    if not (math.isfinite(rel_change) and math.isfinite(sd_rel)):
        return None
    margin = max(tol - rel_change, rel_change)
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


# ---------------------------------------------------------------------------------------------------------
# The decision


@dataclass
class Verdict:
    winner: str | None
    status: str  # "decided", "provisional" or "no results"
    paragraph: str
    sureness: str  # "how sure we are", in words
    seeds_needed: int | None  # per experiment, for the undecided comparisons (None: decided or unknown)
    calls: dict[str, str]  # experiment -> helps / hurts / no gain / unclear / baseline / no results
    criteria: pd.DataFrame  # experiment, criterion, value, threshold, result
    comparisons: pd.DataFrame  # experiment, rel_change, ci_low, ci_high, p_value, effect_size, test, call, ...
    level: float = 0.95  # confidence level of the comparison intervals (1 - alpha, or 1 - alpha / m with Bonferroni)


def _pct(x: float) -> str:
    return f"{x * 100:+.1f}%" if math.isfinite(x) else "n/a"


def _head_words(heads: tuple[str, ...]) -> str:
    return " + ".join({"seg": "segmentation", "cls": "classification"}[h] for h in heads) or "no auxiliary loss"


def decide(table: pd.DataFrame, experiments: list[str], baseline: str, heads: dict, rules: Decision) -> Verdict:
    """Evaluate every criterion for every experiment against the baseline; pick the winner and say why.

    table: run_table() rows (finished runs only). An auxiliary experiment "helps" when its val MSE is similar
    or better (interval of the relative change below +tolerance), its heads reach the minimum accuracies and
    its training is not less stable; it "hurts" when its val MSE is worse (interval above 0 and past the
    tolerance) or its training is less stable or slower. Reconstruction comes first: a significantly better val
    MSE helps even when the heads miss their bar. The winner is the helping experiment with the lowest mean val
    MSE (those significantly better first), else the baseline. Any "unclear" makes it provisional.
    """
    m = max(1, len(experiments) - 1) if rules.correction == "bonferroni" else 1
    level, tol, metric = 1 - rules.alpha / m, rules.similar_tolerance, "best_val_mse"
    by = {e: table[table["experiment"] == e].set_index("seed") for e in experiments}
    mean = {e: by[e][metric].mean() if len(by[e]) else math.nan for e in experiments}
    base = by[baseline]
    agg = lambda e, c: float(by[e][c].mean()) if c in by[e] and len(by[e]) else math.nan  # noqa: E731
    crit, cmp_rows, calls, needs, open_ = [], [], {}, [], []  # needs: undecided candidates; open_: MSE open, cannot win

    def add(e, criterion, value, threshold, result):
        crit.append({"experiment": e, "criterion": criterion, "value": value, "threshold": threshold, "result": result})

    for e in experiments:
        if len(by[e]) == 0:
            calls[e] = "no results"
            add(e, "finished runs", "0", "≥ 1", "fail")
            continue
        if not len(base):  # nothing to compare with: the ranking below is by mean only
            calls[e] = "unclear"
            add(e, "baseline has finished runs", "0", "≥ 1", "unclear")
            continue
        if e == baseline:
            calls[e] = "baseline"
            add(e, f"val MSE (baseline, {len(base)} seeds)", f"{mean[e]:.4g}", "", "baseline")
            continue
        seeds = sorted(set(by[e].index) | set(base.index))
        c = compare(by[e][metric].reindex(seeds).to_numpy(), base[metric].reindex(seeds).to_numpy(), level)
        change = classify_change(c["ci_low"], c["ci_high"], tol) if len(base) else "unclear"
        ci = f"{_pct(c['rel_change'])} (CI {_pct(c['ci_low'])} to {_pct(c['ci_high'])})"
        add(e, "val MSE not worse than baseline", ci, f"CI not entirely above 0 and reaching past {_pct(tol)}",
            "fail" if change == "worse" else "unclear" if change == "unclear" else "pass")
        add(e, f"val MSE similar (within ±{tol:.0%}) or better", ci, f"CI upper ≤ {_pct(tol)}",
            "pass" if change in ("better", "similar") else "fail" if change == "worse" else "unclear")
        aux_ok = True
        for h, col, thr, name in (("seg", "val_seg_miou", rules.min_seg_miou, "seg mIoU"),
                                  ("cls", "val_cls_acc", rules.min_cls_accuracy, "cls accuracy")):
            if h in heads.get(e, ()):
                v = agg(e, col)
                ok = math.isfinite(v) and v >= thr
                aux_ok &= ok
                add(e, f"{name} good", f"{v:.3f}" if math.isfinite(v) else "n/a", f"≥ {thr}", "pass" if ok else "fail")
        stab_ok = True
        for col, name, thr_fn, fmt in (
            ("spikes", "loss spikes per run", lambda b: b + rules.max_extra_spikes, "{:.1f}"),
            ("late_wobble", "late val wobble", lambda b: b * rules.stability_ratio + 1e-3, "{:.2%}"),
            ("epochs_to_10pct", "epochs to within 10% of best", lambda b: b + rules.max_extra_epochs, "{:.1f}"),
        ):
            v, b = agg(e, col), agg(baseline, col)
            if not (math.isfinite(v) and math.isfinite(b)):
                add(e, f"{name} not worse", "n/a", "", "n/a")
                continue
            ok = v <= thr_fn(b)
            if rules.stability_not_worse:
                stab_ok &= ok
            add(e, f"{name} not worse", fmt.format(v), f"≤ {fmt.format(thr_fn(b))} (baseline {fmt.format(b)})",
                ("pass" if ok else "fail") if rules.stability_not_worse else "info")
        if change == "worse" or not stab_ok:
            call = "hurts"
        elif not aux_ok and change != "better":
            # Its heads miss the bar, so only a significantly better reconstruction (which comes first) could
            # make it win: undecided while its interval still reaches below 0, else no gain.
            call = "unclear" if change == "unclear" and c["ci_low"] < 0 else "no gain"
        elif change in ("better", "similar"):
            call = "helps"
        else:
            call = "unclear"
        if change == "unclear":
            n = seeds_needed(c["rel_change"], c["sd_rel"], tol, rules.alpha / m, rules.power)
            (needs if call == "unclear" else open_).append((e, n if n is not None else 3))
        calls[e] = call
        cmp_rows.append({"experiment": e, **c, "change": change, "call": call, "mean": mean[e], "mean_baseline": mean[baseline]})

    comparisons = pd.DataFrame(cmp_rows, columns=["experiment", "n", "n_baseline", "n_pairs", "rel_change", "ci_low", "ci_high",
                                                  "p_value", "effect_size", "sd_rel", "test", "change", "call", "mean", "mean_baseline"])
    finished = [e for e in experiments if len(by[e])]
    if not finished:
        return Verdict(None, "no results", "No run of this phase has finished: there is nothing to compare yet.",
                       "Not at all: no finished runs.", None, calls, pd.DataFrame(crit), comparisons, level)
    helpers = [e for e in experiments if calls[e] == "helps"]
    better = [e for e in helpers if comparisons.set_index("experiment").loc[e, "change"] == "better"]
    if helpers:
        winner = min(better or helpers, key=lambda e: mean[e])
    elif len(base):
        winner = baseline
    else:
        winner = min(finished, key=lambda e: mean[e])
    unclear = [e for e in experiments if calls[e] == "unclear"]
    status = "provisional" if unclear or not len(base) else "decided"
    need = max(n for _, n in needs) if needs else None
    paragraph = _paragraph(comparisons, calls, experiments, baseline, heads, table, rules, winner, status)
    sureness = _sureness(by, experiments, baseline, status, need, rules, unclear)
    if m > 1:
        sureness += f" Bonferroni: each of the {m} comparisons uses a {level:.2%} interval (alpha {rules.alpha} / {m})."
    if not len(base):
        paragraph = (f"The baseline {baseline} has no finished run, so no experiment can be compared with it; "
                     f"{winner} has the lowest mean best val MSE ({mean[winner]:.4g}). " + paragraph)
        sureness = f"Not sure: without a finished run of the baseline {baseline} there is no comparison; rerun it."
    if open_:
        sureness += " " + " ".join(
            f"Whether {e} hurts reconstruction stays open (its val MSE interval is too wide; ≈{n if n <= 200 else '> 200'} "
            f"seeds per experiment would tell), but it cannot win with its heads below the bar." for e, n in open_)
    return Verdict(winner, status, paragraph, sureness, need, calls, pd.DataFrame(crit), comparisons, level)


def _paragraph(comparisons, calls, experiments, baseline, heads, table, rules, winner, status) -> str:
    """The verdict in plain words, one sentence per experiment and one for the winner."""
    parts = []
    cmp = comparisons.set_index("experiment")
    for e in experiments:
        if e not in cmp.index:
            if calls.get(e) == "no results":
                parts.append(f"{e} has no finished run.")
            continue
        c = cmp.loc[e]
        ci = f"CI {_pct(c.ci_low)} to {_pct(c.ci_high)}" if math.isfinite(c.ci_low) else "no interval: 1 seed"
        p = f", p = {c.p_value:.2g}" if math.isfinite(c.p_value) else ""
        what = {
            "better": f"{e} reconstructs better than {baseline}: val MSE {_pct(c.rel_change)} ({ci}{p})",
            "similar": f"{e} matches {baseline} within {abs(c.rel_change) * 100:.1f}% ({ci})",
            "worse": f"{e} reconstructs worse than {baseline}: val MSE {_pct(c.rel_change)} ({ci}{p})",
            "unclear": f"{e} differs from {baseline} by {_pct(c.rel_change)} in val MSE, but the interval ({ci}) is too "
            f"wide to call it similar (±{rules.similar_tolerance:.0%}) or worse",
        }[c.change]
        t = table[table["experiment"] == e]
        aux = []
        if "seg" in heads.get(e, ()):
            aux.append(f"segments at mIoU {t['val_seg_miou'].mean():.2f}")
        if "cls" in heads.get(e, ()):
            aux.append(f"classifies at accuracy {t['val_cls_acc'].mean():.2f}")
        if aux:
            what += "; it " + " and ".join(aux)
        words = _head_words(heads.get(e, ()))
        weak = [n for h, col, thr, n in (("seg", "val_seg_miou", rules.min_seg_miou, "seg mIoU"),
                                         ("cls", "val_cls_acc", rules.min_cls_accuracy, "cls accuracy"))
                if h in heads.get(e, ()) and not t[col].mean() >= thr]
        call = {"helps": f"auxiliary {words} does not hurt" + (" and helps" if c.change == "better" else "")
                + (f" (its {' and '.join(weak)} is below the bar, but reconstruction comes first)" if weak else ""),
                "hurts": f"auxiliary {words} hurts",
                "no gain": f"its {words} head is below the bar ("
                + ", ".join(f"{n} ≥ {v}" for h, n, v in (("seg", "seg mIoU", rules.min_seg_miou), ("cls", "cls accuracy", rules.min_cls_accuracy))
                            if h in heads.get(e, ())) + "), so it cannot win",
                "unclear": "undecided" + (f" (its {' and '.join(weak)} is below the bar: only a significantly better "
                                          "val MSE would make it win)" if weak else "")}[calls[e]]
        if calls[e] == "hurts" and c.change != "worse":
            call += " (training is less stable or slower: see the criteria)"
        parts.append(f"{what}: {call}.")
    simplify = " (simplify to RGB-only)" if winner == baseline and not heads.get(baseline) else ""
    parts.append(f"Winner{' (provisional)' if status != 'decided' else ''}: {winner}{simplify}.")
    return " ".join(parts)


def _sureness(by, experiments, baseline, status, need, rules, unclear) -> str:
    ns = {e: len(by[e]) for e in experiments if len(by[e])}
    lo, hi = min(ns.values()), max(ns.values())
    seeds = f"{lo}" if lo == hi else f"{lo} to {hi}"
    level = f"{1 - rules.alpha:.0%}"
    if hi < 2:
        return (f"Not sure: each experiment has {seeds} finished seed, so no confidence interval exists and the "
                f"ranking is a single draw that may be seed noise (gaps of 8-10% from one seed each have been noise "
                f"before). Confidence intervals need at least 2 and usefully 3 or more seeds per experiment.")
    s = f"{seeds} finished seeds per experiment; {level} confidence intervals (t-interval across seeds, paired by seed where the seeds match)."
    if lo < 3:
        s += " With 2 seeds a t-interval is very wide (t = 12.7); 3 or more seeds are needed for a useful interval."
    if status == "decided":
        return f"Sure enough to pick the winner: no other experiment can still beat it at this level. {s}"
    more = f"needs more seeds (≈{need} per experiment)" if need and need <= 200 else \
        "needs more seeds (the observed change sits on the tolerance: more than 200 seeds would be needed; treat them as equal)" \
        if need else "needs more seeds (≥ 3 per experiment)"
    return f"Not sure yet: the intervals of {', '.join(unclear) or baseline} are too wide to decide; {more}. {s}"


def simulate_decisions(effect: float, n_seeds: int = 3, seed_sd: float = 0.03, run_sd: float = 0.015, draws: int = 400,
                       rules: Decision | None = None, rng_seed: int = 0) -> dict:
    """How often `decide` gets it right: draw phases of a baseline F1 and F2 whose true val MSE is (1 + effect) x
    F1's, with seed noise (seed_sd: shared by both experiments of a seed, as the same init and data order;
    run_sd: per run), equal stability and a good seg head. Returns the share of draws per winner and per F2 call."""
    rng = np.random.default_rng(rng_seed)
    rules = rules or Decision()
    heads = {"F1": (), "F2": ("seg",)}
    winners, calls = {}, {}
    fixed = {"val_cls_acc": math.nan, "spikes": 0.0, "late_wobble": 0.01, "epochs_to_10pct": 5.0}
    for _ in range(draws):
        shared = rng.normal(0, seed_sd, n_seeds)
        rows = [{"experiment": e, "seed": s, "best_val_mse": 0.004 * f * math.exp(shared[s] + rng.normal(0, run_sd)),
                 "val_seg_miou": 0.7 if e == "F2" else math.nan, **fixed}
                for e, f in (("F1", 1.0), ("F2", 1.0 + effect)) for s in range(n_seeds)]
        v = decide(pd.DataFrame(rows), ["F1", "F2"], "F1", heads, rules)
        winners[v.winner] = winners.get(v.winner, 0) + 1 / draws
        calls[v.calls["F2"]] = calls.get(v.calls["F2"], 0) + 1 / draws
    return {"winner": winners, "call": calls}


# ---------------------------------------------------------------------------------------------------------
# Hand-off to the next phase


def _resolved(pr: PhaseRuns, exp: str, section: str) -> dict:
    """The winner's section as it ran (config.yaml of a finished seed), else as the params resolve it."""
    for (e, s), c in sorted(pr.configs.items()):
        if e == exp and isinstance(c, dict) and section in c:
            return c[section]
    if pr.params and exp in pr.params.experiments:
        return _deep_merge(getattr(pr.params, section).model_dump(), getattr(pr.params.experiments[exp], section))
    return {}


def write_handoff(pr: PhaseRuns, verdict: Verdict, summary: pd.DataFrame) -> dict[str, Path]:
    """Write <runs>/<phase>/winner.yaml and the next phase's params next to the params file; return the paths."""
    if verdict.winner is None:
        return {}
    w = verdict.winner
    table = run_table(pr)
    t = table[table["experiment"] == w]
    best = t.loc[t["best_val_mse"].idxmin()] if len(t) else None
    runinfo = pr.runs.set_index(["experiment", "seed"])
    commit = runinfo.loc[(w, int(best.seed)), "git_commit"] if best is not None and "git_commit" in runinfo else None
    s = summary[summary["experiment"] == w].set_index("metric")
    metrics = {m: {k: (None if not math.isfinite(float(s.loc[m, k])) else float(s.loc[m, k])) for k in ("mean", "ci_low", "ci_high")}
               | {"n": int(s.loc[m, "n"])} for m in RUN_METRICS if m in s.index and s.loc[m, "n"] > 0}
    architecture, loss = _resolved(pr, w, "architecture"), _resolved(pr, w, "loss")
    paths = {"winner": pr.runs_dir / "winner.yaml"}
    nxt = pr.decision.handoff
    if pr.params_file is not None:
        paths["next_params"] = pr.params_file.parent / f"{nxt.phase}.yaml"
    winner = {
        "phase": pr.phase,
        "winner": w,
        "status": verdict.status,
        "verdict": verdict.paragraph,
        "how_sure": verdict.sureness,
        "loss": loss,
        "architecture": architecture,
        "metrics": metrics,
        "best_seed": int(best.seed) if best is not None else None,
        "best_checkpoint": str(Path(runinfo.loc[(w, int(best.seed)), "run_dir"]) / "checkpoints" / "best.pt") if best is not None else None,
        "params_file": str(pr.params_file) if pr.params_file else None,
        "params_hash": pr.params_hash,
        "git_commit": commit if isinstance(commit, str) else None,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "next_params": str(paths.get("next_params")) if "next_params" in paths else None,
    }
    atomic_write_text(paths["winner"], yaml.safe_dump(winner, sort_keys=False, allow_unicode=True, width=120))
    if "next_params" in paths:
        _write_next_params(pr, paths["next_params"], w, architecture, loss, verdict, paths["winner"])
    return paths


def _write_next_params(pr: PhaseRuns, dest: Path, w: str, architecture: dict, loss: dict, verdict: Verdict, winner_file: Path):
    nxt = pr.decision.handoff
    raw = yaml.safe_load(pr.params_file.read_text()) or {}
    training = Training.model_validate(_deep_merge(_resolved(pr, w, "training"), nxt.training)).model_dump(mode="json")
    params = {
        "phase": nxt.phase,
        "description": f"Final training of {w}, the {verdict.status} winner of {pr.phase} (see {winner_file}).",
        "runs_root": raw.get("runs_root", "runs"),
        "data": raw["data"],  # as written (relative paths and ${VAR} stay valid: this file sits next to it)
        "architecture": architecture,
        "training": training,
        "loss": loss,
        "seeds": nxt.seeds or [pr.params.seeds[0]],
        "experiments": {w: {"note": f"winner of {pr.phase} ({verdict.status})"}},
    }
    if "cluster" in raw:
        cluster = dict(raw["cluster"])
        cluster["experiments"] = {k: v for k, v in (cluster.get("experiments") or {}).items() if k == w}
        params["cluster"] = cluster
    header = (f"# {nxt.phase}: written by `imginav report` from {pr.phase} on "
              f"{dt.date.today().isoformat()}; do not edit by hand, edit {pr.params_file.name}'s decision.handoff.\n"
              f"# Winner: {w} ({verdict.status}). To follow a later winner file instead, use\n"
              f"# architecture_from: {os.path.relpath(winner_file, dest.parent)}\n")
    text = header + yaml.safe_dump(params, sort_keys=False, allow_unicode=True, width=120)
    try:
        with atomic_path(dest) as tmp:
            Path(tmp).write_text(text)
            load_phase(tmp, check_files=False)  # what `imginav validate` checks, before it replaces anything
    except InputError as e:
        raise ReportError(f"the next-phase params would not validate: {e}") from None


# ---------------------------------------------------------------------------------------------------------


@dataclass
class Analysis:
    """What the notebook shows: the loaded runs, per-run table, summary, verdict."""

    runs: PhaseRuns
    table: pd.DataFrame
    summary: pd.DataFrame
    verdict: Verdict


def analyse(runs_dir: str | Path, params_file: str | Path | None = None) -> Analysis:
    pr = load_phase_runs(runs_dir, params_file)
    table = run_table(pr)
    summary = summarize(table, pr.experiments, 1 - pr.decision.alpha)
    verdict = decide(table, pr.experiments, pr.baseline, pr.heads, pr.decision)
    return Analysis(pr, table, summary, verdict)


def build_report(runs_dir, params_file=None, out=None) -> Path:
    """Execute notebooks/analysis.ipynb for a phase folder and render reports/<phase>.html (see report.py)."""
    from .report import build_report as _build

    return _build(runs_dir, params_file=params_file, out=out)


# ---------------------------------------------------------------------------------------------------------
# Synthetic phase folders with planted effects (tests, benchmark, trying the report without training)


def write_synthetic_phase(
    root: str | Path,
    phase: str = "synthetic",
    experiments: dict[str, dict] | None = None,
    seeds: tuple[int, ...] = (1, 2, 3),
    epochs: int = 10,
    effects: dict[str, dict] | None = None,
    states: dict[tuple[str, int], str] | None = None,
    noise: float = 0.03,
    image_size: int = 32,
    num_samples: int = 4,
    sample_interval: int = 2,
    steps_per_epoch: int = 20,
    rng_seed: int = 0,
    notes: dict[str, str] | None = None,
) -> Path:
    """Write `<root>/<phase>/` with every contract file for experiments x seeds; return that folder.

    experiments: name -> loss weights {"seg": w, "cls": w} (default: F1/F2/F3 of Phase 1.4).
    effects: name -> {"mse": factor on the true val MSE (1.1 = 10% worse), "seg_miou", "cls_acc", "spikes"
    (per run), "wobble" (late val noise, fraction)}. noise: seed-to-seed SD of the val MSE (fraction).
    states: (name, seed) -> failed / diverged / running / preempted / missing (listed, no folder).
    notes: name -> the experiment's note in params.yaml.
    """
    from PIL import Image

    from .palette import mask_to_rgb

    rng = np.random.default_rng(rng_seed)
    experiments = experiments or {"F1_rgb_only": {}, "F2_rgb_seg": {"seg": 0.05}, "F3_rgb_seg_cls": {"seg": 0.05, "cls": 0.01}}
    effects, states = effects or {}, states or {}
    out = Path(root) / phase
    out.mkdir(parents=True, exist_ok=True)
    params = {
        "phase": phase, "description": "synthetic phase with planted effects", "runs_root": str(Path(root).resolve()),
        "data": {"manifest": "data/manifest.csv", "image_size": image_size, "num_samples": num_samples},
        "architecture": {"latent_channels": 4, "base_channels": 8, "downsampling_steps": 2},
        "training": {"epochs": epochs, "sample_interval": sample_interval, "log_every": 1},
        "seeds": list(seeds),
        "experiments": {e: {"note": (notes or {}).get(e, f"synthetic {e}"), **({"loss": w} if w else {})} for e, w in experiments.items()},
    }
    params_path = out / "params.yaml"
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    phase_cfg = load_phase(params_path, check_files=False)
    index = {"phase": phase, "params_file": str(params_path), "params_hash": params_hash(params_path), "runs": []}

    # The fixed validation images: rooms of wall + background with furniture rectangles.
    masks = np.full((num_samples, image_size, image_size), 9, np.uint8)
    for m in masks:
        m[[0, -1], :] = m[:, [0, -1]] = 8
        for _ in range(4):
            y, x = rng.integers(2, image_size - 8, 2)
            m[y : y + rng.integers(3, 8), x : x + rng.integers(3, 8)] = rng.integers(0, 8)
    inputs = mask_to_rgb(masks).transpose(0, 3, 1, 2)  # (N, 3, H, W)
    seed_effect = {s: rng.normal(0, noise) for s in seeds}  # shared by experiments: same init and data order
    k = len(CLASS_NAMES)
    for e, weights in experiments.items():
        eff = effects.get(e, {})
        heads = [h for h in ("seg", "cls") if weights.get(h, 0) > 0]
        for s in seeds:
            d = out / e / f"seed{s}"
            index["runs"].append({"experiment": e, "seed": s, "run_dir": str(d)})
            state = states.get((e, s), "done")
            if state == "missing":
                continue
            d.mkdir(parents=True, exist_ok=True)
            last = epochs if state == "done" else max(1, epochs // 2)
            true_final = 0.004 * eff.get("mse", 1.0) * math.exp(seed_effect[s] + rng.normal(0, noise / 2))
            ep = np.arange(1, last + 1)
            wob = rng.normal(0, eff.get("wobble", 0.005), last)
            val = true_final * (1 + 4 * np.exp(-ep / max(1, epochs / 5))) * (1 + wob)
            if state == "diverged":
                val[-1] = math.nan
            miou, acc = eff.get("seg_miou", 0.7), eff.get("cls_acc", 0.85)
            rows = []
            for i, epoch in enumerate(ep):
                prog = 1 - math.exp(-epoch / max(1, epochs / 4))
                r = {"epoch": epoch, "lr": 1e-4, "epoch_time_s": 2.0 + rng.normal(0, 0.1), "train_images_per_s": 100.0,
                     "train_mse": val[i] * 0.95, "train_kl": math.nan, "val_mse": val[i], "val_kl": math.nan,
                     "val_psnr": 10 * math.log10(4 / val[i]) if np.isfinite(val[i]) else math.nan,
                     "val_ssim": 1 - 20 * val[i] if np.isfinite(val[i]) else math.nan,
                     "val_sem_acc": 0.97 * prog, "val_sem_miou": 0.8 * prog}
                for h, ce, mval in (("seg", 2.3 * (1 - prog) + 0.2, miou * prog), ("cls", 0.69 * (1 - prog) + 0.3, acc * prog)):
                    on = h in heads
                    r[f"train_{h}_ce"] = ce if on else math.nan
                    r[f"val_{h}_ce"] = ce * 1.05 if on else math.nan
                    r[f"train_{h}_acc"] = min(1, mval + 0.1) if on else math.nan
                    r[f"val_{h}_acc"] = (min(1, mval + 0.15) if h == "seg" else mval) if on else math.nan
                r["val_seg_miou"] = r.pop("val_seg_acc_tmp", miou * prog) if "seg" in heads else math.nan
                r["train_loss"] = r["train_mse"] + sum(weights.get(h, 0) * r[f"train_{h}_ce"] for h in heads)
                r["val_loss"] = r["val_mse"] + sum(weights.get(h, 0) * r[f"val_{h}_ce"] for h in heads)
                for j, c in enumerate(CLASS_NAMES):
                    r[f"val_seg_iou_{c}"] = float(np.clip(r["val_seg_miou"] + 0.15 * math.sin(j + s), 0, 1)) if "seg" in heads else math.nan
                    r[f"val_sem_iou_{c}"] = float(np.clip(r["val_sem_miou"] + 0.15 * math.cos(j + s), 0, 1))
                rows.append(r)
            metrics = pd.DataFrame(rows)
            metrics.to_csv(d / "metrics.csv", index=False)
            n_steps = last * steps_per_epoch
            base = np.repeat(val * 1.2, steps_per_epoch) * np.exp(rng.normal(0, 0.1, n_steps))
            spikes = rng.choice(np.arange(25, n_steps), size=min(int(eff.get("spikes", 0)), max(0, n_steps - 25)), replace=False)
            base[spikes] *= 10
            pd.DataFrame({"global_step": np.arange(1, n_steps + 1), "epoch": np.repeat(ep, steps_per_epoch),
                          "step": np.tile(np.arange(steps_per_epoch), last), "loss": base, "mse": base / 1.2,
                          "seg_ce": math.nan, "cls_ce": math.nan, "kl": math.nan, "lr": 1e-4}).to_csv(d / "steps.csv", index=False)
            best = int(np.nanargmin(val)) if np.isfinite(val).any() else 0
            cfg = {"phase": phase, "experiment": e, "seed": s, "run_dir": str(d), "params_file": str(params_path),
                   "params_hash": index["params_hash"], "data": phase_cfg.data.model_dump(),
                   "architecture": phase_cfg.architecture.model_dump(), "training": phase_cfg.training.model_dump(),
                   "loss": {**phase_cfg.loss.model_dump(), **weights}}
            (d / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
            info = {"phase": phase, "experiment": e, "seed": s, "status": state, "started": "2026-01-01T10:00:00+00:00",
                    "ended": None if state in ("running", "preempted") else "2026-01-01T10:20:00+00:00",
                    "updated": "2026-01-01T10:20:00+00:00", "git_commit": "synthetic0000", "host": "synthetic-host",
                    "device": "cpu (2 threads)", "error": {"failed": "RuntimeError: synthetic failure", "diverged":
                    f"non-finite loss at epoch {last}"}.get(state), "epoch": last, "epochs": epochs,
                    "best_val_mse": float(val[best]), "best_epoch": best + 1, "epoch_time_s": 2.0, "stopped_early": False,
                    "job_id": None, "skipped_images": 0, "attempts": 1}
            (d / "run.json").write_text(json.dumps(info, indent=1))
            if state == "done":
                cm = np.diag(np.full(k, 100)) + rng.integers(0, 10, (k, k))
                (d / "eval.json").write_text(json.dumps({"epoch": best + 1, "val": metrics.iloc[best].drop("epoch").to_dict(),
                                                         "seg_confusion": cm.tolist() if "seg" in heads else None,
                                                         "sem_confusion": cm.tolist()}))
            (d / "samples").mkdir(exist_ok=True)
            for epoch in sorted({*range(sample_interval, last + 1, sample_interval), last}):
                amp = 120 * math.sqrt(val[epoch - 1] / true_final) / 3 if np.isfinite(val[epoch - 1]) else 120
                recon = np.clip(inputs + rng.normal(0, amp, inputs.shape), 0, 255).astype(np.uint8)
                flip = rng.random(masks.shape) > miou * (epoch / last)
                seg_pred = np.where(flip, rng.integers(0, k, masks.shape), masks).astype(np.uint8)
                arrays = {"index": np.arange(num_samples, dtype=np.int64), "input": inputs, "recon": recon, "mask": masks,
                          "recon_classes": masks, "error": np.abs(recon.astype(int) - inputs).mean(1).astype(np.uint8)}
                if "seg" in heads:
                    arrays["seg_pred"] = seg_pred
                np.savez_compressed(d / "samples" / f"epoch_{epoch:03d}.npz", **arrays)
                grid = np.concatenate([np.concatenate([inputs[i].transpose(1, 2, 0), recon[i].transpose(1, 2, 0)], 1) for i in range(num_samples)], 0)
                Image.fromarray(grid).save(d / "samples" / f"epoch_{epoch:03d}.png")
    (out / "index.json").write_text(json.dumps(index, indent=1))
    return out
