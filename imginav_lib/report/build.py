"""Building the phase report: papermill executes notebooks/analysis.ipynb into the phase folder and nbconvert
renders it, code hidden, to one self-contained HTML file (sections.py holds the pieces the notebook shows)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from imginav_lib import resources
from imginav_lib.analysis.phase import phase_name
from imginav_lib.errors import ReportError
from imginav_lib.files import UMASK, atomic_write_text, check_output_dir, check_output_file
from imginav_lib.report.publish import Destinations, destinations, publish_report


# The lab template minus everything that loads from a CDN (require.js, MathJax, mermaid, the widget manager):
# the report must open offline with no console errors, and it uses none of them.
_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""
HIDE_TAG = "hide-in-report"  # cells tagged so (the notebook's intro, the live widget browser) are left out


def export_html(nb_path: Path, title: str) -> str:
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    nb = nbformat.read(nb_path, as_version=4)
    nb.cells = [c for c in nb.cells if HIDE_TAG not in c.get("metadata", {}).get("tags", [])]
    for c in nb.cells:
        if c.cell_type == "code":  # warnings on stderr stay in the executed notebook, not in the report
            c.outputs = [o for o in c.outputs if not (o.output_type == "stream" and o.get("name") == "stderr")
                         and "application/vnd.jupyter.widget-view+json" not in o.get("data", {})]
    nb.metadata.pop("widgets", None)
    nb.metadata["title"] = title
    exporter = HTMLExporter(extra_loaders=[DictLoader({"imginav.html.j2": _TEMPLATE})], template_file="imginav.html.j2")
    exporter.exclude_input = exporter.exclude_input_prompt = exporter.exclude_output_prompt = True
    body, _ = exporter.from_notebook_node(nb)
    return body


def build_report(runs_dir, params_file=None, out=None) -> Destinations:
    """Execute the analysis notebook into <runs_dir>/analysis.ipynb (it writes winner.yaml and the next-phase
    params into the phase folder) and render it, code hidden, to `out` (default <runs_dir>/report.html). When
    the phase folder is its params file's own, the report and the next-phase params are also published beside
    that file (publish.py). Returns where everything went."""
    import papermill as pm

    from imginav_lib.kernel import IPCKernelManager

    runs_dir = Path(runs_dir).resolve()
    # What the notebook reads first, read here: a folder that is not a phase folder, a bad --params or an
    # unwritable --out is one line at once, before a kernel starts or anything is written.
    phase = phase_name(runs_dir, params_file)  # the notebook analyses the phase, once
    dest = destinations(runs_dir, phase, params_file, out)
    check_output_file(dest.report, "--out" if out else "report")
    check_output_dir(runs_dir, "report: phase folder")  # analysis.ipynb and winner.yaml go there
    nb_path = runs_dir / "analysis.ipynb"
    fd, tmp = tempfile.mkstemp(dir=runs_dir, prefix=".analysis.", suffix=".ipynb")
    os.close(fd)
    params = {"runs_dir": str(runs_dir), "params_file": str(Path(params_file).resolve()) if params_file else None,
              "write_handoff": True, "handoff_copy_dir": str(dest.handoff_copy_dir) if dest.handoff_copy_dir else None,
              "live": False}  # fmt: skip
    try:
        notebook = resources.clean_notebook(resources.notebook("analysis.ipynb"))  # no outputs a Jupyter save left
        pm.execute_notebook(notebook, tmp, parameters=params, kernel_name="python3", progress_bar=False, cwd=str(runs_dir),
                            kernel_manager_class=IPCKernelManager)
    except pm.PapermillExecutionError as err:
        os.replace(tmp, nb_path)
        raise ReportError(f"analysis notebook failed: {err.ename}: {err.evalue} (executed notebook: {nb_path})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    os.chmod(tmp, 0o666 & ~UMASK)
    os.replace(tmp, nb_path)
    atomic_write_text(dest.report, export_html(nb_path, f"{phase}: phase report"))
    publish_report(dest)
    return dest
