"""The phase chain end to end on generated layouts: phase1_3_demo -> winner.yaml -> phase1_4_demo (through
architecture_from) -> phase1_5.yaml, with the repository's params files shrunk by --set to a CI-friendly size."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from imginav_lib.cli import main
from imginav_lib.config.params import load_params

from conftest import REPO


def test_phase_chain_from_architecture_to_final_training(tmp_path, monkeypatch, capsys):
    from imginav_lib.demo.layouts import make_layouts

    manifest = make_layouts(tmp_path / "data", n=30, size=32, seed=0)
    params = tmp_path / "params"
    params.mkdir()
    for name in ("phase1_3_demo.yaml", "phase1_4_demo.yaml"):
        shutil.copy(REPO / "params" / name, params / name)
    monkeypatch.chdir(tmp_path)  # reports/ go here
    small = [f"data.manifest={manifest}", "data.image_size=32", "data.num_samples=2", f"data.cache_dir={tmp_path / 'cache'}",
             f"runs_root={tmp_path / 'runs'}", "training.epochs=2", "training.sample_interval=1", "seeds=[1]"]  # fmt: skip
    set_args = [a for s in small for a in ("--set", s)]

    assert main(["run", str(params / "phase1_3_demo.yaml"), "--jobs", "2", *set_args]) == 0, capsys.readouterr().err
    winner_file = tmp_path / "runs" / "phase1_3_demo" / "winner.yaml"
    winner = yaml.safe_load(winner_file.read_text())
    assert winner["winner"] in ("phase1_3_AE_A_lat4", "phase1_3_AE_B_lat8")
    assert winner["latent_scale"] > 0
    assert not (params / "phase1_5.yaml").exists()  # handoff: null: phase 1.3 writes winner.yaml only
    assert "architecture" in winner["verdict"] or "latent_channels" in winner["verdict"]
    assert "auxiliary" not in winner["verdict"]  # wording of a loss-tuning phase does not fit architectures

    assert main(["run", str(params / "phase1_4_demo.yaml"), "--jobs", "2", *set_args,
                 "--set", f"architecture_from={winner_file}"]) == 0, capsys.readouterr().err  # fmt: skip
    runs = tmp_path / "runs" / "phase1_4_demo"
    for cfg in runs.glob("*/seed1/config.yaml"):
        assert yaml.safe_load(cfg.read_text())["architecture"] == winner["architecture"]
    index = json.loads((runs / "index.json").read_text())
    assert f"architecture_from={winner_file}" in index["overrides"]

    nxt = params / "phase1_5.yaml"
    phase15 = load_params(nxt, check_files=False)
    assert phase15.architecture.model_dump() == winner["architecture"]
    assert phase15.latent_scale is None  # phase 1.5 retrains: its runs measure their own latent statistics
    assert yaml.safe_load((runs / "winner.yaml").read_text())["latent"]["measured_on"].startswith("phase1_4_demo ")
    assert (tmp_path / "reports" / "phase1_3_demo.html").is_file() and (tmp_path / "reports" / "phase1_4_demo.html").is_file()
    assert Path(phase15.data.manifest) == Path(manifest)  # the --set data.manifest reaches the next phase's params
