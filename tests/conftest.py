"""Shared fixtures: tiny phase params files over the real layouts in ../shared/real_layouts.

A clone without ../shared runs the same tests on a stand-in the tests generate once (79 layouts at 128 px, like
the real set, downsampled and unlabelled like it); only a test that compares against the real layouts themselves needs them
(`require_real_layouts`): it fails under CI (CI=true) and is skipped elsewhere, and the summary says how many.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
# ../shared beside the checkout; under `make mutate` the tests run from the checkout's mutants/ folder.
# IMGINAV_REAL_LAYOUTS points elsewhere (a path that does not exist: run as a clone without ../shared would).
REAL = Path(os.environ.get("IMGINAV_REAL_LAYOUTS") or
            (REPO.parent.parent if REPO.name == "mutants" else REPO.parent) / "shared" / "real_layouts")
WANT_OF_DATA = "for want of data:"  # the start of the skip reason that the summary counts
_stand_in_used: list[str] = []


def require_real_layouts() -> Path:
    """The real layouts' manifest, for a test that compares against them; fails under CI, else skips."""
    if (REAL / "manifest.csv").is_file():
        return REAL / "manifest.csv"
    message = f"{WANT_OF_DATA} real layouts not found at {REAL}"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message} (CI=true: a test may not skip for want of data)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def layouts_manifest(tmp_path_factory) -> Path:
    """The real layouts' manifest, or a stand-in of the same shape where ../shared is missing."""
    if (REAL / "manifest.csv").is_file():
        return REAL / "manifest.csv"
    from imginav_lib.demo.layouts import make_layouts

    from PIL import Image

    out = tmp_path_factory.mktemp("stand_in_layouts")
    generated = make_layouts(out, n=79, size=256, seed=0)
    rows = list(csv.DictReader(generated.open()))
    for r in rows:  # downsampled like the real set (from 512 px): blended, off-palette edge pixels
        path = out / r["layout_path"]
        Image.open(path).convert("RGB").resize((128, 128), Image.BOX).save(path)
    manifest = out / "stand_in.csv"
    with manifest.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["layout_path", "type", "is_empty"])
        w.writeheader()
        w.writerows({"layout_path": r["layout_path"], "type": "", "is_empty": r["is_empty"]} for r in rows)
    _stand_in_used.append(str(out))
    return manifest


def pytest_terminal_summary(terminalreporter):
    for_want = [r for r in terminalreporter.stats.get("skipped", [])
                if WANT_OF_DATA in str(getattr(r, "longrepr", ""))]  # fmt: skip
    if for_want or _stand_in_used:
        terminalreporter.section("data")
    if _stand_in_used:
        terminalreporter.write_line(f"real layouts not found at {REAL}: the tests ran on generated stand-in layouts")
    if for_want:
        terminalreporter.write_line(f"{len(for_want)} test(s) skipped for want of the real layouts (CI=true fails them)")


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
def real_manifest(layouts_manifest) -> Path:
    return layouts_manifest


@pytest.fixture
def labelled_manifest(tmp_path, real_manifest) -> Path:
    """The real layouts with room/scene labels assigned alternately, so the classification head has targets."""
    rows = list(csv.DictReader(real_manifest.open()))
    out = tmp_path / "labelled.csv"
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["layout_path", "type", "is_empty"])
        w.writeheader()
        for i, r in enumerate(rows):
            w.writerow({"layout_path": str(real_manifest.parent / r["layout_path"]), "type": ("room", "scene")[i % 2], "is_empty": r["is_empty"]})
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
    """Every figure the analysis notebook shows, in its order (the report tests count and inspect them): the
    `figures.fig_*(a)` calls of its code cells that the report keeps, read from the notebook, so that a figure
    added to or dropped from it is counted without editing this list."""
    import re

    import nbformat

    from imginav_lib import resources
    from imginav_lib.report import figures as F
    from imginav_lib.report.build import HIDE_TAG

    nb = nbformat.read(resources.notebook("analysis.ipynb"), as_version=4)
    calls = [name for c in nb.cells if c.cell_type == "code" and HIDE_TAG not in c.metadata.get("tags", [])
             for name in re.findall(r"\bfigures\.(fig_\w+)\(a\)", c.source)]
    figs = [getattr(F, name)(a) for name in calls]
    return [f for f in figs if f is not None]
