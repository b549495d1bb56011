"""Training recipes: the optimisation settings of each method, as data.

``get_recipe(model_name, recipe_name)`` returns a :class:`Recipe`; ``recipe.train_config(
out_dir=...)`` turns it into a :class:`~rislib.engine.trainer.TrainConfig`. Three recipes
exist for every method:

* ``paper``: what the method's paper (or its closest verified ancestor) trained with, at the
  paper's resolution and batch size. Every value carries its provenance in a comment, with
  the tags of ``docs/README.md#how-facts-are-tagged``: [src]/[code] read in the paper's code or a
  README, [recall]/[proposal] not verified (this project's interpretation). Only LAVT's and
  MagNet's recipes are verified (MagNet's is LAVT's, read in the released code, parameter
  groups included); LTS's follows its MCN ancestor; MARIS's and HARIS's papers could not be
  read, so their recipes are proposals.
* ``refshapes``: one recipe for every method on the synthetic RefShapes benchmark (256 px),
  sized for one GPU in about ten minutes, so that the methods are compared on equal terms.
* ``cpu``: the same idea shrunk to a few minutes on two CPU cores (128 px, the ``tiny``
  presets): enough to watch a model learn, not to rank methods.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .trainer import TrainConfig

__all__ = ["Recipe", "get_recipe", "available_recipes", "RECIPE_NAMES"]

RECIPE_NAMES = ("paper", "refshapes", "cpu")

#: Methods whose ``cpu`` recipe trains with channels-last tensors: a tiny preset's training step
#: took at least 3% less CPU time with them at both 64 and 128 px (concat 1.16x / 1.04x, LTS
#: 1.08x / 1.09x, MARIS 1.03x / 1.03x, xattn 1.03x / 1.15x; HARIS and MagNet 1.01-1.02x), one
#: thread, in-process (``benchmarks/train_option_ab.py``, ``benchmarks/results/train_options_2026-12-07.json``).
CHANNELS_LAST_ON_CPU = frozenset({"concat", "lts", "maris", "xattn"})


@dataclass(frozen=True)
class Recipe:
    """How to train one method.

    Attributes:
        name: ``paper``, ``refshapes`` or ``cpu``.
        method: the model name the recipe is for.
        epochs / steps: run length (exactly one is set).
        batch_size: global batch per optimiser step (all GPUs together).
        lr: base learning rate (of the non-backbone parameters).
        backbone_lr_scale: encoder learning rate = ``lr * backbone_lr_scale``; ``None`` keeps
            the model preset's ``backbone_lr_scale``.
        weight_decay, optimizer (``"adamw"``/``"adam"``), schedule (``"poly"``, ``"cosine"``,
        ``"step"``, ``"constant"``), warmup_steps, poly_power, milestones (fractions of the
        run), gamma: see :class:`~rislib.engine.trainer.TrainConfig`.
        image_size: square training resolution.
        grad_clip: gradient-norm clipping (``None``: none).
        hflip: random horizontal flips (the data set swaps "left"/"right" words with them).
        size_schedule: progressive resizing, ``((fraction, side), ...)`` (see
            :class:`~rislib.engine.trainer.TrainConfig`); empty: ``image_size`` all along.
        channels_last: NHWC tensors for the convolutions (the ``cpu`` recipe of the methods
            where it measured faster, :data:`CHANNELS_LAST_ON_CPU`).
        model_settings: model-config fields the recipe also sets (e.g. LAVT's optimiser
            groups, ``{"optimizer_groups": "lavt"}``).
        source: where the values come from, and which are this project's choice.
    """

    name: str
    method: str
    epochs: int | None = None
    steps: int | None = None
    batch_size: int = 32
    lr: float = 1e-4
    backbone_lr_scale: float | None = None
    weight_decay: float = 0.01
    optimizer: str = "adamw"
    schedule: str = "poly"
    warmup_steps: int = 0
    poly_power: float = 0.9
    milestones: tuple[float, ...] = ()
    gamma: float = 0.1
    image_size: int = 480
    grad_clip: float | None = None
    hflip: bool = False
    size_schedule: tuple[tuple[float, int], ...] = ()
    channels_last: bool = False
    model_settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        if (self.epochs is None) == (self.steps is None):
            raise ValueError(f"Recipe {self.method}/{self.name}: set exactly one of epochs / steps")

    def model_overrides(self) -> dict[str, Any]:
        """Model-config fields the recipe sets (``image_size``, ``backbone_lr_scale``, ``model_settings``)."""
        out: dict[str, Any] = {"image_size": self.image_size}
        if self.backbone_lr_scale is not None:
            out["backbone_lr_scale"] = self.backbone_lr_scale
        out.update(self.model_settings)
        return out

    def train_config(self, **overrides: Any) -> TrainConfig:
        """A :class:`TrainConfig` with this recipe's values; ``overrides`` are TrainConfig fields.

        Setting ``steps`` in ``overrides`` replaces the recipe's ``epochs`` (and vice versa).
        """
        values: dict[str, Any] = {
            "epochs": self.epochs,
            "steps": self.steps,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "optimizer": self.optimizer,
            "schedule": self.schedule,
            "warmup_steps": self.warmup_steps,
            "poly_power": self.poly_power,
            "milestones": self.milestones,
            "gamma": self.gamma,
            "grad_clip": self.grad_clip,
            "size_schedule": self.size_schedule,
            "channels_last": self.channels_last,
        }
        if overrides.get("steps") is not None:
            values["epochs"] = None
        if overrides.get("epochs") is not None:
            values["steps"] = None
        valid = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = sorted(set(overrides) - valid)
        if unknown:
            raise TypeError(f"Recipe.train_config: unknown TrainConfig field(s) {unknown}; valid: {sorted(valid)}")
        values.update(overrides)
        info = {"recipe": self.name, **values.get("run_info", {})}
        values["run_info"] = info
        return TrainConfig(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---- paper recipes ------------------------------------------------------------------------
_PAPER: dict[str, Recipe] = {
    "lts": Recipe(
        name="paper",
        method="lts",
        epochs=45,  # MCN: 45 epochs [src MCN config.json]; LTS's own length not read [recall]
        batch_size=32,  # docs/methods/lts.md#recipe [proposal]; MCN used 35 [src]
        optimizer="adam",  # MCN family: Adam [src MCN]; LTS [recall]
        lr=1e-3,  # MCN lr 0.001 [src]
        backbone_lr_scale=0.1,  # backbone 1e-4 [proposal, docs/methods/lts.md#recipe]
        weight_decay=0.0,  # not stated anywhere read [proposal]
        schedule="step",
        milestones=(30 / 45, 35 / 45, 40 / 45),  # x0.1 at epochs 30/35/40 [src MCN config.json]
        gamma=0.1,
        image_size=416,  # MCN/LTS input 416x416 [src MCN; recall LTS]
        grad_clip=None,
        hflip=False,
        source="MCN family (docs/methods/lts.md#the-mcn-family [src]); LTS's own recipe not read: "
        "this project's interpretation",
    ),
    "lavt": Recipe(
        name="paper",
        method="lavt",
        epochs=40,  # [code] args.py --epochs 40
        batch_size=32,  # 4 GPUs x 8 [src LAVT README; args.py --batch-size 8]
        optimizer="adamw",  # [code] train.py (amsgrad off)
        lr=5e-5,  # [code] args.py --lr
        backbone_lr_scale=1.0,  # one lr for every group [code] train.py
        weight_decay=0.01,  # [code] args.py --wd
        schedule="poly",
        poly_power=0.9,  # LambdaLR (1 - it/total)^0.9 per iteration [code] train.py
        warmup_steps=0,
        image_size=480,  # [code] args.py --img_size
        grad_clip=None,  # no clipping in train.py [code]
        hflip=False,  # plain resize, no augmentation [code] train.py get_transform
        # train.py's groups: Swin norms / position bias not decayed, decoder decayed, BERT
        # layers 0-9 only (embeddings and layers 10-11 not optimised) [code]
        model_settings={"optimizer_groups": "lavt"},
        source="LAVT-RIS train.py / args.py at 1da0af9 (docs/methods/magnet.md#training-recipe [src]/[code])",
    ),
    "magnet": Recipe(
        name="paper",
        method="magnet",
        epochs=40,  # [code] args.py default (LAVT's)
        batch_size=32,  # LAVT: 4 GPUs x 8 [src LAVT README]; MagNet's GPU count n/r
        optimizer="adamw",  # [code]/[src]
        lr=5e-5,  # [code] args.py
        backbone_lr_scale=1.0,  # one lr for every group [src LAVT train.py]
        weight_decay=0.01,  # [code] args.py
        schedule="poly",
        poly_power=0.9,  # (1 - it/total)^0.9 per iteration [src LAVT train.py]
        warmup_steps=0,
        image_size=480,  # [code] test.py / args.py
        grad_clip=None,  # no clipping in LAVT's train.py [src]
        hflip=False,  # LAVT: no augmentation [src]
        # LAVT's train.py groups by released name; MagNet's training code is not released, so the
        # language-side fusions, lang_proj and the Mask Grounding head (not in LAVT) are decayed:
        # this project's interpretation
        model_settings={"optimizer_groups": "lavt"},
        source="LAVT/MagNet code defaults and LAVT's parameter groups "
        "(docs/methods/magnet.md#training-recipe [code]/[src]); MagNet's own epochs/GPUs n/r",
    ),
    "maris": Recipe(
        name="paper",
        method="maris",
        epochs=50,  # [proposal] docs/methods/maris.md#recipe
        batch_size=16,  # [proposal]
        optimizer="adamw",  # [proposal]
        lr=1e-4,  # new modules and adapters [proposal]
        backbone_lr_scale=1.0,  # SAM frozen; its adapters train at the full rate [proposal]
        weight_decay=0.01,  # [proposal]
        schedule="poly",  # "poly or cosine" [proposal]; poly chosen here
        poly_power=0.9,
        image_size=1024,  # SAM's native input [proposal]
        grad_clip=None,
        hflip=False,
        source="docs/methods/maris.md#recipe [proposal]: the paper's recipe could not be read",
    ),
    "haris": Recipe(
        name="paper",
        method="haris",
        epochs=50,  # [proposal] docs/methods/haris.md#loss-adapters-and-recipe
        batch_size=32,  # [proposal]
        optimizer="adamw",  # [proposal]
        lr=1e-4,  # [proposal]
        backbone_lr_scale=1.0,  # frozen encoders, adapters at the full rate [proposal]
        weight_decay=0.01,  # [proposal]
        schedule="cosine",  # [proposal]
        image_size=480,  # CLIP position embeddings interpolated [proposal]
        grad_clip=None,
        hflip=False,
        source="docs/methods/haris.md#loss-adapters-and-recipe [proposal]: the paper's recipe could not be read",
    ),
}
# The course's baselines have no paper; they train with LAVT's recipe (xattn is a LAVT-like
# pixel-word attention model), which is this project's choice.
for _m in ("concat", "xattn"):
    _PAPER[_m] = dataclasses.replace(
        _PAPER["magnet"],
        method=_m,
        model_settings={},  # the baselines keep rislib's parameter groups
        source="course baseline: LAVT's recipe (docs/methods/magnet.md#training-recipe) with rislib's parameter "
        "groups, this project's choice",
    )


def _shared(name: str, method: str) -> Recipe:
    if name == "refshapes":
        # this project's choice: the same recipe for every method, ~10 min on one GPU
        return Recipe(
            name="refshapes",
            method=method,
            steps=6000,
            batch_size=64,
            lr=3e-4,
            backbone_lr_scale=None,
            weight_decay=0.01,
            optimizer="adamw",
            schedule="cosine",
            warmup_steps=300,
            image_size=256,
            grad_clip=1.0,
            hflip=True,  # RISDataset swaps "left"/"right" words with the flip
            source="this project's choice: one recipe for every method on RefShapes, sized for one GPU",
        )
    # cpu: two CPU cores, the tiny presets, 128 px. Measured on RefShapes (xattn/tiny, 1,500
    # steps, val mIoU; benchmarks/results/cpu_regime): training the first 60% of the steps at
    # 64 px (a step costs ~2.2x less) and finishing at 128 px beat 128 px all along (30.4 vs
    # 27.9); lr 1e-3 beat 2e-3 (22.3) and the presets' reduced encoder learning rate beat a
    # full one (23.7 with backbone_lr_scale 1.0); batch 16 beat batch 8 at equal samples (21.9).
    return Recipe(
        name="cpu",
        method=method,
        steps=1500,
        batch_size=16,
        lr=1e-3,
        backbone_lr_scale=None,
        weight_decay=0.01,
        optimizer="adamw",
        schedule="cosine",
        warmup_steps=100,
        image_size=128,
        grad_clip=1.0,
        hflip=True,
        size_schedule=((0.0, 64), (0.6, 128)),
        channels_last=method in CHANNELS_LAST_ON_CPU,
        source="this project's choice: minutes on two CPU cores, 60% of the steps at 64 px then 128 px "
        "(benchmarks/results/cpu_regime)",
    )


def available_recipes(model_name: str | None = None) -> list[str]:
    """Recipe names (those with a ``paper`` recipe need a known method)."""
    if model_name is None or model_name in _PAPER:
        return list(RECIPE_NAMES)
    return [r for r in RECIPE_NAMES if r != "paper"]


def get_recipe(model_name: str, recipe_name: str = "refshapes") -> Recipe:
    """The recipe ``recipe_name`` (``paper``, ``refshapes``, ``cpu``) of method ``model_name``."""
    if recipe_name not in RECIPE_NAMES:
        raise KeyError(f"unknown recipe {recipe_name!r}; recipes: {list(RECIPE_NAMES)}")
    if recipe_name == "paper":
        if model_name not in _PAPER:
            raise KeyError(f"no paper recipe for model {model_name!r}; paper recipes exist for {sorted(_PAPER)}")
        return _PAPER[model_name]
    return _shared(recipe_name, model_name)
