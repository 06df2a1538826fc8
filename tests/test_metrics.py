"""Validation metrics on a batch small enough to work out by hand: IoU, accuracies, PSNR and loss averages."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from imginav_lib.data.dataset import to_model_input
from imginav_lib.model.metrics import TrainMetrics, ValMetrics, iou_from_confusion, metric_columns
from imginav_lib.palette import CLASS_NAMES, IGNORE_INDEX, PALETTE, UNKNOWN_LABEL

from conftest import REPO

NAN = float("nan")


def test_iou_from_a_known_confusion_matrix():
    # rows true, columns predicted. class 0: tp 3, union 3+1 = 4; class 1: tp 2, union 2+1 = 3; class 2: absent.
    iou, miou, acc = iou_from_confusion(torch.tensor([[3, 1, 0], [0, 2, 0], [0, 0, 0]]))
    assert iou[:2].tolist() == pytest.approx([3 / 4, 2 / 3]) and math.isnan(iou[2])
    assert miou == pytest.approx((3 / 4 + 2 / 3) / 2) and acc == pytest.approx(5 / 6)
    # A class only predicted (never true) is present: IoU 0, counted in the mean.
    iou, miou, acc = iou_from_confusion(torch.tensor([[1, 1], [0, 0]]))
    assert iou.tolist() == [0.5, 0.0] and miou == 0.25 and acc == 0.5
    # One pixel, right: IoU 1 over a union of 1, accuracy 1 over 1 pixel.
    iou, miou, acc = iou_from_confusion(torch.tensor([[1, 0], [0, 0]]))
    assert iou[0] == 1.0 and math.isnan(iou[1]) and miou == 1.0 and acc == 1.0
    iou, miou, acc = iou_from_confusion(torch.zeros(3, 3, dtype=torch.long))
    assert math.isnan(miou) and math.isnan(acc) and iou.isnan().all()


def _blocks(x: torch.Tensor) -> torch.Tensor:
    """Each of the 2x2 pixels becomes a 6x6 block (SSIM needs 11x11); every ratio below stays the same."""
    return x.repeat_interleave(6, -1).repeat_interleave(6, -2)


def _batch():
    """2 images of 2x2 pixels (blown up to 12x12), one pixel of image 0 ignored (a blended edge, black here)."""
    masks = torch.tensor([[[0, 1], [2, IGNORE_INDEX]], [[9, 9], [8, 8]]])
    rgb = np.zeros((2, 2, 2, 3), np.uint8)
    known = masks != IGNORE_INDEX
    rgb[known.numpy()] = PALETTE[masks[known].numpy()]
    images = to_model_input(torch.from_numpy(rgb).permute(0, 3, 1, 2))
    recon = images.clone()
    recon[1, :, 0, 0] = to_model_input(torch.tensor(PALETTE[8]))  # background drawn as wall
    seg_pred = masks.clone()
    seg_pred[masks == IGNORE_INDEX] = 0
    seg_pred[0, 0, 1] = 2  # class 1 predicted as 2
    seg_logits = torch.nn.functional.one_hot(seg_pred, 10).permute(0, 3, 1, 2).float() * 5
    out = {"rgb": _blocks(recon), "seg": _blocks(seg_logits), "cls": torch.tensor([[3.0, 0.0], [0.0, 3.0]])}
    return out, _blocks(images), _blocks(masks), torch.tensor([0, -1])


def test_val_metrics_of_a_hand_made_batch():
    out, images, masks, labels = _batch()
    vm = ValMetrics(("rgb", "seg", "cls"), torch.device("cpu"))
    # Loss parts are averaged per image: 2 images at 0.5 and 1 at 0.2 -> 0.4 (a mean of batches would say 0.35).
    vm.update(out, images, masks, labels, {"mse": torch.tensor(0.5), "w_mse": torch.tensor(0.5)}, torch.tensor(1.0))
    one = {k: v[:1] for k, v in out.items()}
    vm.update(one, images[:1], masks[:1], labels[:1], {"mse": torch.tensor(0.2), "w_mse": torch.tensor(0.2)}, torch.tensor(0.4))
    m = vm.compute()
    assert set(m) == {c for c in metric_columns() if c.startswith("val_")}
    assert m["val_mse"] == pytest.approx(0.4) and m["val_loss"] == pytest.approx(0.8)
    assert math.isnan(m["val_seg_ce"]) and math.isnan(m["val_kl"])  # parts not computed are empty, not 0
    # PSNR over the 3 images (data range 2): one pixel of image 1 off by 40/127.5 in each channel.
    mse = 3 * (40 / 127.5) ** 2 / (3 * 3 * 4)
    assert m["val_psnr"] == pytest.approx(10 * math.log10(4 / mse), rel=1e-5)
    # seg: labelled pixels 7 + 3 = 10, wrong 2 (the class 1 pixel of image 0, twice).
    assert m["val_seg_acc"] == pytest.approx(8 / 10)
    seg = {c: m[f"val_seg_iou_{c}"] for c in CLASS_NAMES}
    assert [seg[c] for c in ("bed", "cabinet_shelf_desk", "chair", "wall", "background")] == pytest.approx([1, 0, 0.5, 1, 1])
    assert math.isnan(seg["sofa"]) and m["val_seg_miou"] == pytest.approx(3.5 / 5)
    # sem (reconstruction snapped to the palette): 1 of 10 labelled pixels wrong (background -> wall).
    assert m["val_sem_acc"] == pytest.approx(9 / 10)
    assert m["val_sem_iou_background"] == pytest.approx(1 / 2) and m["val_sem_iou_wall"] == pytest.approx(2 / 3)
    assert m["val_sem_miou"] == pytest.approx((1 + 1 + 1 + 2 / 3 + 1 / 2) / 5)
    assert m["val_cls_acc"] == 1.0  # the unknown label of image 1 is not counted


def test_untrained_heads_and_unlabelled_images_give_empty_metrics():
    out, images, masks, _ = _batch()
    vm = ValMetrics(("rgb",), torch.device("cpu"))
    vm.update({"rgb": out["rgb"]}, images, masks, torch.tensor([-1, -1]), {"mse": torch.tensor(0.1), "cls_ce": torch.tensor(0.0)}, torch.tensor(0.1))
    m = vm.compute()
    assert math.isnan(m["val_seg_miou"]) and math.isnan(m["val_seg_acc"]) and math.isnan(m["val_seg_iou_bed"])
    assert math.isnan(m["val_cls_acc"]) and math.isnan(m["val_cls_ce"])  # the 0 of an empty mean is not a loss
    assert m["val_sem_acc"] == pytest.approx(6 / 7) and vm.confusions()["seg_confusion"] is None
    cm = np.array(vm.confusions()["sem_confusion"])
    assert cm.shape == (10, 10) and cm.sum() == 7 * 36 and cm[9, 8] == 36


def test_seg_confusion_of_the_hand_made_batch():
    out, images, masks, labels = _batch()
    vm = ValMetrics(("rgb", "seg"), torch.device("cpu"))
    vm.update(out, images, masks, labels, {"mse": torch.tensor(0.1)}, torch.tensor(0.1))
    cm = np.array(vm.confusions()["seg_confusion"]) // 36  # rows true, columns predicted; one 6x6 block per pixel
    expected = np.zeros((10, 10), int)
    for true, pred in ((0, 0), (1, 2), (2, 2), (9, 9), (9, 9), (8, 8), (8, 8)):
        expected[true, pred] += 1
    assert cm.tolist() == expected.tolist()


def test_cls_accuracy_is_micro_over_the_known_labels():
    out, images, masks, _ = _batch()
    images, masks = images.repeat(2, 1, 1, 1), masks.repeat(2, 1, 1)
    out = {"rgb": out["rgb"].repeat(2, 1, 1, 1), "cls": torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])}
    vm = ValMetrics(("rgb", "cls"), torch.device("cpu"))
    vm.update(out, images, masks, torch.tensor([0, 0, 1, UNKNOWN_LABEL]), {"cls_ce": torch.tensor(0.5)}, torch.tensor(0.5))
    # 2 of 3 known labels right (per class it would be 1/2 and 1/1: macro 0.75).
    assert vm.compute()["val_cls_acc"] == pytest.approx(2 / 3)
    every_label_known = ValMetrics(("rgb", "cls"), torch.device("cpu"))
    every_label_known.update({k: v[:2] for k, v in out.items()}, images[:2], masks[:2], torch.tensor([0, 0]), {}, torch.tensor(0.5))
    assert every_label_known.compute()["val_cls_acc"] == 0.5


def test_ssim_is_over_the_data_range_of_the_model_images():
    # Images are in [-1, 1]: data range 2 (the SSIM constants depend on it; 1 or 255 would give other numbers).
    from torchmetrics.functional.image import structural_similarity_index_measure as ssim

    out, images, masks, labels = _batch()
    images = images * 0.4  # a batch that spans less than [-1, 1]: a range guessed from the data would be smaller
    noisy = images + 0.1 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    vm = ValMetrics(("rgb",), torch.device("cpu"))
    vm.update({"rgb": noisy}, images, masks, labels, {"mse": torch.tensor(0.1)}, torch.tensor(0.1))
    expected = ssim(noisy, images, data_range=2.0).item()
    assert vm.compute()["val_ssim"] == pytest.approx(expected, rel=1e-5)
    assert expected != pytest.approx(ssim(noisy, images, data_range=3.0).item(), rel=1e-3)
    assert expected != pytest.approx(ssim(noisy, images).item(), rel=1e-3)  # range guessed from the data


def test_metrics_csv_columns_are_the_documented_ones():
    # docs/run-folder.md is the analysis API: the header the trainer writes is exactly the documented one.
    doc = (REPO / "docs" / "run-folder.md").read_text()
    listed = doc[doc.index("`metrics.csv` columns"):doc.index("where `<class>`")]
    names = listed[listed.index("\n") + 1 :].replace("`", "").replace("\n", " ").split(",")
    expanded = []
    for name in (n.strip() for n in names):
        if name.endswith("<class>..."):
            expanded += [name.removesuffix("<class>...") + c for c in CLASS_NAMES]
        else:
            expanded.append(name)
    assert metric_columns() == expanded


def test_train_metrics_of_the_hand_made_batch():
    out, images, masks, labels = _batch()
    tm = TrainMetrics({})
    tm.update(out, masks, labels, {"mse": torch.tensor(0.5), "cls_ce": torch.tensor(0.25)}, torch.tensor(1.0))
    tm.update({k: v[:1] for k, v in out.items()}, masks[:1], labels[:1], {"mse": torch.tensor(0.2), "cls_ce": torch.tensor(0.1)}, torch.tensor(0.4))
    m = tm.compute(n=3)  # per image: (2 x 0.5 + 0.2) / 3
    assert m["train_loss"] == pytest.approx(2.4 / 3) and m["train_mse"] == pytest.approx(1.2 / 3)
    assert m["train_cls_ce"] == pytest.approx(0.6 / 3) and math.isnan(m["train_seg_ce"]) and math.isnan(m["train_kl"])
    assert m["train_seg_acc"] == pytest.approx(8 / 10)  # as in validation: 2 of 10 labelled pixels wrong
    assert m["train_cls_acc"] == 1.0  # 2 known labels (image 0, twice), both right; the unknown one not counted
    unlabelled = TrainMetrics({})
    unlabelled.update({"rgb": out["rgb"], "cls": out["cls"]}, masks, torch.tensor([-1, -1]), {"cls_ce": torch.tensor(0.0)}, torch.tensor(0.0))
    u = unlabelled.compute(n=2)
    assert math.isnan(u["train_cls_acc"]) and math.isnan(u["train_cls_ce"]) and math.isnan(u["train_seg_acc"])


def test_train_accuracy_without_a_cls_head_and_of_a_single_labelled_pixel():
    """A seg-only epoch: no cls sums at all, so the cls columns are empty; 1 labelled pixel, right: seg acc 1/1."""
    masks = torch.tensor([[[3, IGNORE_INDEX]]])  # (1, 1, 2): one labelled pixel, one ignored
    seg = torch.nn.functional.one_hot(torch.tensor([[[3, 3]]]), 10).permute(0, 3, 1, 2).float()
    tm = TrainMetrics({})
    tm.update({"rgb": torch.zeros(1, 3, 1, 2), "seg": seg}, masks, torch.tensor([UNKNOWN_LABEL]), {"seg_ce": torch.tensor(0.5)}, torch.tensor(0.5))
    m = tm.compute(n=1)
    assert m["train_seg_acc"] == 1.0 and m["train_seg_ce"] == 0.5
    assert math.isnan(m["train_cls_acc"]) and math.isnan(m["train_cls_ce"])


def _halves_batch(seg_split: int):
    """One 12x12 image: bed (class 0) in columns 0..5, cabinet (class 1) from column 6; the reconstruction is
    exact, the seg head puts the edge at column `seg_split`."""
    masks = torch.ones(1, 12, 12, dtype=torch.long)
    masks[..., :6] = 0
    images = to_model_input(torch.from_numpy(PALETTE[masks.numpy()]).permute(0, 3, 1, 2))
    seg_pred = torch.ones(1, 12, 12, dtype=torch.long)
    seg_pred[..., :seg_split] = 0
    out = {"rgb": images.clone(), "seg": torch.nn.functional.one_hot(seg_pred, 10).permute(0, 3, 1, 2).float()}
    return out, images, masks, torch.tensor([UNKNOWN_LABEL])


def test_boundary_f_of_a_hand_made_batch():
    """12x12 px: tolerance ceil(0.008 x 17.0) = 1 px. The reconstruction keeps the edge (bed and cabinet F 1); the
    seg edge is 2 px off (column 8 for 6), beyond the tolerance: F 0 for both. The other 8 classes: no edge, NaN."""
    out, images, masks, labels = _halves_batch(seg_split=8)
    vm = ValMetrics(("rgb", "seg"), torch.device("cpu"))
    vm.update(out, images, masks, labels, {"mse": torch.tensor(0.0)}, torch.tensor(0.0))
    m, b = vm.compute(), vm.boundaries()
    assert m["val_sem_bf"] == 1.0 and m["val_seg_bf"] == 0.0
    assert b["tolerance_px"] == 1 and set(b) == {"tolerance_px", "sem", "seg"}
    assert b["sem"][:2] == [1.0, 1.0] and b["seg"][:2] == [0.0, 0.0]
    assert all(math.isnan(v) for v in b["sem"][2:] + b["seg"][2:]) and len(b["sem"]) == len(b["seg"]) == 10
    no_seg = ValMetrics(("rgb",), torch.device("cpu"))  # a seg head not trained: its boundary F is empty
    no_seg.update({"rgb": out["rgb"]}, images, masks, labels, {"mse": torch.tensor(0.0)}, torch.tensor(0.0))
    m, b = no_seg.compute(), no_seg.boundaries()
    assert m["val_sem_bf"] == 1.0 and math.isnan(m["val_seg_bf"]) and b["seg"] is None and b["sem"][:2] == [1.0, 1.0]


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_metrics_before_any_batch_have_no_boundary_f():
    """Nothing validated yet: no tolerance is known (it comes from the first batch's size), so no boundary F."""
    vm = ValMetrics(("rgb", "seg"), torch.device("cpu"))
    m = vm.compute()
    assert math.isnan(m["val_sem_bf"]) and math.isnan(m["val_seg_bf"]) and vm.boundaries() == {}


def test_every_accumulator_is_on_the_validation_device(monkeypatch):
    """The metrics must live where the batches are (a CUDA run validates on the GPU). The "meta" device stands in
    for a GPU on a CPU-only machine; the boundary F metrics are made at the first batch, so their move is recorded."""
    from imginav_lib.model import metrics

    vm = ValMetrics(("rgb", "seg", "cls"), torch.device("meta"))
    assert [a.device.type for a in (vm.psnr, vm.ssim, vm.sem_cm, vm.seg_cm, vm.cls_acc)] == ["meta"] * 5
    moved = []

    class RecordingBoundaryF(metrics.BoundaryFScore):
        def to(self, *args, **kwargs):
            moved.append(args)
            return super().to(*args, **kwargs)

    monkeypatch.setattr(metrics, "BoundaryFScore", RecordingBoundaryF)
    out, images, masks, labels = _halves_batch(seg_split=6)
    vm = ValMetrics(("rgb", "seg"), torch.device("cpu"))
    vm.update(out, images, masks, labels, {"mse": torch.tensor(0.0)}, torch.tensor(0.0))
    assert moved == [(torch.device("cpu"),)] * 2


def test_a_constant_classifier_scores_half_balanced_accuracy_beside_the_majority_rate():
    # 20 images, 17 rooms (label 0) and 3 scenes, 2 unlabelled; the head always answers "room": accuracy 0.85,
    # balanced accuracy (1 + 0) / 2 = 0.5, majority-class rate 17 / 20 = 0.85. A perfect head: 1.0.
    out, images, masks, _ = _batch()
    n = 22
    reps = lambda t: t[:1].repeat(n, *([1] * (t.dim() - 1)))  # noqa: E731
    labels = torch.tensor([0] * 17 + [1] * 3 + [UNKNOWN_LABEL] * 2)
    for logits, acc, bacc in ((torch.tensor([[3.0, 0.0]]).repeat(n, 1), 0.85, 0.5),
                              (torch.nn.functional.one_hot(labels.clamp(min=0), 2).float() * 3, 1.0, 1.0)):
        vm = ValMetrics(("rgb", "cls"), torch.device("cpu"))
        vm.update({"rgb": reps(out["rgb"]), "cls": logits}, reps(images), reps(masks), labels, {}, torch.tensor(0.5))
        m = vm.compute()
        assert (m["val_cls_acc"], m["val_cls_bacc"], m["val_cls_majority"]) == pytest.approx((acc, bacc, 0.85))
    no_labels = ValMetrics(("rgb", "cls"), torch.device("cpu"))
    no_labels.update({"rgb": out["rgb"], "cls": out["cls"]}, images, masks, torch.tensor([UNKNOWN_LABEL] * 2), {}, torch.tensor(0.5))
    m = no_labels.compute()
    assert math.isnan(m["val_cls_bacc"]) and math.isnan(m["val_cls_majority"])
