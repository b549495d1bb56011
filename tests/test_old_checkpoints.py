"""Checkpoints written before a refactor still load and give the outputs they gave then.

The fixtures in ``tests/fixtures/old_checkpoints`` were written by rislib at commit
``bc7e5d4`` (see ``write_fixtures.py`` there): one narrowed tiny model per method (and PEFT
variant) with random weights, the inputs it was run on and the outputs and losses it gave,
plus the state_dict layout (keys, shapes, dtypes) of every ``tiny`` preset, which is the
layout of the trained tiny checkpoints shipped with the course.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rislib.models.registry import build_model, load_model
from rislib.types import Batch, TextInput

FIXTURES = Path(__file__).parent / "fixtures" / "old_checkpoints"
CHECKPOINTS = ["concat", "xattn", "lts", "haris", "haris_adapter", "maris", "maris_adapter", "magnet", "lavt"]
METHODS = ["concat", "haris", "lavt", "lts", "magnet", "maris", "xattn"]


def _reference(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["reference"]


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_old_checkpoint_gives_saved_outputs(name):
    path = FIXTURES / f"{name}.pt"
    ref = _reference(path)
    model = load_model(path)
    assert not model.training
    text = TextInput(ref["ids"], ref["mask"], ref["tokens"])
    batch = Batch(ref["pixels"].float() / 255, text, masks=ref["masks"].float())
    with torch.no_grad():
        torch.manual_seed(0)  # MagNet's alignment loss samples pixels
        out = model(batch)
        losses = model.loss(batch, out)
    torch.testing.assert_close(out.logits, ref["logits"], rtol=1e-5, atol=1e-6)
    assert sorted(out.aux) == sorted(ref["aux"])
    for key, value in ref["aux"].items():
        torch.testing.assert_close(out.aux[key], value, rtol=1e-5, atol=1e-6, msg=f"aux {key!r}")
    assert sorted(losses) == sorted(ref["losses"])
    for key, value in ref["losses"].items():
        torch.testing.assert_close(losses[key].detach(), value, rtol=1e-5, atol=1e-6, msg=f"loss {key!r}")


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_old_checkpoint_tokenisation_unchanged(name):
    """The model's tokenizer still turns the fixture's sentences into the saved ids."""
    path = FIXTURES / f"{name}.pt"
    ref = _reference(path)
    text = load_model(path).tokenizer(ref["sentences"])
    assert torch.equal(text.ids, ref["ids"]) and torch.equal(text.mask, ref["mask"])
    assert text.tokens == ref["tokens"]


#: preset changes made after the fixtures, on purpose: the tiny preset with them switched off
#: has the saved layout, and with them on it adds only the parameters they name
ADDED_SINCE = {"haris": {"fusion_positions": False}, "magnet": {"fusion_positions": False}}
ADDED_KEYS = {"haris": "level_positions.", "magnet": ".positions."}


def _layout(method: str, **overrides) -> dict:
    with torch.device("meta"):
        model = build_model(method, "tiny", **overrides)
    return {k: [list(v.shape), str(v.dtype)] for k, v in model.state_dict().items()}


@pytest.mark.parametrize("method", METHODS)
def test_tiny_preset_state_dict_layout_unchanged(method):
    saved = json.loads((FIXTURES / f"{method}_tiny_layout.json").read_text())
    now = _layout(method, **ADDED_SINCE.get(method, {}))
    assert list(now) == list(saved), "state_dict keys (or their order) changed"
    assert now == saved
    if method in ADDED_SINCE:
        preset = _layout(method)
        added = {k: v for k, v in preset.items() if k not in saved}
        assert added and all(ADDED_KEYS[method] in k for k in added), sorted(added)
        assert {k: v for k, v in preset.items() if k in saved} == saved
