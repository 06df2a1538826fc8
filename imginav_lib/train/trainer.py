"""Training of one run: `fit(cfg)` trains, evaluates, checkpoints and writes the run folder.

Two plain functions do the work (`train_one_epoch`, `evaluate`, as in MAE's engine); `fit` around them handles
resume, early stopping, checkpoints, samples, the step log, the heartbeat and preemption. Re-running `fit` on
the same run folder resumes from `checkpoints/latest.pt`, mid-epoch included, with no duplicated CSV rows.
"""
from __future__ import annotations

import math
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from imginav_lib.data.dataset import RunData, iter_batches, load_run_data, rgb_to_classes_torch
from imginav_lib.train.device import check_same_precision, deterministic_mode, environment, precision, setup_device
from imginav_lib.files import atomic_write, describe_error
from imginav_lib.model.latent import latent_report
from imginav_lib.model.losses import total_loss
from imginav_lib.model.metrics import LOSS_PARTS, NAN, TrainMetrics, ValMetrics, metric_columns
from imginav_lib.model.autoencoder import LayoutAutoencoder, heads_for
from imginav_lib.palette import UNKNOWN_LABEL, mask_to_rgb
from imginav_lib.runs.runfolder import (RunFolder, RunStatus, check_same_run, load_checkpoint, now, read_rows, save_checkpoint,
                        write_csv)
from imginav_lib.runs.runlock import FolderLock
from imginav_lib.train.stopping import StopFlag
from imginav_lib.config.schema import RunConfig

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
# One epoch of training, one evaluation


def eval_heads(loss) -> tuple[str, ...]:
    """Heads computed in evaluation: the trained ones, plus rgb, which every metric needs."""
    return tuple(dict.fromkeys(("rgb", *heads_for(loss))))


def train_one_epoch(model, optimizer, scaler, data: RunData, *, cfg: RunConfig, state: TrainState, device, dtype,
                    stop=None, hooks: _Hooks | None = None) -> dict:  # fmt: skip
    """Train epoch `state.epoch + 1` over its permutation, from `state.step` on (non-zero when resuming mid-epoch).

    `state` carries the epoch's running sums, so a preempted epoch (truthy `stop`: `Preempted` is raised after
    the step) continues where it stopped. `hooks.after_step` runs after every step. Returns the train metrics.
    """
    model.train()
    t = cfg.training
    heads = heads_for(cfg.loss)
    w = cfg.loss
    epoch = state.epoch + 1
    perm = data.train_idx[torch.randperm(len(data.train_idx), generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))]
    batches = perm.split(t.batch_size)
    metrics = TrainMetrics(state.sums)
    t0 = time.perf_counter()
    start = state.step
    fetched = iter_batches(data.layouts, batches[start:], device)  # the next batch is read while this one trains
    for step, (images, masks, labels) in zip(range(start, len(batches)), fetched):
        with precision(device, dtype):
            out = model(images, heads=heads)
        loss, parts = total_loss(
            out, images, masks, labels, mse_weight=w.mse, seg_weight=w.seg, cls_weight=w.cls, kl_weight=w.kl
        )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

        metrics.update(out, masks, labels, parts, loss)  # device tensors: no sync here
        state.images += images.shape[0]
        state.step = step + 1
        state.global_step += 1
        if hooks is not None:
            hooks.after_step(epoch, step, loss, parts)
        if stop:
            state.elapsed += time.perf_counter() - t0
            raise Preempted(f"stop requested at epoch {epoch} step {step + 1}/{len(batches)}")
    elapsed = state.elapsed + time.perf_counter() - t0
    m = metrics.compute(state.images)
    m["train_time_s"] = elapsed
    m["train_images_per_s"] = state.images / elapsed if elapsed > 0 else NAN
    state.start_epoch()
    return m


@torch.no_grad()
def evaluate(model, cfg: RunConfig, data: RunData, device, dtype, idx: torch.Tensor | None = None) -> ValMetrics:
    """Validation metrics over the whole validation split (the latent mean for a variational encoder); `idx`:
    other images instead (the test split, once, for the selected checkpoint)."""
    model.eval()
    heads = eval_heads(cfg.loss)
    w = cfg.loss
    metrics = ValMetrics(heads, device)
    idx = data.val_idx if idx is None else idx
    for images, masks, labels in iter_batches(data.layouts, idx.split(cfg.training.batch_size), device):
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
    [(images, masks, _)] = iter_batches(data.layouts, [data.sample_idx], device)
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
        "mse": (rgb - images).square().mean(dim=(1, 2, 3)).cpu().numpy(),  # (N,) per-image val MSE, as val_mse
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


@dataclass
class TrainState:
    """Where a run stands: saved in every checkpoint, so a resumed run continues at the same step."""

    epoch: int = 0  # the last completed epoch
    global_step: int = 0
    best_value: float = math.inf  # the best val_mse so far
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the last improvement (early stopping)
    # The epoch in progress: steps done, its images, seconds and running sums (TrainMetrics). Not empty only
    # when a stop came mid-epoch.
    step: int = 0
    images: int = 0
    elapsed: float = 0.0
    sums: dict = field(default_factory=dict)

    def start_epoch(self) -> None:
        self.step, self.images, self.elapsed, self.sums = 0, 0, 0.0, {}

    def to_checkpoint(self) -> dict:
        """The checkpoint's `state` (the format before TrainState: `partial` is the interrupted epoch, else None)."""
        partial = {"step": self.step, "global_step": self.global_step, "images": self.images,
                   "elapsed": self.elapsed, "sums": self.sums} if self.step else None  # fmt: skip
        return {"epoch": self.epoch, "global_step": self.global_step, "best_value": self.best_value,
                "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs, "partial": partial}  # fmt: skip

    @classmethod
    def from_checkpoint(cls, s: dict) -> TrainState:
        p = s.get("partial") or {}
        return cls(s["epoch"], p.get("global_step", s["global_step"]), s["best_value"], s["best_epoch"],
                   s["bad_epochs"], p.get("step", 0), p.get("images", 0), p.get("elapsed", 0.0), p.get("sums", {}))  # fmt: skip


class _Hooks:
    """Per-step bookkeeping of `fit`: the step log, the non-finite check at log steps, and the heartbeat."""

    def __init__(self, cfg: RunConfig, state: TrainState, optimizer, heartbeat):
        self.cfg, self.state, self.optimizer, self.heartbeat = cfg, state, optimizer, heartbeat
        self.rows: list[dict] = []
        self.last_beat = time.monotonic()

    def after_step(self, epoch, step, loss, parts):
        g = self.state.global_step
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

    def flush(self, folder: RunFolder) -> None:
        """Add the logged step rows to steps.csv, rewritten atomically (a kill never leaves half a row), and forget them."""
        write_csv(folder.steps, read_rows(folder.steps) + self.rows, STEP_COLUMNS)
        self.rows.clear()


def _resume(folder: RunFolder, model, optimizer, scaler, device) -> tuple[TrainState, list[dict]]:
    """The state of checkpoints/latest.pt (a fresh one without), and metrics.csv and steps.csv cut back to it:
    rows written after the checkpoint would be repeated by the resumed run."""
    state = TrainState()
    if folder.latest.is_file():
        ckpt = load_checkpoint(folder.latest, map_location=device)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        state = TrainState.from_checkpoint(ckpt["state"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        if device.type == "cuda" and ckpt["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"])
        print(f"resuming from {folder.latest}: epoch {state.epoch} done, step {state.global_step}")
    rows = [r for r in read_rows(folder.metrics) if r["epoch"] <= state.epoch]
    steps = [r for r in read_rows(folder.steps) if r["global_step"] <= state.global_step]
    write_csv(folder.metrics, rows, metric_columns())
    write_csv(folder.steps, steps, STEP_COLUMNS)
    return state, rows


def _attempt_info(cfg: RunConfig, info: dict, state: TrainState, data: RunData, device, dtype, job_id: str | None,
                  env: dict) -> dict:  # fmt: skip
    """run.json's fields for this attempt (on top of what earlier attempts wrote): `environment` is this attempt's,
    `environments` every attempt's (GPU, precision, versions), so a run resumed elsewhere says so."""
    attempt = info.get("attempts", 0) + 1
    earlier = [a for a in info.get("environments") or [] if isinstance(a, dict)]
    return dict(
        phase=cfg.phase, experiment=cfg.experiment, seed=cfg.seed, status=RunStatus.RUNNING, ended=None, error=None,
        started=info.get("started") or now(), updated=now(), git_commit=git_commit(), host=socket.gethostname(),
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        precision=str(dtype).removeprefix("torch."), epochs=cfg.training.epochs, epoch=state.epoch,
        attempts=attempt, skipped_images=len(data.layouts.skipped), checkpoint_s=None,
        job_id=job_id, n_train=len(data.train_idx), n_val=len(data.val_idx), n_test=len(data.test_idx), overrides=cfg.overrides,
        split=data.split.describe() if data.split is not None else None,
        environment=env, environments=[*earlier, {"attempt": attempt, "started": now(), **env}],
        # images with a room/scene label: what the classification head learns from and is scored on
        n_train_labelled=int((data.layouts.labels[data.train_idx] != UNKNOWN_LABEL).sum()),
        n_val_labelled=int((data.layouts.labels[data.val_idx] != UNKNOWN_LABEL).sum()),
    )  # fmt: skip


def _update_best(state: TrainState, row: dict, es) -> tuple[bool, bool]:
    """Mark epoch `row['epoch']` complete; (improved val_mse, stop early). An improvement is a val_mse below the
    best so far by more than `min_delta` of it (relative); without early stopping any decrease counts."""
    improved = row["val_mse"] < state.best_value * (1 - (es.min_delta if es else 0.0))
    state.epoch = row["epoch"]
    if improved:
        state.best_value, state.best_epoch, state.bad_epochs = row["val_mse"], row["epoch"], 0
    else:
        state.bad_epochs += 1
    return improved, es is not None and state.bad_epochs >= es.patience


def _log_epoch(bar, row: dict, state: TrainState, epochs: int) -> None:
    bar.update(1)
    bar.set_postfix(val_mse=f"{row['val_mse']:.5f}", best=f"{state.best_value:.5f}")
    print(f"epoch {row['epoch']}/{epochs}: train_loss {row['train_loss']:.5f} val_mse {row['val_mse']:.5f} "
          f"psnr {row['val_psnr']:.2f} sem_miou {row['val_sem_miou']:.3f} ({row['epoch_time_s']:.1f}s)", flush=True)  # fmt: skip


def _checkpoint(model, optimizer, scaler, state: TrainState, cfg: RunConfig, device) -> dict:
    """Everything a resumed run needs, and the config the weights came from."""
    rng = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
            "state": state.to_checkpoint(), "rng": rng, "config": cfg.model_dump()}  # fmt: skip


def _final_eval(model, cfg: RunConfig, data: RunData, device, dtype, state: TrainState, folder: RunFolder, stop) -> bool:
    """eval.json: the hand-off uses the best weights, so restore them and evaluate once more. False, and no
    eval.json, when a stop request came before or during it: the training is checkpointed, and the requeued
    attempt does only this evaluation."""
    es = cfg.training.early_stopping
    restore_best = es is None or es.restore_best
    if stop:
        return False
    if restore_best:
        model.load_state_dict(load_checkpoint(folder.best, map_location=device)["model"])
    final = evaluate(model, cfg, data, device, dtype)
    # The held-out test split, once, for the checkpoint validation selected: the unbiased figure of the verdict.
    test = evaluate(model, cfg, data, device, dtype, idx=data.test_idx) if len(data.test_idx) else None
    if stop:
        return False
    latent = latent_report(model, data.layouts.images, data.layouts.masks, data.train_idx, data.val_idx, cfg.seed,
                           cfg.training.batch_size, device)  # fmt: skip
    epoch = state.best_epoch if restore_best else state.epoch
    # The latent statistics describe this checkpoint only: the next phase retrains and measures its own.
    latent["measured_on"] = f"{cfg.phase} {cfg.experiment} seed {cfg.seed}, checkpoint of epoch {epoch}"
    result = {"epoch": epoch, "val": final.compute(), **final.confusions(), "boundary_f": final.boundaries(), "latent": latent}
    if test is not None:
        # exactly the keys of "val" with val_ -> test_ (the analysis copies them into the runs table)
        result["test"] = {f"test_{k.removeprefix('val_')}": v for k, v in test.compute().items()}
        result["n_test"] = len(data.test_idx)
    folder.write_eval(result)
    return True


def _result(model, weights: dict | None, folder: RunFolder) -> RunResult:
    if weights is not None:
        model.load_state_dict(weights)
    return RunResult(model, pd.read_csv(folder.metrics), folder.path, RunStatus.DONE)


def fit(cfg: RunConfig, data: RunData | None = None, progress: bool = True, job_id: str | None = None) -> RunResult:
    """Train one experiment x seed into `cfg.run_dir`; resume if the folder has a checkpoint. Holds the folder's
    lock throughout: a second writer gets RunLocked before it touches anything. `job_id`: the scheduler's job of
    this attempt (`imginav run-one` hands it down), recorded in run.json."""
    with FolderLock(cfg.run_dir, "training", job_id=job_id):
        return _fit(cfg, data, progress, job_id)


def _epoch_row(epoch: int, train_m: dict, model, optimizer, cfg: RunConfig, data: RunData, device, dtype) -> dict:
    """Validate after an epoch's training; its metrics.csv row. Raises Diverged on a non-finite loss."""
    t_eval = time.perf_counter()
    val_m = evaluate(model, cfg, data, device, dtype).compute()
    eval_s = time.perf_counter() - t_eval
    if not math.isfinite(train_m["train_loss"]) or not math.isfinite(val_m["val_loss"]):
        raise Diverged(f"non-finite loss at epoch {epoch} (train {train_m['train_loss']}, val {val_m['val_loss']})")
    return {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"],
            "epoch_time_s": train_m.pop("train_time_s") + eval_s, **train_m, **val_m}  # fmt: skip


def _fit(cfg: RunConfig, data: RunData | None, progress: bool, job_id: str | None) -> RunResult:
    folder = RunFolder(cfg.run_dir)
    for d in (folder.checkpoints, folder.samples):
        d.mkdir(parents=True, exist_ok=True)
    folder.remove_temp_files()  # of an attempt killed mid-write; ours alone to delete: we hold the lock
    check_same_run(folder, cfg.model_dump())
    info = folder.read_info()
    if folder.finished(cfg.training.epochs):
        print(f"{folder.path}: already done (status done); nothing to do")
        return _result(LayoutAutoencoder(cfg.architecture), load_checkpoint(folder.best)["model"], folder)
    # A done run whose planned epochs were raised continues from latest.pt (the last epoch's weights, optimizer
    # and early-stopping state) exactly as if it had been planned that long; best.pt stays the best so far.

    folder.write_config(cfg.model_dump())
    # Before any data is read: a torch without kernels for this GPU, or another precision than the run's earlier
    # attempts, stops here in one line.
    device, dtype = setup_device(cfg.training)
    env = environment(device, dtype, cfg.training.deterministic)
    before = info.get("environments") or ([{"precision": info["precision"], "device": "cpu" if str(info.get("device")).startswith("cpu") else "cuda",
                                             "gpu": info.get("device")}] if info.get("precision") else [])  # run.json before environments  # fmt: skip
    check_same_precision(before, env, f"experiment {cfg.experiment} seed {cfg.seed}")
    with deterministic_mode(cfg.training.deterministic):
        return _train(cfg, data, progress, job_id, folder, info, device, dtype, env)


def _train(cfg: RunConfig, data: RunData | None, progress: bool, job_id: str | None, folder: RunFolder, info: dict,
           device, dtype, env: dict) -> RunResult:  # fmt: skip
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    data = data or load_run_data(cfg, progress=progress)
    model = LayoutAutoencoder(cfg.architecture).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.training.lr, weight_decay=cfg.training.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=(dtype == torch.float16))
    state, rows = _resume(folder, model, optimizer, scaler, device)
    # A STOP file already here is a stop request that came while this attempt started (kernel start, imports):
    # it is honoured after the first step. The attempt that serves a STOP removes it (below).
    stop = StopFlag(folder.stop_file)
    info.update(_attempt_info(cfg, info, state, data, device, dtype, job_id, env))

    def heartbeat(**extra):
        info.update(updated=now(), epoch=state.epoch, global_step=state.global_step, **extra)
        finite = [r["epoch_time_s"] for r in rows if math.isfinite(r.get("epoch_time_s", NAN))]
        info["epoch_time_s"] = float(np.mean(finite)) if finite else None
        info["best_val_mse"] = state.best_value if math.isfinite(state.best_value) else None
        info["best_epoch"] = state.best_epoch or None
        folder.write_info(info)

    def checkpoint(path: Path):
        t0 = time.perf_counter()
        save_checkpoint(path, _checkpoint(model, optimizer, scaler, state, cfg, device))
        # The longest write of this attempt: a stop request needs one before the final kill (`imginav status`).
        info["checkpoint_s"] = max(info.get("checkpoint_s") or 0.0, round(time.perf_counter() - t0, 3))

    heartbeat()
    hooks = _Hooks(cfg, state, optimizer, heartbeat)
    stop.install()
    t, es = cfg.training, cfg.training.early_stopping
    last = state.epoch if es is not None and state.bad_epochs >= es.patience else t.epochs  # killed after early stop
    if last < t.epochs:
        info["stopped_early"] = True
    bar = tqdm(total=t.epochs, initial=state.epoch, desc=f"{cfg.experiment} seed{cfg.seed}", disable=not progress, mininterval=5)
    try:
        for epoch in range(state.epoch + 1, last + 1):
            try:
                train_m = train_one_epoch(model, optimizer, scaler, data, cfg=cfg, state=state, device=device, dtype=dtype,
                                          stop=stop, hooks=hooks)  # fmt: skip
            except Preempted:
                hooks.flush(folder)
                checkpoint(folder.latest)
                heartbeat(status=RunStatus.PREEMPTED, error=f"preempted at epoch {epoch} step {state.step}; resumes from checkpoints/latest.pt")
                raise
            row = _epoch_row(epoch, train_m, model, optimizer, cfg, data, device, dtype)
            rows.append(row)
            improved, stop_early = _update_best(state, row, es)
            if epoch % t.sample_interval == 0 or epoch == t.epochs or stop_early:
                save_samples(model, cfg, data, device, dtype, epoch, folder)
            # Order matters for crash safety: step log and metrics first, then the checkpoint that covers them.
            hooks.flush(folder)
            write_csv(folder.metrics, rows, metric_columns())
            if improved:
                checkpoint(folder.best)
            if epoch % t.checkpoint_interval == 0:
                checkpoint(folder.epoch_checkpoint(epoch))
            checkpoint(folder.latest)
            heartbeat()
            _log_epoch(bar, row, state, t.epochs)
            if stop_early:
                print(f"early stopping: no val_mse improvement > {es.min_delta:.2%} of the best for {es.patience} epochs")
                info["stopped_early"] = True
                break
            if stop:  # a stop that arrived during evaluation: the epoch is complete and checkpointed
                heartbeat(status=RunStatus.PREEMPTED, error=f"preempted after epoch {epoch}; resumes from checkpoints/latest.pt")
                raise Preempted(f"stop requested after epoch {epoch}")
        if not _final_eval(model, cfg, data, device, dtype, state, folder, stop):
            heartbeat(status=RunStatus.PREEMPTED, error="preempted in the final evaluation; resumes from checkpoints/latest.pt")
            raise Preempted("stop requested in the final evaluation")
        heartbeat(status=RunStatus.DONE, ended=now())
    except Preempted:
        stop.stop_file.unlink(missing_ok=True)  # served: the checkpoint is written, the next attempt resumes
        raise
    except Diverged as e:
        hooks.flush(folder)
        heartbeat(status=RunStatus.DIVERGED, ended=now(), error=str(e))
        raise
    except BaseException as e:
        heartbeat(status=RunStatus.FAILED, ended=now(), error=describe_error(e))  # out of space: one line
        raise
    finally:
        stop.uninstall()
        bar.close()
    return _result(model.cpu(), None, folder)
