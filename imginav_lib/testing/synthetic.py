"""Synthetic phase folders with planted effects, and how often `decide` gets a planted effect right.

For tests, the benchmark and trying the report without training; no library module imports this.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from imginav_lib import heads as H
from imginav_lib.analysis.decision import decide
from imginav_lib.files import atomic_write, atomic_write_text
from imginav_lib.palette import CLASS_NAMES, mask_to_rgb
from imginav_lib.config.params import load_params, params_hash
from imginav_lib.config.schema import Decision


def write_synthetic_phase(
    root: str | Path,
    phase: str = "synthetic",
    experiments: dict[str, dict] | None = None,
    seeds: tuple[int, ...] = (1, 2, 3),
    epochs: int = 10,
    effects: dict[str, dict] | None = None,
    states: dict[tuple[str, int], str] | None = None,
    noise: float = 0.03,
    image_size: int = 32,
    num_samples: int = 4,
    sample_interval: int = 2,
    steps_per_epoch: int = 20,
    rng_seed: int = 0,
    notes: dict[str, str] | None = None,
    environments: dict[str, dict] | None = None,
    curves: dict[tuple[str, int], list[float]] | None = None,
    test_split: bool | dict[tuple[str, int], float] = False,
    step_mse: dict[tuple[str, int], list[float]] | None = None,
    cls_bacc: dict[str, float] | None = None,
    decision: dict | None = None,
    lifelike_samples: bool = False,
) -> Path:
    """Write `<root>/<phase>/` with every contract file for experiments x seeds; return that folder.

    experiments: name -> loss weights {"seg": w, "cls": w} (default: F1/F2/F3 of Phase 1.4).
    effects: name -> {"mse": factor on the true val MSE (1.1 = 10% worse), "seg_miou", "cls_acc", "spikes"
    (per run), "wobble" (late val noise, fraction), "probe_miou" (latent linear probe), "cls_chance" (True: the
    classification head stays at chance, CE ln 2 on 50/50 classes, as in the demo)}. noise: seed-to-seed SD of the val MSE (fraction).
    states: (name, seed) -> failed / diverged / running / preempted / missing (listed, no folder).
    notes: name -> the experiment's note in params.yaml.
    environments: name -> fields of run.json's environment that differ from the default (one GPU model, fp16, the
    same torch/CUDA/cuDNN for every run), e.g. {"F3_rgb_seg_cls": {"gpu": "NVIDIA L40S"}}.
    curves: (name, seed) -> its val MSE per epoch, written as it is (instead of the planted curve; `epochs` values).
    test_split: True: eval.json gets a "test" section (issue 21's held-out split: the val keys with test_ instead of
    val_; test MSE = the best val MSE x 1.05); a mapping (name, seed) -> test MSE sets it per run.
    step_mse: (name, seed) -> steps.csv's `mse` column per logged step (the `loss` column stays the planted one).
    cls_bacc: name -> the classification head's balanced accuracy (default: its accuracy); val_cls_majority is 0.85.
    decision: the params' decision section.
    lifelike_samples: samples as a trained model's look (furniture scaled to the image, reconstructions blurred at
    the edges with a little noise, segmentation wrong along boundaries) instead of noise: what the report's size
    depends on (bench/report_bench.py --size). The planted numbers are drawn as without it.
    """
    rng = np.random.default_rng(rng_seed)
    extra = np.random.default_rng(rng_seed + 1)  # boundary F and latent draws: rng's stream (the planted MSEs) stays as it was
    experiments = experiments or {"F1_rgb_only": {}, "F2_rgb_seg": {"seg": 0.05}, "F3_rgb_seg_cls": {"seg": 0.05, "cls": 0.01}}
    effects, states = effects or {}, states or {}
    out = Path(root) / phase
    out.mkdir(parents=True, exist_ok=True)
    params = {
        "phase": phase, "description": "synthetic phase with planted effects", "runs_root": str(Path(root).resolve()),
        "data": {"manifest": "data/manifest.csv", "image_size": image_size, "num_samples": num_samples},
        "architecture": {"latent_channels": 4, "base_channels": 8, "downsampling_steps": 2},
        "training": {"epochs": epochs, "sample_interval": sample_interval, "log_every": 1},
        "seeds": list(seeds),
        "experiments": {e: {"note": (notes or {}).get(e, f"synthetic {e}"), **({"loss": w} if w else {})} for e, w in experiments.items()},
        **({"decision": decision} if decision else {}),
    }
    params_path = out / "params.yaml"
    atomic_write_text(params_path, yaml.safe_dump(params, sort_keys=False))
    phase_cfg = load_params(params_path, check_files=False)
    index = {"phase": phase, "params_file": str(params_path), "params_hash": params_hash(params_path), "runs": []}

    # The fixed validation images: rooms of wall + background with furniture rectangles.
    masks = np.full((num_samples, image_size, image_size), 9, np.uint8)
    for m in masks:
        m[[0, -1], :] = m[:, [0, -1]] = 8
        for _ in range(4):
            y, x = rng.integers(2, image_size - 8, 2)
            m[y : y + rng.integers(3, 8), x : x + rng.integers(3, 8)] = rng.integers(0, 8)
    if lifelike_samples:
        masks = _lifelike_masks(num_samples, image_size, np.random.default_rng(rng_seed + 2))
    inputs = mask_to_rgb(masks).transpose(0, 3, 1, 2)  # (N, 3, H, W)
    seed_effect = {s: rng.normal(0, noise) for s in seeds}  # shared by experiments: same init and data order
    k = len(CLASS_NAMES)
    for e, weights in experiments.items():
        eff = effects.get(e, {})
        heads = H.trained(weights)
        for s in seeds:
            d = out / e / f"seed{s}"
            index["runs"].append({"experiment": e, "seed": s, "run_dir": str(d)})
            state = states.get((e, s), "done")
            if state == "missing":
                continue
            d.mkdir(parents=True, exist_ok=True)
            last = epochs if state == "done" else max(1, epochs // 2)
            true_final = 0.004 * eff.get("mse", 1.0) * math.exp(seed_effect[s] + rng.normal(0, noise / 2))
            ep = np.arange(1, last + 1)
            wob = rng.normal(0, eff.get("wobble", 0.005), last)
            val = true_final * (1 + 4 * np.exp(-ep / max(1, epochs / 5))) * (1 + wob)
            if (e, s) in (curves or {}):
                val = np.asarray(curves[(e, s)], dtype=float)[:last]
            if state == "diverged":
                val[-1] = math.nan
            miou, acc = eff.get("seg_miou", 0.7), eff.get("cls_acc", 0.85)
            rows = []
            rows = _metric_rows(val, epochs, heads, weights, miou, acc, s, rng, (cls_bacc or {}).get(e), eff.get("cls_chance", False))
            metrics = pd.DataFrame(rows)
            atomic_write_text(d / "metrics.csv", metrics.to_csv(index=False))
            _write_steps(d, val, steps_per_epoch, int(eff.get("spikes", 0)), rng, (step_mse or {}).get((e, s)))
            best = int(np.nanargmin(val)) if np.isfinite(val).any() else 0
            cfg = {"phase": phase, "experiment": e, "seed": s, "run_dir": str(d), "params_file": str(params_path),
                   "params_hash": index["params_hash"], "data": phase_cfg.data.model_dump(),
                   "architecture": phase_cfg.architecture.model_dump(), "training": phase_cfg.training.model_dump(),
                   "loss": {**phase_cfg.loss.model_dump(), **weights}}
            atomic_write_text(d / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))
            info = {"phase": phase, "experiment": e, "seed": s, "status": state, "started": "2026-01-01T10:00:00+00:00",
                    "ended": None if state in ("running", "preempted") else "2026-01-01T10:20:00+00:00",
                    "updated": "2026-01-01T10:20:00+00:00", "git_commit": "synthetic0000", "host": "synthetic-host",
                    "device": "cpu (2 threads)", "error": {"failed": "RuntimeError: synthetic failure", "diverged":
                    f"non-finite loss at epoch {last}"}.get(state), "epoch": last, "epochs": epochs,
                    "best_val_mse": float(val[best]), "best_epoch": best + 1, "epoch_time_s": 2.0, "stopped_early": False,
                    "job_id": None, "skipped_images": 0, "attempts": 1}
            env = {**SYNTHETIC_ENVIRONMENT, **(environments or {}).get(e, {})}
            info.update(device=env["gpu"] or "cpu", precision=env["precision"], environment=env,
                        environments=[{"attempt": 1, "started": info["started"], **env}])
            atomic_write_text(d / "run.json", json.dumps(info, indent=1))
            if state == "done":
                cm = np.diag(np.full(k, 100)) + rng.integers(0, 10, (k, k))
                bf = lambda x: np.clip(x + extra.normal(0, 0.05, k), 0, 1).tolist()  # noqa: E731
                std = 0.8 + extra.normal(0, 0.05)
                latent = {"channel_mean": extra.normal(0, 0.1, 4).tolist(), "channel_std": [std] * 4, "mean": 0.0, "std": std,
                          "scaling_factor": 1 / std, "shape": [4, image_size // 4, image_size // 4], "seconds": 0.5,
                          "probe": {"miou": eff.get("probe_miou", 0.5 if "seg" in heads else 0.4) + extra.normal(0, 0.02)}}
                val_section = metrics.iloc[best].drop("epoch").to_dict()
                test = None
                if test_split is not False:
                    test = {"test_" + k[4:]: v for k, v in val_section.items() if k.startswith("val_")}
                    test["test_mse"] = test_split.get((e, s), math.nan) if isinstance(test_split, dict) else val_section["val_mse"] * 1.05
                atomic_write_text(d / "eval.json", json.dumps({"epoch": best + 1, "val": val_section, **({"test": test} if test else {}),
                                                         "seg_confusion": cm.tolist() if "seg" in heads else None,
                                                         "sem_confusion": cm.tolist(), "latent": latent,
                                                         "boundary_f": {"tolerance_px": 1, "sem": bf(0.7),
                                                                        "seg": bf(0.8) if "seg" in heads else None}}))
            (d / "samples").mkdir(exist_ok=True)
            _write_samples(d, val, true_final, sample_interval, inputs, masks, miou, heads, rng,
                           np.random.default_rng([rng_seed, s, len(index["runs"])]) if lifelike_samples else None)
    atomic_write_text(out / "index.json", json.dumps(index, indent=1))
    return out


# The environment every synthetic run records unless `environments` says otherwise (run.json, train/device.py).
SYNTHETIC_ENVIRONMENT = {"device": "cuda", "gpu": "Tesla V100-SXM2-32GB", "capability": "7.0", "precision": "float16",
                         "torch": "2.13.0+cu126", "cuda": "12.6", "cudnn": "91002", "deterministic": False}


def _metric_rows(val: np.ndarray, epochs: int, heads: tuple[str, ...], weights: dict, miou: float, acc: float, s: int,
                 rng: np.random.Generator, bacc: float | None = None, cls_chance: bool = False) -> list[dict]:
    """metrics.csv rows of one run: val is its val MSE per epoch run; the heads learn towards miou / acc (the
    classification head learns nothing with cls_chance: 50/50 classes, CE just above ln 2, balanced accuracy 0.5)."""
    ep = np.arange(1, len(val) + 1)
    rows = []
    for i, epoch in enumerate(ep):
        prog = 1 - math.exp(-epoch / max(1, epochs / 4))
        r = {"epoch": epoch, "lr": 1e-4, "epoch_time_s": 2.0 + rng.normal(0, 0.1), "train_images_per_s": 100.0,
             "train_mse": val[i] * 0.95, "train_kl": math.nan, "val_mse": val[i], "val_kl": math.nan,
             "val_psnr": 10 * math.log10(4 / val[i]) if np.isfinite(val[i]) else math.nan,
             "val_ssim": 1 - 20 * val[i] if np.isfinite(val[i]) else math.nan,
             "val_sem_acc": 0.97 * prog, "val_sem_miou": 0.8 * prog, "val_sem_bf": 0.7 * prog,
             "val_seg_bf": 0.9 * miou * prog if "seg" in heads else math.nan}
        for h, ce, mval in (("seg", 2.3 * (1 - prog) + 0.2, miou * prog), ("cls", 0.69 * (1 - prog) + 0.3, acc * prog)):
            on = h in heads
            r[f"train_{h}_ce"] = ce if on else math.nan
            r[f"val_{h}_ce"] = ce * 1.05 if on else math.nan
            r[f"train_{h}_acc"] = min(1, mval + 0.1) if on else math.nan
            r[f"val_{h}_acc"] = (min(1, mval + 0.15) if h == "seg" else mval) if on else math.nan
        r["val_seg_miou"] = r.pop("val_seg_acc_tmp", miou * prog) if "seg" in heads else math.nan
        r["val_cls_bacc"] = (acc if bacc is None else bacc) * prog if "cls" in heads else math.nan
        r["val_cls_majority"] = 0.85 if "cls" in heads else math.nan
        if cls_chance and "cls" in heads:
            d = 0.002 * (s % 5)  # a little per-seed spread, so that the statistics across seeds have a variance
            r.update(train_cls_ce=0.70 + d, val_cls_ce=0.70 + d, train_cls_acc=0.5 - d, val_cls_acc=0.5 - d, val_cls_bacc=0.5 - d,
                     val_cls_majority=0.5)
        r["train_loss"] = r["train_mse"] + sum(weights.get(h, 0) * r[f"train_{h}_ce"] for h in heads)
        r["val_loss"] = r["val_mse"] + sum(weights.get(h, 0) * r[f"val_{h}_ce"] for h in heads)
        for j, c in enumerate(CLASS_NAMES):
            r[f"val_seg_iou_{c}"] = float(np.clip(r["val_seg_miou"] + 0.15 * math.sin(j + s), 0, 1)) if "seg" in heads else math.nan
            r[f"val_sem_iou_{c}"] = float(np.clip(r["val_sem_miou"] + 0.15 * math.cos(j + s), 0, 1))
        rows.append(r)
    return rows


def _write_steps(d: Path, val: np.ndarray, steps_per_epoch: int, n_spikes: int, rng: np.random.Generator,
                 mse: list[float] | None = None) -> None:
    """steps.csv: a noisy loss that follows the val MSE, with n_spikes steps 10x higher; `mse` replaces its MSE column."""
    last = len(val)
    n_steps = last * steps_per_epoch
    base = np.repeat(val * 1.2, steps_per_epoch) * np.exp(rng.normal(0, 0.1, n_steps))
    spikes = rng.choice(np.arange(25, n_steps), size=min(n_spikes, max(0, n_steps - 25)), replace=False)
    base[spikes] *= 10
    steps = pd.DataFrame({"global_step": np.arange(1, n_steps + 1), "epoch": np.repeat(np.arange(1, last + 1), steps_per_epoch),
                  "step": np.tile(np.arange(steps_per_epoch), last), "loss": base,
                  "mse": base / 1.2 if mse is None else np.asarray(mse, dtype=float)[:n_steps],
                  "seg_ce": math.nan, "cls_ce": math.nan, "kl": math.nan, "lr": 1e-4})
    atomic_write_text(d / "steps.csv", steps.to_csv(index=False))


def _lifelike_masks(n: int, size: int, g: np.random.Generator) -> np.ndarray:
    """Rooms as the renders show them: a wall outline and interior walls, furniture of 4-15% of the image's side."""
    masks = np.full((n, size, size), 9, np.uint8)
    w = max(1, size // 64)
    for m in masks:
        m[:w], m[-w:], m[:, :w], m[:, -w:] = 8, 8, 8, 8
        c = int(g.integers(size // 3, 2 * size // 3))
        m[:, c : c + w] = 8
        for _ in range(int(g.integers(6, 14))):
            h, v = (int(x) for x in g.integers(size // 25, size // 7, 2))
            y, x = (int(t) for t in g.integers(w + 1, size - w - max(h, v) - 1, 2))
            m[y : y + h, x : x + v] = g.integers(0, 8)
    return masks


def _lifelike(inputs: np.ndarray, masks: np.ndarray, amp: float, miou: float, g: np.random.Generator) -> tuple:
    """A reconstruction blurred in proportion to `amp` plus a little noise; a segmentation off by a few pixels."""
    from PIL import Image, ImageFilter

    radius = max(0.5, amp / 12)
    recon = np.stack([np.asarray(Image.fromarray(x.transpose(1, 2, 0)).filter(ImageFilter.GaussianBlur(radius))).transpose(2, 0, 1)
                      for x in inputs]).astype(float)  # fmt: skip
    recon = np.clip(recon + g.normal(0, 2 + amp / 20, inputs.shape), 0, 255).astype(np.uint8)
    shift = max(1, round(radius * (1 - miou) * 2))
    seg = np.roll(masks, (shift, -shift), axis=(1, 2))
    return recon, seg


def _write_samples(d: Path, val: np.ndarray, true_final: float, sample_interval: int, inputs: np.ndarray, masks: np.ndarray,
                   miou: float, heads: tuple[str, ...], rng: np.random.Generator, lifelike: np.random.Generator | None = None) -> None:
    """samples/epoch_XXX.npz and .png: reconstructions whose noise follows the val MSE, seg predictions towards miou
    (with `lifelike`, a generator: blurred reconstructions and boundary errors instead, _lifelike)."""
    from PIL import Image

    last, num_samples, k = len(val), len(masks), len(CLASS_NAMES)
    for epoch in sorted({*range(sample_interval, last + 1, sample_interval), last}):
        amp = 120 * math.sqrt(val[epoch - 1] / true_final) / 3 if np.isfinite(val[epoch - 1]) else 120
        if lifelike is not None:
            recon, seg_pred = _lifelike(inputs, masks, amp, miou * epoch / last, lifelike)
        else:
            recon = np.clip(inputs + rng.normal(0, amp, inputs.shape), 0, 255).astype(np.uint8)
            flip = rng.random(masks.shape) > miou * (epoch / last)
            seg_pred = np.where(flip, rng.integers(0, k, masks.shape), masks).astype(np.uint8)
        arrays = {"index": np.arange(num_samples, dtype=np.int64), "input": inputs, "recon": recon, "mask": masks,
                  "recon_classes": masks, "error": np.abs(recon.astype(int) - inputs).mean(1).astype(np.uint8),
                  "mse": (((recon.astype(float) - inputs) / 127.5) ** 2).mean(axis=(1, 2, 3)).astype(np.float32)}
        if "seg" in heads:
            arrays["seg_pred"] = seg_pred
        atomic_write(d / "samples" / f"epoch_{epoch:03d}.npz", lambda f: np.savez_compressed(f, **arrays))
        grid = np.concatenate([np.concatenate([inputs[i].transpose(1, 2, 0), recon[i].transpose(1, 2, 0)], 1) for i in range(num_samples)], 0)
        atomic_write(d / "samples" / f"epoch_{epoch:03d}.png", lambda f: Image.fromarray(grid).save(f, format="PNG"))


SIM_HEADS = {"F1": (), "F2": ("seg",), "F3": ("seg", "cls")}  # the Phase 1.4 experiments, good heads
SIM_STABILITY = {"spikes": 0.0, "late_wobble": 0.01, "epochs_to_target": 5.0}  # every experiment's, unless shifted
SIM_GATES = {"val_seg_miou": 0.7, "val_cls_bacc": 0.9}


def _sim_table(effects: dict[str, float], seed_effect: np.ndarray, run_noise: np.ndarray, stability: dict | None = None,
               stability_noise: np.ndarray | None = None, gates: dict | None = None, missing=()) -> pd.DataFrame:
    """Per-run rows of F1 (val MSE 0.004) and the experiments in `effects` (x (1 + effect)).

    stability: experiment -> {column: shift} added to SIM_STABILITY; stability_noise: (experiments, seeds, 3) added
    per run (the columns of SIM_STABILITY in order); gates: experiment -> {gate column: value}; missing: (experiment,
    seed) pairs left out (a run that did not finish)."""
    rows = []
    for i, (e, f) in enumerate({"F1": 0.0, **effects}.items()):
        for s in range(len(seed_effect)):
            if (e, s) in missing:
                continue
            stab = {c: v + (stability or {}).get(e, {}).get(c, 0.0) + (stability_noise[i, s, j] if stability_noise is not None else 0.0)
                    for j, (c, v) in enumerate(SIM_STABILITY.items())}
            g = {c: ((gates or {}).get(e, {}).get(c, v) if h in SIM_HEADS[e] else math.nan)
                 for h, (c, v) in zip(("seg", "cls"), SIM_GATES.items())}
            rows.append({"experiment": e, "seed": s, "best_val_mse": 0.004 * (1 + f) * math.exp(seed_effect[s] + run_noise[i, s]),
                         **g, **stab})
    return pd.DataFrame(rows)


def simulate_decisions(effects: float | dict[str, float], n_seeds: int = 3, seed_sd: float = 0.03, run_sd: float = 0.015,
                       draws: int = 400, rules: Decision | None = None, rng_seed: int = 0, stability: dict | None = None,
                       stability_sd: float = 0.0, gates: dict | None = None, missing=(), add_seeds: bool = False) -> dict:
    """How often `decide` gets it right: draw phases of a baseline F1 and the experiments in `effects` (name ->
    true relative change of val MSE against F1; a float is F2's), with seed noise (seed_sd: shared by the
    experiments of a seed, as the same init and data order; run_sd: per run).

    stability: experiment -> {stability column: true shift}; stability_sd: per-run noise of every stability number
    (0: identical numbers); gates: experiment -> {gate column: value} (default good heads); missing: (experiment,
    seed index) runs that never finished. add_seeds: a researcher who, while the verdict is provisional, adds the
    seeds it asks for (at least one more, up to the next planned look) and looks again, up to the last look
    (decision.looks); otherwise one look at n_seeds.

    The true winner is what `decide` picks on the noise-free values. Returns the share of draws per winner
    ("winner"), per F2 call ("call"), "rates": the true winner found, a false "hurts" (a hurts call for an
    experiment that does not truly hurt), a "decided" wrong winner, a decided non-baseline winner, and decided at
    all; "mean_seeds": the seeds per experiment at the last look (mean over draws); plus "true_winner".
    """
    effects = {"F2": effects} if isinstance(effects, (int, float)) else dict(effects)
    rng = np.random.default_rng(rng_seed)
    rules = rules or Decision()
    exps = ["F1", *effects]
    heads = {e: SIM_HEADS[e] for e in exps}
    truth = decide(_sim_table(effects, np.zeros(2), np.zeros((len(exps), 2)), stability, None, gates), exps, "F1", heads, rules)
    winners, calls = {}, {}
    rates = {"true winner": 0.0, "false hurts": 0.0, "decided wrong": 0.0, "decided non-baseline": 0.0, "decided": 0.0}
    seeds_used = 0.0
    top = max(rules.max_seeds, n_seeds) if add_seeds else n_seeds
    for _ in range(draws):
        seed_effect, run_noise = rng.normal(0, seed_sd, top), rng.normal(0, run_sd, (len(exps), top))
        stab_noise = rng.normal(0, stability_sd, (len(exps), top, len(SIM_STABILITY))) if stability_sd else None
        n = n_seeds
        while True:
            table = _sim_table(effects, seed_effect[:n], run_noise[:, :n], stability,
                               stab_noise[:, :n] if stab_noise is not None else None, gates, missing)
            v = decide(table, exps, "F1", heads, rules)
            if not add_seeds or v.status == "decided" or n >= top:
                break
            n = min(top, max(n + 1, v.seeds_needed or 0))
            if rules.alpha_spending != "none":  # the researcher adds seeds up to a planned look
                n = min((lk for lk in rules.looks if lk >= n), default=top)
        seeds_used += n / draws
        winners[v.winner] = winners.get(v.winner, 0) + 1 / draws
        if "F2" in v.calls:
            calls[v.calls["F2"]] = calls.get(v.calls["F2"], 0) + 1 / draws
        rates["true winner"] += (v.winner == truth.winner) / draws
        rates["false hurts"] += any(c == "hurts" and truth.calls[e] != "hurts" for e, c in v.calls.items()) / draws
        rates["decided wrong"] += (v.status == "decided" and v.winner != truth.winner) / draws
        rates["decided non-baseline"] += (v.status == "decided" and v.winner != "F1") / draws
        rates["decided"] += (v.status == "decided") / draws
    return {"winner": winners, "call": calls, "rates": rates, "true_winner": truth.winner, "mean_seeds": seeds_used}
