"""The training notebook executed by papermill, and one epoch on the real layouts."""
import json

import nbformat
import papermill as pm
import pandas as pd

from imginav_lib.config.params import resolve_run
from imginav_lib.train.trainer import fit

from conftest import REPO, tiny_params


def test_train_notebook_has_a_parameters_cell_of_literals():
    nb = nbformat.read(REPO / "notebooks" / "train.ipynb", as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1
    names = {line.split("=")[0].strip() for line in cells[0].source.splitlines() if "=" in line}
    assert names == {"params_file", "experiment", "seed", "runs_root", "overrides", "progress", "config", "job_id"}
    assert all("#" in line for line in cells[0].source.splitlines())  # each parameter says what it is


def test_papermill_runs_train_notebook_on_a_tiny_config(tiny, tmp_path):
    out = tmp_path / "executed.ipynb"
    pm.execute_notebook(
        str(REPO / "notebooks" / "train.ipynb"), str(out),
        parameters={"params_file": str(tiny), "experiment": "F3", "seed": 1, "progress": False},
        kernel_name="python3", progress_bar=False,
    )
    run_dir = tmp_path / "runs" / "tiny" / "F3" / "seed1"
    assert json.loads((run_dir / "run.json").read_text())["status"] == "done"
    assert len(pd.read_csv(run_dir / "metrics.csv")) == 2
    text = out.read_text()
    assert "epoch 2/2" in text and "image/png" in text  # curves cell ran, last samples shown


def test_one_epoch_on_the_real_layouts(tmp_path, real_manifest):
    # The researchers' own manifest as it is: empty `type` (no classification target), blended edge pixels.
    params = tiny_params(tmp_path, real_manifest, data={"image_size": 128}, training={"epochs": 1, "batch_size": 8},
                         architecture={"base_channels": 8, "downsampling_steps": 3})
    result = fit(resolve_run(params, "F3", 1), progress=False)
    m = result.history.iloc[-1]
    assert result.status == "done" and m["val_mse"] > 0 and 0 <= m["val_sem_miou"] <= 1
    assert pd.isna(m["val_cls_acc"])  # no labels, no accuracy: not an error, not a made-up number
