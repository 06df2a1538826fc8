"""Where a phase's report and hand-off go: into the phase folder, and published beside the params file only
when the phase folder is that file's own.

Everything a phase produces belongs to its runs: `imginav report` writes `report.html`, `winner.yaml` and the
next phase's params (`phase1_5.yaml`) into the phase folder `<runs root>/<phase>/`, so a smoke test of the same
phase in another runs root never overwrites the outputs of the real runs.

A phase folder is *its params file's own* when it is `<runs_root>/<phase>` or `<cluster.runs_root>/<phase>` of
that file (paths as `imginav run` resolves them: relative to the params file, `${VAR}`s expanded). Only then are
the report and the next phase's params also copied, byte for byte, to `<project>/reports/<phase>.html` and
`<params folder>/<next phase>.yaml`, where the project is the folder above `params/` when the params file sits in
a folder named `params` (the repository's layout), else the params file's own folder.

The params file of a phase folder is `--params` when given, else the one `index.json` names. index.json records a
params file inside the working folder relative to it (`params/phase1_4.yaml`, runs/runfolder.py), so runs copied
back from the cluster or a moved project resolve it in the checkout at hand, never at a path recorded elsewhere.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from imginav_lib.errors import InputError
from imginav_lib.config.paths import expand_path
from imginav_lib.runs import runfolder as rf
from imginav_lib.files import atomic_path

REPORT = "report.html"  # in the phase folder


def own_phase_dirs(params_file: Path) -> list[Path]:
    """The phase folders that are this params file's own (runs_root and cluster.runs_root)."""
    from imginav_lib.config.params import load_params

    try:
        phase = load_params(params_file, check_files=False)
    except InputError:
        return []
    roots = [Path(phase.runs_root).resolve()]
    if phase.cluster.runs_root:
        roots.append(expand_path(phase.cluster.runs_root, params_file.parent))
    return [r / phase.phase for r in roots if r is not None]


def project_dir(params_file: Path) -> Path:
    """`<project>/params/x.yaml` -> <project>; a params file elsewhere is its own project."""
    return params_file.parent.parent if params_file.parent.name == "params" else params_file.parent


@dataclass
class Destinations:
    report: Path  # the report: <phase folder>/report.html or --out
    report_copy: Path | None  # <project>/reports/<phase>.html, when the phase folder is the params file's own
    handoff_copy_dir: Path | None  # the params file's folder, likewise
    note: str  # why (not) published, for the command's output


def destinations(runs_dir: Path, phase: str, params_file: str | Path | None = None, out: str | Path | None = None) -> Destinations:
    runs_dir = Path(runs_dir).resolve()
    report = Path(out) if out else runs_dir / REPORT
    home = rf.home_params(runs_dir, params_file)
    if home is None:
        return Destinations(report, None, None, "not published: index.json names no params file found here")
    if home.parent == runs_dir:
        return Destinations(report, None, None, "not published: the params file is the phase folder's own copy")
    if runs_dir not in own_phase_dirs(home):
        return Destinations(report, None, None, f"not published: {runs_dir} is not the runs root of {home}")
    return Destinations(report, project_dir(home) / "reports" / f"{phase}.html", home.parent, f"published for {home}")


def publish_report(dest: Destinations) -> Path | None:
    """Copy the report beside the params file's project when the phase folder is its own."""
    if dest.report_copy is None:
        return None
    with atomic_path(dest.report_copy) as tmp:
        shutil.copyfile(dest.report, tmp)
    return dest.report_copy
