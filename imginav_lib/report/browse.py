"""`imginav browse RUNS_DIR`: a fresh browsing notebook in the phase folder, opened in JupyterLab.

The notebook is a copy of the analysis template (notebooks/analysis.ipynb) with `runs_dir = "."` (a kernel starts
in its notebook's folder) and `live = True` (the sample views as widgets, every saved epoch, a refresh button).
JupyterLab is started with its root in the phase folder, so nothing it saves can reach the tracked templates that
`imginav run` and `imginav report` copy. `--print` prints the command instead (a cluster login node: run it there
and tunnel the port).
"""
from __future__ import annotations

import datetime as dt
import shlex
import subprocess
import sys
from pathlib import Path

from imginav_lib import resources
from imginav_lib.analysis.phase import phase_name
from imginav_lib.files import atomic_write_text, check_output_dir

BROWSE_NOTEBOOK = "browse.ipynb"  # in the phase folder
PREVIOUS = "browse.previous.ipynb"  # the one it replaces, kept once (a researcher's notes in it are not lost)


def write_browse_notebook(runs_dir: str | Path) -> Path:
    """<runs_dir>/browse.ipynb, fresh from the template; an existing one that differs is kept as PREVIOUS."""
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    runs_dir = Path(runs_dir).resolve()
    phase = phase_name(runs_dir)  # not a phase folder: one line, nothing written
    check_output_dir(runs_dir, "browse: phase folder")
    nb = load_notebook_node(resources.clean_notebook(resources.notebook("analysis.ipynb")))  # papermill's cell metadata
    nb.cells[0] = nbformat.v4.new_markdown_cell(
        f"# Browsing {phase}\n\nWritten by `imginav browse` from the template notebooks/analysis.ipynb on "
        f"{dt.date.today().isoformat()}: the phase report's story, with the sample views as live widgets. Run All; "
        "the views' **refresh** buttons re-read the phase folder while runs are still going. This copy is yours to "
        f"edit; `imginav browse` writes it afresh and keeps the copy it replaces as `{PREVIOUS}`.", metadata={"tags": []})
    nb = parameterize_notebook(nb, {"runs_dir": ".", "params_file": None, "write_handoff": False, "handoff_copy_dir": None,
                                    "live": True}, kernel_name="python3", language="python")  # fmt: skip
    text = nbformat.writes(nb)
    out = runs_dir / BROWSE_NOTEBOOK
    if out.is_file() and out.read_text(errors="replace") != text:
        out.replace(runs_dir / PREVIOUS)
    atomic_write_text(out, text)
    return out


def jupyter_command(notebook: Path, port: int | None = None, no_browser: bool = False) -> list[str]:
    """JupyterLab on the notebook, its root (all it can open or save) the notebook's folder."""
    return [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={notebook.parent}",
            *([f"--port={port}"] if port else []), *(["--no-browser"] if no_browser else []), str(notebook)]  # fmt: skip


def browse(runs_dir: str | Path, print_only: bool = False, port: int | None = None) -> int:
    nb = write_browse_notebook(runs_dir)
    print(f"notebook: {nb}")
    if print_only:
        cmd = jupyter_command(nb, port or 8888, no_browser=True)
        print(shlex.join(cmd))
        print(f"# on a cluster login node: run the line above there, then on your laptop: ssh -N -L {port or 8888}:localhost:"
              f"{port or 8888} <login node>, and open the http://localhost:{port or 8888}/lab?token=... address it prints")
        return 0
    return subprocess.call(jupyter_command(nb, port))
