"""HARIS's fusion: Human-Like Attention blocks with a feedback signal, run hierarchically.

Paper: Mengxi Zhang, Heqing Lian, Yiming Liu, Jie Chen, "HARIS: Human-Like Attention for
Reference Image Segmentation", arXiv 2405.10707.

What the paper states (``docs/methods/haris.md#what-the-paper-states`` and ``#figure-captions``):

* existing methods fuse image and text *bottom-up* with cross-attention, so the attention
  map of a word (Fig. 1: "black") also covers irrelevant regions; HARIS obtains a *feedback
  signal from the multi-modal features* that centres the network on the referred object and
  discards irrelevant image-text pairs (abstract);
* a Human-Like Attention block has two branches, *Language-Weighted Attention* (LWA) and
  *Vision-Weighted Attention* (VWA). In LWA a feedback signal is introduced: it is
  *modulated by the sentence feature F_s and fed into an MLP*; the feedback signal *together
  with the visual tokens* is the *second-round input* of LWA (Fig. 3);
* a *hierarchical* architecture fuses visual features F_v1, F_v2, F_v3 taken from different
  encoder layers, so both deep (semantic) and shallow (fine-grained) features are used (Fig. 2).

No equation of the paper could be read (``docs/methods/haris.md#what-could-not-be-read``). The
formulas below are this project's interpretation of those captions
(``docs/methods/haris.md#this-projects-interpretation`` [proposal]). Notation: visual tokens
``V [B, HW, C]`` with sine positions ``P``, words ``W [B, L, C]`` with padding mask ``m`` (True
on real words), sentence ``F_s [B, C]``, ``d = C / heads``:

* :class:`LanguageWeightedAttention` (pixels read the words; each pixel becomes a
  language-weighted mixture): ``A = softmax_L((X + P) W_q (W W_k)^T / sqrt(d) + log m [+ b])``,
  ``LWA(X) = LN(X + (A W W_v) W_o)``.
* :class:`VisionWeightedAttention` (words read the pixels, the parallel branch):
  ``A' = softmax_HW(W W_q' ((V + P) W_k')^T / sqrt(d) [+ b'])``, ``VWA = LN(W + (A' V W_v') W_o')``.
* :class:`FeedbackSignal` (``feedback_mode="input"``, the captions' reading, default):
  round 1 ``M_1 = LWA(V)``; feedback ``f = MLP(M_1 * (W_s F_s))`` (element-wise modulation
  by the projected sentence, then a 2-layer GELU MLP); round 2 ``M_2 = LWA(V + f)`` with the
  *same* LWA weights, so the second round attends from object-centred tokens.
  ``feedback_iterations = T`` repeats the loop (``M_{t+1} = LWA(V + MLP(M_t * W_s F_s))``).
* :class:`FeedbackWeights` (``feedback_mode="bias"``, the variant of
  ``docs/methods/haris.md#feedback-as-attention-bias``): from
  round 1's ``M_1`` and ``W_1 = VWA(W, V)``: pixel relevance
  ``s = sigmoid(Linear(M_1 * masked_mean(W_1)))`` ``[B, HW]``; word relevance
  ``w = softmax_L(W_1 . mean_HW(s * M_1) / sqrt(C) + log m)`` ``[B, L]``; round 2 re-runs
  LWA on ``V`` with bias ``b = log(w + eps)`` and VWA on ``W`` with bias ``b' = log(s + eps)``,
  so pairs with a low relevance are (softly) discarded.
* :class:`HumanLikeAttentionBlock`: output ``V' = LN(M + FFN(M))`` from the last LWA round,
  ``W' = LN(T + FFN(T))`` from the (last) VWA round.
* :class:`SimpleFeaturePyramid`: the ViT taps become a pyramid at strides 4, 8, 16, 32 (ViTDet's
  simple pyramid, Li et al. 2022: transposed convolutions up, max-pooling down, then 1x1 and 3x3
  convolutions with LayerNorm). With taps F_v1, F_v2, F_v3 of a plain ViT: strides 4 and 8 from
  F_v1 (shallow, fine-grained), 16 from F_v2, 32 from F_v3 (deep, semantic)
  (docs/methods/haris.md#encoders [proposal]). The stride-4 level, needed for the mask features,
  gets no block of its own.
* :class:`HierarchicalHumanLikeFusion`: one block per level, coarse to fine (strides 32,
  16, 8), each level's input plus the bilinearly upsampled fused output of the level above
  (top-down residual), words passed from block to block. Levels given beyond the blocks
  receive only the top-down residual: the stride-4 level (FPN-style), and in the
  ``hierarchical=False`` ablation (one block, at stride 32) every finer level.

Attention maps recorded while a :class:`rislib.viz.AttentionRecorder` is active, ``<block>``
being e.g. ``fusion.blocks.0``: ``<block>.lwa.attn.round1`` / ``.round2`` (``.round{t+1}``)
``[B, heads, HW, L]``, the map of every word over the pixels before and after feedback
(Fig. 1); ``<block>.vwa.attn.round1`` (and ``.round2`` in bias mode) ``[B, heads, L, HW]``;
``<block>.feedback_map`` ``[B, 1, h, w]``: the feedback's strength per pixel (RMS of ``f`` in
input mode, ``s`` in bias mode).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..layers.blocks import MLP, LayerNorm2d, flatten_hw, masked_mean, sine_position_embedding_2d, unflatten_hw
from ..layers.cross_attention import PostNormCrossAttention
from ..layers.recording import record
from ..layers.resize import resize_bilinear

__all__ = [
    "FEEDBACK_MODES",
    "LanguageWeightedAttention",
    "VisionWeightedAttention",
    "FeedbackSignal",
    "FeedbackWeights",
    "HumanLikeAttentionOutput",
    "HumanLikeAttentionBlock",
    "HierarchicalHumanLikeFusion",
    "SimpleFeaturePyramid",
]

FEEDBACK_MODES = ("input", "bias")


def _ffn(dim: int, hidden: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))


class LanguageWeightedAttention(PostNormCrossAttention):
    """LWA: visual tokens attend to the words, ``LN(X + MHA(X + P, W, W))`` (module docstring).

    A :class:`PostNormCrossAttention` without FFN, the position embedding on the queries.

    Args:
        dim: width ``C`` of tokens and words.
        num_heads: attention heads.
        dropout: attention dropout.

    Shapes:
        ``x [B, HW, C]``, ``pos [1 or B, HW, C]``, ``words [B, L, C]``, ``word_mask [B, L]``,
        ``attn_bias`` broadcastable to ``[B, heads, HW, L]`` -> ``[B, HW, C]``.
    """

    def __init__(self, *, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__(dim=dim, num_heads=num_heads, dropout=dropout)

    def forward(  # type: ignore[override]
        self,
        x: Tensor,
        pos: Tensor,
        words: Tensor,
        word_mask: Tensor,
        *,
        attn_bias: Tensor | None = None,
        record_key: str = "round1",
    ) -> Tensor:
        return super().forward(
            x, words, query_pos=pos, key_padding_mask=word_mask, attn_bias=attn_bias, record_key=record_key
        )


class VisionWeightedAttention(PostNormCrossAttention):
    """VWA: words attend to the visual tokens, ``LN(W + MHA(W, V + P, V))`` (module docstring).

    A :class:`PostNormCrossAttention` without FFN, the position embedding on the keys.

    Args:
        dim: width ``C``.
        num_heads: attention heads.
        dropout: attention dropout.

    Shapes:
        ``words [B, L, C]``, ``visual [B, HW, C]``, ``pos [1 or B, HW, C]``, ``attn_bias``
        broadcastable to ``[B, heads, L, HW]`` -> ``[B, L, C]``.
    """

    def __init__(self, *, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__(dim=dim, num_heads=num_heads, dropout=dropout)

    def forward(  # type: ignore[override]
        self,
        words: Tensor,
        visual: Tensor,
        pos: Tensor,
        *,
        attn_bias: Tensor | None = None,
        record_key: str = "round1",
    ) -> Tensor:
        return super().forward(words, visual, key_pos=pos, attn_bias=attn_bias, record_key=record_key)


class FeedbackSignal(nn.Module):
    """The feedback of Fig. 3: ``f = MLP(M * (W_s F_s))``, one vector per visual token.

    The captions say the signal is "modulated by F_s and fed into an MLP" [src 5.2b]; the
    element-wise product with a linear projection of ``F_s`` and the 2-layer GELU MLP are this
    project's interpretation.

    Args:
        dim: width ``C``.
        hidden_dim: hidden width of the MLP.

    Shapes:
        ``tokens [B, HW, C]``, ``sentence [B, C]`` -> ``[B, HW, C]``.
    """

    def __init__(self, *, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.sentence_proj = nn.Linear(dim, dim)
        self.mlp = MLP(dim, hidden_dim, dim, num_layers=2)

    def forward(self, tokens: Tensor, sentence: Tensor) -> Tensor:
        return self.mlp(tokens * self.sentence_proj(sentence)[:, None, :])  # [B, HW, C]


class FeedbackWeights(nn.Module):
    """Relevance of pixels and words from round 1 (``feedback_mode="bias"``).

    The variant of ``docs/methods/haris.md#feedback-as-attention-bias``.

    ``s = sigmoid(Linear(M * masked_mean(W_1)))`` and
    ``w = softmax_L(W_1 . mean_HW(s * M) / sqrt(C) + log m)``.

    Args:
        dim: width ``C``.

    Shapes:
        ``tokens [B, HW, C]``, ``words [B, L, C]``, ``word_mask [B, L]`` ->
        ``(s [B, HW], w [B, L])``.
    """

    def __init__(self, *, dim: int) -> None:
        super().__init__()
        self.pixel_score = nn.Linear(dim, 1)

    def forward(self, tokens: Tensor, words: Tensor, word_mask: Tensor) -> tuple[Tensor, Tensor]:
        pooled = masked_mean(words, word_mask)  # [B, C]
        s = self.pixel_score(tokens * pooled[:, None, :]).squeeze(-1).sigmoid()  # [B, HW]
        centre = (s.unsqueeze(-1) * tokens).mean(1)  # [B, C]
        scores = torch.einsum("blc,bc->bl", words, centre) / math.sqrt(words.shape[-1])  # [B, L]
        scores = scores.masked_fill(~word_mask, torch.finfo(scores.dtype).min)
        return s, scores.softmax(-1)


@dataclass
class HumanLikeAttentionOutput:
    """What a :class:`HumanLikeAttentionBlock` returns.

    Attributes:
        visual: ``[B, HW, C]`` multi-modal visual tokens.
        words: ``[B, L, C]`` vision-weighted words.
        feedback: ``[B, HW]`` feedback strength per token (``None`` without feedback).
    """

    visual: Tensor
    words: Tensor
    feedback: Tensor | None


class HumanLikeAttentionBlock(nn.Module):
    """One Human-Like Attention block: LWA in rounds with feedback, VWA in parallel, FFNs.

    Args:
        dim: width ``C`` of visual tokens, words and sentence.
        num_heads: heads of LWA and VWA.
        ffn_dim: hidden width of the output FFNs and of the feedback MLP.
        feedback_mode: ``"input"`` (feedback added to the visual tokens of the next round,
            Fig. 3; default) or ``"bias"`` (log-relevance biases,
            docs/methods/haris.md#feedback-as-attention-bias).
        use_feedback: ``False`` runs one round (the ablation "without feedback").
        feedback_iterations: feedback rounds ``T`` after the first (1 in the captions).
        dropout: dropout in attention and FFNs.
        eps: added before the logarithm in bias mode.

    Shapes:
        ``forward(visual [B, HW, C], pos [1 or B, HW, C], words [B, L, C], word_mask [B, L],
        sentence [B, C])`` -> :class:`HumanLikeAttentionOutput`.
    """

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        ffn_dim: int,
        feedback_mode: str = "input",
        use_feedback: bool = True,
        feedback_iterations: int = 1,
        dropout: float = 0.0,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if feedback_mode not in FEEDBACK_MODES:
            raise ValueError(
                f"HumanLikeAttentionBlock: feedback_mode must be one of {FEEDBACK_MODES}, got {feedback_mode!r}"
            )
        if feedback_iterations < 1:
            raise ValueError(f"HumanLikeAttentionBlock: feedback_iterations must be >= 1, got {feedback_iterations}")
        self.feedback_mode = feedback_mode
        self.use_feedback = use_feedback
        self.feedback_iterations = feedback_iterations
        self.eps = eps
        self.lwa = LanguageWeightedAttention(dim=dim, num_heads=num_heads, dropout=dropout)
        self.vwa = VisionWeightedAttention(dim=dim, num_heads=num_heads, dropout=dropout)
        if feedback_mode == "input":
            self.feedback: FeedbackSignal | FeedbackWeights = FeedbackSignal(dim=dim, hidden_dim=ffn_dim)
        else:
            self.feedback = FeedbackWeights(dim=dim)
        self.ffn_visual = _ffn(dim, ffn_dim, dropout)
        self.norm_visual = nn.LayerNorm(dim)
        self.ffn_words = _ffn(dim, ffn_dim, dropout)
        self.norm_words = nn.LayerNorm(dim)

    def forward(
        self, visual: Tensor, pos: Tensor, words: Tensor, word_mask: Tensor, sentence: Tensor
    ) -> HumanLikeAttentionOutput:
        m = self.lwa(visual, pos, words, word_mask, record_key="round1")  # M_1 [B, HW, C]
        t = self.vwa(words, visual, pos, record_key="round1")  # [B, L, C]
        strength = None
        rounds = self.feedback_iterations if self.use_feedback else 0
        for r in range(2, rounds + 2):
            if self.feedback_mode == "input":
                f = self.feedback(m, sentence)  # [B, HW, C]
                strength = f.float().pow(2).mean(-1).sqrt()  # [B, HW], RMS of the signal
                m = self.lwa(visual + f, pos, words, word_mask, record_key=f"round{r}")
            else:
                s, w = self.feedback(m, t, word_mask)  # [B, HW], [B, L]
                strength = s
                word_bias = torch.log(w + self.eps)[:, None, None, :]  # [B, 1, 1, L]
                pixel_bias = torch.log(s + self.eps)[:, None, None, :]  # [B, 1, 1, HW]
                m = self.lwa(visual, pos, words, word_mask, attn_bias=word_bias, record_key=f"round{r}")
                t = self.vwa(words, visual, pos, attn_bias=pixel_bias, record_key=f"round{r}")
        visual_out = self.norm_visual(m + self.ffn_visual(m))
        words_out = self.norm_words(t + self.ffn_words(t))
        return HumanLikeAttentionOutput(visual=visual_out, words=words_out, feedback=strength)


class HierarchicalHumanLikeFusion(nn.Module):
    """Human-Like Attention blocks over a feature pyramid, coarse to fine, with top-down residuals.

    Args:
        dim: width ``C`` of every level, the words and the sentence.
        num_heads, ffn_dim, feedback_mode, use_feedback, feedback_iterations, dropout: see
            :class:`HumanLikeAttentionBlock`.
        num_blocks: levels that get a block (3: strides 32, 16, 8; 1: only the coarsest).

    Shapes:
        ``forward(maps, words, word_mask, sentence)`` with ``maps`` coarse to fine
        ``[B, C, h_i, w_i]`` (at least ``num_blocks`` of them) returns ``(fused maps coarse to
        fine, words [B, L, C], feedback maps [B, 1, h_i, w_i] of the levels with a block)``.
    """

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        ffn_dim: int,
        num_blocks: int = 3,
        feedback_mode: str = "input",
        use_feedback: bool = True,
        feedback_iterations: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % 4:
            raise ValueError(f"HierarchicalHumanLikeFusion: dim must be divisible by 4 (sine positions), got {dim}")
        self.dim = dim
        self.blocks = nn.ModuleList(
            HumanLikeAttentionBlock(
                dim=dim,
                num_heads=num_heads,
                ffn_dim=ffn_dim,
                feedback_mode=feedback_mode,
                use_feedback=use_feedback,
                feedback_iterations=feedback_iterations,
                dropout=dropout,
            )
            for _ in range(num_blocks)
        )

    def forward(
        self, maps: Sequence[Tensor], words: Tensor, word_mask: Tensor, sentence: Tensor
    ) -> tuple[list[Tensor], Tensor, list[Tensor]]:
        if len(maps) < len(self.blocks):
            raise ValueError(f"HierarchicalHumanLikeFusion: expected at least {len(self.blocks)} maps, got {len(maps)}")
        fused: list[Tensor] = []
        feedback: list[Tensor] = []
        above: Tensor | None = None
        for i, x in enumerate(maps):
            if x.ndim != 4 or x.shape[1] != self.dim:
                raise ValueError(
                    f"HierarchicalHumanLikeFusion: maps[{i}] must be [B, {self.dim}, h, w], got {tuple(x.shape)}"
                )
            h, w = x.shape[-2:]
            if above is not None:  # top-down residual from the coarser fused level
                x = x + resize_bilinear(above, (h, w))  # bilinear, align_corners=False
            if i < len(self.blocks):
                pos = sine_position_embedding_2d(h, w, self.dim, x.device, x.dtype)[None]  # [1, HW, C]
                out = self.blocks[i](flatten_hw(x), pos, words, word_mask, sentence)
                x = unflatten_hw(out.visual, h, w)  # [B, HW, C] -> [B, C, h, w]
                words = out.words
                if out.feedback is not None:
                    fmap = out.feedback.reshape(-1, 1, h, w)  # [B, HW] -> [B, 1, h, w]
                    record(self.blocks[i], "feedback_map", fmap)
                    feedback.append(fmap)
            fused.append(x)
            above = x
        return fused, words, feedback


def _rescaler(channels: int, factor: float) -> tuple[nn.Module, int]:
    """ViTDet's resampling by a power of two: ``(module, output channels)``.

    Up by ``2^k``: ``k`` transposed 2x2 convolutions, each halving the channels, with
    LayerNorm + GELU between them; down by ``2^k``: ``k`` 2x2 max-pools; 1: identity.
    """
    k = round(math.log2(factor))
    if not math.isclose(2.0**k, factor):
        raise ValueError(f"SimpleFeaturePyramid: resampling factor {factor} is not a power of two")
    if k <= 0:
        return (nn.Sequential(*[nn.MaxPool2d(2) for _ in range(-k)]) if k else nn.Identity()), channels
    layers: list[nn.Module] = []
    c = channels
    for i in range(k):
        if c % 2:
            raise ValueError(f"SimpleFeaturePyramid: cannot halve {c} channels {k} times to upsample by {factor}")
        layers.append(nn.ConvTranspose2d(c, c // 2, kernel_size=2, stride=2))
        c //= 2
        if i < k - 1:
            layers += [LayerNorm2d(c), nn.GELU()]
    return nn.Sequential(*layers), c


class SimpleFeaturePyramid(nn.Module):
    """Encoder maps -> a ``dim``-channel pyramid at ``out_strides`` (ViTDet's simple pyramid).

    Each output level reads one input map, normalises it (LayerNorm over channels: a ViT's
    residual stream has a few very large channels), resamples it by a power of two
    (:func:`_rescaler`) and projects it with ``Conv1x1 -> LN -> Conv3x3 -> LN``.

    Args:
        in_channels: channels of the input maps.
        in_strides: strides of the input maps.
        sources: for each output level, the index of the input map it is made from.
        out_strides: strides of the outputs, fine to coarse.
        dim: channels of every output.

    Shapes:
        ``forward(maps)`` with ``maps[i] [B, in_channels[i], H / in_strides[i], ...]``
        returns ``[B, dim, H / s, W / s]`` for each ``s`` in ``out_strides`` (fine to coarse).
    """

    def __init__(
        self,
        *,
        in_channels: Sequence[int],
        in_strides: Sequence[int],
        sources: Sequence[int],
        out_strides: Sequence[int] = (4, 8, 16, 32),
        dim: int = 256,
    ) -> None:
        super().__init__()
        if len(sources) != len(out_strides):
            raise ValueError(f"SimpleFeaturePyramid: {len(sources)} sources for {len(out_strides)} output strides")
        if any(not 0 <= i < len(in_channels) for i in sources):
            raise ValueError(f"SimpleFeaturePyramid: sources {tuple(sources)} must index the {len(in_channels)} inputs")
        self.sources = tuple(sources)
        self.out_strides = tuple(out_strides)
        self.input_norms = nn.ModuleList(LayerNorm2d(c) for c in in_channels)
        levels = []
        for src, stride in zip(sources, out_strides):
            rescale, c = _rescaler(in_channels[src], in_strides[src] / stride)
            levels.append(
                nn.Sequential(
                    rescale,
                    nn.Conv2d(c, dim, kernel_size=1, bias=False),
                    LayerNorm2d(dim),
                    nn.Conv2d(dim, dim, kernel_size=3, padding=1, bias=False),
                    LayerNorm2d(dim),
                )
            )
        self.levels = nn.ModuleList(levels)

    def forward(self, maps: Sequence[Tensor]) -> list[Tensor]:
        if len(maps) != len(self.input_norms):
            raise ValueError(f"SimpleFeaturePyramid: expected {len(self.input_norms)} maps, got {len(maps)}")
        normed = [norm(x) for norm, x in zip(self.input_norms, maps)]
        return [level(normed[src]) for level, src in zip(self.levels, self.sources)]
