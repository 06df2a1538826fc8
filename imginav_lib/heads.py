"""The model's heads as one table: what each is called, which loss weight and loss term it has, which metrics.csv
columns it fills, which minimum the decision asks of it and how the report names it.

Torch-free, so that params, the analysis and the report read it as well as the model, the losses and the
metrics. The model's layers and the loss functions themselves stay per head (`model.py`, `losses.py`); every
list of heads, columns, thresholds or labels elsewhere is read from here.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Head:
    name: str  # model output key and the name in `heads` tuples ("seg")
    label: str  # in prose and tables ("segmentation")
    loss_weight: str  # the schema.Loss field holding its weight
    loss_term: str  # its unweighted loss part: train_<term> and val_<term> in metrics.csv, a column of steps.csv
    term_label: str  # the loss part in figure titles ("seg CE")
    metrics: tuple[tuple[str, str], ...] = ()  # val metrics.csv columns summarised across seeds -> report label
    train_metrics: tuple[str, ...] = ()  # train metrics.csv columns
    class_iou: str | None = None  # per-class IoU columns val_<class_iou>_iou_<class> (None: not a per-pixel head)
    gate: str | None = None  # the val column that must reach a minimum for an auxiliary head to count as good
    gate_label: str = ""  # that column in the criteria ("seg mIoU")
    min_field: str | None = None  # the schema.Decision field holding the minimum
    prose: str = ""  # what the head does, for the verdict: "segments at mIoU {:.2f}" (the gate's mean)
    # run.json counts (train, val) of the images that have this head's target; None: every image has one
    scored_on: tuple[str, str] | None = None
    target: str = ""  # what such an image has, in words ("a room/scene label")

    @property
    def auxiliary(self) -> bool:
        return self.gate is not None

    def minimum(self, rules) -> float:
        """The minimum the decision rules (schema.Decision) ask of this head's gate column."""
        return getattr(rules, self.min_field)


HEADS: tuple[Head, ...] = (
    Head("rgb", "reconstruction", "mse", "mse", "MSE", metrics=(("val_psnr", "PSNR (dB)"), ("val_ssim", "SSIM"))),
    Head("seg", "segmentation", "seg", "seg_ce", "seg CE",
         metrics=(("val_seg_acc", "seg head: pixel accuracy"), ("val_seg_miou", "seg head: mIoU"),
                  ("val_seg_bf", "seg head: boundary F")),
         train_metrics=("train_seg_acc",), class_iou="seg",
         gate="val_seg_miou", gate_label="seg mIoU", min_field="min_seg_miou", prose="segments at mIoU {:.2f}"),
    # The gate is the balanced accuracy (mean recall per class): a constant answer scores 1 / classes, whatever the
    # class shares; the majority-class rate (what that constant answer scores in plain accuracy) is shown beside it.
    Head("cls", "classification", "cls", "cls_ce", "cls CE",
         metrics=(("val_cls_acc", "cls head: accuracy"), ("val_cls_bacc", "cls head: balanced accuracy"),
                  ("val_cls_majority", "cls: majority-class rate")),
         train_metrics=("train_cls_acc",),
         gate="val_cls_bacc", gate_label="cls balanced accuracy", min_field="min_cls_accuracy",
         prose="classifies at balanced accuracy {:.2f}",
         scored_on=("n_train_labelled", "n_val_labelled"), target="a room/scene label"),
)
# Semantic fidelity: the reconstruction snapped to the nearest palette colour against the true classes. It
# belongs to the rgb head but is logged after the auxiliary heads' columns (metrics.csv keeps its order).
SEMANTIC = (("val_sem_acc", "semantic fidelity: pixel accuracy"), ("val_sem_miou", "semantic fidelity: mIoU"),
            ("val_sem_bf", "semantic fidelity: boundary F"))
# What the latent gives the next stage (eval.json "latent", best checkpoint): per run, summarised across seeds.
LATENT = (("probe_miou", "latent: linear probe mIoU"), ("latent_scale", "latent: scale to unit variance (1/std)"))
KL = ("kl", "KL")  # the variational encoder's loss term: logged like a head's, but belongs to no head


# The tables are read when called, not copied at import, so a head added to HEADS reaches every user.
def head(name: str) -> Head:
    for h in HEADS:
        if h.name == name:
            return h
    raise ValueError(f"invalid head: {name!r}")


def names() -> tuple[str, ...]:
    return tuple(h.name for h in HEADS)


def auxiliary() -> tuple[Head, ...]:
    return tuple(h for h in HEADS if h.auxiliary)


def loss_terms() -> tuple[str, ...]:
    """Unweighted loss parts logged in metrics.csv (train_/val_) and steps.csv, in order."""
    return (*(h.loss_term for h in HEADS), KL[0])


def term_labels() -> dict[str, str]:
    return {**{h.loss_term: h.term_label for h in HEADS}, KL[0]: KL[1]}


def run_metrics() -> dict[str, str]:
    """Per-run numbers summarised across seeds: column -> what the report calls it."""
    primary = {"best_val_mse": "best val MSE", "final_val_mse": "final val MSE"}
    rgb = {c: n for h in HEADS if not h.auxiliary for c, n in h.metrics}
    return {**primary, **rgb, **dict(SEMANTIC), **{c: n for h in auxiliary() for c, n in h.metrics}, **dict(LATENT)}


def val_metric_columns() -> list[str]:
    """The val metric columns of metrics.csv (after the loss columns), in order."""
    return [c for h in HEADS for c, _ in h.metrics] + [c for c, _ in SEMANTIC]


def class_iou_prefixes() -> tuple[str, ...]:
    """Prefixes p of the per-class IoU columns val_<p>_iou_<class>: the per-pixel heads, then semantic fidelity."""
    return (*(h.class_iou for h in HEADS if h.class_iou), "sem")


def trained(loss: dict) -> tuple[str, ...]:
    """The auxiliary heads a loss-weights dict (schema.Loss as a dict) trains: those with a non-zero weight."""
    return tuple(h.name for h in auxiliary() if loss.get(h.loss_weight, 0) > 0)


def image_counts() -> tuple[str, ...]:
    """run.json's image counts per split: all images, then those with each head's target (the runs table)."""
    return ("n_train", "n_val", *dict.fromkeys(c for h in HEADS if h.scored_on for c in h.scored_on))


def words(heads: tuple[str, ...]) -> str:
    """"segmentation + classification"; "" for none."""
    return " + ".join(head(h).label for h in heads)
