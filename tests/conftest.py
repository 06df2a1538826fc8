"""Shared fixtures: tiny phase params files over the real layouts in ../shared/real_layouts."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "real_layouts"


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
