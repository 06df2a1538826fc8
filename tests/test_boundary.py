"""Boundary F-score: known values and agreement with a slow per-pixel reference."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from imginav_lib.model.boundary import BoundaryFScore, boundary_counts, boundary_f, tolerance_px
from imginav_lib.palette import IGNORE_INDEX


def halves(split: int, size: int = 8) -> torch.Tensor:
    """(1, size, size): class 0 left of column `split`, class 1 from it on."""
    x = torch.ones(1, size, size, dtype=torch.long)
    x[..., :split] = 0
    return x


def score(pred, target, tol, k=3):
    f, mean = boundary_f(boundary_counts(pred, target, tol, k))
    return f, mean


def test_perfect_prediction_scores_one_and_absent_classes_are_nan():
    f, mean = score(halves(4), halves(4), 1)
    assert f[:2].tolist() == [1.0, 1.0]
    assert math.isnan(f[2])
    assert mean == 1.0


def test_one_pixel_shift_is_forgiven_within_the_tolerance_only():
    assert score(halves(5), halves(4), 1)[1] == 1.0
    assert score(halves(5), halves(4), 0)[1] == 0.0
    assert score(halves(6), halves(4), 1)[1] == 0.0  # 2 px off: no match with a 1 px tolerance
    assert score(halves(6), halves(4), 2)[1] == 1.0


def test_a_missing_class_scores_zero():
    pred = torch.zeros(1, 8, 8, dtype=torch.long)  # one class everywhere: no boundary at all (the border is none)
    f, mean = score(pred, halves(4), 1)
    assert f[:2].tolist() == [0.0, 0.0] and mean == 0.0


def test_half_the_edge_found_gives_the_harmonic_mean_of_precision_and_recall():
    target = halves(4)
    pred = torch.zeros(1, 8, 8, dtype=torch.long)
    pred[0, :4, 4:] = 1  # class 1 only in the top half: half of the true edge is found
    f, _ = score(pred, target, 0)
    counts = boundary_counts(pred, target, 0, 3)
    # Class 1, tolerance 0: predicted boundary = column 4 rows 0..3 + row 3 columns 5..7 = 7 px, of which the 4 in
    # column 4 lie on the true boundary (column 4, all 8 rows): precision 4/7, recall 4/8.
    assert counts[:, 1].tolist() == [4.0, 7.0, 4.0, 8.0]
    p, r = 4 / 7, 4 / 8
    assert f[1].item() == pytest.approx(2 * p * r / (p + r))


def _reference(pred: np.ndarray, target: np.ndarray, tol: int, k: int) -> np.ndarray:
    """Per-pixel loops: boundary = pixel of class c with an 8-neighbour (inside the image) of another class."""
    h, w = target.shape

    def bmap(lab, c):
        b = np.zeros((h, w), bool)
        for i in range(h):
            for j in range(w):
                if lab[i, j] != c:
                    continue
                for di in (-1, 0, 1):
                    for dj in (-1, 0, 1):
                        ii, jj = i + di, j + dj
                        if 0 <= ii < h and 0 <= jj < w and lab[ii, jj] != c:
                            b[i, j] = True
        return b

    def near(b, i, j):
        return b[max(0, i - tol) : i + tol + 1, max(0, j - tol) : j + tol + 1].any()

    out = np.zeros((4, k))
    for c in range(k):
        bp, bt = bmap(pred, c), bmap(target, c)
        for i in range(h):
            for j in range(w):
                if bp[i, j]:
                    out[1, c] += 1
                    out[0, c] += near(bt, i, j)
                if bt[i, j]:
                    out[3, c] += 1
                    out[2, c] += near(bp, i, j)
    return out


@pytest.mark.parametrize("tol", [0, 1, 2])
def test_counts_match_a_per_pixel_reference_on_random_maps(tol):
    g = torch.Generator().manual_seed(tol)
    k = 4
    target = torch.randint(0, k, (2, 12, 12), generator=g)
    pred = torch.where(torch.rand(2, 12, 12, generator=g) < 0.7, target, torch.randint(0, k, (2, 12, 12), generator=g))
    target[torch.rand(2, 12, 12, generator=g) < 0.1] = IGNORE_INDEX
    got = boundary_counts(pred, target, tol, k).numpy()
    want = sum(_reference(pred[b].numpy(), target[b].numpy(), tol, k) for b in range(2))
    np.testing.assert_array_equal(got, want)


def test_an_edge_drawn_on_an_ignored_seam_matches_the_true_edges_beside_it():
    target, pred = halves(4), halves(4)
    target[0, :, 4] = IGNORE_INDEX  # a blended 1 px seam between the classes: in neither true region
    pred[0, :, 4] = 0  # the predicted edge runs through the seam
    assert score(pred, target, 1)[1] == 1.0
    assert score(pred, target, 0)[1] < 1.0


def test_metric_accumulates_counts_over_batches():
    m = BoundaryFScore(tolerance=1, num_classes=3)
    m.update(halves(4), halves(4))
    m.update(torch.zeros(1, 8, 8, dtype=torch.long), halves(4))
    f, mean = m.compute()
    # class 0 and 1: 8 of 16 true boundary pixels found, every predicted one matched: F = 2 * 1 * 0.5 / 1.5
    assert f[:2].tolist() == pytest.approx([2 / 3, 2 / 3])
    assert mean == pytest.approx(2 / 3)


def test_tolerance_follows_davis_fraction_of_the_diagonal():
    assert tolerance_px(64, 64) == 1
    assert tolerance_px(512, 512) == 6


@pytest.mark.parametrize("shapes", [((1, 8, 8), (1, 8, 9)), ((8, 8), (8, 8))])
def test_boundary_counts_refuses_maps_of_other_shapes(shapes):
    """Two maps of different sizes, or maps without a batch dimension, are refused with both shapes named."""
    pred, target = (torch.zeros(s, dtype=torch.long) for s in shapes)
    want = f"boundary_counts wants pred and target (B, H, W), got {shapes[0]} and {shapes[1]}"
    with pytest.raises(ValueError, match=f"^{re.escape(want)}$"):
        boundary_counts(pred, target, 1, 3)


def test_f_of_hand_made_counts_with_one_pixel_and_small_ratios():
    """Counts (matched pred, pred, matched true, true) per class, F = 2pr / (p + r) by hand:
    1 of 1 predicted px matched, 1 of 2 true: p 1, r 1/2, F 2/3; the mirror case: F 2/3; p = r = 1/4: F 1/4;
    one predicted px and no true edge, or the reverse: F 0 (not NaN); no edge on either side: NaN."""
    counts = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 2, 4, 1, 0, 0], [1, 1, 1, 0, 0, 0], [2, 1, 4, 0, 1, 0]])
    f, mean = boundary_f(counts)
    assert f[:5].tolist() == pytest.approx([2 / 3, 2 / 3, 1 / 4, 0, 0]) and math.isnan(f[5])
    assert mean == pytest.approx((2 / 3 + 2 / 3 + 1 / 4) / 5)


def test_metric_counts_stay_exact_past_float32_integers():
    """Summed over a large data set, a class's boundary pixels pass 2**24, where float32 stops counting by one:
    2**24 + 7 (a 7 px edge) would round to 2**24 + 8."""
    m = BoundaryFScore(tolerance=1, num_classes=3)
    m.counts += 2**24  # as after many batches
    m.update(halves(3, size=7), halves(3, size=7))  # a 7 px edge per class (columns 2 and 3), every pixel matched
    assert m.counts[:, :2].tolist() == [[2**24 + 7] * 2] * 4 and m.counts[:, 2].tolist() == [2**24] * 4
