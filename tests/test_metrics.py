"""Metrics against independent computations: random, empty, full and one-pixel masks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rislib.metrics import MetricAccumulator, compute_metrics, format_table, mask_counts

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def _reference(preds, gts, strict=False):
    """Plain-Python metrics, written pixel by pixel on nested lists (no numpy reductions)."""
    inter, union, empty_pred, no_target = [], [], [], []
    for p, g in zip(preds, gts):
        pl, gl = np.asarray(p).tolist(), np.asarray(g).tolist()
        i = u = a = b = 0
        for prow, grow in zip(pl, gl):
            for x, y in zip(prow, grow):
                i += x and y
                u += x or y
                a += x
                b += y
        inter.append(i)
        union.append(u)
        empty_pred.append(a == 0)
        no_target.append(b == 0)
    out = {}
    tgt = [k for k in range(len(inter)) if not no_target[k]]
    ious = {k: (inter[k] / union[k] if union[k] else 0.0) for k in range(len(inter))}
    out["oIoU"] = 100 * sum(inter[k] for k in tgt) / sum(union[k] for k in tgt)
    out["mIoU"] = 100 * sum(ious[k] for k in tgt) / len(tgt)
    for t in THRESHOLDS:
        hits = [k for k in tgt if (ious[k] > t if strict else ious[k] >= t)]
        out[f"P@{t}"] = 100 * len(hits) / len(tgt)
    if any(no_target):
        nt = [k for k in range(len(inter)) if no_target[k]]
        g = [(1.0 if empty_pred[k] else 0.0) if no_target[k] else ious[k] for k in range(len(inter))]
        out["gIoU"] = 100 * sum(g) / len(g)
        out["cIoU"] = 100 * sum(inter) / sum(union)
        out["N-acc"] = 100 * sum(empty_pred[k] for k in nt) / len(nt)
        out["T-acc"] = 100 * sum(not empty_pred[k] for k in tgt) / len(tgt)
    return out


def _random_case(seed, n=12, generalized=False):
    rng = np.random.default_rng(seed)
    preds, gts = [], []
    for k in range(n):
        h, w = rng.integers(5, 20, size=2)
        g = np.zeros((h, w), bool)
        y0, x0 = rng.integers(0, h - 2), rng.integers(0, w - 2)
        g[y0 : y0 + rng.integers(1, h - y0 + 1), x0 : x0 + rng.integers(1, w - x0 + 1)] = True
        p = g ^ (rng.random((h, w)) < rng.uniform(0.0, 0.4))  # the GT with some pixels flipped
        if k == 0:
            p = np.ones((h, w), bool)  # full prediction
        if k == 1:
            p = np.zeros((h, w), bool)  # empty prediction on a target sample
        if k == 2:  # one-pixel GT, one-pixel prediction on it
            g = np.zeros((h, w), bool)
            g[1, 2] = True
            p = g.copy()
        if k == 3:  # one-pixel GT missed by one pixel
            g = np.zeros((h, w), bool)
            g[0, 0] = True
            p = np.zeros((h, w), bool)
            p[0, 1] = True
        if generalized and k % 3 == 1:
            g = np.zeros((h, w), bool)
            p = np.zeros((h, w), bool) if k % 2 else p
        preds.append(p)
        gts.append(g)
    return preds, gts


@pytest.mark.parametrize("generalized", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_equal_independent_computation(seed, generalized):
    preds, gts = _random_case(seed, generalized=generalized)
    got = compute_metrics(preds, gts)
    ref = _reference(preds, gts)
    assert got["n"] == len(preds)
    assert set(got) - {"n"} == set(ref)
    for k, v in ref.items():
        assert got[k] == pytest.approx(v, abs=1e-9), k
    if generalized:
        assert {"gIoU", "cIoU", "N-acc", "T-acc"} <= set(got)
    else:
        assert got["oIoU"] == pytest.approx(ref["oIoU"])


def test_hand_made_case_with_known_numbers():
    g1 = np.zeros((4, 4), bool)
    g1[:2, :2] = True  # 4 pixels
    p1 = np.zeros((4, 4), bool)
    p1[:2, :1] = True  # 2 of them: I=2, U=4, IoU=0.5
    g2 = np.ones((10, 10), bool)  # big object, perfect prediction: I=U=100
    p2 = g2.copy()
    got = compute_metrics([p1, p2], [g1, g2])
    assert got["oIoU"] == pytest.approx(100 * 102 / 104)  # the big object dominates
    assert got["mIoU"] == pytest.approx(75.0)  # each expression counts once
    assert got["P@0.5"] == 100.0 and got["P@0.6"] == 50.0 and got["P@0.9"] == 50.0
    strict = compute_metrics([p1, p2], [g1, g2], comparator=">")
    assert strict["P@0.5"] == 50.0  # IoU exactly 0.5 does not pass IoU > 0.5
    assert "gIoU" not in got and "by_type" not in got


def test_empty_vs_empty_is_zero_for_targets_and_one_under_giou():
    z = np.zeros((3, 3), bool)
    acc = MetricAccumulator()
    acc.update(z, z, no_target=False)  # a target that vanished after resizing: IoU 0 (LAVT/MagNet)
    r = acc.compute()
    assert r["mIoU"] == 0.0 and r["oIoU"] == 0.0 and r["P@0.5"] == 0.0 and "gIoU" not in r
    acc2 = MetricAccumulator()
    acc2.update(z, z)  # empty GT: a no-target sample, the empty prediction is right
    full = np.ones((3, 3), bool)
    acc2.update(full, z)  # a no-target sample answered with a mask
    r2 = acc2.compute()
    assert r2["gIoU"] == 50.0 and r2["N-acc"] == 50.0 and r2["cIoU"] == 0.0
    assert math.isnan(r2["T-acc"]) and math.isnan(r2["mIoU"])
    assert [row["gIoU_score"] for row in acc2.per_sample()] == [1.0, 0.0]


def test_ciou_is_nan_when_no_pixel_is_predicted_or_true_anywhere():
    # only no-target samples, all answered correctly with empty masks: sum I / sum U = 0 / 0,
    # which the module docstring defines as nan (undefined), not 0 (a score)
    z = np.zeros((3, 3), bool)
    acc = MetricAccumulator()
    acc.update(z, z)
    acc.update(z, z)
    r = acc.compute()
    assert math.isnan(r["cIoU"]) and r["gIoU"] == 100.0 and r["N-acc"] == 100.0
    assert math.isnan(r["oIoU"]) and math.isnan(r["mIoU"]) and r["n"] == 2  # no target sample at all


def test_t_acc_counts_empty_predictions_on_targets():
    g = np.zeros((4, 4), bool)
    g[0] = True
    preds = [np.zeros((4, 4), bool), g.copy(), np.zeros((4, 4), bool)]
    gts = [g, g, np.zeros((4, 4), bool)]
    r = compute_metrics(preds, gts)
    assert r["T-acc"] == 50.0 and r["N-acc"] == 100.0
    assert r["gIoU"] == pytest.approx(100 * (0 + 1 + 1) / 3)
    assert r["cIoU"] == pytest.approx(100 * 4 / 8)


def test_by_type_matches_metrics_of_each_subset():
    preds, gts = _random_case(5, n=15, generalized=True)
    types = ["attribute", "relation", "none"] * 5
    got = compute_metrics(preds, gts, types)
    assert sorted(got["by_type"]) == ["attribute", "none", "relation"]
    for t in got["by_type"]:
        idx = [k for k, x in enumerate(types) if x == t]
        sub = compute_metrics([preds[k] for k in idx], [gts[k] for k in idx])
        for key, v in got["by_type"][t].items():
            if key in sub:
                assert v == pytest.approx(sub[key], nan_ok=True), (t, key)
            else:  # generalized keys of a subset without no-target samples
                assert key in ("gIoU", "cIoU", "N-acc", "T-acc")


def test_batched_torch_and_numpy_updates_agree_with_single_updates():
    torch.manual_seed(3)
    p = torch.rand(6, 1, 9, 7) > 0.5
    g = torch.rand(6, 1, 9, 7) > 0.6
    a = MetricAccumulator()
    a.update(p, g.float(), type="x", sample_id=list(range(6)))  # {0,1} floats are accepted
    b = MetricAccumulator()
    for k in range(6):
        b.update(p[k, 0].numpy(), g[k, 0].numpy(), type="x", sample_id=k)
    c = MetricAccumulator()
    c.update(p[:, 0], g[:, 0].numpy(), type=["x"] * 6, sample_id=list(range(6)))  # [B, H, W], mixed kinds
    assert a.per_sample() == b.per_sample() == c.per_sample()
    assert a.compute() == b.compute()
    merged = MetricAccumulator().merge(a).merge(b)
    assert len(merged) == 12 and merged.compute()["mIoU"] == pytest.approx(a.compute()["mIoU"])
    i, u, pa, ga = mask_counts(p, g)
    assert i == [int((p[k] & g[k]).sum()) for k in range(6)] and u == [int((p[k] | g[k]).sum()) for k in range(6)]
    assert pa == p.flatten(1).sum(1).tolist() and ga == g.flatten(1).sum(1).tolist()


def test_worst_cases_and_per_sample_rows():
    preds, gts = _random_case(7)
    acc = MetricAccumulator()
    for k, (p, g) in enumerate(zip(preds, gts)):
        acc.update(p, g, sample_id=("ref", k))
    rows = acc.per_sample()
    assert [r["sample_id"] for r in rows] == [("ref", k) for k in range(len(preds))]
    worst = acc.worst(3)
    ious = sorted(r["IoU"] for r in rows)
    assert [r["IoU"] for r in worst] == ious[:3]
    assert rows[3]["IoU"] == 0.0 and rows[3]["I"] == 0 and rows[3]["U"] == 2  # the one-pixel miss
    assert rows[2]["IoU"] == 1.0 and rows[2]["U"] == 1  # the one-pixel hit


def test_bad_inputs_raise_clear_errors():
    acc = MetricAccumulator()
    with pytest.raises(ValueError, match="shapes differ"):
        acc.update(np.zeros((4, 4), bool), np.zeros((4, 5), bool))
    with pytest.raises(ValueError, match="threshold probabilities first"):
        acc.update(torch.rand(4, 4), torch.zeros(4, 4))
    with pytest.raises(ValueError, match=r"\[H, W\], \[B, H, W\] or \[B, 1, H, W\]"):
        acc.update(np.zeros((2, 3, 4, 4), bool), np.zeros((2, 3, 4, 4), bool))
    with pytest.raises(ValueError, match="type: expected 2 values"):
        acc.update(np.zeros((2, 4, 4), bool), np.zeros((2, 4, 4), bool), type=["a"])
    with pytest.raises(ValueError, match="flagged no_target"):
        acc.update(np.ones((2, 2), bool), np.ones((2, 2), bool), no_target=True)
    with pytest.raises(ValueError, match="comparator"):
        MetricAccumulator(comparator="=>")
    with pytest.raises(ValueError, match="no samples"):
        MetricAccumulator().compute()
    with pytest.raises(ValueError, match="2 predictions but 1"):
        compute_metrics([np.zeros((2, 2), bool)] * 2, [np.zeros((2, 2), bool)])


def test_format_table_prints_dashes_for_undefined_values():
    table = format_table({"a": {"n": 2, "mIoU": 50.0, "N-acc": float("nan")}}, digits=1)
    assert table.splitlines()[0] == "| | n | mIoU | N-acc |"
    assert table.splitlines()[2] == "| a | 2 | 50.0 | - |"
