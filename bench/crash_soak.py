"""Crash soak: kill -9 a training process at random points over a whole run, resume after each kill, and compare
the final run folder with an uninterrupted run's.

    python bench/crash_soak.py --kills 20            # make soak; tests/test_crash_soak.py runs a smaller count
    python bench/crash_soak.py --kills 20 --seed 7   # another draw of kill points (the seed is printed)

Kill points are events of an uninterrupted run of the same config, drawn at random, phases in turns: mid-step
(after the forward pass, before the optimizer step), a checkpoint, metrics.csv, steps.csv, samples or run.json
write (the temp file half or wholly written, not yet renamed), or the final evaluation (a validation batch or
eval.json). The child process runs `fit` with probes patched in here (test-only: the library has no hooks); at
the chosen event it prints where it is and waits, and this process kills it with SIGKILL.

After each kill every file the run folder shows is whole (checkpoints and samples load, CSVs and JSON parse, no
repeated epoch or step rows). At the end: metrics.csv and steps.csv (columns ending in `_s`, timings, excluded), eval.json and best.pt's weights
equal the uninterrupted run's exactly, and the folder holds the same files (no temp file left, none duplicated).
Prints kills, resumes, mismatches and kills per phase; exits 1 on any mismatch.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ARMED = "SOAK-ARMED"  # the child's line: it waits at the kill point
PHASES = ("mid-step", "checkpoint", "metrics.csv", "steps.csv", "samples", "run.json", "final evaluation")
EXPERIMENT, SEED = "F3", 1  # every head trained: all metric columns and confusions are compared


# ---------------------------------------------------------------------------------------------------------
# The child: fit() with probes at the kill windows


def _child(params: str, target: list | None, trace: str | None) -> None:
    """Train (resuming) with probes at every kill window. An event is [phase, epoch, what]; the child waits at
    `target` for the parent's SIGKILL, or writes every event to `trace` (the uninterrupted run)."""
    from imginav_lib import files
    from imginav_lib.config import params as P
    from imginav_lib.train import trainer

    at = {"epoch": 0, "step": 0, "phase": "start-up"}  # where the run is (epoch 0: start-up, resume, final evaluation)
    events = []

    def event(phase: str, what: str, on_target=lambda where: "") -> None:
        """`on_target(where)` prepares the kill: tears the file being written; returns how, for the ARMED line."""
        e = [phase, at["epoch"], what]
        events.append(e)
        if target and e == target[:3]:
            print(f"{ARMED} {phase}: epoch {at['epoch']}, {what}{on_target(target[3])}", flush=True)
            time.sleep(600)
            os._exit(3)  # never reached: the parent kills first

    def path_phase(path: Path) -> str | None:
        if at["phase"] == "final":
            return "final evaluation" if path.name == "eval.json" else None
        if at["phase"] == "start-up":
            return None  # the resume's rewrites: not in an uninterrupted run's trace
        if path.parent.name in ("checkpoints", "samples"):
            return {"checkpoints": "checkpoint", "samples": "samples"}[path.parent.name]
        if path.name == "run.json":
            # heartbeats come every heartbeat_s; the one after the epoch's checkpoints comes in every run
            return "run.json" if at["phase"] == "epoch end" else None
        return path.name if path.name in ("metrics.csv", "steps.csv") else None

    atomic_path = files.atomic_path

    @contextlib.contextmanager
    def probed_atomic_path(path, executable=False):
        with atomic_path(path, executable) as tmp:
            yield tmp
            phase = path_phase(Path(path))
            if phase:

                def tear(where):
                    if where == "half":  # killed mid-write
                        os.truncate(tmp, os.path.getsize(tmp) // 2)
                    return f", temp file {'half' if where == 'half' else 'wholly'} written"

                event(phase, Path(path).name, tear)

    def probed_total_loss(*args, _orig=trainer.total_loss, **kwargs):
        out = _orig(*args, **kwargs)
        if at["phase"] == "train":
            at["step"] += 1
            event("mid-step", f"step {at['step']}", lambda where: ", after the forward pass")
        elif at["phase"] == "final":
            at["step"] += 1
            event("final evaluation", f"validation batch {at['step']}")
        return out

    def probed_train_one_epoch(*args, _orig=trainer.train_one_epoch, **kwargs):
        state = kwargs["state"]
        at.update(epoch=state.epoch + 1, step=state.step, phase="train")
        out = _orig(*args, **kwargs)
        at["phase"] = "epoch end"
        return out

    def probed_final_eval(*args, _orig=trainer._final_eval):
        at.update(epoch=0, step=0, phase="final")
        return _orig(*args)

    files.atomic_path = probed_atomic_path
    trainer.total_loss = probed_total_loss
    trainer.train_one_epoch = probed_train_one_epoch
    trainer._final_eval = probed_final_eval
    trainer.fit(P.resolve_run(params, EXPERIMENT, SEED), progress=False)
    if trace:
        Path(trace).write_text(json.dumps(events))


# ---------------------------------------------------------------------------------------------------------
# The parent: plan, kill, check


def write_params(root: Path, manifest: Path, epochs: int) -> Path:
    params = {
        "phase": "soak",
        "runs_root": str(root / "runs"),
        "data": {"manifest": str(manifest), "image_size": 32, "cache_dir": str(root / "cache"), "num_samples": 4},
        "architecture": {"latent_channels": 4, "base_channels": 8, "downsampling_steps": 2},
        # small intervals: every epoch writes samples, best/latest and (every 2nd) an epoch checkpoint
        "training": {"epochs": epochs, "batch_size": 4, "log_every": 3, "lr": 1e-3, "sample_interval": 1,
                     "checkpoint_interval": 2, "heartbeat_s": 0.05, "device": "cpu"},  # fmt: skip
        "seeds": [SEED],
        "experiments": {EXPERIMENT: {"loss": {"seg": 0.05, "cls": 0.01}}},
    }
    root.mkdir(parents=True, exist_ok=True)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def start_child(params: Path, target: list | None, timeout_s: float, trace: Path | None = None) -> tuple[int, str | None, str]:
    """Run the child; kill -9 it once it waits at `target`. (exit code, the ARMED line or None, its output)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}  # one thread: same sums in every process
    cmd = [sys.executable, __file__, "--child", str(params), "--target", json.dumps(target)]
    cmd += ["--trace", str(trace)] if trace else []
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    watchdog = threading.Timer(timeout_s, p.kill)
    watchdog.start()
    armed, out = None, []
    try:
        for line in p.stdout:
            out.append(line)
            if line.startswith(ARMED):
                armed = line[len(ARMED):].strip()
                p.send_signal(signal.SIGKILL)
                break
        p.stdout.close()
        p.wait()
    finally:
        watchdog.cancel()
    return p.returncode, armed, "".join(out)


def plan(kills: int, trace: list[list], rng: random.Random, phases: tuple[str, ...] = PHASES) -> list[list]:
    """`kills` events of the uninterrupted run's trace, in its order: phases in turns, each event drawn at random
    (distinct while the phase has enough), a temp file half or wholly written. The run resumes from a checkpoint
    at or before each kill, so it passes every later event again."""
    position = {tuple(e): k for k, e in enumerate(trace)}
    turns = [phases[k % len(phases)] for k in range(kills)]
    targets = []
    for phase in phases:
        pool = [e for e in trace if e[0] == phase]
        n = turns.count(phase)
        chosen = rng.sample(pool, n) if n <= len(pool) else pool + rng.choices(pool, k=n - len(pool))
        targets += [[*e, rng.choice(["half", "whole"])] for e in chosen]
    return sorted(targets, key=lambda t: position[tuple(t[:3])])


def torn_files(run: Path) -> list[str]:
    """Files a reader would find half-written or duplicated right after a kill (temp files aside)."""
    import numpy as np
    import pandas as pd
    import torch
    from PIL import Image

    bad = []
    for p in sorted(run.rglob("*")):
        if not p.is_file() or p.name.endswith(".tmp") or p.name == "run.lock":
            continue
        try:
            if p.suffix == ".pt":
                torch.load(p, map_location="cpu", weights_only=False)["model"]
            elif p.suffix == ".npz":
                dict(np.load(p))
            elif p.suffix == ".png":
                Image.open(p).load()
            elif p.suffix == ".json":
                json.loads(p.read_text())
            elif p.suffix == ".yaml":
                yaml.safe_load(p.read_text())
            elif p.name == "metrics.csv":
                epochs = list(pd.read_csv(p)["epoch"])
                if epochs != list(range(1, len(epochs) + 1)):
                    bad.append(f"{p.name}: epochs {epochs}")
            elif p.name == "steps.csv" and not pd.read_csv(p)["global_step"].is_unique:
                bad.append(f"{p.name}: repeated global_step")
        except Exception as e:  # noqa: BLE001 (any failure to read is what we look for)
            bad.append(f"{p.relative_to(run)}: {type(e).__name__}: {e}")
    return bad


def compare(ref: Path, run: Path) -> list[str]:
    """Differences between the uninterrupted and the killed-and-resumed run folder."""
    import pandas as pd
    import torch

    diffs = []
    listing = lambda d: sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())  # noqa: E731
    if listing(ref) != listing(run):
        diffs.append(f"files differ: only uninterrupted {sorted(set(listing(ref)) - set(listing(run)))}, "
                     f"only soaked {sorted(set(listing(run)) - set(listing(ref)))}")  # fmt: skip
    for name in ("metrics.csv", "steps.csv"):
        a, b = (pd.read_csv(d / name) for d in (ref, run))
        a, b = (x.drop(columns=[c for c in x.columns if c.endswith("_s")]) for x in (a, b))
        if not a.equals(b):
            diffs.append(f"{name} differs ({len(a)} vs {len(b)} rows)")
    evals = [json.loads((d / "eval.json").read_text()) for d in (ref, run)]
    for ev in evals:  # the latent statistics' wall-clock seconds differ between any two runs
        (ev.get("latent") or {}).pop("seconds", None)
    if evals[0] != evals[1]:
        diffs.append("eval.json differs")
    wa, wb = (torch.load(d / "checkpoints" / "best.pt", map_location="cpu", weights_only=False)["model"] for d in (ref, run))
    if wa.keys() != wb.keys() or not all(torch.equal(wa[k], wb[k]) for k in wa):
        diffs.append("best.pt weights differ")
    info = json.loads((run / "run.json").read_text())
    if info.get("status") != "done":
        diffs.append(f"run.json status {info.get('status')}")
    return diffs


def soak(kills: int, epochs: int, seed: int, root: Path, phases: tuple[str, ...] = PHASES, timeout_s: float = 300) -> dict:
    """Run the soak in `root`; returns its figures (kills, resumes, mismatches, per phase, problems)."""
    from imginav_lib.launch.runner import prepare_phase_data
    from imginav_lib.demo.layouts import make_layouts
    from imginav_lib.config.params import load_params, resolve_run

    rng = random.Random(seed)
    t0 = time.monotonic()
    manifest = make_layouts(root / "layouts", n=48, size=32, seed=0)
    params_ref, params = (write_params(root / name, manifest, epochs) for name in ("uninterrupted", "soaked"))
    for p in (params_ref, params):
        prepare_phase_data(load_params(p))
    code, _, out = start_child(params_ref, None, timeout_s, trace=root / "trace.json")
    if code != 0:
        raise RuntimeError(f"the uninterrupted run failed (exit {code}):\n{out[-3000:]}")
    ref, run = (Path(resolve_run(p, EXPERIMENT, SEED).run_dir) for p in (params_ref, params))
    trace = json.loads((root / "trace.json").read_text())
    targets = plan(kills, trace, rng, phases)

    figures = {"kills": 0, "resumes": 0, "mismatches": 0, "per_phase": dict.fromkeys(PHASES, 0), "problems": []}
    for target in targets:
        code, armed, out = start_child(params, target, timeout_s)
        if armed is None:  # finished (or failed) without reaching the target: nothing was killed
            figures["problems"].append(f"target {target} not reached (exit {code}): {out[-500:]}")
            break
        figures["kills"] += 1
        figures["per_phase"][target[0]] += 1
        print(f"kill {figures['kills']:2d}: {armed}", flush=True)
        for bad in torn_files(run):
            figures["problems"].append(f"after kill {figures['kills']} ({armed}): {bad}")
        figures["resumes"] += 1  # the next start resumes
    code, _, out = start_child(params, None, timeout_s)
    if code != 0:
        figures["problems"].append(f"the final resume failed (exit {code}):\n{out[-3000:]}")
    else:
        figures["problems"] += compare(ref, run)
        attempts = json.loads((run / "run.json").read_text()).get("attempts")
        if attempts != figures["kills"] + 1:
            figures["problems"].append(f"run.json attempts {attempts}, expected {figures['kills'] + 1}")
    figures["mismatches"] = len(figures["problems"])
    figures["epochs"] = json.loads((ref / "run.json").read_text())["epoch"]  # early stopping may end it sooner
    figures["seconds"] = round(time.monotonic() - t0, 1)
    return figures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--seed", type=int, default=None, help="of the kill points (default: random, printed)")
    ap.add_argument("--phases", nargs="+", choices=PHASES, default=PHASES, metavar="PHASE", help="only these windows")
    ap.add_argument("--keep", action="store_true", help="keep the run folders (printed)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--target", help=argparse.SUPPRESS)
    ap.add_argument("--trace", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        _child(a.child, json.loads(a.target), a.trace)
        return 0
    seed = a.seed if a.seed is not None else random.randrange(10**6)
    root = Path(tempfile.mkdtemp(prefix="imginav-soak-"))
    print(f"crash soak: {a.kills} kills over a {a.epochs}-epoch run, seed {seed}, in {root}", flush=True)
    f = soak(a.kills, a.epochs, seed, root, tuple(a.phases))
    print(f"\nkills {f['kills']}, resumes {f['resumes']}, mismatches {f['mismatches']} "
          f"({f['epochs']} epochs, {f['seconds']} s)")  # fmt: skip
    print("kills per phase: " + ", ".join(f"{p} {n}" for p, n in f["per_phase"].items()))
    for p in f["problems"]:
        print(f"  MISMATCH: {p}")
    if not a.keep:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    return 1 if f["mismatches"] or f["kills"] < a.kills else 0


if __name__ == "__main__":
    sys.exit(main())
