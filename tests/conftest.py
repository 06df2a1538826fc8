"""Shared fixtures: tiny phase params files over the real layouts in ../shared/real_layouts."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
# ../shared beside the checkout; under `make mutate` the tests run from the checkout's mutants/ folder
REAL = (REPO.parent.parent if REPO.name == "mutants" else REPO.parent) / "shared" / "real_layouts"


def tiny_params(tmp: Path, manifest: Path, **over) -> Path:
    """A phase params file small enough for a CPU test: 32 px, 2 levels, batch 4, 2 epochs."""
    params = {
        "phase": "tiny",
        "runs_root": str(tmp / "runs"),
        "data": {"manifest": str(manifest), "image_size": 32, "cache_dir": str(tmp / "cache"), "num_samples": 4},
        "architecture": {"latent_channels": 4, "base_channels": 8, "downsampling_steps": 2},
        "training": {"epochs": 2, "batch_size": 4, "log_every": 2, "lr": 1e-3, "sample_interval": 1},
        "seeds": [1],
        "experiments": {"F1": {}, "F3": {"loss": {"seg": 0.05, "cls": 0.01}}},
    }
    for section, value in over.items():
        params[section] = {**params[section], **value} if isinstance(value, dict) and section in params else value
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.fixture
def real_manifest() -> Path:
    if not (REAL / "manifest.csv").is_file():
        pytest.skip(f"real layouts not found at {REAL}")
    return REAL / "manifest.csv"


@pytest.fixture
def labelled_manifest(tmp_path, real_manifest) -> Path:
    """The real layouts with room/scene labels assigned alternately, so the classification head has targets."""
    rows = list(csv.DictReader(real_manifest.open()))
    out = tmp_path / "labelled.csv"
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["layout_path", "type", "is_empty"])
        w.writeheader()
        for i, r in enumerate(rows):
            w.writerow({"layout_path": str(REAL / r["layout_path"]), "type": ("room", "scene")[i % 2], "is_empty": r["is_empty"]})
    return out


@pytest.fixture
def tiny(tmp_path, labelled_manifest) -> Path:
    return tiny_params(tmp_path, labelled_manifest)


# ---------------------------------------------------------------------------------------------------------
# A stop request at a chosen moment of a run (the cluster tests)

GATE_CELL = '''# test gate (written by tests/conftest.py): holds the run at one moment until the test has sent its signal
import time as _time
from pathlib import Path as _Path

import imginav_lib.train.trainer as _trainer

_gates, _moment = _Path({gates!r}), {moments!r}.get(experiment)


def _gate(name):
    (_gates / f"{{experiment}}.{{name}}.reached").touch()
    while not (_gates / f"{{experiment}}.{{name}}.go").exists():  # passes at once in a later attempt
        _time.sleep(0.05)


if _moment in ("between_epochs", "final_evaluation"):
    _evaluate, _calls = _trainer.evaluate, [0]

    def _gated_evaluate(*args, **kwargs):  # call k of an attempt: epoch k's evaluation; {epochs} + 1: the final one
        _calls[0] += 1
        if _calls[0] == (2 if _moment == "between_epochs" else {epochs} + 1):
            _gate(_moment)
        return _evaluate(*args, **kwargs)

    _trainer.evaluate = _gated_evaluate
if _moment == "startup":
    _gate("startup")
'''
DONE_GATE_CELL = 'if _moment == "done":\n    _gate("done")\nprint("last cell ran")'
MOMENTS = ("startup", "between_epochs", "final_evaluation", "done")


def gated_notebook(tmp: Path, moments: dict[str, str], epochs: int) -> tuple[Path, Path]:
    """The training notebook with gates: experiment `e` with moment m waits at m (before the run folder is known
    and the trainer's handler is in place; in epoch 2's evaluation; in the final evaluation; after `fit` returned
    `done`) until `<gates>/<e>.<m>.go` exists, after creating `<e>.<m>.reached`. Returns (notebook, gates)."""
    import nbformat

    nb = nbformat.read(REPO / "notebooks" / "train.ipynb", as_version=4)
    gates = tmp / "gates"
    gates.mkdir(parents=True, exist_ok=True)
    at = next(k for k, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])) + 1
    nb.cells.insert(at, nbformat.v4.new_code_cell(GATE_CELL.format(gates=str(gates), moments=moments, epochs=epochs)))
    nb.cells.append(nbformat.v4.new_code_cell(DONE_GATE_CELL))
    path = tmp / "gated_train.ipynb"
    nbformat.write(nb, path)
    return path, gates


def open_gate(gates: Path, experiment: str, moment: str) -> None:
    (gates / f"{experiment}.{moment}.go").touch()


def gate_reached(gates: Path, experiment: str, moment: str) -> bool:
    return (gates / f"{experiment}.{moment}.reached").exists()


def figures(a) -> list:
    """Every figure the analysis notebook shows, in its order (the report tests count and inspect them)."""
    from imginav_lib.report import figures as F

    figs = [F.fig_curves(a), F.fig_final_metrics(a), F.fig_relative(a), F.fig_stability(a), F.fig_iou(a),
            F.fig_boundary(a), F.fig_confusion(a), F.fig_cls(a), F.fig_latent(a)]
    return [f for f in figs if f is not None]
