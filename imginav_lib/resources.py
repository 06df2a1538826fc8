"""The files the package reads at run time: the notebooks it executes and the job templates it fills.

They live in the repository's `notebooks/` and `hpc/` and ship inside the package as `imginav_lib.notebooks` and
`imginav_lib.hpc` (pyproject's package-dir mapping), so a plain `pip install .` finds them as an editable one does.
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def notebook(name: str) -> Path:
    """A shipped notebook: `train.ipynb` (one run) or `analysis.ipynb` (the report)."""
    return Path(str(files("imginav_lib.notebooks") / name))


def clean_notebook(path: str | Path):
    """A notebook as the tools execute it: its cells' sources only. Outputs, execution counts and widget state that
    a Jupyter save left in a template never reach a run's record; the tools inject every parameter, so an edited
    parameters cell changes nothing either (tests/test_templates.py)."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
        c.metadata.pop("execution", None)
    nb.metadata.pop("widgets", None)
    return nb


def job_template(name: str) -> Path:
    """A shipped job template, e.g. `lsf_array.sh.tmpl`."""
    return Path(str(files("imginav_lib.hpc") / name))
