"""Training of one run: `fit(cfg)` trains, evaluates, checkpoints and writes the run folder.

Two plain functions do the work (`train_one_epoch`, `evaluate`, as in MAE's engine); `fit` around them handles
resume, early stopping, checkpoints, samples, the step log, the heartbeat and preemption. Re-running `fit` on
the same run folder resumes from `checkpoints/latest.pt`, mid-epoch included, with no duplicated CSV rows.
"""
from __future__ import annotations

import contextlib
import math
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from .data import LayoutData, load_cache, prepare_cache, read_manifest, rgb_to_classes_torch, to_model_input, train_val_split
from .errors import InputError
from .files import atomic_write
from .losses import total_loss
from .metrics import LOSS_PARTS, NAN, ValMetrics, metric_columns
from .model import LayoutAutoencoder, build_model, heads_for
from .palette import mask_to_rgb
from .runfolder import RunFolder, RunStatus, append_csv, load_checkpoint, now, read_rows, save_checkpoint, write_csv
from .schedulers import job_id_from_env
from .params import RunConfig

STEP_COLUMNS = ["global_step", "epoch", "step", "loss", *LOSS_PARTS, "lr"]


class Diverged(RuntimeError):
    """A non-finite loss: the run is marked `diverged`."""


class Preempted(RuntimeError):
    """A stop was requested (signal or STOP file): state is checkpointed, the run is marked `preempted`."""


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ---------------------------------------------------------------------------------------------------------
# Device and data


def setup_device(training) -> tuple[torch.device, torch.dtype]:
    if training.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("training.device is cuda but no CUDA device is available")
    device = torch.device("cuda" if training.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    if training.precision == "auto":
        if device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            dtype = torch.float32  # CPU autocast is slower than fp32 for these convs
    else:
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[training.precision]
    return device, dtype


@dataclass
class RunData:
    layouts: LayoutData
    train_idx: torch.Tensor  # (N_train,) indices into layouts
    val_idx: torch.Tensor  # (N_val,)
    sample_idx: torch.Tensor  # the fixed validation images shown in samples/


def load_run_data(cfg: RunConfig, progress: bool = True) -> RunData:
    """The phase's cache (decoded once, reused) and this run's split."""
    d = cfg.data
    manifest = read_manifest(d.manifest, d.filters)
    cache = prepare_cache(manifest, d.image_size, d.cache_dir, d.on_bad_image, d.mask_tolerance, progress=progress)
    layouts = load_cache(cache)
    train_idx, val_idx = train_val_split(len(layouts), d.val_fraction, d.split_seed)
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise ValueError(f"data: {len(layouts)} image(s) are too few for a train/val split")
    return RunData(layouts, train_idx, val_idx, val_idx[: d.num_samples])


def get_batch(data: LayoutData, idx: torch.Tensor, device: torch.device):
    """Index the uint8 cache (no decoding) -> float images in [-1, 1], long masks, long labels."""
    images = data.images[idx].to(device, non_blocking=True)
    masks = data.masks[idx].to(device, non_blocking=True)
    labels = data.labels[idx].to(device, non_blocking=True)
    return to_model_input(images), masks.long(), labels.long()


# ---------------------------------------------------------------------------------------------------------
# One epoch of training, one evaluation


def precision(device: torch.device, dtype: torch.dtype):
    """The one precision context of training and evaluation: autocast unless fp32."""
    return torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()


def eval_heads(loss) -> tuple[str, ...]:
    """Heads computed in evaluation: the trained ones, plus rgb, which every metric needs."""
    return tuple(dict.fromkeys(("rgb", *heads_for(loss))))


class StopFlag:
    """Set by SIGUSR2/SIGTERM (cluster walltime warning, preemption) or by a STOP file in the run folder."""

    def __init__(self, stop_file: Path):
        self.stop_file = stop_file
        self.signalled = False
        self._previous = {}

    def install(self):
        for sig in (signal.SIGUSR2, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: only the STOP file works
                pass

    def uninstall(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        self.signalled = True

    def __bool__(self):
        return self.signalled or self.stop_file.exists()


def train_one_epoch(
    model, optimizer, scaler, cfg: RunConfig, data: RunData, device, dtype, epoch: int, state: dict, stop, hooks
) -> dict:
    """Train over this epoch's permutation, from `state['step']` on (non-zero when resuming mid-epoch).

    `state` holds the running sums of the epoch so a preempted epoch continues where it stopped.
    Returns the epoch's train metrics.
    """
    model.train()
    t = cfg.training
    heads = heads_for(cfg.loss)
    w = cfg.loss
    perm = data.train_idx[torch.randperm(len(data.train_idx), generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))]
    batches = perm.split(t.batch_size)
    sums = state.setdefault("sums", {})
    t0 = time.perf_counter()
    for step in range(state.get("step", 0), len(batches)):
        images, masks, labels = get_batch(data.layouts, batches[step], device)
        with precision(device, dtype):
            out = model(images, heads=heads)
        loss, parts = total_loss(
            out, images, masks, labels, mse_weight=w.mse, seg_weight=w.seg, cls_weight=w.cls, kl_weight=w.kl
        )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

        b = images.shape[0]
        for k, v in {"loss": loss.detach(), **parts}.items():  # device tensors: no sync here
            sums[k] = sums.get(k, 0.0) + v.float() * b
        if "seg" in out:
            sums["seg_correct"] = sums.get("seg_correct", 0.0) + (out["seg"].argmax(1) == masks).sum()
            sums["seg_pixels"] = sums.get("seg_pixels", 0.0) + (masks != 255).sum()
        if "cls" in out:
            sums["cls_correct"] = sums.get("cls_correct", 0.0) + (out["cls"].argmax(1) == labels).sum()
            sums["cls_known"] = sums.get("cls_known", 0.0) + (labels >= 0).sum()
        state["images"] = state.get("images", 0) + b
        state["step"] = step + 1
        state["global_step"] += 1
        hooks.after_step(epoch, step, loss, parts)
        if stop:
            state["elapsed"] = state.get("elapsed", 0.0) + time.perf_counter() - t0
            raise Preempted(f"stop requested at epoch {epoch} step {step + 1}/{len(batches)}")
    elapsed = state.get("elapsed", 0.0) + time.perf_counter() - t0
    n = state["images"]
    m = {f"train_{k}": (v / n).item() for k, v in sums.items() if k in ("loss", *LOSS_PARTS)}
    m.update({f"train_{p}": m.get(f"train_{p}", NAN) for p in LOSS_PARTS})
    m["train_seg_acc"] = (sums["seg_correct"] / sums["seg_pixels"].clamp(min=1)).item() if "seg_correct" in sums else NAN
    known = sums["cls_known"].item() if "cls_known" in sums else 0
    m["train_cls_acc"] = (sums["cls_correct"] / known).item() if known else NAN
    if not known:  # no image had a room/scene label: the 0 from the empty mean is not a loss value
        m["train_cls_ce"] = NAN
    m["train_time_s"] = elapsed
    m["train_images_per_s"] = n / elapsed if elapsed > 0 else NAN
    return m


@torch.no_grad()
def evaluate(model, cfg: RunConfig, data: RunData, device, dtype) -> ValMetrics:
    """Validation metrics over the whole validation split (the latent mean for a variational encoder)."""
    model.eval()
    heads = eval_heads(cfg.loss)
    w = cfg.loss
    metrics = ValMetrics(heads, device)
    for idx in data.val_idx.split(cfg.training.batch_size):
        images, masks, labels = get_batch(data.layouts, idx, device)
        with precision(device, dtype):
            out = model(images, heads=heads)
        loss, parts = total_loss(
            out, images, masks, labels, mse_weight=w.mse, seg_weight=w.seg, cls_weight=w.cls, kl_weight=w.kl
        )
        metrics.update(out, images, masks, labels, parts, loss)
    return metrics


@torch.no_grad()
def save_samples(model, cfg: RunConfig, data: RunData, device, dtype, epoch: int, folder: RunFolder) -> Path:
    """Input, reconstruction, predicted segmentation (or the reconstruction snapped to the palette when there is
    no seg head) and |error| of the fixed validation images: a PNG grid and an npz of the arrays."""
    model.eval()
    heads = eval_heads(cfg.loss)
    images, masks, _ = get_batch(data.layouts, data.sample_idx, device)
    with precision(device, dtype):
        out = model(images, heads=heads)
    rgb = out["rgb"].float()
    to_u8 = lambda x: ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()  # noqa: E731
    arrays = {
        "index": data.sample_idx.numpy(),
        "input": to_u8(images),
        "recon": to_u8(rgb),
        "mask": masks.to(torch.uint8).cpu().numpy(),
        "recon_classes": rgb_to_classes_torch(rgb).to(torch.uint8).cpu().numpy(),
        "error": ((rgb - images).abs().mean(1) * 127.5).round().clamp(0, 255).to(torch.uint8).cpu().numpy(),
    }
    if "seg" in out:
        arrays["seg_pred"] = out["seg"].argmax(1).to(torch.uint8).cpu().numpy()
    stem = folder.sample_stem(epoch)
    atomic_write(stem.with_suffix(".npz"), lambda f: np.savez_compressed(f, **arrays))
    seg = arrays.get("seg_pred", arrays["recon_classes"])
    err = np.repeat(arrays["error"][..., None], 3, axis=-1)
    rows = [
        np.concatenate([arrays["input"][i].transpose(1, 2, 0), arrays["recon"][i].transpose(1, 2, 0), mask_to_rgb(seg[i]), err[i]], axis=1)
        for i in range(len(seg))
    ]
    grid = Image.fromarray(np.concatenate(rows, axis=0))
    atomic_write(stem.with_suffix(".png"), lambda f: grid.save(f, format="PNG"))
    return stem.with_suffix(".png")


# ---------------------------------------------------------------------------------------------------------
# The run


@dataclass
class RunResult:
    model: LayoutAutoencoder
    history: pd.DataFrame  # metrics.csv
    run_dir: Path
    status: str


class _Hooks:
    """Per-step bookkeeping of `fit`: the step log, the non-finite check at log steps, and the heartbeat."""

    def __init__(self, cfg: RunConfig, state: dict, optimizer, heartbeat):
        self.cfg, self.state, self.optimizer, self.heartbeat = cfg, state, optimizer, heartbeat
        self.rows: list[dict] = []
        self.last_beat = time.monotonic()

    def after_step(self, epoch, step, loss, parts):
        g = self.state["global_step"]
        if g % self.cfg.training.log_every == 0:
            value = loss.item()  # the only sync point of a step, every log_every steps
            if not math.isfinite(value):
                raise Diverged(f"non-finite loss {value} at epoch {epoch} step {step + 1}")
            row = {"global_step": g, "epoch": epoch, "step": step + 1, "loss": value, "lr": self.optimizer.param_groups[0]["lr"]}
            row.update({p: parts[p].item() if p in parts else NAN for p in LOSS_PARTS})
            self.rows.append(row)
        if time.monotonic() - self.last_beat > self.cfg.training.heartbeat_s:
            self.last_beat = time.monotonic()
            self.heartbeat()


def _append_steps(path: Path, rows: list[dict]) -> None:
    """Append the logged step rows and forget them."""
    append_csv(path, rows, STEP_COLUMNS)
    rows.clear()


def fit(cfg: RunConfig, data: RunData | None = None, progress: bool = True) -> RunResult:
    """Train one experiment x seed into `cfg.run_dir`; resume if the folder has a checkpoint."""
    from tqdm import tqdm

    run_dir = Path(cfg.run_dir)
    folder = RunFolder(run_dir)
    for d in (folder.checkpoints, folder.samples):
        d.mkdir(parents=True, exist_ok=True)
    metrics_path, steps_path = folder.metrics, folder.steps
    check_same_run(cfg, folder)
    info = folder.read_info()
    if info.get("status") == RunStatus.DONE:
        print(f"{run_dir}: already done (status done); nothing to do")
        model = build_model(cfg.architecture)
        model.load_state_dict(load_checkpoint(folder.best)["model"])
        return RunResult(model, pd.read_csv(metrics_path), run_dir, RunStatus.DONE)

    folder.write_config(cfg.model_dump())
    device, dtype = setup_device(cfg.training)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    data = data or load_run_data(cfg, progress=progress)
    model = build_model(cfg.architecture).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.training.lr, weight_decay=cfg.training.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=(dtype == torch.float16))

    state = {"epoch": 0, "global_step": 0, "best_value": math.inf, "best_epoch": 0, "bad_epochs": 0, "partial": None}
    latest = folder.latest
    if latest.is_file():
        ckpt = load_checkpoint(latest, map_location=device)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        state = ckpt["state"]
        torch.set_rng_state(ckpt["rng"]["torch"])
        if device.type == "cuda" and ckpt["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"])
        print(f"resuming from {latest}: epoch {state['epoch']} done, step {state['global_step']}")
    rows = [r for r in read_rows(metrics_path) if r["epoch"] <= state["epoch"]]
    steps = [r for r in read_rows(steps_path) if r["global_step"] <= state["global_step"]]
    write_csv(metrics_path, rows, metric_columns())
    write_csv(steps_path, steps, STEP_COLUMNS)
    # A STOP file already here is a stop request that came while this attempt started (kernel start, imports):
    # it is honoured after the first step. The attempt that serves a STOP removes it (below).
    stop = StopFlag(folder.stop_file)

    info.update(
        phase=cfg.phase, experiment=cfg.experiment, seed=cfg.seed, status=RunStatus.RUNNING, ended=None, error=None,
        started=info.get("started") or now(), updated=now(), git_commit=git_commit(), host=socket.gethostname(),
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        precision=str(dtype).removeprefix("torch."), epochs=cfg.training.epochs, epoch=state["epoch"],
        attempts=info.get("attempts", 0) + 1, skipped_images=len(data.layouts.skipped),
        job_id=job_id_from_env(), n_train=len(data.train_idx), n_val=len(data.val_idx),
    )

    def heartbeat(**extra):
        info.update(updated=now(), epoch=state["epoch"], global_step=hooks.state["global_step"] if hooks else 0, **extra)
        finite = [r["epoch_time_s"] for r in rows if math.isfinite(r.get("epoch_time_s", NAN))]
        info["epoch_time_s"] = float(np.mean(finite)) if finite else None
        info["best_val_mse"] = state["best_value"] if math.isfinite(state["best_value"]) else None
        info["best_epoch"] = state["best_epoch"] or None
        folder.write_info(info)

    def checkpoint(path: Path):
        rng = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
        obj = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
               "state": state, "rng": rng, "config": cfg.model_dump()}  # fmt: skip
        save_checkpoint(path, obj)

    hooks = None
    heartbeat()
    hooks = _Hooks(cfg, state, optimizer, heartbeat)
    stop.install()
    es = cfg.training.early_stopping
    t = cfg.training
    bar = tqdm(total=t.epochs, initial=state["epoch"], desc=f"{cfg.experiment} seed{cfg.seed}", disable=not progress, mininterval=5)
    try:
        for epoch in range(state["epoch"] + 1, t.epochs + 1):
            partial = state["partial"] or {"step": 0, "global_step": state["global_step"]}
            partial["global_step"] = state["global_step"]
            hooks.state = partial
            try:
                train_m = train_one_epoch(model, optimizer, scaler, cfg, data, device, dtype, epoch, partial, stop, hooks)
            except Preempted:
                state["global_step"] = partial["global_step"]
                state["partial"] = partial
                _append_steps(steps_path, hooks.rows)
                checkpoint(latest)
                heartbeat(status=RunStatus.PREEMPTED, error=f"preempted at epoch {epoch} step {partial['step']}; resumes from checkpoints/latest.pt")
                raise
            state["global_step"] = partial["global_step"]
            state["partial"] = None
            t_eval = time.perf_counter()
            val = evaluate(model, cfg, data, device, dtype)
            val_m = val.compute()
            eval_s = time.perf_counter() - t_eval
            if not math.isfinite(train_m["train_loss"]) or not math.isfinite(val_m["val_loss"]):
                raise Diverged(f"non-finite loss at epoch {epoch} (train {train_m['train_loss']}, val {val_m['val_loss']})")
            row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"],
                   "epoch_time_s": train_m.pop("train_time_s") + eval_s, **train_m, **val_m}  # fmt: skip
            rows.append(row)

            improved = row["val_mse"] < state["best_value"] - (es.min_delta if es else 0.0)
            state["epoch"] = epoch
            if improved:
                state.update(best_value=row["val_mse"], best_epoch=epoch, bad_epochs=0)
            else:
                state["bad_epochs"] += 1
            stop_early = es is not None and state["bad_epochs"] >= es.patience
            last = epoch == t.epochs or stop_early
            if epoch % t.sample_interval == 0 or last:
                save_samples(model, cfg, data, device, dtype, epoch, folder)
            # Order matters for crash safety: step log and metrics first, then the checkpoint that covers them.
            _append_steps(steps_path, hooks.rows)
            write_csv(metrics_path, rows, metric_columns())
            if improved:
                checkpoint(folder.best)
            if epoch % t.checkpoint_interval == 0:
                checkpoint(folder.epoch_checkpoint(epoch))
            checkpoint(latest)
            heartbeat()
            bar.update(1)
            bar.set_postfix(val_mse=f"{row['val_mse']:.5f}", best=f"{state['best_value']:.5f}")
            print(f"epoch {epoch}/{t.epochs}: train_loss {row['train_loss']:.5f} val_mse {row['val_mse']:.5f} "
                  f"psnr {row['val_psnr']:.2f} sem_miou {row['val_sem_miou']:.3f} ({row['epoch_time_s']:.1f}s)", flush=True)  # fmt: skip
            if stop_early:
                print(f"early stopping: no val_mse improvement > {es.min_delta} for {es.patience} epochs")
                info["stopped_early"] = True
                break
            if stop:  # a stop that arrived during evaluation: the epoch is complete and checkpointed
                heartbeat(status=RunStatus.PREEMPTED, error=f"preempted after epoch {epoch}; resumes from checkpoints/latest.pt")
                raise Preempted(f"stop requested after epoch {epoch}")
        # The hand-off uses the best weights: restore them and evaluate once more for eval.json.
        if es is None or es.restore_best:
            best = load_checkpoint(folder.best, map_location=device)
            model.load_state_dict(best["model"])
        final = evaluate(model, cfg, data, device, dtype)
        eval_epoch = state["best_epoch"] if (es is None or es.restore_best) else state["epoch"]
        folder.write_eval({"epoch": eval_epoch, "val": final.compute(), **final.confusions()})
        heartbeat(status=RunStatus.DONE, ended=now())
    except Preempted:
        stop.stop_file.unlink(missing_ok=True)  # served: the checkpoint is written, the next attempt resumes
        raise
    except Diverged as e:
        _append_steps(steps_path, hooks.rows)
        heartbeat(status=RunStatus.DIVERGED, ended=now(), error=str(e))
        raise
    except BaseException as e:
        heartbeat(status=RunStatus.FAILED, ended=now(), error=f"{type(e).__name__}: {e}")
        raise
    finally:
        stop.uninstall()
        bar.close()
    return RunResult(model.cpu(), pd.read_csv(metrics_path), run_dir, RunStatus.DONE)


# What makes two runs the same computation. Epochs, logging, intervals and paths may change between attempts
# (e.g. resume with more epochs, or from another checkout); anything else would silently mix two experiments.
SAME_RUN = {
    "seed": None,
    "architecture": None,
    "loss": None,
    "training": ("batch_size", "optimizer", "lr", "weight_decay", "early_stopping"),
    "data": ("image_size", "filters", "val_fraction", "split_seed", "mask_tolerance"),
}


def check_same_run(cfg: RunConfig, folder: RunFolder) -> None:
    """Refuse to resume (or skip as done) a run folder that holds a run of another configuration."""
    before, now_ = folder.read_config(), cfg.model_dump()
    if before is None:
        return
    changed = []
    for section, fields in SAME_RUN.items():
        a, b = before.get(section), now_.get(section)
        if fields is not None and isinstance(a, dict):
            a, b = {k: a.get(k) for k in fields}, {k: b.get(k) for k in fields}
        if a != b:
            changed += [section] if not isinstance(a, dict) else [f"{section}.{k}" for k in b if a.get(k) != b.get(k)]
    if changed:
        raise InputError(f"{folder.path} holds a run with another {', '.join(changed)}: "
                         "delete that folder or use another runs_root to start afresh")
