"""Training and validation metrics and the names of the metrics.csv columns.

`TrainMetrics` keeps an epoch's running sums (resumable mid-epoch); `ValMetrics` (torchmetrics accumulators)
the validation's. Each `update` takes one batch of model outputs and targets; `compute` returns a flat dict whose
keys are metrics.csv columns. Metrics of heads that were not trained are NaN (empty cells), never a made-up number.
"""
from __future__ import annotations


import torch
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from imginav_lib import heads as H
from imginav_lib.model.boundary import BoundaryFScore, tolerance_px
from imginav_lib.data.dataset import rgb_to_classes_torch
from imginav_lib.palette import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, UNKNOWN_LABEL

LOSS_PARTS = H.loss_terms()  # ("mse", "seg_ce", "cls_ce", "kl")
NAN = float("nan")


def metric_columns() -> list[str]:
    """The metrics.csv header, in order: the analysis API."""
    terms = H.loss_terms()  # read from the heads table when called
    cols = ["epoch", "lr", "epoch_time_s", "train_images_per_s", "train_loss"]
    cols += [f"train_{p}" for p in terms] + [c for h in H.HEADS for c in h.train_metrics] + ["val_loss"]
    cols += [f"val_{p}" for p in terms]
    cols += H.val_metric_columns()
    cols += [f"val_{p}_iou_{c}" for p in H.class_iou_prefixes() for c in CLASS_NAMES]
    return cols


def iou_from_confusion(cm: torch.Tensor) -> tuple[torch.Tensor, float, float]:
    """(K, K) confusion (rows true) -> per-class IoU (NaN where the class is absent from target and
    prediction), mean IoU over the classes present, pixel accuracy."""
    cm = cm.double()
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, NAN))
    total = cm.sum()
    acc = (tp.sum() / total).item() if total > 0 else NAN
    miou = iou.nanmean().item() if (union > 0).any() else NAN
    return iou, miou, acc


class TrainMetrics:
    """The running sums of one training epoch: device tensors (no sync per step) in a plain dict, which a
    checkpoint carries when an epoch is interrupted. `compute` gives the epoch's train_* columns."""

    def __init__(self, sums: dict):
        self.sums = sums  # (loss part | seg_correct | seg_pixels | cls_correct | cls_known) -> 0-dim tensor

    def _add(self, key: str, value: torch.Tensor) -> None:
        self.sums[key] = self.sums.get(key, 0.0) + value

    @torch.no_grad()
    def update(self, out: dict, masks: torch.Tensor, labels: torch.Tensor, parts: dict, total: torch.Tensor):
        b = masks.shape[0]
        for k, v in {"loss": total.detach(), **parts}.items():
            self._add(k, v.float() * b)
        if "seg" in out:
            self._add("seg_correct", (out["seg"].argmax(1) == masks).sum())
            self._add("seg_pixels", (masks != IGNORE_INDEX).sum())
        if "cls" in out:
            self._add("cls_correct", (out["cls"].argmax(1) == labels).sum())
            self._add("cls_known", (labels != UNKNOWN_LABEL).sum())

    def compute(self, n: int) -> dict[str, float]:
        """`n`: the images of the epoch (the weights of the loss sums)."""
        s = self.sums
        m = {f"train_{k}": (v / n).item() for k, v in s.items() if k in ("loss", *LOSS_PARTS)}
        m.update({f"train_{p}": m.get(f"train_{p}", NAN) for p in LOSS_PARTS})
        m["train_seg_acc"] = (s["seg_correct"] / s["seg_pixels"].clamp(min=1)).item() if "seg_correct" in s else NAN
        known = s["cls_known"].item() if "cls_known" in s else 0
        m["train_cls_acc"] = (s["cls_correct"] / known).item() if known else NAN
        if not known:  # no image had a room/scene label: the 0 from the empty mean is not a loss value
            m["train_cls_ce"] = NAN
        return m


class ValMetrics:
    def __init__(self, heads: tuple[str, ...], device: torch.device):
        self.heads = heads
        self.psnr = PeakSignalNoiseRatio(data_range=2.0).to(device)  # images in [-1, 1]
        self.ssim = StructuralSimilarityIndexMeasure(data_range=2.0).to(device)
        self.sem_cm = MulticlassConfusionMatrix(NUM_CLASSES, ignore_index=IGNORE_INDEX).to(device)
        self.seg_cm = MulticlassConfusionMatrix(NUM_CLASSES, ignore_index=IGNORE_INDEX).to(device)
        self.cls_acc = MulticlassAccuracy(2, average="micro", ignore_index=UNKNOWN_LABEL).to(device)
        # Balanced accuracy: the mean recall over the classes present (macro; torchmetrics leaves out a class with
        # no validation image). The label counts give the majority-class rate beside it.
        self.cls_bacc = MulticlassAccuracy(2, average="macro", ignore_index=UNKNOWN_LABEL).to(device)
        self.cls_counts = torch.zeros(2, dtype=torch.long, device=device)
        self.loss_sums: dict[str, torch.Tensor] = {}
        self.n = 0
        self.has_cls_labels = False
        self.device = device
        self.sem_bf = self.seg_bf = None  # boundary F: the tolerance depends on the image size (first batch)

    def update(self, out: dict, images: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor, parts: dict, total):
        with torch.no_grad():  # a context, not a decorator: mutmut mutates undecorated functions only
            b = images.shape[0]
            self.n += b
            for k, v in {"loss": total, **parts}.items():
                self.loss_sums[k] = self.loss_sums.get(k, 0.0) + v.detach().float() * b
            rgb = out["rgb"].float()
            self.psnr.update(rgb, images)
            self.ssim.update(rgb, images)
            sem = rgb_to_classes_torch(rgb)
            self.sem_cm.update(sem, masks)  # semantic fidelity of the reconstruction
            if self.sem_bf is None:
                tol = tolerance_px(*masks.shape[-2:])
                self.sem_bf, self.seg_bf = (BoundaryFScore(tol).to(self.device) for _ in range(2))
            self.sem_bf.update(sem, masks)
            if "seg" in self.heads:
                seg = out["seg"].argmax(1)
                self.seg_cm.update(seg, masks)
                self.seg_bf.update(seg, masks)
            if "cls" in self.heads:
                self.cls_acc.update(out["cls"].argmax(1), labels)
                self.cls_bacc.update(out["cls"].argmax(1), labels)
                known = labels[labels != UNKNOWN_LABEL]
                self.cls_counts += torch.bincount(known, minlength=2)[:2]
                self.has_cls_labels = self.has_cls_labels or bool((labels != UNKNOWN_LABEL).any())

    def compute(self) -> dict[str, float]:
        m = {f"val_{k}": (v / self.n).item() for k, v in self.loss_sums.items() if not k.startswith("w_")}
        m.update({f"val_{p}": m.get(f"val_{p}", NAN) for p in LOSS_PARTS})
        m["val_psnr"] = self.psnr.compute().item()
        m["val_ssim"] = self.ssim.compute().item()
        sem_iou, m["val_sem_miou"], m["val_sem_acc"] = iou_from_confusion(self.sem_cm.compute())
        if "seg" in self.heads:
            seg_iou, m["val_seg_miou"], m["val_seg_acc"] = iou_from_confusion(self.seg_cm.compute())
        else:
            seg_iou, m["val_seg_miou"], m["val_seg_acc"] = torch.full((NUM_CLASSES,), NAN), NAN, NAN
        m["val_sem_bf"] = self.sem_bf.compute()[1] if self.sem_bf is not None else NAN
        m["val_seg_bf"] = self.seg_bf.compute()[1] if "seg" in self.heads and self.seg_bf is not None else NAN
        m["val_cls_acc"] = self.cls_acc.compute().item() if self.has_cls_labels else NAN
        m["val_cls_bacc"] = self.cls_bacc.compute().item() if self.has_cls_labels else NAN
        m["val_cls_majority"] = (self.cls_counts.max() / self.cls_counts.sum()).item() if self.has_cls_labels else NAN
        if not self.has_cls_labels:  # no labelled image: the 0 from the empty mean is not a loss value
            m["val_cls_ce"] = NAN
        for i, c in enumerate(CLASS_NAMES):
            m[f"val_seg_iou_{c}"] = seg_iou[i].item()
            m[f"val_sem_iou_{c}"] = sem_iou[i].item()
        return m

    def confusions(self) -> dict[str, list | None]:
        """Raw confusion matrices for eval.json (rows: true class, columns: predicted)."""
        return {
            "seg_confusion": self.seg_cm.compute().tolist() if "seg" in self.heads else None,
            "sem_confusion": self.sem_cm.compute().tolist(),
        }

    def boundaries(self) -> dict:
        """Per-class boundary F for eval.json (NaN where a class has no boundary), and the tolerance in pixels."""
        if self.sem_bf is None:
            return {}
        return {"tolerance_px": self.sem_bf.tolerance, "sem": self.sem_bf.compute()[0].tolist(),
                "seg": self.seg_bf.compute()[0].tolist() if "seg" in self.heads else None}

