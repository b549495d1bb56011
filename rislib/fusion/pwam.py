"""LAVT's pixel-word attention (PWAM), its language gate, and MagNet's language-side fusion.

LAVT (Yang et al., CVPR 2022) fuses language *inside* a Swin transformer: after every stage,
each pixel gathers a language context from the words (pixel-word attention), multiplies it
with its own features and feeds the result back through a tanh "language gate". MagNet
(Chng et al., CVPR 2024) keeps this and adds the opposite direction, words gathering a visual
context from the pixels, which updates the BERT stream between its chunks. The equations
below are those of the official MagNet code (``lib/backbone.py::PWAM``,
``SpatialImageLanguageAttention``, ``bert/multimodal_bert.py``), transcribed in
``docs/methods/magnet.md#image-side-pwam`` and ``#language-side-fusion`` [code];
``tests/golden`` checks both sides against the released modules at shared random weights
(docs/fidelity.md). A 1x1 ``Conv1d`` on tokens is written here as the equivalent ``nn.Linear``.

Image side, ``X [B, HW, C]`` visual tokens, ``L [B, N, D]`` words, ``m [B, N]`` word mask::

    Q = LN(X Wq)      K = L Wk      V = L Wv                      (one head by default)
    A = softmax_words(Q K^T / sqrt(C_key) + padding mask)          # [B, HW, N]
    G = LN((A V) Wo)                                               # language context per pixel
    F = GELU(Wmm (GELU(Wvis X) * G))                               # PixelWordAttentionModule
    X_next = X + tanh(W2 GELU(W1 F)) * F                           # LanguageGate

Language side (words query pixels)::

    Qw = (L Wq) * m       Kv = IN(X Wk)       Vv = IN(X Wv)        # IN over the pixel axis
    Aw = softmax_pixels(Qw Kv^T / sqrt(D))                         # [B, N, HW]
    Gw = IN_words((Aw Vv) Wo)                                      # visual context per word
    Rw = GELU(Wmm (GELU(Wvis L) * Gw))                             # LanguagePWAM
    L_next = L + tanh(W2 ReLU(W1 Rw)) * Rw                         # LanguageGate(act="relu")

**LAVT's own PWAM** (``norm="instance"``; LAVT ``lib/backbone.py`` at LAVT-RIS 1da0af9)
differs from MagNet's in two places: the query and the output projection are normalised by
``InstanceNorm1d`` over the pixels (per sample and channel) instead of ``LayerNorm`` over the
channels, and the image-side gate uses ReLU instead of GELU (``LanguageGate(act="relu")``)::

    Q = IN_pixels(X Wq)          G = IN_pixels((A V) Wo)           (LAVT)
    Q = LN(X Wq)                 G = LN((A V) Wo)                  (MagNet)

Where this implementation differs from the released code, and why (this project's
interpretation, each documented where it happens):

* **Language-side mask quirk.** The released test code passes BERT's *additive* extended
  mask (0 on words, -10000 on padding) where a 0/1 mask is expected, and multiplies the word
  queries by it: every real word's query becomes 0, so its attention over pixels is uniform
  (the word receives the mean visual value), and padded queries are scaled by -1e4. The
  evident intent, a boolean padding mask, is the default; ``mask_quirk=True`` reproduces the
  released computation (for loading released weights).
* **Instance norm over words.** The released ``IN`` on ``Gw`` normalises over all padded
  positions (sentences are always padded to 20 tokens there). By default padding is per
  batch here, so the statistics are taken over the real words only; otherwise a sentence's
  features would depend on the other sentences of its batch. With ``mask_quirk=True`` the
  statistics cover every position, padding included, as in the release (the caller pads to
  20 tokens, as MagNet's official mode does), so the released computation is reproduced
  exactly (``tests/golden``).
* **Gate initialisation.** The code zero-initialises both gate matrices ("initialize the gate
  to 0"), but with ``W1 = W2 = 0`` no gradient reaches either matrix (a fixed point), and the
  official LAVT/MagNet construction overwrites the image-side zeros with a truncated normal
  (``init_weights`` runs after the constructor). Here ``W1`` is truncated-normal (std 0.02)
  and ``W2`` zero: the gate is exactly closed at initialisation, as intended, and can open.

Attention maps are recorded as ``<name>.attn`` while an :class:`~rislib.layers.AttentionRecorder`
is active: ``[B, heads, HW, N]`` (pixel -> word) for the image side, ``[B, heads, N, HW]``
(word -> pixel) for the language side.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import attention_bias_from_mask, is_recording, record
from ..layers.attention import attend, merge_heads, split_heads

__all__ = [
    "masked_instance_norm",
    "TokenInstanceNorm",
    "PixelWordAttention",
    "PixelWordAttentionModule",
    "LanguageGate",
    "WordPixelAttention",
    "LanguagePWAM",
]


def masked_instance_norm(x: Tensor, mask: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """``InstanceNorm1d`` (no affine) over the sequence axis of ``x [B, L, C]``.

    Each channel of each sample is normalised by its mean and (biased) variance over the
    positions where ``mask [B, L]`` is True (all positions when ``mask`` is None). Masked
    positions are normalised with the same statistics; their values are meaningless.
    """
    y = x.float()  # statistics in float32, also under bf16 autocast
    if mask is None:
        mean = y.mean(1, keepdim=True)
        var = y.var(1, keepdim=True, unbiased=False)
    else:
        m = mask.to(y.dtype).unsqueeze(-1)  # [B, L, 1]
        n = m.sum(1, keepdim=True).clamp_min(1.0)
        mean = (y * m).sum(1, keepdim=True) / n
        var = ((y - mean).square() * m).sum(1, keepdim=True) / n
    return ((y - mean) * torch.rsqrt(var + eps)).to(x.dtype)


def _conv1x1(linear: nn.Linear, x: Tensor) -> Tensor:
    """``linear(x)`` for ``x [B, L, C]``, computed as the equivalent 1x1 ``Conv1d`` over ``L``."""
    out = F.conv1d(x.transpose(1, 2), linear.weight[:, :, None], linear.bias)  # [B, C_out, L]
    return out.transpose(1, 2)


class TokenInstanceNorm(nn.Module):
    """``InstanceNorm1d`` (no affine, eps 1e-5) over the token axis of ``x [B, L, C]``: each
    channel of each sample is normalised over its ``L`` positions (LAVT's pixel-axis norm).

    Computed by PyTorch's own instance-norm kernel, as LAVT's ``nn.InstanceNorm1d``: the
    normalised map can have a tiny variance over the pixels (a context that barely varies
    across the image), where any other summation order moves the result visibly."""

    def forward(self, x: Tensor) -> Tensor:
        y = F.instance_norm(x.float().transpose(1, 2), eps=1e-5)  # [B, C, L], statistics over L
        return y.transpose(1, 2).to(x.dtype)


PWAM_NORMS = ("layer", "instance")


class PixelWordAttention(nn.Module):
    """Pixels attend to words: ``G = N((softmax(N(X Wq) (L Wk)^T / sqrt(C_key)) L Wv) Wo)``.

    LAVT/MagNet ``SpatialImageLanguageAttention`` (docs/methods/magnet.md#image-side-pwam). The
    scale is ``1 / sqrt(key_dim)`` of the *total* key width even with several heads, as the
    code writes it (the golden tests run the released setting, one head).
    ``N`` is LayerNorm over channels (MagNet, ``norm="layer"``) or InstanceNorm over the
    pixels (LAVT, ``norm="instance"``; see the module docstring).

    Args:
        visual_dim: channels ``C`` of the visual tokens.
        text_dim: channels ``D`` of the words.
        key_dim: width of queries and keys (``C`` by default).
        value_dim: width of values and of the output (``C`` by default).
        num_heads: attention heads (1 in MagNet).
        norm: ``"layer"`` (MagNet) or ``"instance"`` (LAVT).

    Shapes: ``x [B, HW, C]``, ``words [B, N, D]``, ``word_mask [B, N]`` (True = real word)
    -> ``[B, HW, value_dim]``.
    """

    def __init__(
        self, *, visual_dim: int, text_dim: int, key_dim: int | None = None, value_dim: int | None = None,
        num_heads: int = 1, norm: str = "layer",
    ) -> None:
        super().__init__()
        key_dim = key_dim or visual_dim
        value_dim = value_dim or visual_dim
        if key_dim % num_heads or value_dim % num_heads:
            raise ValueError(f"PixelWordAttention: key_dim {key_dim} / value_dim {value_dim} not divisible by "
                             f"num_heads {num_heads}")
        if norm not in PWAM_NORMS:
            raise ValueError(f"PixelWordAttention: norm must be one of {PWAM_NORMS}, got {norm!r}")
        self.num_heads = num_heads
        self.scale = key_dim**-0.5
        self.norm = norm

        def make_norm(dim: int) -> nn.Module:
            return nn.LayerNorm(dim) if norm == "layer" else TokenInstanceNorm()

        self.query = nn.Sequential(nn.Linear(visual_dim, key_dim), make_norm(key_dim))
        self.key = nn.Linear(text_dim, key_dim)
        self.value = nn.Linear(text_dim, value_dim)
        self.out = nn.Sequential(nn.Linear(value_dim, value_dim), make_norm(value_dim))

    def forward(self, x: Tensor, words: Tensor, word_mask: Tensor) -> Tensor:
        if self.norm == "instance":
            return self._forward_lavt(x, words, word_mask)
        q = split_heads(self.query(x), self.num_heads)  # [B, h, HW, Ck/h]
        k = split_heads(self.key(words), self.num_heads)  # [B, h, N, Ck/h]
        v = split_heads(self.value(words), self.num_heads)  # [B, h, N, Cv/h]
        bias = attention_bias_from_mask(word_mask, q.dtype)  # [B, 1, 1, N]: padded words get no weight
        out = attend(q, k, v, bias=bias, scale=self.scale, module=self)  # [B, h, HW, Cv/h]
        return self.out(merge_heads(out))  # [B, HW, Cv]

    def _forward_lavt(self, x: Tensor, words: Tensor, word_mask: Tensor) -> Tensor:
        """LAVT's variant, computed in the released order with its 1x1 ``Conv1d`` kernels.

        The same function as the default path, but the pixel-axis instance norm of ``G``
        divides by the context's variance over the pixels, which can be small: float rounding
        of another summation order (a ``Linear`` GEMM, fused attention) is then amplified to
        about ``1e-4`` at Swin-B scale. Following the release's kernels keeps the two
        bit-compatible (``tests/golden``)."""
        m = word_mask.to(x.dtype)[:, :, None]  # [B, N, 1]
        q = split_heads(self.query[1](_conv1x1(self.query[0], x)), self.num_heads)  # [B, h, HW, Ck/h]
        k = split_heads(_conv1x1(self.key, words) * m, self.num_heads)  # [B, h, N, Ck/h], padding zeroed
        v = split_heads(_conv1x1(self.value, words) * m, self.num_heads)
        scores = self.scale * (q @ k.transpose(-2, -1)) + (1e4 * m[:, None, :, 0][:, :, None] - 1e4)  # [B, h, HW, N]
        weights = scores.softmax(-1)
        if is_recording():
            record(self, "attn", weights)
        return self.out[1](_conv1x1(self.out[0], merge_heads(weights @ v)))  # [B, HW, Cv]


class PixelWordAttentionModule(nn.Module):
    """LAVT's PWAM: ``F = GELU(Wmm (GELU(Wvis X) * G))`` with ``G`` from :class:`PixelWordAttention`.

    Args:
        dim: channels ``C`` of the visual tokens (and of ``F``).
        text_dim: channels ``D`` of the words.
        num_heads: heads of the pixel-word attention (1 in LAVT and MagNet).
        dropout: dropout after the two GELUs (``fusion_drop``, 0 in LAVT and MagNet).
        norm: ``"layer"`` (MagNet's variant) or ``"instance"`` (LAVT's), see
            :class:`PixelWordAttention`.

    Shapes: ``x [B, HW, C]``, ``words [B, N, D]``, ``word_mask [B, N]`` -> ``F [B, HW, C]``.
    """

    def __init__(
        self, *, dim: int, text_dim: int, num_heads: int = 1, dropout: float = 0.0, norm: str = "layer"
    ) -> None:
        super().__init__()
        self.vis_project = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout))
        self.attention = PixelWordAttention(visual_dim=dim, text_dim=text_dim, num_heads=num_heads, norm=norm)
        self.project_mm = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout))

    def forward(self, x: Tensor, words: Tensor, word_mask: Tensor) -> Tensor:
        context = self.attention(x, words, word_mask)  # [B, HW, C]
        if self.attention.norm == "instance":  # LAVT: the release's 1x1 Conv1d kernels (see PixelWordAttention)
            vis = self.vis_project[2](self.vis_project[1](_conv1x1(self.vis_project[0], x)))
            mm = _conv1x1(self.project_mm[0], vis * context)
            return self.project_mm[2](self.project_mm[1](mm))
        return self.project_mm(self.vis_project(x) * context)


class LanguageGate(nn.Module):
    """The tanh gate ``g(R) = tanh(W2 act(W1 R))`` (bias-free); ``forward`` returns ``g(R) * R``.

    The caller adds it to the stream: ``X_next = X + gate(F)``. ``act`` is GELU on MagNet's
    image side, ReLU on its language side and on LAVT's image side, as in the code. ``W2`` starts at zero so the gate is
    closed at initialisation (see the module docstring for why ``W1`` is not zero too).

    Args:
        dim: channels of the residual.
        act: ``"gelu"`` or ``"relu"``.

    Shapes: ``residual [..., dim]`` -> ``[..., dim]``.
    """

    def __init__(self, *, dim: int, act: str = "gelu") -> None:
        super().__init__()
        acts = {"gelu": nn.GELU, "relu": nn.ReLU}
        if act not in acts:
            raise ValueError(f"LanguageGate: act must be one of {sorted(acts)}, got {act!r}")
        self.fc1 = nn.Linear(dim, dim, bias=False)
        self.act = acts[act]()
        self.fc2 = nn.Linear(dim, dim, bias=False)
        nn.init.trunc_normal_(self.fc1.weight, std=0.02)
        nn.init.zeros_(self.fc2.weight)

    def gate(self, residual: Tensor) -> Tensor:
        """``tanh(W2 act(W1 R))``, in ``(-1, 1)``."""
        return torch.tanh(self.fc2(self.act(self.fc1(residual))))

    def forward(self, residual: Tensor) -> Tensor:
        return self.gate(residual) * residual


class WordPixelAttention(nn.Module):
    """Words attend to pixels: ``Gw = IN_words((softmax(Qw Kv^T / sqrt(D)) Vv) Wo)``.

    MagNet's language-side ``SpatialImageLanguageAttention``
    (docs/methods/magnet.md#language-side-fusion). Keys and values depend on the pixels only, so
    :meth:`pixel_keys` can be computed once and shared by several sentences (the clean and the
    masked one of Mask Grounding).

    Args:
        text_dim: channels ``D`` of the words (= key and value width).
        visual_dim: channels ``C`` of the visual tokens.
        num_heads: attention heads (1 in MagNet).
        mask_quirk: reproduce the released code's use of BERT's additive mask and its
            instance norm over every (padded) word position (see the module docstring);
            False = the boolean padding mask and statistics over real words (default).

    Shapes: ``words [B, N, D]``, ``word_mask [B, N]``, ``x [B, HW, C]`` -> ``[B, N, D]``.
    """

    def __init__(self, *, text_dim: int, visual_dim: int, num_heads: int = 1, mask_quirk: bool = False) -> None:
        super().__init__()
        if text_dim % num_heads:
            raise ValueError(f"WordPixelAttention: text_dim {text_dim} not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = text_dim**-0.5
        self.mask_quirk = mask_quirk
        self.query = nn.Linear(text_dim, text_dim)
        self.key = nn.Linear(visual_dim, text_dim)
        self.value = nn.Linear(visual_dim, text_dim)
        self.out = nn.Linear(text_dim, text_dim)

    def pixel_keys(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Instance-normalised keys and values ``[B, HW, D]`` of the visual tokens ``x [B, HW, C]``.

        ``IN(x W^T + b)`` without normalising the ``[B, HW, D]`` projections element by element
        (the slowest part of MagNet's first stage when written directly): the bias cancels in
        the norm, each projected channel's mean is that of ``x`` projected, its variance is
        ``w_d^T Cov(x) w_d`` with ``Cov(x)`` the ``C x C`` covariance over the pixels, and
        ``1 / std`` is folded into per-sample weights, so the large work is matrix products.
        Equal to ``masked_instance_norm(self.key(x))`` (and ``self.value``) to float rounding;
        statistics in float32 as there. The key and value biases, which the norm cancels, take
        no part (they receive no gradient; before, they received rounding noise). With fewer
        than twice as many pixels as channels (the late stages) the ``C x C`` products would cost
        more than they save, and the projections are normalised directly.
        """
        if x.shape[1] <= 2 * x.shape[2]:
            return masked_instance_norm(self.key(x)), masked_instance_norm(self.value(x))
        d = self.key.out_features
        weight = torch.cat([self.key.weight, self.value.weight])  # [2D, C]
        with torch.autocast(x.device.type, enabled=False):
            xf = x.float()
            centred = xf - xf.mean(1, keepdim=True)  # [B, HW, C]
            cov = centred.transpose(1, 2) @ centred / x.shape[1]  # [B, C, C]
            w32 = weight.float()
            var = ((w32 @ cov) * w32).sum(-1)  # [B, 2D], the variance of every projected channel
            scaled = w32 * torch.rsqrt(var + 1e-5).unsqueeze(-1)  # [B, 2D, C]
        keys, values = (centred.to(x.dtype) @ scaled.to(x.dtype).transpose(1, 2)).split(d, -1)  # [B, HW, D] each
        return keys, values

    def forward(
        self, words: Tensor, word_mask: Tensor, x: Tensor | None = None, keys: tuple[Tensor, Tensor] | None = None
    ) -> Tensor:
        if keys is None:
            if x is None:
                raise ValueError("WordPixelAttention.forward: give the visual tokens x or precomputed keys")
            keys = self.pixel_keys(x)
        k, v = keys
        q = self.query(words)  # [B, N, D]
        if self.mask_quirk:
            # the released code multiplies queries by BERT's additive mask: 0 on words, -1e4 on padding
            q = q * (~word_mask).to(q.dtype).mul(-1e4).unsqueeze(-1)
        else:
            q = q * word_mask.to(q.dtype).unsqueeze(-1)  # padded queries -> 0 (uniform, then ignored)
        q, k, v = (split_heads(t, self.num_heads) for t in (q, k, v))  # [B, h, L, D/h]
        out = merge_heads(attend(q, k, v, scale=self.scale, module=self))  # [B, N, D]
        # the release normalises over all (padded) positions; the default over real words only
        return masked_instance_norm(self.out(out), None if self.mask_quirk else word_mask)


class LanguagePWAM(nn.Module):
    """MagNet's language-side PWAM: ``Rw = GELU(Wmm (GELU(Wvis L) * Gw))``.

    Args:
        text_dim: channels ``D`` of the words (768 for BERT-base).
        visual_dim: channels ``C`` of the stage's visual tokens.
        num_heads: heads of the word-pixel attention (1 in MagNet).
        dropout: dropout after the two GELUs (0 in MagNet).
        mask_quirk: see :class:`WordPixelAttention`.

    Shapes: ``words [B, N, D]``, ``word_mask [B, N]``, ``x [B, HW, C]`` -> ``Rw [B, N, D]``.
    """

    def __init__(
        self, *, text_dim: int, visual_dim: int, num_heads: int = 1, dropout: float = 0.0, mask_quirk: bool = False
    ) -> None:
        super().__init__()
        self.vis_project = nn.Sequential(nn.Linear(text_dim, text_dim), nn.GELU(), nn.Dropout(dropout))
        self.attention = WordPixelAttention(
            text_dim=text_dim, visual_dim=visual_dim, num_heads=num_heads, mask_quirk=mask_quirk
        )
        self.project_mm = nn.Sequential(nn.Linear(text_dim, text_dim), nn.GELU(), nn.Dropout(dropout))

    def forward(
        self, words: Tensor, word_mask: Tensor, x: Tensor | None = None, keys: tuple[Tensor, Tensor] | None = None
    ) -> Tensor:
        context = self.attention(words, word_mask, x, keys)  # [B, N, D]
        return self.project_mm(self.vis_project(words) * context)
