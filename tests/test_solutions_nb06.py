"""Solutions of notebook 06's exercises."""

from __future__ import annotations

import pytest
import torch
from test_trainer import ToyShapes, build_toy, toy_collate
from torch import nn

from rislib.engine.ema import ModelEMA
from rislib.engine.trainer import lr_factor
from solutions import nb06


def test_warmup_poly_matches_the_trainer_schedule():
    for step in (0, 5, 19, 20, 21, 60, 99):
        assert nb06.warmup_poly(step, 100, 20) == pytest.approx(
            lr_factor(step, total_steps=100, schedule="poly", warmup_steps=20)
        )
    assert nb06.warmup_poly(0, 100, 0) == 1.0 and nb06.warmup_poly(50, 100, 0) == pytest.approx(0.5**0.9)


def test_accumulated_gradients_equal_the_big_batch_gradient():
    torch.manual_seed(0)
    model = build_toy()
    data = ToyShapes(8)
    big = toy_collate([data[i] for i in range(8)])
    parts = [toy_collate([data[i] for i in range(j, j + 2)]) for j in range(0, 8, 2)]
    model.zero_grad()
    model.loss(big, model(big))["total"].backward()
    ref = [p.grad.clone() for p in model.parameters()]
    got = nb06.accumulated_gradients(model, parts)
    assert len(got) == len(ref)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_scaled_lr_rules():
    assert nb06.scaled_lr(5e-5, 32, 64) == pytest.approx(1e-4)
    assert nb06.scaled_lr(5e-5, 32, 8, "sqrt") == pytest.approx(2.5e-5)
    with pytest.raises(ValueError, match="rule"):
        nb06.scaled_lr(1e-3, 32, 8, "cubic")


def test_ema_update_matches_model_ema():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    ema = ModelEMA(model, decay=0.99)
    avg = {k: v.clone() for k, v in model.state_dict().items()}
    for n in range(3):
        with torch.no_grad():
            model.weight.mul_(0.5).add_(0.1)
        ema.update(model)
        avg = nb06.ema_update(avg, model.state_dict(), 0.99, n)
    for k, v in ema.module.state_dict().items():
        torch.testing.assert_close(avg[k], v)
