"""GPU check, ready to run on a lent GPU node in at most 5 minutes: what `precision: auto` resolves to, images/s at
512 x 512 batch 16 for fp32 / fp16 / bf16, the trainer against the bare model, the cost of deterministic mode and
the peak memory, for the Phase 1.4 architecture with every head (F3, the most work).

    python bench/gpu_check.py                 # on a GPU: 512 px, batch 16 (the README's table)
    python bench/gpu_check.py --tiny          # anywhere (CPU): 32 px, batch 4, 2 steps: checks the script works

Prints the environment (GPU, compute capability, torch/CUDA/cuDNN), then one row per measurement and a markdown
table. A precision the GPU has no units for (bf16 below compute capability 8.0) is listed as "not native", not
timed. Measurements stop at --budget-s; what was left out says so.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from imginav_lib.config.schema import Architecture, Data, Loss, RunConfig, Training
from imginav_lib.data.cache import prepare_cache
from imginav_lib.data.dataset import RunData, load_cache, read_manifest, split_indices, to_model_input
from imginav_lib.demo.layouts import make_layouts
from imginav_lib.model.autoencoder import LayoutAutoencoder, heads_for
from imginav_lib.model.losses import total_loss
from imginav_lib.train.device import (BF16_CAPABILITY, UnsupportedGPU, check_gpu_kernels, deterministic_mode, environment,
                                      precision, resolve_precision)  # fmt: skip
from imginav_lib.train.trainer import StopFlag, TrainState, _Hooks, train_one_epoch

LOSS = Loss(mse=1.0, seg=0.05, cls=0.01)  # F3: every head


def peak_memory_mib(device: torch.device) -> float:
    """Peak GPU memory allocated since the last reset; on the CPU the process's peak resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="32 px, batch 4, 2 steps, small model: a quick run anywhere")
    ap.add_argument("--size", type=int, default=None, help="pixels (default 512; --tiny 32)")
    ap.add_argument("--batch", type=int, default=None, help="images per step (default 16; --tiny 4)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per measurement (default 10; --tiny 2)")
    ap.add_argument("--reps", type=int, default=None, help="repetitions, the median is shown (default 3; --tiny 1)")
    ap.add_argument("--budget-s", type=float, default=270.0, help="stop measuring after this many seconds")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    a = ap.parse_args(argv)
    size, batch = a.size or (32 if a.tiny else 512), a.batch or (4 if a.tiny else 16)
    steps, reps = a.steps or (2 if a.tiny else 10), a.reps or (1 if a.tiny else 3)
    t_start = time.perf_counter()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        check_gpu_kernels()
        kernels = "yes" if device.type == "cuda" else "n/a (CPU)"
    except UnsupportedGPU as e:
        print(f"imginav gpu_check: {e}", file=sys.stderr)
        return 2
    cap = tuple(torch.cuda.get_device_capability(device)) if device.type == "cuda" else None
    auto = resolve_precision("auto", device, cap)
    env = environment(device, auto, False)
    print(f"environment: {json.dumps(env)}; torch has kernels for this GPU: {kernels}")
    print(f"precision auto resolves to: {str(auto).removeprefix('torch.')}", flush=True)

    arch = (Architecture(latent_channels=4, base_channels=8, downsampling_steps=2) if a.tiny
            else Architecture(latent_channels=8, base_channels=32, downsampling_steps=4))  # phase1_4.yaml's
    tmp = Path(tempfile.mkdtemp(prefix="imginav-gpu-check-"))
    n = batch * steps
    manifest = make_layouts(tmp / "layouts", n=n + batch, size=size, seed=0)
    data_cfg = Data(manifest=str(manifest), image_size=size, cache_dir=str(tmp / "cache"), filters={}, group_by=None)
    layouts = load_cache(prepare_cache(read_manifest(manifest, {}), size, data_cfg.cache_dir, progress=False))
    idx = split_indices(len(layouts), 0.01, 0.0, 0).train[:n]
    data = RunData(layouts, idx, idx[:1], idx[:1])
    x = to_model_input(layouts.images[idx[:batch]].to(device))
    masks, labels = layouts.masks[idx[:batch]].to(device).long(), layouts.labels[idx[:batch]].to(device).long()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def make(dtype):
        torch.manual_seed(0)
        model = LayoutAutoencoder(arch).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
        scaler = torch.amp.GradScaler(device.type, enabled=(dtype == torch.float16))
        return model, opt, scaler

    def bare(dtype, model, opt, scaler) -> float:
        heads = heads_for(LOSS)
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            with precision(device, dtype):
                out = model(x, heads=heads)
            loss, _ = total_loss(out, x, masks, labels, mse_weight=LOSS.mse, seg_weight=LOSS.seg, cls_weight=LOSS.cls)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        sync()
        return steps * batch / (time.perf_counter() - t0)

    def trainer(dtype, model, opt, scaler) -> float:
        training = Training(batch_size=batch, log_every=10, heartbeat_s=1e9)
        cfg = RunConfig(phase="gpu_check", experiment="F3", seed=0, run_dir=str(tmp / "run"), params_file="-",
                        params_hash="-", data=data_cfg, architecture=arch, training=training, loss=LOSS)  # fmt: skip
        state = TrainState()
        sync()
        t0 = time.perf_counter()
        train_one_epoch(model, opt, scaler, data, cfg=cfg, state=state, device=device, dtype=dtype,
                        stop=StopFlag(tmp / "no-stop"), hooks=_Hooks(cfg, state, opt, heartbeat=lambda: None))  # fmt: skip
        sync()
        return len(data.train_idx) / (time.perf_counter() - t0)

    names = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
    plan = [(names[d], d, kind, False) for d in (torch.float32, torch.float16, torch.bfloat16) for kind in ("bare", "trainer")]
    plan += [(names[auto], auto, "bare", True)]  # deterministic mode, at the precision auto picks
    rows = []
    for name, dtype, kind, det in plan:
        row = {"precision": name, "kind": kind, "deterministic": det, "images_per_s": None, "peak_mib": None, "note": ""}
        rows.append(row)
        if device.type == "cuda" and dtype == torch.bfloat16 and cap < BF16_CAPABILITY:
            row["note"] = f"not native (compute capability {cap[0]}.{cap[1]} < 8.0): not timed"
            continue
        if time.perf_counter() - t_start > a.budget_s:
            row["note"] = f"not measured: past the {a.budget_s:.0f} s budget"
            continue
        try:
            with deterministic_mode(det):
                setup = make(dtype)
                (bare if kind == "bare" else trainer)(dtype, *setup)  # warm-up: kernels, allocator, cache pages
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                speeds = [(bare if kind == "bare" else trainer)(dtype, *setup) for _ in range(reps)]
            row["images_per_s"] = statistics.median(speeds)
            row["peak_mib"] = peak_memory_mib(device)
        except RuntimeError as e:  # e.g. an op without a deterministic implementation, or out of memory
            row["note"] = f"raised {type(e).__name__}: {str(e).splitlines()[0][:120]}"
        print(f"{name} {kind}{' deterministic' if det else ''}: "
              + (f"{row['images_per_s']:.1f} images/s, peak {row['peak_mib']:.0f} MiB" if row["images_per_s"] else row["note"]), flush=True)

    def find(p, k, d=False):
        return next((r for r in rows if (r["precision"], r["kind"], r["deterministic"]) == (p, k, d)), None)

    what = f"{env['gpu'] or 'CPU'}, {size}x{size}, batch {batch}, F3 (every head)"
    print(f"\n| precision | bare model img/s | trainer img/s | trainer/bare | peak memory (MiB) | note |  ({what})")
    print("|---|---|---|---|---|---|")
    for p in ("fp32", "fp16", "bf16"):
        b, t = find(p, "bare"), find(p, "trainer")
        ratio = f"{t['images_per_s'] / b['images_per_s']:.0%}" if b["images_per_s"] and t["images_per_s"] else "n/a"
        fmt = lambda r: f"{r['images_per_s']:.1f}" if r["images_per_s"] else "n/a"  # noqa: E731
        peak = max([r["peak_mib"] for r in (b, t) if r["peak_mib"]], default=None)
        print(f"| {p}{' (auto)' if p == names[auto] else ''} | {fmt(b)} | {fmt(t)} | {ratio} | "
              f"{f'{peak:.0f}' if peak else 'n/a'} | {b['note'] or t['note']} |")
    d, plain = find(names[auto], "bare", True), find(names[auto], "bare")
    cost = f"{d['images_per_s'] / plain['images_per_s']:.0%} of the speed" if d["images_per_s"] and plain["images_per_s"] else d["note"] or "n/a"
    print(f"\ndeterministic mode ({names[auto]}, bare model): {cost}"
          + (f", {d['images_per_s']:.1f} images/s" if d["images_per_s"] else ""))
    print(f"total {time.perf_counter() - t_start:.0f} s")
    if a.json:
        a.json.write_text(json.dumps({"environment": env, "auto": names[auto], "size": size, "batch": batch, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
