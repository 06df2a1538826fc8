"""Outputs belong to their runs: the report and hand-off go into the phase folder, and are published beside the
params file only for its own runs root; browsing the analysis notebook writes nothing."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import yaml
from nbclient import NotebookClient

from imginav_lib.cli import main
from imginav_lib.analysis.phase import load_phase_runs
from imginav_lib.report.publish import destinations
from imginav_lib.runs.runfolder import record_path, recorded_path
from imginav_lib.testing.synthetic import write_synthetic_phase

from conftest import REPO

F1, F2 = "F1_rgb_only", "F2_rgb_seg"


def project(tmp: Path, phase: str = "p") -> tuple[Path, Path]:
    """<tmp>/proj/params/<phase>.yaml with runs_root ../runs, and its own phase folder <tmp>/proj/runs/<phase>
    holding a finished synthetic phase (F2 planted 10% better, so there is a winner and a hand-off)."""
    runs = write_synthetic_phase(tmp / "proj" / "runs", phase=phase, experiments={F1: {}, F2: {"seg": 0.05}},
                                 seeds=(1, 2, 3), epochs=4, noise=0.01, effects={F2: {"mse": 0.9}})  # fmt: skip
    params = yaml.safe_load((runs / "params.yaml").read_text())
    params["runs_root"] = "../runs"
    path = tmp / "proj" / "params" / f"{phase}.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copyfile(path, runs / "params.yaml")  # as `imginav run` leaves it
    index = json.loads((runs / "index.json").read_text())
    (runs / "index.json").write_text(json.dumps({**index, "params_file": record_path(path)}))
    return path, runs


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_report_of_its_own_runs_root_is_written_in_the_phase_folder_and_published(tmp_path, capsys):
    params, runs = project(tmp_path)
    assert main(["report", str(runs)]) == 0
    out = capsys.readouterr().out
    assert (runs / "report.html").is_file() and (runs / "winner.yaml").is_file() and (runs / "phase1_5.yaml").is_file()
    published = tmp_path / "proj" / "reports" / "p.html"
    assert published.read_bytes() == (runs / "report.html").read_bytes()
    assert (params.parent / "phase1_5.yaml").read_bytes() == (runs / "phase1_5.yaml").read_bytes()
    assert f"report: {runs / 'report.html'}" in out and f"published: {published}" in out
    assert main(["validate", str(params.parent / "phase1_5.yaml")]) == 2  # no manifest: but it parses and names it
    assert "data.manifest: file not found" in capsys.readouterr().err


def test_smoke_test_in_another_runs_root_leaves_the_published_report_and_handoff_byte_identical(tmp_path, capsys):
    params, runs = project(tmp_path)
    assert main(["report", str(runs)]) == 0
    published = {p: p.read_bytes() for p in (tmp_path / "proj" / "reports" / "p.html", params.parent / "phase1_5.yaml")}
    phase_files = files(runs)
    # One 1-seed run of the same phase name in a scratch runs root, reported with the same params file: what
    # `imginav run params.yaml --only F1 --runs-root /tmp/quick` does after its run.
    quick = write_synthetic_phase(tmp_path / "quick", phase="p", experiments={F1: {}}, seeds=(1,), epochs=1)
    assert main(["report", str(quick), "--params", str(params)]) == 0
    assert "not published" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in published} == published
    assert files(runs) == phase_files
    assert (quick / "report.html").is_file() and yaml.safe_load((quick / "winner.yaml").read_text())["winner"] == F1


def test_report_of_runs_from_another_machine_writes_only_into_the_phase_folder(tmp_path, monkeypatch):
    # index.json names a params file on the cluster: not here, so nothing is published anywhere.
    runs = write_synthetic_phase(tmp_path / "copied", phase="p", seeds=(1, 2), epochs=2)
    index = json.loads((runs / "index.json").read_text())
    (runs / "index.json").write_text(json.dumps({**index, "params_file": "/zhome/ab/cd/ImgiNav/params/p.yaml"}))
    before = set(tmp_path.rglob("*"))
    assert main(["report", str(runs)]) == 0
    assert {p for p in set(tmp_path.rglob("*")) - before if not p.is_relative_to(runs)} == set()
    # A params file inside the working folder (the checkout) is recorded relative to it and resolved there.
    monkeypatch.chdir(REPO)
    assert record_path(REPO / "params" / "phase1_4.yaml") == "params/phase1_4.yaml"
    assert recorded_path("params/phase1_4.yaml") == Path.cwd() / "params" / "phase1_4.yaml"
    (runs / "index.json").write_text(json.dumps({**index, "params_file": "params/phase1_4_demo.yaml"}))
    d = destinations(runs, "p")
    assert (d.report, d.report_copy, d.handoff_copy_dir) == (runs / "report.html", None, None)  # not its runs root


def test_report_reads_the_params_copied_into_the_phase_folder_unless_told(tmp_path):
    params, runs = project(tmp_path)
    edited = yaml.safe_load(params.read_text())
    edited["decision"] = {"baseline": F2}
    params.write_text(yaml.safe_dump(edited))  # the home file changed after the runs: the copy is what they used
    assert load_phase_runs(runs).baseline == F1
    assert load_phase_runs(runs, params).baseline == F2


def test_executing_the_analysis_notebook_without_papermill_writes_nothing(tmp_path):
    """Run All in Jupyter: the parameters cell as a researcher sets it, write_handoff left at its default."""
    params, runs = project(tmp_path)
    nb = nbformat.read(REPO / "notebooks" / "analysis.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert "write_handoff = False" in cell.source
    cell.source = cell.source.replace('runs_dir = "../runs/phase1_4_demo"', f"runs_dir = {str(runs)!r}")
    before = files(tmp_path)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    assert files(tmp_path) == before
    text = "".join(str(o) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "No hand-off written in this session" in text and "Traceback" not in text
