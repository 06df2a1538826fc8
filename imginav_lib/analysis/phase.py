"""Loading a phase folder: the index, each run's run.json, metrics.csv, steps.csv, eval.json, config.yaml and
samples, as tidy frames; and the per-run table the statistics and the decision read.

Everything here reads the run-folder contract (docs/run-folder.md) and nothing else. Runs that are not `done`
are listed with their state and left out of every statistic.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from imginav_lib import heads as H
from imginav_lib.runs import runfolder as rf
from imginav_lib.errors import InputError
from imginav_lib.palette import CLASS_NAMES
from imginav_lib.runs.runfolder import home_params
from imginav_lib.config.params import deep_merge, load_params, params_hash
from imginav_lib.config.schema import Decision, Phase
from imginav_lib.analysis.stats import count_spikes, epochs_to_within, late_wobble

STATES = ("done", "running", "preempted", "failed", "diverged", "missing", "unreadable")
# The columns each CSV must have (the first one numbers its rows), and the arrays every samples/*.npz holds.
REQUIRED = {rf.METRICS: ("epoch", "val_mse"), rf.STEPS: ("global_step", "loss")}
SAMPLE_ARRAYS = {"index", "input", "recon", "mask", "recon_classes", "error"}


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
    heads: dict[str, tuple[str, ...]]  # experiment -> trained auxiliary heads (names in heads.HEADS)
    notes: dict[str, str]
    runs: pd.DataFrame  # experiment, seed, run_dir, state, error, host, device, git_commit, started, ended, ...
    metrics: pd.DataFrame  # metrics.csv rows of every run that wrote one, plus experiment, seed, state
    steps: pd.DataFrame  # steps.csv rows, plus experiment, seed, state
    evals: dict = field(default_factory=dict)  # (experiment, seed) -> eval.json
    configs: dict = field(default_factory=dict)  # (experiment, seed) -> config.yaml, the first readable per experiment
    samples: pd.DataFrame = None  # experiment, seed, epoch, npz
    warnings: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)  # the --set items the runs were launched with (index.json)

    @property
    def done(self) -> pd.DataFrame:
        return self.runs[self.runs["state"] == "done"]


def _resolve_params_file(runs_dir: Path, params_file) -> Path | None:
    """`params_file` when given, else the copy `imginav run` keeps in the phase folder (the params the runs used)."""
    if params_file is not None:
        if not Path(params_file).is_file():
            raise InputError(f"params file not found: {params_file}")
        return Path(params_file).resolve()
    copy = runs_dir / rf.PARAMS_COPY
    return copy if copy.is_file() else None


def _discover_index(runs_dir: Path) -> dict:
    """No index.json: every <experiment>/seed<k>/ folder with a run.json or metrics.csv is a run."""
    runs = []
    for d in sorted(runs_dir.glob("*/seed*")):
        if d.is_dir() and d.name[4:].lstrip("-").isdigit():
            runs.append({"experiment": d.parent.name, "seed": int(d.name[4:]), "run_dir": str(d)})
    return {"phase": runs_dir.name, "runs": runs}


def _read_index(runs_dir: Path, warnings: list[str]) -> dict:
    index_path = runs_dir / rf.INDEX
    if index_path.is_file():
        try:
            index = rf.load_json(index_path)
        except (OSError, ValueError) as e:
            raise InputError(f"{index_path}: cannot read: {e}") from None
    else:
        index = _discover_index(runs_dir)
        warnings.append(f"no index.json in {runs_dir}: runs were found by folder name")
    entries = index.get("runs") if isinstance(index, dict) else None
    if not isinstance(entries, list) or not all(isinstance(r, dict) and isinstance(r.get("experiment"), str) and isinstance(r.get("seed"), int) for r in entries):
        raise InputError(f"{index_path}: not a phase index (expected runs: a list of {{experiment, seed, run_dir}})")
    if not entries:
        raise InputError(f"{runs_dir}: not a phase folder: no runs listed in index.json and no <experiment>/seed<k>/ folders")
    return index


def _read_params(runs_dir: Path, params_file, overrides: list[str], warnings: list[str]) -> tuple[Path | None, Phase | None]:
    """The params file and its contents; a given file must load, one found by itself may fail (defaults apply)."""
    pfile = _resolve_params_file(runs_dir, params_file)
    params = None
    if pfile is not None:
        # The copy's relative paths (architecture_from) are those of the params file it came from, if it is here.
        home = home_params(runs_dir) if params_file is None else None
        try:
            params = load_params(pfile, check_files=False, base=home.parent if home else None,
                                 overrides=overrides)
        except InputError as e:
            if params_file is not None:
                raise
            warnings.append(f"params file not usable, decision defaults apply: {e}")
    else:
        warnings.append("no params file found: decision defaults apply")
    return pfile, params


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _read_numbers(p: Path) -> pd.DataFrame:
    """metrics.csv or steps.csv as numbers; ValueError says, on one line, what makes it unusable."""
    df = pd.read_csv(p)
    required = REQUIRED[p.name]
    missing = [c for c in required if c not in df]
    if missing:
        raise ValueError(f"no {missing[0]} column")
    for c in df.columns:
        if not pd.api.types.is_numeric_dtype(df[c]):
            num = pd.to_numeric(df[c], errors="coerce")
            bad = (df[c].notna() & num.isna()).to_numpy()
            if bad.any():
                i = int(bad.argmax())
                raise ValueError(f"{c} on line {i + 2} is {str(df[c].iloc[i])[:20]!r}, not a number")
            df[c] = num
    key = df[required[0]]
    if key.isna().any() or (key % 1 != 0).any():
        raise ValueError(f"{required[0]} on line {int((key.isna() | (key % 1 != 0)).to_numpy().argmax()) + 2} is not a whole number")
    if key.duplicated().any():  # the trainer writes one row per epoch (per logged step)
        raise ValueError(f"{required[0]} {int(key[key.duplicated()].iloc[0])} appears twice")
    return df


def _samples(folder: rf.RunFolder, exp: str, seed: int, warnings: list[str]) -> list[dict]:
    """The samples/epoch_XXX.npz that open and hold every array; a truncated one (a killed job) is a warning."""
    out = []
    for npz in folder.sample_arrays():
        if not npz.stem[6:].isdigit():
            continue
        try:
            with np.load(npz) as z:
                missing = SAMPLE_ARRAYS - set(z.files)
        except Exception as e:  # zipfile and numpy raise several types for a truncated file
            missing = {_one_line(e)}
        if missing:
            warnings.append(f"{exp}/seed{seed}/samples/{npz.name}: unreadable, left out ({sorted(missing)[0]})")
            continue
        out.append({"experiment": exp, "seed": seed, "epoch": int(npz.stem[6:]), "npz": str(npz)})
    return out


def _numbers_only(val) -> bool:
    """eval.json's `val`: metric name -> number (or null)."""
    return isinstance(val, dict) and all(v is None or isinstance(v, (int, float)) and not isinstance(v, bool) for v in val.values())


def _load_yaml(p: Path):
    return yaml.load(p.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _read_run(d: Path, exp: str, seed: int, found: dict, warnings: list[str]) -> dict:
    """One run folder: its row of `runs` (state, error, run.json fields); its files are added to `found`."""
    row = {"experiment": exp, "seed": seed, "run_dir": str(d), "state": "missing", "error": None}
    folder = rf.RunFolder(d)
    info_path = folder.run_json
    if not d.is_dir():
        row["error"] = "run folder not found"
    elif not info_path.is_file():
        row["error"] = "no run.json (never started?)"
    else:
        try:
            info = rf.load_json(info_path)
            if not isinstance(info, dict):
                raise ValueError(f"not a mapping but a {type(info).__name__}")
            # Plain values only: a list or mapping where a number belongs (a hand-edited file) is dropped, not shown.
            row.update({k: v for k, v in info.items() if k not in ("experiment", "seed", "phase", "state", "error")
                        and (v is None or isinstance(v, (str, int, float, bool)))})  # fmt: skip
            row["state"] = info.get("status") if info.get("status") in STATES else "unreadable"
            error = info.get("error") if row["state"] != "unreadable" else f"unknown status {info.get('status')!r}"
            row["error"] = None if error is None else str(error)
        except (OSError, ValueError) as e:
            row.update(state="unreadable", error=f"run.json: {_one_line(e)}")
    has_metrics = False
    for p, sink in ((folder.metrics, found["metrics"]), (folder.steps, found["steps"])):
        name = p.name
        if p.is_file() and p.stat().st_size:
            try:
                df = _read_numbers(p)
            except Exception as e:  # pandas raises several types for a malformed CSV
                # A finished run with a damaged record is unreadable; any other run keeps the state run.json gives.
                problem = f"{name}: {_one_line(e)}"
                warnings.append(f"{exp}/seed{seed}/{problem}")
                if row["state"] == "done":
                    row.update(state="unreadable", error=problem)
                else:
                    row["error"] = row["error"] or problem
                continue
            sink.append(df.assign(experiment=exp, seed=seed))
            has_metrics |= name == rf.METRICS and bool(np.isfinite(df["val_mse"]).any())
    if row["state"] == "done" and not has_metrics:
        row.update(state="unreadable", error="status done but metrics.csv has no finite val_mse")
    for p, sink, load in ((folder.eval, found["evals"], rf.load_json), (folder.config, found["configs"], _load_yaml)):
        name = p.name
        if name == rf.CONFIG and any(e == exp for e, _ in sink):
            continue  # one per experiment is enough (heads, architecture, loss), and YAML is slow to parse
        if p.is_file():
            try:
                value = load(p)
                if not isinstance(value, dict) or name == rf.EVAL and not _numbers_only(value.get("val")):
                    raise ValueError("not the mapping the run writes")
                sink[(exp, seed)] = value
            except Exception as e:  # a truncated file from a killed job: list it, don't stop
                warnings.append(f"{exp}/seed{seed}/{name}: unreadable ({_one_line(e)})")
    found["samples"] += _samples(folder, exp, seed, warnings)
    return row


def _header(runs_dir: Path, params_file, warnings: list[str]) -> tuple[dict, Path | None, Phase | None]:
    """index.json (or the run folders found) and the params: what a phase folder must have, read before any run."""
    if not runs_dir.is_dir():
        raise InputError(f"runs folder not found: {runs_dir}")
    index = _read_index(runs_dir, warnings)
    pfile, params = _read_params(runs_dir, params_file, index.get("overrides") or [], warnings)
    return index, pfile, params


def phase_name(runs_dir: str | Path, params_file: str | Path | None = None) -> str:
    """The phase of a phase folder, checking what load_phase_runs checks first (a phase folder, readable params)
    without reading its runs: for the report's checks before a kernel starts."""
    runs_dir = Path(runs_dir).resolve()
    index, _, params = _header(runs_dir, params_file, [])
    return index.get("phase") or (params.phase if params else runs_dir.name)


def load_phase_runs(runs_dir: str | Path, params_file: str | Path | None = None) -> PhaseRuns:
    """Read a phase folder. A run whose files are missing or unreadable gets that state; nothing raises for it."""
    runs_dir = Path(runs_dir).resolve()
    warnings = []
    index, pfile, params = _header(runs_dir, params_file, warnings)
    decision = params.decision if params else Decision()

    rows, found = [], {"metrics": [], "steps": [], "evals": {}, "configs": {}, "samples": []}
    for entry in index["runs"]:
        exp, seed = entry["experiment"], int(entry["seed"])
        # The index may hold cluster paths; the folder next to index.json is what we have here.
        d = rf.resolve_run_dir(runs_dir, entry)
        rows.append(_read_run(d, exp, seed, found, warnings))

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
    metrics_df, steps_df = tidy(found["metrics"]), tidy(found["steps"])
    return PhaseRuns(
        phase=index.get("phase") or (params.phase if params else runs_dir.name),
        runs_dir=runs_dir,
        params_file=pfile,
        params=params,
        params_hash=index.get("params_hash") or (params_hash(pfile) if pfile else None),
        decision=decision,
        experiments=experiments,
        baseline=baseline,
        heads={e: _trained_heads(e, params, found["configs"], metrics_df) for e in experiments},
        notes={e: params.experiments[e].note for e in experiments if params and e in params.experiments},
        runs=runs,
        metrics=metrics_df,
        steps=steps_df,
        evals=found["evals"],
        configs=found["configs"],
        samples=pd.DataFrame(found["samples"], columns=["experiment", "seed", "epoch", "npz"]),
        warnings=warnings,
        overrides=list(index.get("overrides") or []),
    )


def _trained_heads(exp: str, params: Phase | None, configs: dict, metrics: pd.DataFrame) -> tuple[str, ...]:
    """The auxiliary heads an experiment trains: from its runs' config.yaml, else the params, else the metrics."""
    loss = next((c.get("loss") for (e, _), c in configs.items() if e == exp and isinstance(c, dict)), None)
    if loss is None and params and exp in params.experiments:
        loss = deep_merge(params.loss.model_dump(), params.experiments[exp].loss)
    if loss is not None:
        return H.trained(loss)
    m = metrics[metrics["experiment"] == exp] if len(metrics) else metrics
    return tuple(h.name for h in H.auxiliary() if h.gate in m and m[h.gate].notna().any())



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
        # The epoch whose checkpoint eval.json's metrics come from (early stopping's best, which with min_delta
        # need not be the lowest val MSE on the curve); the curve's minimum for runs without eval.json.
        chosen = (pr.evals.get(key) or {}).get("epoch")
        at = m.index[m["epoch"] == chosen] if isinstance(chosen, int) and not isinstance(chosen, bool) else []
        best_i = at[0] if len(at) else m["val_mse"].idxmin()
        at_best = m.loc[best_i].to_dict()
        ev = (pr.evals.get(key) or {}).get("val") or {}
        latent = (pr.evals.get(key) or {}).get("latent") or {}
        out = {"experiment": r.experiment, "seed": r.seed, "epochs_run": int(m["epoch"].max()),
               "best_epoch": int(at_best["epoch"]), "best_val_mse": float(ev.get("val_mse", m["val_mse"].min())),
               "final_val_mse": float(m["val_mse"].iloc[-1])}
        for col in [c for c in H.run_metrics() if c.startswith("val_")] + [f"val_{p}_iou_{c}" for p in H.class_iou_prefixes() for c in CLASS_NAMES]:
            v = ev.get(col, at_best.get(col, math.nan))
            out[col] = float(v) if v is not None else math.nan
        out["probe_miou"] = float((latent.get("probe") or {}).get("miou", math.nan))
        out["latent_scale"] = float(latent.get("scaling_factor", math.nan))
        out["latent_seconds"] = float(latent.get("seconds", math.nan))
        s = stp.get(key)
        out["spikes"] = count_spikes(s.sort_values("global_step")["loss"].to_numpy()) if s is not None and "loss" in s else math.nan
        out["late_wobble"] = late_wobble(m["val_mse"].to_numpy())
        out["epochs_to_10pct"] = epochs_to_within(m["epoch"].to_numpy(), m["val_mse"].to_numpy())
        out["epoch_time_s"] = float(m["epoch_time_s"].mean()) if "epoch_time_s" in m else math.nan
        out["train_time_s"] = float(m["epoch_time_s"].sum()) if "epoch_time_s" in m else math.nan
        for col in H.image_counts():  # from run.json; NaN for runs written before they were counted
            v = getattr(r, col, None)
            out[col] = float(v) if isinstance(v, (int, float)) else math.nan
        rows.append(out)
    cols = ["experiment", "seed", "epochs_run", "best_epoch", *H.run_metrics(), "spikes", "late_wobble", "epochs_to_10pct"]
    return pd.DataFrame(rows, columns=list(dict.fromkeys(cols + (list(rows[0]) if rows else []))))


def resolved_section(pr: PhaseRuns, exp: str, section: str) -> dict:
    """The winner's section as it ran (config.yaml of a finished seed), else as the params resolve it."""
    for (e, s), c in sorted(pr.configs.items()):
        if e == exp and isinstance(c, dict) and section in c:
            return c[section]
    if pr.params and exp in pr.params.experiments:
        return deep_merge(getattr(pr.params, section).model_dump(), getattr(pr.params.experiments[exp], section))
    return {}
