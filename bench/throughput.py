"""Training throughput: the trainer's steps (data from the cache, loss parts, metrics, step log) against the bare
model's forward + backward + optimizer step on tensors already in memory. Same architecture, batch, image size.

    python bench/throughput.py                      # CPU: 128 x 128, fp32
    python bench/throughput.py --size 512 --device cuda --precision bf16   # on a GPU

Prints images/s for F1 (MSE only) and F3 (MSE + seg + cls), bare and trainer, and the trainer/bare ratio; and
the trainer with batches read through the cache's memory map (the reader before os.preadv) beside the pread
reader, as a ratio. Measured in one process with the variants interleaved, so machine noise hits all alike.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch

from imginav_lib.data.dataset import load_cache, prepare_cache, read_manifest, split_indices, to_model_input
from imginav_lib.demo.layouts import make_layouts
from imginav_lib.model.losses import total_loss
from imginav_lib.model.autoencoder import LayoutAutoencoder, heads_for
from imginav_lib.config.schema import Architecture, Data, Loss, RunConfig, Training
from imginav_lib.data.dataset import RunData
from imginav_lib.train.device import precision, setup_device
from imginav_lib.train.trainer import StopFlag, TrainState, _Hooks, train_one_epoch

EXPERIMENTS = {"F1": Loss(mse=1.0), "F3": Loss(mse=1.0, seg=0.05, cls=0.01)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=6, help="timed steps per repetition")
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions; the median is printed")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    ap.add_argument("--base-channels", type=int, default=32)
    ap.add_argument("--downsampling-steps", type=int, default=4)
    a = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="imginav-bench-"))
    n = a.batch * a.steps
    manifest = make_layouts(tmp / "layouts", n=int(n * 1.6) + 8, size=a.size, seed=0)
    arch = Architecture(base_channels=a.base_channels, downsampling_steps=a.downsampling_steps, latent_channels=8)
    training = Training(batch_size=a.batch, device=a.device, precision=a.precision, log_every=10, heartbeat_s=1e9)
    data_cfg = Data(manifest=str(manifest), image_size=a.size, cache_dir=str(tmp / "cache"))
    m = read_manifest(manifest, data_cfg.filters)
    layouts = load_cache(prepare_cache(m, a.size, data_cfg.cache_dir, progress=False))
    train_idx = split_indices(len(layouts), 0.01, 0.0, 0).train[:n]
    data = RunData(layouts, train_idx, train_idx[:1], train_idx[:1])
    # The same cache read through its memory map (index_select), as before the pread reader.
    data_mmap = RunData(dataclasses.replace(layouts, row_files=None), train_idx, train_idx[:1], train_idx[:1])
    device, dtype = setup_device(training)
    print(f"device {device} ({dtype}), {torch.get_num_threads()} threads, {a.size}x{a.size}, batch {a.batch}, "
          f"{a.steps} steps x {a.reps} reps, base {a.base_channels}, {a.downsampling_steps} downsamplings")

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def setup(name):
        torch.manual_seed(0)
        model = LayoutAutoencoder(arch).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
        scaler = torch.amp.GradScaler(device.type, enabled=(dtype == torch.float16))
        cfg = RunConfig(phase="bench", experiment=name, seed=0, run_dir=str(tmp / name), params_file="-",
                        params_hash="-", data=data_cfg, architecture=arch, training=training, loss=EXPERIMENTS[name])
        return model, opt, scaler, cfg

    # Bare: one batch already on the device, the same heads and loss, nothing else.
    batch = layouts.images[train_idx[: a.batch]].to(device)
    x = to_model_input(batch)
    masks = layouts.masks[train_idx[: a.batch]].to(device).long()
    labels = layouts.labels[train_idx[: a.batch]].to(device).long()

    def bare(name, model, opt, scaler, cfg):
        w, heads = cfg.loss, heads_for(cfg.loss)
        sync()
        t0 = time.perf_counter()
        for _ in range(a.steps):
            with precision(device, dtype):
                out = model(x, heads=heads)
            loss, _ = total_loss(out, x, masks, labels, mse_weight=w.mse, seg_weight=w.seg, cls_weight=w.cls)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        sync()
        return a.steps * a.batch / (time.perf_counter() - t0)

    def trainer(name, model, opt, scaler, cfg, data=data):
        state = TrainState()
        hooks = _Hooks(cfg, state, opt, heartbeat=lambda: None)
        sync()
        t0 = time.perf_counter()
        train_one_epoch(model, opt, scaler, data, cfg=cfg, state=state, device=device, dtype=dtype,
                        stop=StopFlag(tmp / "no-stop"), hooks=hooks)  # fmt: skip
        sync()
        return len(data.train_idx) / (time.perf_counter() - t0)  # one epoch: every training image once

    results: dict[tuple[str, str], list[float]] = {}
    setups = {name: setup(name) for name in EXPERIMENTS}
    for name in EXPERIMENTS:  # warm-up: allocator, kernels, first-touch of the cache pages
        bare(name, *setups[name])
        trainer(name, *setups[name])
        trainer(name, *setups[name], data=data_mmap)
    for rep in range(a.reps):
        for name in EXPERIMENTS:
            for kind, fn in (("bare", bare), ("trainer", trainer), ("trainer mmap", lambda *s: trainer(*s, data=data_mmap))):
                results.setdefault((name, kind), []).append(fn(name, *setups[name]))
        print(f"rep {rep + 1}: " + "  ".join(f"{n} {k} {v[-1]:.1f}" for (n, k), v in results.items()), flush=True)

    print(f"{'experiment':<10} {'bare img/s':>11} {'trainer img/s':>14} {'trainer/bare':>13}")
    med = {k: statistics.median(v) for k, v in results.items()}
    for name in EXPERIMENTS:
        b, t = med[(name, "bare")], med[(name, "trainer")]
        print(f"{name:<10} {b:>11.1f} {t:>14.1f} {t / b:>12.1%}")
    for name in EXPERIMENTS:
        per_rep = [p / m for p, m in zip(results[(name, "trainer")], results[(name, "trainer mmap")])]
        print(f"{name}: trainer with the pread reader / with the memory map: {med[(name, 'trainer')] / med[(name, 'trainer mmap')]:.3f} "
              f"(median of per-repetition ratios {statistics.median(per_rep):.3f}, {len(per_rep)} repetitions)")
    pair = [f1 / f3 for f1, f3 in zip(results[("F1", "trainer")], results[("F3", "trainer")])]
    print(f"F1/F3 trainer speed ratio: {med[('F1', 'trainer')] / med[('F3', 'trainer')]:.3f} "
          f"(median of per-repetition ratios {statistics.median(pair):.3f})")
    # Work per image does not depend on machine noise: count it too.
    from torch.utils.flop_counter import FlopCounterMode

    for name in EXPERIMENTS:
        model, opt, scaler, cfg = setups[name]
        w = cfg.loss
        with FlopCounterMode(display=False) as fc:
            out = model(x, heads=heads_for(w))
            loss, _ = total_loss(out, x, masks, labels, mse_weight=w.mse, seg_weight=w.seg, cls_weight=w.cls)
            loss.backward()
        print(f"{name}: {fc.get_total_flops() / a.batch / 1e9:.2f} GFLOP per image (forward + backward)")


if __name__ == "__main__":
    main()
