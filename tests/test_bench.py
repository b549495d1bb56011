"""The benchmark's yardstick: FLOP counting, the FLOP-matched reference network, the ratio record."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from rislib.engine.flops import count_flops
from rislib.engine.reference_net import ReferenceNet, fit_reference_width, reference_flops_per_sample

#: the toy models (tests/toy_model.py) these tests build by name
pytestmark = pytest.mark.usefixtures("toy_models")


def test_count_flops_of_a_linear_layer_forward_and_backward():
    x = torch.randn(5, 7, requires_grad=True)
    layer = torch.nn.Linear(7, 3)
    fwd = 2 * 5 * 7 * 3
    assert count_flops(lambda: layer(x)) == fwd
    # backward: grad of the input and grad of the weight, one matmul each
    assert count_flops(lambda: layer(x).sum().backward()) == 3 * fwd


def test_fused_cpu_attention_costs_what_the_explicit_formula_costs():
    q, k, v = (torch.randn(2, 3, 11, 8, requires_grad=True) for _ in range(3))
    expected = 2 * (2 * 2 * 3 * 11 * 11 * 8)  # Q K^T and A V
    assert count_flops(lambda: F.scaled_dot_product_attention(q, k, v)) == expected
    with sdpa_kernel([SDPBackend.MATH]):
        assert count_flops(lambda: F.scaled_dot_product_attention(q, k, v)) == expected
    # backward: four matmuls, plus the recomputed scores in the fused kernel
    assert count_flops(lambda: F.scaled_dot_product_attention(q, k, v).sum().backward()) == expected * 7 // 2


def test_reference_width_is_the_closest_match():
    target = 3.0e7
    fit = fit_reference_width(target, 64)
    w = fit.width
    assert fit.flops_per_sample == reference_flops_per_sample(w, 64)
    for other in (w - 1, w + 1):
        assert abs(fit.flops_per_sample - target) <= abs(reference_flops_per_sample(other, 64) - target)
    assert abs(fit.flops_per_sample - target) / target < 0.1


def test_reference_net_segments_at_stride_16_and_learns():
    from rislib import Batch

    torch.manual_seed(0)
    model = ReferenceNet(4, image_size=64)
    masks = torch.zeros(4, 1, 64, 64)
    masks[:, :, :32] = 1
    batch = Batch(torch.rand(4, 3, 64, 64), ["the red circle"] * 4, masks)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        out = model(batch)
        loss = model.loss(batch, out)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert out.logits.shape == (4, 1, 4, 4)
    assert losses[-1] < 0.5 * losses[0]


def test_bench_records_gflops_ratio_against_the_reference(tmp_path):
    from rislib.engine.bench_cli import run_benchmark, write_result

    rec = run_benchmark(
        ["_toy_for_tests"], batch_size=4, steps=1, warmup=1, rounds=2, sizes=[32], sides=["fast"], infer=False,
        progress=False,
    )  # fmt: skip
    (row,) = rec["results"]
    ref = row["reference"]
    assert row["image_size"] == 32 and row["side"] == "fast" and len(row["gflops_ratio_rounds"]) == 2
    # the toy is not in CHANNELS_LAST_ON_CPU: it trains NCHW, its yardstick channels-last
    assert (row["options"]["channels_last"], row["options"]["reference_channels_last"]) == (False, True)
    assert row["train_gflops_per_s"] == pytest.approx(row["train_flops_per_sample"] * row["train_samples_per_s"] / 1e9)
    assert ref["train_flops_per_sample"] == pytest.approx(row["train_flops_per_sample"], rel=0.5)
    ratios = [
        row["train_flops_per_sample"] * m / (ref["train_flops_per_sample"] * r)
        for m, r in zip(row["train_samples_per_s_rounds"], ref["train_samples_per_s_rounds"])
    ]
    assert row["gflops_ratio"] == pytest.approx(sum(ratios) / 2)
    path = write_result(rec, tmp_path)
    assert path.with_suffix(".png").is_file()
    assert json.loads(path.read_text())["results"][0]["gflops_ratio"] == pytest.approx(row["gflops_ratio"])


def test_fast_side_layout_follows_the_cpu_recipe_unless_forced():
    from rislib.engine.bench_cli import channels_last_for
    from rislib.engine.recipes import CHANNELS_LAST_ON_CPU

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert "lts" in CHANNELS_LAST_ON_CPU and "haris" not in CHANNELS_LAST_ON_CPU
    assert channels_last_for("recipe", "lts", cpu) == (True, True)
    assert channels_last_for("recipe", "haris", cpu) == (False, True)
    assert channels_last_for("recipe", "haris", cuda) == (True, True)
    assert channels_last_for("on", "haris", cpu) == (True, True)
    assert channels_last_for(False, "lts", cpu) == (False, False)
    with pytest.raises(ValueError, match="channels_last"):
        channels_last_for("nhwc", "lts", cpu)
