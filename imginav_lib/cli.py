"""`imginav`: the command line. Each subcommand is a thin call into the library.

Bad input ends with one line `imginav: error: ...` on stderr and exit code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from imginav_lib.errors import InputError
from imginav_lib.config.schema import BACKENDS

MAX_ERROR_CHARS = 2000  # an error line is cut to this: a message that quotes its input (an alias bomb) stays readable


def _make_layouts(a):
    from imginav_lib.demo.layouts import make_layouts

    manifest = make_layouts(a.out, n=a.n, size=a.size, seed=a.seed, force=a.force)
    print(f"wrote {a.n} layouts and {manifest}")


def _validate(a):
    from imginav_lib.data.dataset import manifest_summary, split_summary
    from imginav_lib.config.params import load_params, runs_of
    from imginav_lib.text import plural

    phase = load_params(a.params, overrides=a.set)
    runs = runs_of(phase)
    data = manifest_summary(phase.data, phase.seeds)  # may refuse the data: before the "ok" line
    with_sets = f" (with {plural(len(a.set), '--set override')})" if a.set else ""
    print(f"{a.params}: ok{with_sets}: phase {phase.phase}, {plural(len(phase.experiments), 'experiment')} x "
          f"{plural(len(phase.seeds), 'seed')} = {plural(len(runs), 'run')}")  # fmt: skip
    print(data)
    print(split_summary(phase.data, phase.seeds))


def _prepare(a):
    from imginav_lib.launch.runner import prepare_phase_data
    from imginav_lib.config.params import load_params

    cache = prepare_phase_data(load_params(a.params), workers=a.workers)
    print(f"cache: {cache}")


def _run(a):
    from imginav_lib.launch.runner import run_phase

    return run_phase(a.params, backend=a.backend, jobs=a.jobs, only=a.only, dry_run=a.dry_run, runs_root=a.runs_root,
                     force=a.force, report=not a.no_report, overrides=a.set,
                     build_report=report_after_runs)  # fmt: skip


def report_after_runs(phase_dir: Path, params_file: Path) -> bool:
    """The report at the end of `imginav run` (local runs); False if it failed (the runs stay)."""
    from imginav_lib.report.build import build_report

    try:
        dest = build_report(phase_dir, params_file=str(Path(params_file).resolve()))
    except Exception as e:  # the runs stay; the report can be rebuilt with `imginav report`
        print(f"imginav: report failed: {type(e).__name__}: {e} (runs kept; retry: imginav report {phase_dir})", file=sys.stderr)
        return False
    print(f"report: {dest.report}")
    print(f"published: {dest.report_copy}" if dest.report_copy else dest.note)
    return True


def _run_one(a):
    from imginav_lib.train.stopping import block_stop_signals

    block_stop_signals()  # before the slow imports: a scheduler's signal now waits for run-one (stopping.py)
    from imginav_lib.launch.runner import run_one

    return run_one(a.index, a.i)


def _report(a):
    from imginav_lib.report.build import build_report

    dest = build_report(a.runs_dir, params_file=a.params, out=a.out)
    print(f"report: {dest.report}")
    print(f"published: {dest.report_copy}" if dest.report_copy else dest.note)


def _browse(a):
    from imginav_lib.report.browse import browse

    return browse(a.runs_dir, print_only=a.print, port=a.port)


def _status(a):
    from imginav_lib.launch.status import print_status

    return print_status(a.runs_dir, stale_after_s=a.stale_after, verdict=more_seeds_line)


def more_seeds_line(phase_dir: Path) -> str:
    """When the finished runs leave the verdict open for want of seeds: how many, the command, runs and GPU-hours."""
    from imginav_lib.analysis import analyse  # pandas and scipy: only for a phase with finished runs

    v = analyse(phase_dir).verdict
    if not v.more_seeds:
        return ""
    return f"Verdict so far: {v.winner} ({v.status}); it needs ≈{v.seeds_needed} seeds per experiment. {v.more_seeds}\n"


def _add_set(s: argparse.ArgumentParser) -> None:
    s.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a params field, typed by the params schema (repeatable): "
                        "--set training.epochs=2 --set experiments.X.loss.seg=0.1")  # fmt: skip


def _at_least_one(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 1")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="imginav", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("make-layouts", help="write procedurally generated layouts and a manifest",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    s.add_argument("out", help="folder for the PNGs and manifest.csv")
    s.add_argument("--n", type=int, default=300, help="number of layouts")
    s.add_argument("--size", type=int, default=64, help="image side in pixels")
    s.add_argument("--seed", type=int, default=0, help="random seed (the same seed gives the same layouts)")
    s.add_argument("--force", action="store_true", help="write into a folder that is not empty (replacing "
                   "manifest.csv and images/layout_*.png there)")  # fmt: skip
    s.set_defaults(fn=_make_layouts)

    s = sub.add_parser("validate", help="validate a phase params file; runs nothing")
    s.add_argument("params")
    _add_set(s)
    s.set_defaults(fn=_validate)

    s = sub.add_parser("prepare", help="decode the phase's images into the cache (a step of its own: a CPU job)")
    s.add_argument("params")
    s.add_argument("--workers", type=_at_least_one, default=None,
                   help="decoding processes (default: data.workers, else LSB_DJOB_NUMPROC, SLURM_CPUS_PER_TASK or the CPUs)")
    s.set_defaults(fn=_prepare)

    s = sub.add_parser("run", help="run every experiment x seed of a phase, then the report")
    s.add_argument("params")
    s.add_argument("--backend", choices=BACKENDS, default=None, help="default: cluster.backend")
    s.add_argument("--jobs", type=int, default=1, help="local runs at a time")
    s.add_argument("--only", action="append", default=None, metavar="NAME", help="only this experiment (repeat for more)")
    s.add_argument("--dry-run", action="store_true", help="print job scripts and commands, submit nothing")
    s.add_argument("--runs-root", default=None, help="override runs_root (e.g. cluster scratch)")
    _add_set(s)
    s.add_argument("--force", action="store_true", help="submit even while runs of the phase are queued or running")
    s.add_argument("--no-report", action="store_true", help="skip the report (local: after the runs; cluster: the report job)")
    s.set_defaults(fn=_run)

    s = sub.add_parser("run-one", help="execute one entry of a phase index through papermill (job arrays)")
    s.add_argument("index")
    s.add_argument("i", type=int, help="1-based entry, as LSB_JOBINDEX / SLURM_ARRAY_TASK_ID")
    s.set_defaults(fn=_run_one)

    s = sub.add_parser("report", help="build the phase's HTML report, winner.yaml and next-phase params")
    s.add_argument("runs_dir", help="<runs root>/<phase>")
    s.add_argument("--params", default=None, help="default: the params.yaml copied into the phase folder")
    s.add_argument("--out", default=None, help="default: <runs_dir>/report.html (also copied to reports/<phase>.html "
                   "beside the params file when runs_dir is in its runs_root)")
    s.set_defaults(fn=_report)

    s = sub.add_parser("browse", help="write a browsing notebook into a phase folder and open JupyterLab on it")
    s.add_argument("runs_dir", help="<runs root>/<phase>")
    s.add_argument("--print", action="store_true", help="only print the JupyterLab command (a login node with a tunnel)")
    s.add_argument("--port", type=_at_least_one, default=None, help="JupyterLab's port (default: its own; 8888 with --print)")
    s.set_defaults(fn=_browse)

    s = sub.add_parser("status", help="one row per experiment x seed of a phase folder")
    s.add_argument("runs_dir")
    s.add_argument("--stale-after", type=float, default=600, help="seconds without heartbeat before 'stale'")
    s.set_defaults(fn=_status)
    return p


def error_line(e: InputError) -> str:
    """The message on one line, whatever a library put in it (pandas and PyYAML errors can span several), cut to
    about MAX_ERROR_CHARS in the middle: the start names the file or field, the end says what is wrong."""
    text = " ".join(line.strip() for line in str(e).strip().splitlines())
    if len(text) > MAX_ERROR_CHARS:
        head, tail = MAX_ERROR_CHARS * 2 // 3, MAX_ERROR_CHARS // 3
        text = f"{text[:head]} ...({len(text) - head - tail:,} characters left out)... {text[-tail:]}"
    return text


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rc = args.fn(args)
    except InputError as e:
        print("imginav: error: " + error_line(e), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("imginav: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
