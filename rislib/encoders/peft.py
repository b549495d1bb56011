"""Parameter-efficient fine-tuning: freeze an encoder, then train small inserted modules.

MARIS/RISAM (v4) and HARIS both state that their pre-trained encoders are adapted with a
parameter-efficient fine-tuning (PEFT) framework to keep the encoders' generalisation and
zero-shot ability [src: both abstracts, ``docs/methods/maris.md#what-the-paper-states`` and
``docs/methods/haris.md#what-the-paper-states``]. Neither paper's adapter design could be
read here, so the adapters below are this project's interpretation ([proposal] in
``docs/methods/maris.md#adapters`` and ``docs/methods/haris.md#loss-adapters-and-recipe``):

* :class:`BottleneckAdapter` in parallel with a transformer block's MLP (AdaptFormer style):
  ``y = MLP(x) + s * W_up GELU(W_down x)``, ``W_up`` zero-initialised so training starts
  from the pre-trained function exactly, ``s = 0.1``.
* :class:`LoRALinear`: ``y = W x + (alpha / r) * B A x`` with ``B`` zero-initialised
  (Hu et al. 2021), a common alternative that students can compare.

:func:`parameter_report` counts trainable and frozen parameters per top-level module.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from torch import Tensor, nn

__all__ = [
    "freeze",
    "unfreeze",
    "BottleneckAdapter",
    "ParallelAdapter",
    "LoRALinear",
    "add_parallel_adapters",
    "add_lora",
    "ParameterReport",
    "parameter_report",
]


def freeze(module: nn.Module) -> nn.Module:
    """Stop gradients for every parameter of ``module`` (in place); returns it."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def unfreeze(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(True)
    return module


class BottleneckAdapter(nn.Module):
    """``x -> scale * up(act(down(x)))`` with a zero-initialised ``up`` projection.

    Args:
        dim: input and output width.
        rank: bottleneck width.
        scale: output scale (0.1 in AdaptFormer).
    """

    def __init__(self, dim: int, rank: int, scale: float = 0.1) -> None:
        super().__init__()
        self.down = nn.Linear(dim, rank)
        self.act = nn.GELU()
        self.up = nn.Linear(rank, dim)
        self.scale = scale
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * self.up(self.act(self.down(x)))


class ParallelAdapter(nn.Module):
    """Wraps a (frozen) module ``f`` as ``x -> f(x) + adapter(x)``.

    Args:
        wrapped: the module to adapt, usually a transformer block's MLP.
        dim: its input/output width.
        rank: adapter bottleneck width.
        scale: adapter output scale.
    """

    def __init__(self, wrapped: nn.Module, dim: int, rank: int, scale: float = 0.1) -> None:
        super().__init__()
        self.wrapped = wrapped
        self.adapter = BottleneckAdapter(dim, rank, scale)

    def forward(self, x: Tensor) -> Tensor:
        return self.wrapped(x) + self.adapter(x)


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update ``(alpha / r) B A``.

    Args:
        base: the linear layer to adapt (its weights are frozen).
        rank: ``r``.
        alpha: scaling numerator; the update is multiplied by ``alpha / rank``.
    """

    def __init__(self, base: nn.Linear, rank: int = 8, alpha: float = 16.0) -> None:
        super().__init__()
        self.base = freeze(base)
        self.lora_a = nn.Linear(base.in_features, rank, bias=False)
        self.lora_b = nn.Linear(rank, base.out_features, bias=False)
        self.scaling = alpha / rank
        nn.init.kaiming_uniform_(self.lora_a.weight, a=5**0.5)
        nn.init.zeros_(self.lora_b.weight)

    @property
    def weight(self) -> Tensor:  # code that reads ``.weight`` of a Linear keeps working
        return self.base.weight

    @property
    def bias(self) -> Tensor | None:
        return self.base.bias

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x) + self.scaling * self.lora_b(self.lora_a(x))


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def _first_linear_in(module: nn.Module) -> nn.Linear:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            return m
    raise ValueError(f"{type(module).__name__} has no nn.Linear to infer the adapter width from")


def add_parallel_adapters(model: nn.Module, pattern: str, rank: int, scale: float = 0.1) -> list[str]:
    """Wrap every submodule whose qualified name matches the glob ``pattern`` in a
    :class:`ParallelAdapter` (e.g. ``"blocks.*.mlp"`` for SAM's ViT). Returns the names.

    Raises:
        ValueError: when nothing matches (a silent no-op would train nothing).
    """
    names = [n for n, _ in model.named_modules() if n and fnmatch.fnmatch(n, pattern)]
    if not names:
        raise ValueError(f"add_parallel_adapters: no submodule of {type(model).__name__} matches {pattern!r}")
    for name in names:
        wrapped = model.get_submodule(name)
        dim = _first_linear_in(wrapped).in_features
        _set_submodule(model, name, ParallelAdapter(wrapped, dim, rank, scale))
    return names


def add_lora(model: nn.Module, pattern: str, rank: int = 8, alpha: float = 16.0) -> list[str]:
    """Replace every ``nn.Linear`` whose qualified name matches ``pattern`` with a
    :class:`LoRALinear` (e.g. ``"blocks.*.attn.qkv"``). Returns the names."""
    names = [
        n for n, m in model.named_modules() if n and isinstance(m, nn.Linear) and fnmatch.fnmatch(n, pattern)
    ]
    if not names:
        raise ValueError(f"add_lora: no nn.Linear of {type(model).__name__} matches {pattern!r}")
    for name in names:
        _set_submodule(model, name, LoRALinear(model.get_submodule(name), rank, alpha))
    return names


@dataclass
class ParameterReport:
    """Trainable and frozen parameter counts, in total and per top-level child."""

    trainable: int
    frozen: int
    by_module: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.trainable + self.frozen

    @property
    def trainable_fraction(self) -> float:
        return self.trainable / max(self.total, 1)

    def __str__(self) -> str:
        lines = [f"{'module':<28}{'trainable':>14}{'frozen':>14}"]
        for name, (t, f) in self.by_module.items():
            lines.append(f"{name:<28}{t:>14,}{f:>14,}")
        lines.append(f"{'total':<28}{self.trainable:>14,}{self.frozen:>14,}")
        lines.append(f"trainable: {100 * self.trainable_fraction:.2f}% of {self.total:,}")
        return "\n".join(lines)


def parameter_report(model: nn.Module) -> ParameterReport:
    """Count trainable vs frozen parameters (shared parameters counted once)."""
    seen: set[int] = set()
    by_module: dict[str, tuple[int, int]] = {}
    total_t = total_f = 0
    children = list(model.named_children()) or [("(self)", model)]
    for name, child in children:
        t = f = 0
        for p in child.parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            if p.requires_grad:
                t += p.numel()
            else:
                f += p.numel()
        by_module[name] = (t, f)
        total_t += t
        total_f += f
    for p in model.parameters(recurse=False):
        if id(p) not in seen:
            seen.add(id(p))
            if p.requires_grad:
                total_t += p.numel()
            else:
                total_f += p.numel()
    return ParameterReport(total_t, total_f, by_module)
