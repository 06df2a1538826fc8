"""Report build time and size for a 9-run and a 90-run synthetic phase, and the decision engine's validity rates.

    .venv/bin/python bench/report_bench.py            # both phases, then the validity rates
    .venv/bin/python bench/report_bench.py --quick    # 9 runs only, fewer draws

Each phase is written with `synthetic.write_synthetic_phase` (every file of the run-folder contract) into a temporary
folder and built with `report.build.build_report` exactly as `imginav report` does (papermill + nbconvert, one process
each), so the times include the kernel start. Validity: `synthetic.simulate_decisions` with the demo's seed noise.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from imginav_lib.report.build import build_report
from imginav_lib.testing.synthetic import simulate_decisions, write_synthetic_phase

DEMO_NOISE = {"seed_sd": 0.094, "run_sd": 0.022}  # measured on the 9 demo runs (tests/test_analysis.py)


def bench(root: Path, name: str, experiments: dict, seeds: tuple, epochs: int, sample_interval: int) -> dict:
    t = time.perf_counter()
    runs = write_synthetic_phase(root, phase=name, experiments=experiments, seeds=seeds, epochs=epochs,
                                 sample_interval=sample_interval, steps_per_epoch=10)
    written = time.perf_counter() - t
    t = time.perf_counter()
    out = build_report(runs, out=root / f"{name}.html").report
    built = time.perf_counter() - t
    return {"phase": name, "runs": len(experiments) * len(seeds), "epochs": epochs, "write_s": written, "build_s": built,
            "html_mb": out.stat().st_size / 1e6, "notebook_mb": (runs / "analysis.ipynb").stat().st_size / 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="9 runs only and 200 draws")
    args = ap.parse_args()
    three = {"F1_rgb_only": {}, "F2_rgb_seg": {"seg": 0.05}, "F3_rgb_seg_cls": {"seg": 0.05, "cls": 0.01}}
    thirty = {f"E{i:02d}": ({"seg": 0.05} if i % 3 else {}) | ({"cls": 0.01} if i % 5 == 0 else {}) for i in range(30)}
    cases = [("bench_9", three, (1, 2, 3), 8, 2)] + ([] if args.quick else [("bench_90", thirty, (1, 2, 3), 50, 5)])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, exps, seeds, epochs, interval in cases:
            rows.append(bench(Path(tmp), name, exps, seeds, epochs, interval))
            r = rows[-1]
            print(f"{r['phase']}: {r['runs']} runs x {r['epochs']} epochs: runs written in {r['write_s']:.1f} s; "
                  f"report built in {r['build_s']:.1f} s; HTML {r['html_mb']:.1f} MB (executed notebook {r['notebook_mb']:.1f} MB)", flush=True)
    draws = 200 if args.quick else 1000
    print(f"\ndecision validity, {draws} draws each, demo seed noise {DEMO_NOISE}; F1 is the baseline, F2 (seg) and F3")
    print("(seg + cls) have good heads; the true winner is decide() on the noise-free values:")
    for n in (3, 5) if args.quick else (3, 5, 10):
        for k, (name, effects) in enumerate(SCENARIOS.items()):
            sim = simulate_decisions(effects, n_seeds=n, draws=draws, rng_seed=k, **DEMO_NOISE)
            r = sim["rates"]
            print(f"  {n:2d} seeds, {name:<20} (true winner {sim['true_winner']}): found {r['true winner']:6.1%}; false 'hurts' "
                  f"{r['false hurts']:5.1%}; 'decided' wrong winner {r['decided wrong']:5.1%}; decided at all {r['decided']:5.1%}", flush=True)


# True relative changes of val MSE against F1 (negative = better).
SCENARIOS = {
    "all equal": {"F2": 0.0, "F3": 0.0},
    "F2 10% better": {"F2": -0.10, "F3": 0.0},
    "F2 5% better": {"F2": -0.05, "F3": 0.0},
    "F3 10% better": {"F2": 0.0, "F3": -0.10},
    "F2 and F3 10% worse": {"F2": 0.10, "F3": 0.10},
}


if __name__ == "__main__":
    main()
