"""The tracked notebooks are templates: a Jupyter save cannot change what `imginav run` and `imginav report`
execute, and `imginav browse` opens a copy in the phase folder, with Jupyter rooted there."""
from __future__ import annotations

import json
import os
import shlex
import shutil
from pathlib import Path

import nbformat
import pytest

from imginav_lib import resources
from imginav_lib.cli import main
from imginav_lib.launch.runner import NOTEBOOK_ENV, run_phase
from imginav_lib.testing.synthetic import write_synthetic_phase

from conftest import REPO

STALE = "STALE OUTPUT FROM A JUPYTER SESSION"


def jupyter_save(root: Path, name: str, edit) -> None:
    """Open and save a notebook through Jupyter's own contents manager (what JupyterLab's autosave calls)."""
    from jupyter_server.services.contents.filemanager import FileContentsManager

    cm = FileContentsManager(root_dir=str(root))
    nb = cm.get(name, content=True)["content"]
    edit(nb)
    cm.save({"type": "notebook", "format": "json", "content": nb}, name)


def run_all_and_edit(nb) -> None:
    """What a researcher's session leaves: outputs and counts in every code cell, widget state, and an edited
    parameters cell (every default changed, `progress` included)."""
    for i, c in enumerate(nb.cells):
        if c.cell_type == "code":
            c.outputs = [nbformat.v4.new_output("stream", name="stdout", text=STALE)]
            c.execution_count = i
        if "parameters" in c.metadata.get("tags", []):
            c.source = "\n".join(line.split("=")[0] + "= 'edited in Jupyter'" if "=" in line else line for line in c.source.splitlines())
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {STALE: {}}}}


def code_cells(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code" and "parameters" not in c.metadata.get("tags", [])]


@pytest.mark.parametrize("name", ["train.ipynb", "analysis.ipynb"])
def test_what_the_tools_execute_has_nothing_a_jupyter_save_left(tmp_path, name):
    shutil.copy(resources.notebook(name), tmp_path / name)
    jupyter_save(tmp_path, name, run_all_and_edit)
    saved = nbformat.read(tmp_path / name, as_version=4)
    assert STALE in json.dumps(saved)  # the save did write into the file
    clean = resources.clean_notebook(tmp_path / name)
    assert STALE not in json.dumps(clean)
    assert code_cells(clean) == code_cells(resources.clean_notebook(resources.notebook(name)))
    # Every default of the parameters cell is one the tools inject (runner.py, build.py), so none of them applies.
    [cell] = [c for c in saved.cells if "parameters" in c.metadata.get("tags", [])]
    defaults = {line.split("=")[0].strip() for line in cell.source.splitlines() if "=" in line}
    injected = {"train.ipynb": {"params_file", "experiment", "seed", "runs_root", "overrides", "progress", "config", "job_id"},
                "analysis.ipynb": {"runs_dir", "params_file", "write_handoff", "handoff_copy_dir", "live"}}[name]
    assert defaults == injected


def test_a_run_from_a_template_saved_in_jupyter_is_the_run_from_the_clean_one(tiny, tmp_path, monkeypatch):
    """The training template after a Jupyter session (outputs, every parameter edited): `imginav run` still runs the
    run it was asked for, and its record (the executed notebook) carries none of the session's outputs."""
    shutil.copy(resources.notebook("train.ipynb"), tmp_path / "train.ipynb")
    jupyter_save(tmp_path, "train.ipynb", run_all_and_edit)
    monkeypatch.setenv(NOTEBOOK_ENV, str(tmp_path / "train.ipynb"))
    assert run_phase(tiny, only=["F1"], report=False) == 0
    run_dir = tmp_path / "runs" / "tiny" / "F1" / "seed1"
    info = json.loads((run_dir / "run.json").read_text())
    assert (info["status"], info["experiment"], info["seed"], info["epoch"]) == ("done", "F1", 1, 2)
    record = nbformat.read(run_dir / "train.ipynb", as_version=4)
    assert STALE not in json.dumps(record)
    [injected] = [c for c in record.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert "progress = True" in injected.source


def test_browse_print_writes_the_notebook_into_the_phase_folder_and_roots_jupyter_there(tmp_path, capsys):
    phase = write_synthetic_phase(tmp_path / "runs", seeds=(1,), epochs=2, image_size=16)
    assert main(["browse", str(phase), "--print"]) == 0
    out = capsys.readouterr().out.splitlines()
    notebook = Path(out[0].removeprefix("notebook: "))
    assert notebook == phase.resolve() / "browse.ipynb" and notebook.is_file()
    cmd = shlex.split(out[1])
    assert cmd[1:3] == ["-m", "jupyterlab"] and f"--ServerApp.root_dir={phase.resolve()}" in cmd and cmd[-1] == str(notebook)
    assert "--no-browser" in cmd and "ssh -N -L 8888:localhost:8888" in out[2]
    nb = nbformat.read(notebook, as_version=4)
    [injected] = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert "runs_dir = \".\"" in injected.source and "live = True" in injected.source
    # Jupyter rooted in the phase folder cannot save over the template it was copied from.
    from jupyter_server.services.contents.filemanager import FileContentsManager
    from tornado.web import HTTPError

    template = resources.notebook("analysis.ipynb")
    before = template.read_bytes()
    cm = FileContentsManager(root_dir=str(phase.resolve()))
    model = {"type": "notebook", "format": "json", "content": nbformat.read(notebook, as_version=4)}
    with pytest.raises(HTTPError):
        cm.save(model, os.path.relpath(template, phase.resolve()))
    assert template.read_bytes() == before
    # Again: a fresh notebook, and the one it replaces (edited by the researcher) kept once.
    notebook.write_text(notebook.read_text().replace("Run All", "my notes"))
    assert main(["browse", str(phase), "--print"]) == 0
    assert "my notes" in (phase / "browse.previous.ipynb").read_text() and "my notes" not in notebook.read_text()


def test_browse_refuses_a_folder_that_is_not_a_phase_in_one_line(tmp_path, capsys):
    assert main(["browse", str(tmp_path), "--print"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("imginav: error: ") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "browse.ipynb").exists()


def test_the_browse_notebook_shows_the_live_views_only(tmp_path):
    """Executed as Jupyter would (its folder as the working directory): the widget views, not the static ones."""
    import papermill as pm

    phase = write_synthetic_phase(tmp_path / "runs", seeds=(1, 2), epochs=2, image_size=16)
    main(["browse", str(phase), "--print"])
    out = tmp_path / "executed.ipynb"
    pm.execute_notebook(str(phase / "browse.ipynb"), str(out), kernel_name="python3", progress_bar=False, cwd=str(phase))
    cells = nbformat.read(out, as_version=4).cells
    views = [c for c in cells if c.cell_type == "code" and "if live:" in c.source]
    assert len(views) == 2
    for c in views:
        mimes = {m for o in c.outputs for m in o.get("data", {})}
        assert "application/vnd.jupyter.widget-view+json" in mimes
        assert not any("imginav-browser" in str(o.get("data", {}).get("text/html", "")) or "imginav-compare" in
                       str(o.get("data", {}).get("text/html", "")) for o in c.outputs)  # fmt: skip
    assert not (phase / "winner.yaml").exists()  # browsing writes nothing into the runs
