"""The hand-off to the next phase: winner.yaml in the phase folder and the next phase's params file."""
from __future__ import annotations

import datetime as dt
import math
import os
import tempfile
from pathlib import Path

import pandas as pd
import yaml

from imginav_lib import heads as H
from imginav_lib.analysis.decision import Verdict
from imginav_lib.errors import InputError, ReportError
from imginav_lib.files import atomic_write_text
from imginav_lib.config.overrides import apply_sets
from imginav_lib.config.params import deep_merge, load_params
from imginav_lib.config.schema import Training
from imginav_lib.analysis.phase import PhaseRuns, resolved_section, run_table
from imginav_lib.runs.runfolder import RunFolder

def write_handoff(pr: PhaseRuns, verdict: Verdict, summary: pd.DataFrame, copy_to: str | Path | None = None) -> dict[str, Path]:
    """Write winner.yaml and the next phase's params (`<next phase>.yaml`) into the phase folder, and copy the
    latter into `copy_to` (the params file's folder, when the phase folder is its own: publish.py); return the paths."""
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
               | {"n": int(s.loc[m, "n"])} for m in H.run_metrics() if m in s.index and s.loc[m, "n"] > 0}
    architecture, loss = resolved_section(pr, w, "architecture"), resolved_section(pr, w, "loss")
    paths = {"winner": pr.runs_dir / "winner.yaml"}
    nxt = pr.decision.handoff
    if pr.params_file is not None and nxt is not None:
        paths["next_params"] = pr.runs_dir / f"{nxt.phase}.yaml"
        if copy_to is not None:
            paths["next_params_copy"] = Path(copy_to) / f"{nxt.phase}.yaml"
    # The latent statistics of the winner's best checkpoint (diffusers scaling_factor and shift_factor): the
    # diffusion stage's input scale for this model. A retrained model (the next phase) measures its own.
    lat = ((pr.evals.get((w, int(best.seed))) or {}).get("latent") or {}) if best is not None else {}
    scale = lat.get("scaling_factor")
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
        "best_checkpoint": str(RunFolder(runinfo.loc[(w, int(best.seed)), "run_dir"]).best) if best is not None else None,
        "latent_scale": float(scale) if scale is not None and math.isfinite(scale) else None,
        "latent": _latent_record(pr, w, best, lat) if lat else None,
        "params_file": str(pr.params_file) if pr.params_file else None,
        "params_hash": pr.params_hash,
        "git_commit": commit if isinstance(commit, str) else None,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "next_params": str(paths.get("next_params_copy", paths.get("next_params"))) if "next_params" in paths else None,
    }
    atomic_write_text(paths["winner"], yaml.safe_dump(winner, sort_keys=False, allow_unicode=True, width=120))
    if "next_params" in paths:
        text = _next_params_text(pr, w, architecture, loss, verdict, paths["winner"], Path(copy_to or pr.runs_dir),
                                 winner["latent"])
        for dest in (paths["next_params"], paths.get("next_params_copy")):
            if dest is not None:
                atomic_write_text(dest, text)
    return paths


def _finite(x):
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def _latent_record(pr: PhaseRuns, w: str, best, lat: dict) -> dict:
    """winner.yaml's `latent`: the statistics of the winner's best checkpoint, with the model they describe."""
    epoch = (pr.evals.get((w, int(best.seed))) or {}).get("epoch")
    return {
        "measured_on": lat.get("measured_on") or f"{pr.phase} {w} seed {int(best.seed)}, checkpoint of epoch {epoch}",
        "scaling_factor": _finite(lat.get("scaling_factor")),
        "shift_factor": _finite(lat.get("shift_factor", lat.get("mean"))),
        "channel_shift": [_finite(x) for x in lat.get("channel_mean") or []],
        "channel_scale": [_finite(1 / x) if isinstance(x, (int, float)) and x > 0 else None for x in lat.get("channel_std") or []],
    }


def _next_params_text(pr: PhaseRuns, w: str, architecture: dict, loss: dict, verdict: Verdict, winner_file: Path,
                      home: Path, latent: dict | None) -> str:  # fmt: skip
    """The next phase's params, valid where the params file is (`home`): its data paths are copied as written."""
    nxt = pr.decision.handoff
    raw = apply_sets(yaml.safe_load(pr.params_file.read_text()) or {}, pr.overrides)  # as the runs saw it
    training = Training.model_validate(deep_merge(resolved_section(pr, w, "training"), nxt.training)).model_dump(mode="json")
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
              f"# architecture_from: {os.path.relpath(winner_file, home)}\n"
              f"# Relative paths are those of {pr.params_file.name}: this file belongs beside it.\n"
              f"# Latent statistics: every run of {nxt.phase} measures its own on its final checkpoint (eval.json latent:\n"
              f"# scaling_factor, shift_factor, per-channel mean and std) and its report's winner.yaml carries the winner's.\n"
              + (f"# {pr.phase}'s (scaling_factor {latent['scaling_factor']:.4g}, shift_factor {latent['shift_factor']:.4g}) were measured\n"
                 f"# on {latent['measured_on']}: another model than the one this phase trains.\n"
                 if latent and latent.get("scaling_factor") is not None and latent.get("shift_factor") is not None else ""))
    text = header + yaml.safe_dump(params, sort_keys=False, allow_unicode=True, width=120)
    with tempfile.TemporaryDirectory() as d:  # what `imginav validate` checks, before anything is written
        check = Path(d) / f"{nxt.phase}.yaml"
        check.write_text(text)
        try:
            load_params(check, check_files=False)
        except InputError as e:
            raise ReportError(f"the next-phase params would not validate: {e}") from None
    return text
