"""Report build time and size for a 9-run and a 90-run synthetic phase, and the decision engine's validity rates.

    .venv/bin/python bench/report_bench.py                         # both phases, then the validity table
    .venv/bin/python bench/report_bench.py --quick                 # 9 runs only, 200 draws
    .venv/bin/python bench/report_bench.py --validity --draws 200  # the validity table only
    .venv/bin/python bench/report_bench.py --size                  # the researchers' scale: 15 runs x 10 epochs, 512 px

--size is the size budget (README): Phase 1.4 as the researchers run it (3 experiments x 5 seeds, 10 epochs) with
512 px samples saved at every epoch (the params save every 5th: this is the heavier case), 8 per run as the schema's
default, drawn as a trained model's look (synthetic.py, lifelike_samples); the report must stay within 25 MB and
open in headless Chromium (when installed) with no console errors.

Each phase is written with `synthetic.write_synthetic_phase` (every file of the run-folder contract) into a temporary
folder and built with `report.build.build_report` exactly as `imginav report` does (papermill + nbconvert, one process
each), so the times include the kernel start. Validity: `synthetic.simulate_decisions` with the demo's seed noise
and a researcher who starts with 3 seeds and adds the seeds the report asks for, again and again, up to the design's
last look (decision.max_seeds, 20): one row per scenario with the true winner, how often it was found, a decided
wrong winner, a decided non-baseline winner, a false "hurts", decided at all, and the mean seeds used.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from imginav_lib.config.schema import Decision
from imginav_lib.report.build import build_report
from imginav_lib.testing.synthetic import simulate_decisions, write_synthetic_phase

DEMO_NOISE = {"seed_sd": 0.094, "run_sd": 0.022}  # measured on the 9 demo runs (tests/test_analysis.py)


SIZE_BUDGET_MB = 25


def bench(root: Path, name: str, experiments: dict, seeds: tuple, epochs: int, sample_interval: int, **kw) -> dict:
    t = time.perf_counter()
    runs = write_synthetic_phase(root, phase=name, experiments=experiments, seeds=seeds, epochs=epochs,
                                 sample_interval=sample_interval, steps_per_epoch=10, **kw)
    written = time.perf_counter() - t
    t = time.perf_counter()
    out = build_report(runs, out=root / f"{name}.html").report
    built = time.perf_counter() - t
    return {"phase": name, "runs": len(experiments) * len(seeds), "epochs": epochs, "write_s": written, "build_s": built,
            "html_mb": out.stat().st_size / 1e6, "notebook_mb": (runs / "analysis.ipynb").stat().st_size / 1e6, "html": out}


def open_in_chromium(path: Path) -> str:
    """Open the report in headless Chromium: the console's SEVERE entries and the plots drawn, or why not checked."""
    import shutil

    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        return "not opened: chromium/chromedriver not installed (make browser)"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    opts = webdriver.ChromeOptions()
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--window-size=1280,1000"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    try:
        t = time.perf_counter()
        d.get(path.resolve().as_uri())
        time.sleep(3)
        severe = [e["message"][:200] for e in d.get_log("browser") if e["level"] == "SEVERE"]
        plots = len(d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot"))
        return f"opened in headless Chromium in {time.perf_counter() - t:.1f} s: {plots} plots, {len(severe)} console errors {severe or ''}"
    finally:
        d.quit()


def size_budget() -> None:
    three = {"F1_rgb_only": {}, "F2_rgb_seg": {"seg": 0.05}, "F3_rgb_seg_cls": {"seg": 0.05, "cls": 0.01}}
    with tempfile.TemporaryDirectory() as tmp:
        r = bench(Path(tmp), "bench_15_512", three, (42, 43, 44, 45, 46), 10, 1, image_size=512, num_samples=8, lifelike_samples=True)
        verdict = "within" if r["html_mb"] <= SIZE_BUDGET_MB else "OVER"
        print(f"{r['phase']}: {r['runs']} runs x {r['epochs']} epochs, 512 px samples at every epoch (8 per run): runs written in "
              f"{r['write_s']:.1f} s; report built in {r['build_s']:.1f} s; HTML {r['html_mb']:.1f} MB ({verdict} the "
              f"{SIZE_BUDGET_MB} MB budget; executed notebook {r['notebook_mb']:.1f} MB)", flush=True)
        print(open_in_chromium(r["html"]), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="9 runs only and 200 draws")
    ap.add_argument("--validity", action="store_true", help="the decision-validity table only (no report builds)")
    ap.add_argument("--draws", type=int, default=None, help="draws per scenario (default 1000, --quick 200)")
    ap.add_argument("--size", action="store_true", help="the size budget only: 15 runs x 10 epochs at 512 px")
    args = ap.parse_args()
    if args.size:
        return size_budget()
    if not args.validity:
        build_reports(args.quick)
    validity(args.draws or (200 if args.quick else 1000))


def build_reports(quick: bool) -> None:
    three = {"F1_rgb_only": {}, "F2_rgb_seg": {"seg": 0.05}, "F3_rgb_seg_cls": {"seg": 0.05, "cls": 0.01}}
    thirty = {f"E{i:02d}": ({"seg": 0.05} if i % 3 else {}) | ({"cls": 0.01} if i % 5 == 0 else {}) for i in range(30)}
    cases = [("bench_9", three, (1, 2, 3), 8, 2)] + ([] if quick else [("bench_90", thirty, (1, 2, 3), 50, 5)])
    with tempfile.TemporaryDirectory() as tmp:
        for name, exps, seeds, epochs, interval in cases:
            r = bench(Path(tmp), name, exps, seeds, epochs, interval)
            print(f"{r['phase']}: {r['runs']} runs x {r['epochs']} epochs: runs written in {r['write_s']:.1f} s; "
                  f"report built in {r['build_s']:.1f} s; HTML {r['html_mb']:.1f} MB (executed notebook {r['notebook_mb']:.1f} MB)", flush=True)


def validity(draws: int) -> None:
    print(f"\ndecision validity, {draws} draws per scenario, demo seed noise {DEMO_NOISE}; F1 is the baseline, F2 (seg)")
    print("and F3 (seg + cls) have good heads unless said; the true winner is decide() on the noise-free values; each")
    print("draw starts at 3 seeds and adds the seeds the verdict asks for until it is decided or has 20 (the last look).")
    print(f"{'scenario':<58} {'true':>4} {'found':>6} {'decided wrong':>13} {'decided non-F1':>14} {'false hurts':>11} "
          f"{'decided':>7} {'mean seeds':>10}")
    for k, (name, kw) in enumerate(SCENARIOS.items()):
        t = time.perf_counter()
        sim = simulate_decisions(n_seeds=3, draws=draws, rng_seed=k, add_seeds=True, **DEMO_NOISE, **kw)
        r = sim["rates"]
        print(f"{name:<58} {sim['true_winner']:>4} {r['true winner']:6.1%} {r['decided wrong']:13.1%} "
              f"{r['decided non-baseline']:14.1%} {r['false hurts']:11.1%} {r['decided']:7.1%} {sim['mean_seeds']:10.1f}"
              f"   ({time.perf_counter() - t:.0f} s)", flush=True)


# Each scenario: simulate_decisions' keywords. effects: true relative change of val MSE against F1 (negative =
# better); stability: true shift of a stability number (epochs to the common target; lower = more stable), with
# per-run noise stability_sd; gates: the heads' gate values; missing: runs that never finished.
STAB_NOISE = 1.0  # SD of epochs to the common target between runs (epochs)
SCENARIOS = {
    "all equal": {"effects": {"F2": 0.0, "F3": 0.0}},
    "all equal, fixed design (no spending, no correction: old)": {
        "effects": {"F2": 0.0, "F3": 0.0}, "rules": Decision(alpha_spending="none", correction="none")},
    "F2 10% better": {"effects": {"F2": -0.10, "F3": 0.0}},
    "F2 5% better": {"effects": {"F2": -0.05, "F3": 0.0}},
    "F2 1.5% worse (within tolerance), equal stability": {"effects": {"F2": 0.015, "F3": 0.0}},
    "F2 10% better but 3 epochs slower": {"effects": {"F2": -0.10, "F3": 0.0}, "stability": {"F2": {"epochs_to_target": 3.0}},
                                          "stability_sd": STAB_NOISE},
    "head to head, F3 seed 1 missing: F3 -3.7%, F2 = F3 + 2.8%": {"effects": {"F2": -0.0103, "F3": -0.037},
                                                                   "missing": (("F3", 0),)},
    "F2 equal, truly 2 epochs faster (a real stability gain)": {"effects": {"F2": 0.0, "F3": 0.0},
                                                               "stability": {"F2": {"epochs_to_target": -2.0}}, "stability_sd": STAB_NOISE},
    "F2 equal, stability differs by noise only": {"effects": {"F2": 0.0, "F3": 0.0}, "stability_sd": STAB_NOISE},
    "F3 equal, 2 epochs faster, constant classifier (bacc 0.5)": {
        "effects": {"F2": 0.0, "F3": 0.0}, "stability": {"F3": {"epochs_to_target": -2.0}}, "stability_sd": STAB_NOISE,
        "gates": {"F3": {"val_cls_bacc": 0.5}}},
    "F2 and F3 10% worse": {"effects": {"F2": 0.10, "F3": 0.10}},
}


if __name__ == "__main__":
    main()
