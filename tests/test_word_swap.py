"""benchmarks/word_swap.py: the swaps and the per-part trace of where a swapped word is lost."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

from rislib.models.registry import build_model

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "word_swap.py"
_spec = importlib.util.spec_from_file_location("word_swap", _PATH)
ws = importlib.util.module_from_spec(_spec)
sys.modules["word_swap"] = ws
_spec.loader.exec_module(ws)


def test_swaps_replace_only_their_own_words():
    assert ws.swap_words("the second big circle from the left") == "the second big circle from the right"
    assert ws.swap_words("the leftmost star above the red square") == "the rightmost star below the red square"
    swapped = ws.swap_colours("the red circle left of the blue star")
    assert swapped.split()[2:6] == ["circle", "left", "of", "the"]
    assert swapped.split()[1] != "red" and swapped.split()[6] != "blue"
    assert ws.swap_colours(swapped) != swapped  # no colour maps to itself


def test_trace_reports_every_part_and_the_logits():
    torch.manual_seed(0)
    model = build_model("xattn", "tiny").eval()
    texts = ["the red circle on the left", "the blue star above the green square"]
    trace = ws.trace_swaps(model, torch.rand(2, 3, 64, 64), texts)
    assert set(trace) == {name for name, _ in model.named_children()} | {"logits"}
    assert trace["vision_encoder"] == {"spatial_swap": 0.0, "colour_swap": 0.0}  # reads no words
    assert trace["text_encoder"]["spatial_swap"] > 0 and trace["text_encoder"]["colour_swap"] > 0
    assert all(r["spatial_swap"] > 0 for name, r in trace.items() if name != "vision_encoder")


def test_trace_follows_the_members_of_a_module_list():
    torch.manual_seed(0)
    model = build_model("magnet", "tiny").eval()
    trace = ws.trace_swaps(model, torch.rand(1, 3, 64, 64), ["the red circle on the left"])
    assert {f"fusions.{i}" for i in range(4)} <= set(trace)
