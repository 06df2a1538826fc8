"""The run-folder format (docs/run-folder.md): file names, `run.json` and its status, the CSV logs, `eval.json`,
checkpoints, and the phase folder's `index.json` and `submission.json`.

This module is the one reader and writer of those files: the trainer, `imginav run`, `imginav status` and the
analysis go through it instead of spelling out names. Every write is atomic (files.py), the step log included
(rewritten whole at each epoch end). Torch and pandas are imported only by the functions that need them, so
`imginav status` stays quick.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import yaml

from imginav_lib.errors import InputError
from imginav_lib.files import TEMP_GLOB, atomic_write, atomic_write_text, input_file_problem, require_regular_file

# A run folder: <runs root>/<phase>/<experiment>/seed<k>/
RUN_JSON = "run.json"
CONFIG = "config.yaml"
METRICS = "metrics.csv"
STEPS = "steps.csv"
EVAL = "eval.json"
CHECKPOINTS = "checkpoints"
SAMPLES = "samples"
STOP = "STOP"  # a stop request: the trainer polls it every step
NOTEBOOK = "train.ipynb"  # the executed training notebook, papermill's record of the run
LOCK = "run.lock"  # held by the one process that writes the run folder (runlock.py)

# The phase folder: <runs root>/<phase>/
INDEX = "index.json"
SUBMISSION = "submission.json"
PARAMS_COPY = "params.yaml"
PARAMS_VERSIONS = "params_versions"  # <hash>.yaml: every version of the params the phase ran under
JOBS = "jobs"
LOGS = "logs"
PHASE_LOCK = "phase.lock"  # held by a local `imginav run` while it has runs of the phase to do


class RunStatus(str, Enum):
    """`run.json` `status`. A str, so JSON and comparisons with plain strings stay as they were."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    DIVERGED = "diverged"
    PREEMPTED = "preempted"

    def __str__(self) -> str:  # f-strings show "done", not "RunStatus.DONE"
        return self.value


# ---------------------------------------------------------------------------------------------------------
# JSON, CSV and time


def now() -> str:
    """The timestamps of run.json and submission.json: ISO 8601 UTC, seconds."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def load_json(path: Path):
    """The value of a JSON file. Raises FileNotFoundError when it is missing, ValueError saying what is wrong when
    it cannot be one: not a regular file (checked before opening: a FIFO would block), not UTF-8, not JSON,
    nested too deeply (json's RecursionError). The analysis lists a run whose record raises."""
    require_regular_file(path)
    try:
        return json.loads(Path(path).read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 text (byte {e.start}): not JSON") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"not JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    except RecursionError:
        raise ValueError("nested too deeply to be a record the workbench writes") from None


def read_json(path: Path) -> dict:
    """A JSON object, or {} when the file is missing. Raises InputError naming the file when it is damaged (see
    load_json, or not an object: a JSON array). A file caught mid-replace on a file system without atomic rename
    is read again once, a moment later, before it counts as damaged."""
    for attempt in (1, 2):
        try:
            value = load_json(path)
            break
        except FileNotFoundError:
            return {}
        except OSError as e:
            raise InputError(f"{path}: cannot read: {e.strerror or e}") from None
        except ValueError as e:
            if attempt == 2 or not str(e).startswith("not JSON ("):
                raise InputError(f"{path}: damaged record: {e}") from None
            time.sleep(0.2)
    if not isinstance(value, dict):
        raise InputError(f"{path}: damaged record: a JSON {type(value).__name__}, not an object")
    return value


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    """Rewrite a CSV (atomically) with `columns` in order; NaN becomes an empty cell."""

    def w(f):
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()})
        f.write(text.getvalue().encode())

    atomic_write(path, w)


def read_rows(path: Path) -> list[dict]:
    """The rows of a CSV, or [] when it is missing, empty or torn."""
    import pandas as pd

    if not path.is_file():
        return []
    try:
        return pd.read_csv(path).to_dict("records")
    except (pd.errors.EmptyDataError, pd.errors.ParserError):
        return []


# ---------------------------------------------------------------------------------------------------------
# One run


@dataclass(frozen=True)
class RunFolder:
    """The files of one run folder."""

    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    run_json = property(lambda self: self.path / RUN_JSON)
    config = property(lambda self: self.path / CONFIG)
    metrics = property(lambda self: self.path / METRICS)
    steps = property(lambda self: self.path / STEPS)
    eval = property(lambda self: self.path / EVAL)
    checkpoints = property(lambda self: self.path / CHECKPOINTS)
    latest = property(lambda self: self.path / CHECKPOINTS / "latest.pt")
    best = property(lambda self: self.path / CHECKPOINTS / "best.pt")
    samples = property(lambda self: self.path / SAMPLES)
    stop_file = property(lambda self: self.path / STOP)
    notebook = property(lambda self: self.path / NOTEBOOK)

    def remove_temp_files(self) -> list[Path]:
        """Delete the temp files of writers killed mid-write (atomic_path's). Only the holder of the run folder's
        lock may: another writer's temp file would be in use."""
        found = [p for d in (self.path, self.checkpoints, self.samples) for p in d.glob(TEMP_GLOB) if p.is_file()]
        for p in found:
            p.unlink()
        return found

    def epoch_checkpoint(self, epoch: int) -> Path:
        return self.checkpoints / f"epoch_{epoch:03d}.pt"

    def sample_stem(self, epoch: int) -> Path:
        """samples/epoch_XXX: the .png grid and the .npz arrays of that epoch."""
        return self.samples / f"epoch_{epoch:03d}"

    def sample_arrays(self) -> list[Path]:
        return sorted(self.samples.glob("epoch_*.npz"))

    def read_info(self) -> dict:
        """run.json, or {} when the run never started."""
        return read_json(self.run_json)

    def write_info(self, info: dict) -> None:
        write_json(self.run_json, info)

    def status(self) -> str | None:
        """run.json's status (a RunStatus value), None before the trainer first wrote it."""
        return self.read_info().get("status")

    def finished(self, epochs: int) -> bool:
        """Done for a plan of `epochs`: a done run whose planned epochs were raised since is not (it resumes from
        latest.pt), one that stopped early is (its early-stopping rule ended it)."""
        info = self.read_info()
        return info.get("status") == RunStatus.DONE and (bool(info.get("stopped_early")) or (info.get("epoch") or 0) >= epochs)

    def read_eval(self) -> dict:
        return read_json(self.eval)

    def write_eval(self, result: dict) -> None:
        write_json(self.eval, result)

    def read_config(self) -> dict | None:
        """The saved RunConfig as a dict (config.yaml), None if there is none; InputError if it is damaged."""
        if input_file_problem(self.config) == "file not found":
            return None
        try:
            config = yaml.load(self.config.read_bytes().decode("utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}
        except (OSError, ValueError, yaml.YAMLError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
            raise InputError(f"{self.config}: damaged record: {' '.join(str(e).split())[:200] or type(e).__name__}") from None
        if not isinstance(config, dict):
            raise InputError(f"{self.config}: damaged record: a {type(config).__name__}, not a mapping")
        return config

    def write_config(self, config: dict) -> None:
        atomic_write(self.config, lambda f: f.write(yaml.safe_dump(config, sort_keys=False).encode()))


def save_checkpoint(path: Path, obj: dict) -> None:
    import torch

    atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    import torch

    return torch.load(path, map_location=map_location, weights_only=False)  # our own files: optimizer, rng, config


# What makes two runs the same computation. Epochs, logging, intervals, notes, decision rules, cluster settings
# and paths may change between attempts (resume with more epochs, from another checkout); a change of anything
# here would silently mix two experiments in one run folder. None: every field of the section.
SAME_RUN = {
    "seed": None,
    "architecture": None,
    "loss": None,
    # device and precision as written in the params; the precision they resolve to on this machine is checked
    # against run.json's earlier attempts by the trainer (train/device.py: check_same_environment).
    "training": ("batch_size", "optimizer", "lr", "weight_decay", "early_stopping", "device", "precision", "deterministic"),
    "data": ("image_size", "filters", "val_fraction", "test_fraction", "group_by", "split_seed", "split", "mask_tolerance"),
}
# Fields added since runs were first saved: the value those runs used (no test split, no grouping, no
# deterministic mode).
ADDED = {"data": {"split": "fixed", "test_fraction": 0.0, "group_by": None}, "training": {"deterministic": False}}


def _leaf_changes(name: str, a, b) -> list[str]:
    """'name a → b' for every differing leaf of two config values (dicts compared key by key)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [c for k in dict.fromkeys([*a, *b]) for c in _leaf_changes(f"{name}.{k}", a.get(k), b.get(k))]
    show = lambda v: "unset" if v is None else str(v)  # noqa: E731
    return [] if a == b else [f"{name} {show(a)} → {show(b)}"]


def config_changes(before: dict, now_: dict) -> list[str]:
    """The fields of SAME_RUN that differ between two RunConfigs (as dicts), e.g. ['loss.seg 0.05 → 0.1']."""
    changes = []
    for section, fields in SAME_RUN.items():
        a, b = before.get(section), now_.get(section)
        if fields is not None and isinstance(a, dict) and isinstance(b, dict):
            old = ADDED.get(section, {})
            a, b = {k: a.get(k, old.get(k)) for k in fields}, {k: b.get(k) for k in fields}
        changes += _leaf_changes(section, a, b)
    return changes


def check_same_run(folder: RunFolder, config: dict) -> None:
    """Refuse to resume, extend or skip as done a run folder that holds a run of another configuration (`config`:
    a RunConfig as a dict), naming every field; or one that has run more epochs than `config` plans."""
    before = folder.read_config()
    if before is None:
        return
    changes = config_changes(before, config)
    ran, planned = folder.read_info().get("epoch") or 0, config["training"]["epochs"]
    if ran > planned:
        changes.append(f"training.epochs {before['training'].get('epochs')} → {planned} is below the {ran} epochs it has run")
    if changes:
        raise InputError(f"experiment {config['experiment']} seed {config['seed']}: {', '.join(changes)} would mix two "
                         f"runs: use another runs_root (or delete {folder.path})")  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# The phase folder


def write_index(phase_dir: Path, index: dict, params_text: str) -> Path:
    """index.json (the experiment x seed list every backend executes) and params.yaml, the params file it came from.

    Every version of the params the phase ran under stays: `params_versions` in index.json (hash, date, the
    fields that changed) and its text in params_versions/<hash>.yaml."""
    old = read_json(phase_dir / INDEX)
    versions = old.get("params_versions") or ([{"params_hash": old["params_hash"]}] if old.get("params_hash") else [])
    if not versions or versions[-1]["params_hash"] != index["params_hash"]:
        before = phase_dir / PARAMS_COPY
        changed = _changed_keys(yaml.safe_load(before.read_text()), yaml.safe_load(params_text)) if before.is_file() else None
        versions.append({"params_hash": index["params_hash"], "recorded": now(), "changed": changed})
    atomic_write_text(phase_dir / PARAMS_VERSIONS / f"{index['params_hash']}.yaml", params_text)
    atomic_write_text(phase_dir / PARAMS_COPY, params_text)
    write_json(phase_dir / INDEX, {**index, "params_versions": versions})
    return phase_dir / INDEX


def _changed_keys(a, b, name: str = "") -> list[str]:
    """Dotted keys whose values differ between two parsed params files ([] for a comment-only edit)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [c for k in dict.fromkeys([*a, *b]) for c in _changed_keys(a.get(k), b.get(k), f"{name}.{k}" if name else k)]
    return [] if a == b else [name]


def read_index(index_file: str | Path) -> dict:
    """index.json of a phase folder. Raises InputError naming the file, on one line, unless it is a JSON object
    with phase, params_file, params_hash and a non-empty list of runs, each {experiment, seed, run_dir}."""
    index_file = Path(index_file)
    if not index_file.is_file():
        raise InputError(f"index not found: {index_file}")
    index = read_json(index_file)
    missing = [k for k in ("runs", "params_file", "params_hash", "phase") if k not in index]
    if missing:
        raise InputError(f"{index_file}: not a phase index (no {missing[0]})")
    runs = index["runs"]
    if not isinstance(runs, list) or not runs:
        raise InputError(f"{index_file}: runs: empty" if runs == [] else f"{index_file}: runs: not a list")
    for i, r in enumerate(runs, 1):
        ok = (isinstance(r, dict) and isinstance(r.get("experiment"), str) and isinstance(r.get("run_dir"), str)
              and isinstance(r.get("seed"), int) and not isinstance(r.get("seed"), bool))  # fmt: skip
        if not ok:
            raise InputError(f"{index_file}: runs entry {i} is not {{experiment, seed, run_dir}}: {json.dumps(r)[:100]}")
    return index


def resolve_run_dir(phase_dir: Path, entry: dict) -> Path:
    """The run folder of an index entry on this machine: `<phase_dir>/<experiment>/seed<N>` next to index.json (a
    phase folder moved, or copied back from a cluster), else the run_dir index.json records (a runs root that
    holds the phase folder elsewhere)."""
    here = Path(phase_dir) / str(entry["experiment"]) / f"seed{int(entry['seed'])}"
    recorded = entry.get("run_dir")
    return here if here.is_dir() or not recorded or not Path(recorded).is_dir() else Path(recorded)


def read_submissions(phase_dir: Path) -> list[dict]:
    """submission.json's records, oldest first: one per `imginav run` (backend, time, entries, job ids)."""
    path = phase_dir / SUBMISSION
    subs = read_json(path).get("submissions", [])
    if not isinstance(subs, list) or not all(isinstance(s, dict) and isinstance(s.get("backend"), str) for s in subs):
        raise InputError(f"{path}: damaged record: submissions is not a list of {{backend, ...}}")
    return subs


def record_submission(phase_dir: Path, record: dict) -> None:
    """Append to submission.json: earlier submissions (e.g. of other experiments) keep their job ids."""
    path = phase_dir / SUBMISSION
    data = {**read_json(path), "submissions": read_submissions(phase_dir)}
    data["submissions"].append(record)
    write_json(path, data)


# ---------------------------------------------------------------------------------------------------------
# The params file a phase folder names. index.json records it relative to the folder `imginav run` was started
# in (the project: a cluster job starts in the folder it was submitted from), so runs copied back from a cluster
# resolve it in the project at hand, never at a path recorded on another machine.


def record_path(path: str | Path) -> str:
    """How index.json records the params file: relative to the working folder when inside it, else absolute."""
    path, here = Path(path).resolve(), Path.cwd().resolve()
    return str(path.relative_to(here)) if path.is_relative_to(here) else str(path)


def recorded_path(text: str) -> Path:
    """The params file index.json names, on this machine: a relative path is in the working folder."""
    path = Path(text)
    return path if path.is_absolute() else Path.cwd() / path


def home_params(runs_dir: Path, params_file: str | Path | None = None) -> Path | None:
    """The params file a phase folder belongs to: `params_file`, else index.json's if it exists here."""
    if params_file is not None:
        return Path(params_file).resolve()
    try:
        text = load_json(Path(runs_dir) / INDEX).get("params_file")
    except (OSError, ValueError, AttributeError):  # missing, damaged, not an object
        return None
    path = recorded_path(text) if isinstance(text, str) and text else None
    return path.resolve() if path is not None and path.is_file() else None
