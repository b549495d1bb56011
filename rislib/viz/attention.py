"""From recorded attention maps to per-word heatmaps over the image.

While an :class:`~rislib.layers.AttentionRecorder` is active every
:class:`~rislib.layers.MultiHeadAttention` records its weights ``[B, heads, Lq, Lk]`` under
``<module name>.<key>``, and some modules record spatial maps ``[B, 1, h, w]`` (LTS's
``location`` prior, HARIS's ``feedback_map``). The axes of an attention map are flattened
pixel grids (``HW``), the expression's tokens (``L``) or decoder queries. This module reads
which is which from the shapes and the token count, reshapes pixel axes back to their grid,
selects a word (or the sentence), a head (or the head mean), and upsamples to the image.

Kinds of recorded map (:data:`KINDS`):

======================  ====================  ==========================================
kind                    shape                 what one word's heatmap is
======================  ====================  ==========================================
``pixel_to_word``       ``[B, h, HW, L]``     how much each pixel attends to the word
                                              (MARIS VGA, HARIS LWA, MagNet PWAM, xattn)
``word_to_pixel``       ``[B, h, L, HW]``     where the word looks (MARIS LGA, HARIS VWA,
                                              MagNet's language-side PWAM)
``query_to_pixel``      ``[B, h, Q, HW]``     where a decoder query looks; MARIS's tokens
                                              ``[q ; words]`` keep the words' labels
``pixel_to_query``      ``[B, h, HW, Q]``     how much each pixel attends to the query
``joint``               ``[B, h, N, N]``      self-attention over ``[pixels ; words]``
                                              (LTS's locating transformer): the pixel ->
                                              word block (or word -> pixel, ``direction``)
``pixel_to_pixel``      ``[B, h, HW, HW]``    no words: attention *received* by each pixel
``spatial``             ``[B, 1, h, w]``      the map itself
``token_to_token``      ``[B, h, T, T]``      not spatial (decoder self-attention)
``other``               anything else         not spatial
======================  ====================  ==========================================

When shapes alone are ambiguous (an expression of 16 tokens over a 4 x 4 grid), the
name decides through :data:`DEFAULT_HINTS` (glob pattern -> kind), e.g. HARIS's ``*.lwa.*``
is pixel -> word. Joint sequences are read as pixels first, then words (LTS's order).

The *sentence* heatmap averages the content tokens: real (non-padding) tokens that are not
special tokens (``[CLS]``, ``[SEP]``, ``<|endoftext|>``...). For a pixel -> word map the
words' weights of a pixel sum to 1 over all tokens, so a mean over every token would be a
flat ``1 / L``; leaving out the special tokens (where much of the mass often goes) keeps it
informative. This choice is this project's interpretation; no paper specifies how to show a
"sentence" attention map.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from ..layers.recording import AttentionRecorder
from ..models.base import RISModel
from ..types import Batch, TextInput

__all__ = [
    "KINDS",
    "SPATIAL_KINDS",
    "TOKEN_KINDS",
    "DEFAULT_HINTS",
    "MapInfo",
    "AttentionRun",
    "infer_grid",
    "split_layer",
    "short_name",
    "is_special_token",
    "classify_map",
    "catalogue",
    "format_catalogue",
    "families",
    "token_maps",
    "heatmap",
    "word_heatmaps",
    "upsample",
    "run_with_attention",
]

KINDS = (
    "pixel_to_word",
    "word_to_pixel",
    "query_to_pixel",
    "pixel_to_query",
    "joint",
    "pixel_to_pixel",
    "spatial",
    "token_to_token",
    "other",
)
TOKEN_KINDS = ("pixel_to_word", "word_to_pixel", "query_to_pixel", "pixel_to_query", "joint")
SPATIAL_KINDS = (*TOKEN_KINDS, "pixel_to_pixel", "spatial")

# Names that settle ties between equally plausible readings of a shape (glob -> kind).
DEFAULT_HINTS: dict[str, str] = {
    "*.lwa.*": "pixel_to_word",  # HARIS language-guided weighting: pixels read words
    "*.vwa.*": "word_to_pixel",  # HARIS visual-guided weighting: words read pixels
    "*.vga*": "pixel_to_word",  # MARIS vision-guided attention
    "*.lga*": "word_to_pixel",  # MARIS language-guided attention
    "*language_pwam*": "word_to_pixel",  # MagNet's language side
    "*pwam*": "pixel_to_word",  # LAVT/MagNet pixel-word attention
    "*cam.*": "pixel_to_word",  # MagNet's pooled cross-modal alignment
    "*.cross": "pixel_to_word",  # the xattn baseline
    "*locator.transformer*": "joint",  # LTS: [pixels ; words]
    "*.location": "spatial",  # LTS's position prior
    "*.relevance": "spatial",  # LTS's relevance filter response
    "*feedback_map*": "spatial",  # HARIS's feedback signal
}

_MAX_EXTRA_TOKENS = 4  # decoder tokens placed before the words, as MARIS's [q ; words]
_SPECIAL_RE = re.compile(r"^(\[[A-Z]+\]|<\|?[a-z_]+\|?>|<[/a-z]+>)$")


def is_special_token(token: str) -> bool:
    """True for tokenizer specials: ``[CLS]``, ``[SEP]``, ``[PAD]``, ``<s>``, ``<|endoftext|>``..."""
    return bool(_SPECIAL_RE.match(token))


def infer_grid(n: int, image_size: tuple[int, int] = (1, 1)) -> tuple[int, int] | None:
    """The ``(h, w)`` grid of ``n`` flattened positions for an image of ``image_size`` ``(H, W)``.

    A grid has ``h * w = n``, both sides >= 2, and the image's aspect ratio up to rounding
    (``round(h * W / H) == w`` or ``round(w * H / W) == h``): a square image gives square
    grids only. Returns None when no such grid exists (then the axis is not pixels).
    """
    if n < 4:
        return None
    H, W = image_size
    best = None
    for h in range(2, n // 2 + 1):
        if n % h:
            continue
        w = n // h
        if w < 2:
            continue
        if round(h * W / H) == w or round(w * H / W) == h:
            err = abs(math.log(h / w) - math.log(H / W))
            if best is None or err < best[0]:
                best = (err, (h, w))
    return None if best is None else best[1]


def split_layer(name: str) -> tuple[str, int]:
    """``"fusion.blocks.2.lwa.attn.round1"`` -> ``("fusion.blocks.*.lwa.attn.round1", 2)``.

    The first all-digit component of the dotted name is the layer; names without one form
    a family of their own, with the recorder's repeat suffix ``#k`` as the layer (0 first).
    """
    base, _, rep = name.partition("#")
    parts = base.split(".")
    for i, p in enumerate(parts):
        if p.isdigit():
            family = ".".join(parts[:i] + ["*"] + parts[i + 1 :])
            return (family + (f"#{rep}" if rep else ""), int(p))
    return base, int(rep) if rep.isdigit() else 0


def short_name(name: str, parts: int = 2) -> str:
    """A label for plots: the last ``parts`` components of a name or family, without the
    ``attn``/``attention`` and ``*`` components (``"fusion.blocks.2.lwa.attn.round1"`` ->
    ``"lwa round1"``)."""
    kept = [p for p in name.split(".") if p not in ("attn", "attention", "*")]
    return " ".join(kept[-parts:])


@dataclass(frozen=True)
class MapInfo:
    """What one recorded map is.

    Attributes:
        name: the recorder's name.
        kind: one of :data:`KINDS`.
        shape: the tensor's shape.
        grid: ``(h, w)`` of the pixel axis (None for non-spatial kinds).
        heads: number of attention heads (1 for spatial maps).
        labels: one label per position of the token axis (words, ``[q0]`` for decoder
            queries, ``[PAD]`` for padding); empty for kinds without a token axis.
        valid: per label, True on real (non-padding) tokens.
        family: the name with its layer index replaced by ``*`` (see :func:`split_layer`).
        layer: the layer index inside the family.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    grid: tuple[int, int] | None
    heads: int
    labels: tuple[str, ...] = ()
    valid: tuple[bool, ...] = ()
    family: str = ""
    layer: int = 0

    @property
    def is_spatial(self) -> bool:
        """True when :func:`heatmap` can turn this map into an image."""
        return self.kind in SPATIAL_KINDS

    @property
    def has_tokens(self) -> bool:
        return self.kind in TOKEN_KINDS

    def content(self) -> list[int]:
        """Token positions averaged for the sentence map: real, non-special tokens (all real
        tokens when every one is special; all positions for pure query axes)."""
        real = [i for i, v in enumerate(self.valid) if v]
        words = [i for i in real if not is_special_token(self.labels[i])]
        return words or real or list(range(len(self.labels)))


def _token_labels(tokens: Sequence[str], num_tokens: int) -> tuple[tuple[str, ...], tuple[bool, ...]]:
    labels = list(tokens)[:num_tokens]
    valid = [True] * len(labels)
    labels += ["[PAD]"] * (num_tokens - len(labels))
    valid += [False] * (num_tokens - len(valid))
    return tuple(labels), tuple(valid)


def _query_labels(n: int, tokens: Sequence[str], num_tokens: int) -> tuple[tuple[str, ...], tuple[bool, ...]]:
    """Labels of a token axis of length ``n``: the words after ``n - L`` leading queries, or
    ``n`` queries when it is shorter than the expression."""
    if num_tokens < n <= num_tokens + _MAX_EXTRA_TOKENS:
        extra = n - num_tokens
        words, valid = _token_labels(tokens, num_tokens)
        return tuple(f"[q{i}]" for i in range(extra)) + words, (True,) * extra + valid
    return tuple(f"[q{i}]" for i in range(n)), (True,) * n


def _is_tokenish(n: int, num_tokens: int) -> bool:
    return n == num_tokens or num_tokens < n <= num_tokens + _MAX_EXTRA_TOKENS or n < 4


def _hint(name: str, hints: Mapping[str, str] | None) -> str | None:
    for pattern, kind in (DEFAULT_HINTS if hints is None else hints).items():
        if fnmatch.fnmatch(name, pattern):
            return kind
    return None


def _rows_sum_to_one(t: Tensor) -> bool:
    s = t.detach().float().sum(-1)
    return bool(torch.allclose(s, torch.ones_like(s), atol=1e-2))


def classify_map(
    name: str,
    tensor: Tensor,
    *,
    num_tokens: int,
    tokens: Sequence[str] = (),
    image_size: tuple[int, int] = (1, 1),
    hints: Mapping[str, str] | None = None,
) -> MapInfo:
    """Decide the kind, grid and token labels of one recorded map.

    Args:
        name: the recorder's name (used for the family/layer and to break ties).
        tensor: the map: ``[B, heads, Lq, Lk]`` attention or ``[B, 1, h, w]`` spatial.
        num_tokens: ``L``, the padded length of the tokenised expressions of the batch.
        tokens: the token strings of the sample being shown (unpadded).
        image_size: ``(H, W)`` of the model's input, for the aspect ratio of grids.
        hints: glob -> kind used when the shape leaves a choice (:data:`DEFAULT_HINTS`).
    """
    shape = tuple(tensor.shape)
    family, layer = split_layer(name)
    L = int(num_tokens)

    def info(kind: str, grid=None, heads: int = 1, labels=(), valid=()) -> MapInfo:
        return MapInfo(name, kind, shape, grid, heads, tuple(labels), tuple(valid), family, layer)

    hint = _hint(name, hints)
    maybe_spatial = tensor.ndim in (3, 4) and (tensor.ndim == 3 or shape[1] == 1) and min(shape[-2:]) >= 2
    if maybe_spatial and (tensor.ndim == 3 or hint == "spatial"):
        return info("spatial", grid=(shape[-2], shape[-1]))
    if tensor.ndim != 4:
        return info("other")
    found = _attention_kind(info, shape, hint, tokens, L, image_size)
    # a one-head map is attention only when its shape reads as attention and its rows sum to 1
    if maybe_spatial and (found.kind not in (*TOKEN_KINDS, "pixel_to_pixel") or not _rows_sum_to_one(tensor)):
        return info("spatial", grid=(shape[-2], shape[-1]))
    return found


def _attention_kind(
    info: Callable[..., MapInfo],
    shape: tuple[int, ...],
    hint: str | None,
    tokens: Sequence[str],
    L: int,
    image_size: tuple[int, int],
) -> MapInfo:
    """The kind of an attention map ``[B, heads, Lq, Lk]`` from its axes (see :data:`KINDS`)."""
    heads, lq, lk = shape[1], shape[2], shape[3]
    words = _token_labels(tokens, L)
    if lq != lk:
        if lk == L and infer_grid(lq, image_size):
            return info("pixel_to_word", infer_grid(lq, image_size), heads, *words)
        if lq == L and infer_grid(lk, image_size):
            return info("word_to_pixel", infer_grid(lk, image_size), heads, *words)
        if _is_tokenish(lq, L) and infer_grid(lk, image_size):
            return info("query_to_pixel", infer_grid(lk, image_size), heads, *_query_labels(lq, tokens, L))
        if infer_grid(lq, image_size) and _is_tokenish(lk, L):
            return info("pixel_to_query", infer_grid(lq, image_size), heads, *_query_labels(lk, tokens, L))
        return info("other", heads=heads)
    n = lq
    grid_n, grid_joint = infer_grid(n, image_size), infer_grid(n - L, image_size) if n > L else None
    if n == L:
        if hint in ("pixel_to_word", "word_to_pixel") and grid_n:
            return info(hint, grid_n, heads, *words)
        return info("token_to_token", heads=heads, labels=words[0], valid=words[1])
    if hint == "joint" and grid_joint:
        return info("joint", grid_joint, heads, *words)
    if grid_n:
        return info("pixel_to_pixel", grid_n, heads)
    if grid_joint:
        return info("joint", grid_joint, heads, *words)
    if _is_tokenish(n, L):
        return info("token_to_token", heads=heads, labels=_query_labels(n, tokens, L)[0])
    return info("other", heads=heads)


def _text_parts(text: TextInput | Sequence[str], sample: int) -> tuple[int, list[str]]:
    if isinstance(text, TextInput):
        tokens = text.tokens[sample] if text.tokens else []
        return int(text.ids.shape[1]), list(tokens)
    tokens = list(text)
    return len(tokens), tokens


def catalogue(
    maps: Mapping[str, Tensor] | AttentionRecorder,
    *,
    text: TextInput | Sequence[str],
    image_size: int | tuple[int, int],
    sample: int = 0,
    hints: Mapping[str, str] | None = None,
) -> list[MapInfo]:
    """One :class:`MapInfo` per recorded name (kind, shape, grid, labels, family, layer).

    Args:
        maps: ``recorder.maps`` or the recorder itself.
        text: the :class:`~rislib.types.TextInput` the model read (its padded length is
            ``L``), or the unpadded token strings of one sample.
        image_size: the model's input side, or ``(H, W)``.
        sample: which sample's tokens label the token axes.
        hints: see :func:`classify_map`.
    """
    if isinstance(maps, AttentionRecorder):
        maps = maps.maps
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    num_tokens, tokens = _text_parts(text, sample)
    return [
        classify_map(name, t, num_tokens=num_tokens, tokens=tokens, image_size=size, hints=hints)
        for name, t in maps.items()
    ]


def format_catalogue(infos: Sequence[MapInfo]) -> str:
    """A plain-text table of a catalogue: name, kind, shape, grid."""
    width = max([len(i.name) for i in infos] + [4])
    lines = [f"{'name':<{width}}  {'kind':<15}{'shape':<22}grid"]
    for i in infos:
        grid = f"{i.grid[0]}x{i.grid[1]}" if i.grid else "-"
        lines.append(f"{i.name:<{width}}  {i.kind:<15}{str(list(i.shape)):<22}{grid}")
    return "\n".join(lines)


def families(infos: Sequence[MapInfo], *, spatial_only: bool = True) -> dict[str, list[MapInfo]]:
    """Group a catalogue by family (recording order kept), each list sorted by layer."""
    out: dict[str, list[MapInfo]] = {}
    for i in infos:
        if spatial_only and not i.is_spatial:
            continue
        out.setdefault(i.family, []).append(i)
    return {k: sorted(v, key=lambda i: i.layer) for k, v in out.items()}


def _check(tensor: Tensor, info: MapInfo) -> None:
    if tuple(tensor.shape) != info.shape:
        raise ValueError(f"{info.name}: tensor shape {tuple(tensor.shape)} does not match its MapInfo {info.shape}")
    if not info.is_spatial:
        raise ValueError(f"{info.name}: a {info.kind!r} map has no pixel axis, so it gives no heatmap")


def token_maps(
    tensor: Tensor, info: MapInfo, *, sample: int = 0, head: int | None = None, direction: str = "pixel_to_word"
) -> Tensor:
    """Per-token spatial maps ``[T, h, w]`` of one sample (``T = len(info.labels)``; 1 for
    spatial and pixel -> pixel maps), for one head or the mean over heads.

    Args:
        tensor: the recorded map described by ``info``.
        sample: batch index.
        head: head index, or None for the mean over heads.
        direction: for ``joint`` maps, ``"pixel_to_word"`` (pixel rows, word columns) or
            ``"word_to_pixel"`` (word rows, pixel columns).
    """
    _check(tensor, info)
    if info.kind == "spatial":
        x = tensor[sample].reshape(-1, *info.grid)[:1].float()  # [1, h, w]
        return x
    if head is not None and not 0 <= head < info.heads:
        raise ValueError(f"{info.name}: head {head} out of range for {info.heads} heads")
    x = tensor[sample].float()  # [heads, Lq, Lk]
    x = x.mean(0) if head is None else x[head]  # [Lq, Lk]
    h, w = info.grid
    p = h * w
    if info.kind in ("pixel_to_word", "pixel_to_query"):
        x = x.transpose(0, 1)  # [HW, T] -> [T, HW]
    elif info.kind == "joint":
        if direction == "pixel_to_word":
            x = x[:p, p:].transpose(0, 1)  # [HW, L] -> [L, HW]
        elif direction == "word_to_pixel":
            x = x[p:, :p]  # [L, HW]
        else:
            raise ValueError(f"token_maps direction: expected 'pixel_to_word' or 'word_to_pixel', got {direction!r}")
    elif info.kind == "pixel_to_pixel":
        x = x.mean(0, keepdim=True)  # attention received by each key pixel: [1, HW]
    return x.reshape(-1, h, w)  # [T, HW] -> [T, h, w]


def upsample(x: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Bilinear resize of ``[h, w]`` or ``[T, h, w]`` maps to ``size`` (align_corners=False)."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    squeeze = x.ndim == 2
    y = x[None, None] if squeeze else x[:, None]
    y = F.interpolate(y.float(), size=size, mode="bilinear", align_corners=False)  # [T, 1, H, W]
    return y[0, 0] if squeeze else y[:, 0]


def _word_index(info: MapInfo, word: int | str) -> int:
    if isinstance(word, str):
        for i, (lab, ok) in enumerate(zip(info.labels, info.valid, strict=True)):
            if ok and lab.lower() == word.lower():
                return i
        raise KeyError(f"{info.name}: no token {word!r}; tokens: {[lab for lab in info.labels if lab != '[PAD]']}")
    if not -len(info.labels) <= word < len(info.labels):
        raise IndexError(f"{info.name}: token index {word} out of range for {len(info.labels)} tokens")
    return word % len(info.labels)


def heatmap(
    tensor: Tensor,
    info: MapInfo,
    *,
    word: int | str | None = None,
    head: int | None = None,
    sample: int = 0,
    size: int | tuple[int, int] | None = None,
    direction: str = "pixel_to_word",
) -> Tensor:
    """One spatial heatmap ``[h, w]`` (or ``[H, W]`` with ``size``) from a recorded map.

    Args:
        word: token position or token string (first match), or None for the sentence (the
            mean over :meth:`MapInfo.content`). Ignored for maps without a token axis.
        head: head index or None for the head mean.
        sample: batch index.
        size: upsample (bilinear) to this image size.
        direction: see :func:`token_maps`.
    """
    maps = token_maps(tensor, info, sample=sample, head=head, direction=direction)  # [T, h, w]
    if not info.has_tokens:
        out = maps[0]
    elif word is None:
        out = maps[info.content()].mean(0)
    else:
        out = maps[_word_index(info, word)]
    return out if size is None else upsample(out, size)


def word_heatmaps(
    tensor: Tensor,
    info: MapInfo,
    *,
    head: int | None = None,
    sample: int = 0,
    size: int | tuple[int, int] | None = None,
    include_special: bool = False,
    sentence: bool = True,
    direction: str = "pixel_to_word",
) -> tuple[list[str], Tensor]:
    """Heatmaps of every real token (and the sentence first): ``(labels, [T', H, W])``.

    Special tokens are left out unless ``include_special``; padding always is.
    """
    maps = token_maps(tensor, info, sample=sample, head=head, direction=direction)  # [T, h, w]
    if not info.has_tokens:
        labels, out = [info.kind], maps
    else:
        keep = [
            i
            for i, (lab, ok) in enumerate(zip(info.labels, info.valid, strict=True))
            if ok and (include_special or not is_special_token(lab))
        ]
        labels = [info.labels[i] for i in keep]
        out = maps[keep]
        if sentence:
            labels = ["(sentence)"] + labels
            out = torch.cat([maps[info.content()].mean(0, keepdim=True), out])
    return labels, out if size is None else upsample(out, size)


@dataclass
class AttentionRun:
    """One eval-mode forward pass with its recorded maps.

    Attributes:
        probabilities: ``[B, 1, H, W]`` foreground probability at the requested size (CPU).
        maps: recorded name -> tensor (CPU, float32).
        text: the tokenised expressions the model read (CPU).
        infos: the catalogue of ``maps`` for sample 0.
        image_size: the model's input ``(H, W)``.
    """

    probabilities: Tensor
    maps: dict[str, Tensor]
    text: TextInput
    infos: list[MapInfo] = field(default_factory=list)
    image_size: tuple[int, int] = (0, 0)

    def info(self, name: str) -> MapInfo:
        for i in self.infos:
            if i.name == name:
                return i
        raise KeyError(f"no recorded map {name!r}; recorded: {[i.name for i in self.infos]}")

    def tokens(self, sample: int = 0) -> list[str]:
        return list(self.text.tokens[sample]) if self.text.tokens else []

    def catalogue(self, sample: int = 0, hints: Mapping[str, str] | None = None) -> list[MapInfo]:
        return catalogue(self.maps, text=self.text, image_size=self.image_size, sample=sample, hints=hints)


@torch.no_grad()
def run_with_attention(
    model: RISModel,
    batch: Batch,
    *,
    size: int | tuple[int, int] | None = None,
    include: Sequence[str] | None = None,
    hints: Mapping[str, str] | None = None,
) -> AttentionRun:
    """Run ``model`` once under a recorder, through :meth:`RISModel.probabilities` (eval mode,
    previous mode restored, no-target gating applied): exactly one forward pass.

    The expressions are tokenised once, by the model's tokenizer, so the token labels and
    the maps' token axes agree.

    Args:
        model: any :class:`~rislib.models.RISModel`.
        batch: images at the model's input size.
        size: size of the returned probabilities (the input size by default).
        include: recorder glob filter.
        hints: see :func:`classify_map`.
    """
    text = model.prepare_text(batch.text, model.device)
    fed = Batch(images=batch.images, text=text, masks=None, meta=batch.meta)
    size = None if size is None else ((size, size) if isinstance(size, int) else tuple(size))
    with AttentionRecorder(model, include=include) as rec:
        prob = model.probabilities(fed, size)  # [B, 1, H, W]
    hw = tuple(batch.images.shape[-2:])
    run = AttentionRun(prob.float().cpu(), dict(rec.maps), text.to("cpu"), image_size=hw)
    run.infos = run.catalogue(0, hints)
    return run
