"""Seeded weights and inputs shared by the golden tests and the script that writes their fixtures.

The golden tests compare rislib with LAVT's and MagNet's released code at the *same random
weights*. Storing those weights would take hundreds of megabytes, so they are regenerated
here from a seed and the released parameter *name*: ``benchmarks/official_golden.py`` fills
the official modules with :func:`seeded_state_dict`, runs them, and stores the names, shapes
and outputs in ``tests/golden/*.pt``; the tests rebuild the same tensors, convert them to
rislib's layout (:mod:`rislib.models.official`) and compare outputs. Both sides must run
this file unchanged; :func:`generator_fingerprint` guards against a PyTorch whose random
stream differs from the one that wrote the fixtures.

The scale of each tensor follows its role, so that deep random networks stay in a
reasonable range and every path is exercised (gates open, norms not at identity):

* 1-D ``weight`` (norm scales): ``1 + 0.1 z``; other 1-D tensors (biases): ``0.05 z``;
* BatchNorm running variance ``1 + 0.1 |z|``, running mean ``0.1 z``;
* Swin's relative position bias tables ``0.5 z``; learned query/level embeddings ``z``;
* BERT's residual output projections (``encoder.layer.*.output.dense`` and
  ``*.attention.output.dense``): ``0.3 z / sqrt(fan_in)``. At full scale, twelve random BERT
  layers map every token onto nearly one vector (mean cosine 0.9996 between the words of a
  sentence); LAVT's pixel-axis instance norm then divides a context that barely varies over
  the image by ``sqrt(1e-5)``, and float32 rounding alone moves its output by ``1e-2``. At
  0.3 the words stay distinct (mean cosine 0.70), as in a trained BERT;
* every other tensor (linear and conv weights, word embeddings): ``z / sqrt(fan_in)``.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor

__all__ = [
    "seeded_tensor",
    "seeded_state_dict",
    "seeded_input",
    "generator_fingerprint",
    "sample_index",
    "sample_output",
    "compare_sampled",
    "FIXTURE_VERSION",
]

FIXTURE_VERSION = 1
SAMPLES = 2048  # values kept per output tensor (all of them when the tensor is smaller)


def _generator(name: str, seed: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63))


def seeded_tensor(name: str, shape: Iterable[int], seed: int = 0) -> Tensor:
    """The seeded value of the released tensor ``name`` (float32, CPU); see the module docstring."""
    shape = tuple(int(s) for s in shape)
    z = torch.randn(shape, generator=_generator(name, seed))
    last = name.rsplit(".", 1)[-1]
    if last == "running_var":
        return 1 + 0.1 * z.abs()
    if last == "running_mean":
        return 0.1 * z
    if "relative_position_bias_table" in name:
        return 0.5 * z
    if last in ("level_embed",) or name.endswith(("query_feat.weight", "query_embed.weight", "level_embed.weight")):
        return z
    if len(shape) == 1:
        return 1 + 0.1 * z if last == "weight" else 0.05 * z
    fan_in = math.prod(shape[1:])
    if "encoder.layer." in name and name.endswith("output.dense.weight"):
        return 0.3 * z / math.sqrt(fan_in)
    return z / math.sqrt(fan_in)


def seeded_state_dict(shapes: Mapping[str, Iterable[int]], seed: int = 0) -> dict[str, Tensor]:
    """``{name: seeded_tensor(name, shape, seed)}`` for every entry of ``shapes``."""
    return {name: seeded_tensor(name, shape, seed) for name, shape in shapes.items()}


def seeded_input(name: str, shape: Iterable[int], seed: int = 0) -> Tensor:
    """A standard-normal input tensor named ``name``."""
    return torch.randn(tuple(int(s) for s in shape), generator=_generator("input:" + name, seed))


def generator_fingerprint() -> list[float]:
    """A few values of the seeded stream; the fixtures store them and the tests compare."""
    return seeded_input("fingerprint", (4,), 12345).tolist()


def sample_index(numel: int, name: str) -> Tensor:
    """The positions of the values kept for output ``name`` (all when ``numel <= SAMPLES``)."""
    if numel <= SAMPLES:
        return torch.arange(numel)
    return torch.randperm(numel, generator=_generator("sample:" + name, 0))[:SAMPLES].sort().values


def sample_output(x: Tensor, name: str) -> dict[str, Tensor]:
    """A compact record of an output: its shape, whole-tensor statistics (mean, std, max |x|,
    mean |x|) and ``SAMPLES`` values at seeded positions (all values when it has fewer)."""
    x = x.detach().float().cpu().contiguous()
    flat = x.flatten()
    return {
        "name": name,
        "shape": torch.tensor(x.shape),
        "values": flat[sample_index(flat.numel(), name)].clone(),
        "stats": torch.stack([flat.mean(), flat.std(), flat.abs().max(), flat.abs().mean()]).double(),
    }


def compare_sampled(record: Mapping[str, Tensor], x: Tensor) -> dict[str, float]:
    """Compare ``x`` with a record of :func:`sample_output`.

    Returns ``{"max_abs": max |x - ref| over the kept values, "ref_absmax": max |ref| over the
    whole official tensor, "stats_diff": largest difference of the whole-tensor statistics}``;
    raises ``AssertionError`` when the shapes differ.
    """
    x = x.detach().float().cpu().contiguous()
    shape = tuple(int(s) for s in record["shape"])
    assert tuple(x.shape) == shape, f"shape {tuple(x.shape)} != official {shape}"
    flat = x.flatten()
    index = sample_index(flat.numel(), record["name"])
    diff = (flat[index] - record["values"]).abs().max().item()
    stats = torch.stack([flat.mean(), flat.std(), flat.abs().max(), flat.abs().mean()]).double()
    return {
        "max_abs": diff,
        "ref_absmax": float(record["stats"][2]),
        "stats_diff": float((stats - record["stats"]).abs().max()),
    }
