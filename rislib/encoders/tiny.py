"""From-scratch encoders small enough that a CPU trains them in minutes (the ``tiny`` preset).

* :class:`TinyCNN`: four stages of conv-BN-ReLU, feature maps at strides 4, 8, 16, 32.
* :class:`TinyTextTransformer`: word embeddings + learned positions + a few transformer layers.
* :class:`TinyBiGRU`: word embeddings + a bidirectional GRU with the two directions summed and
  self-attentive pooling to a sentence vector, the language branch of the MCN/LTS family
  (``docs/methods/lts.md#the-mcn-family``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..layers.blocks import ConvNormAct, masked_mean
from ..types import TextFeatures
from .base import IMAGENET_MEAN, IMAGENET_STD, REFSHAPES_VOCAB, TextEncoder, Tokenizer, VisionEncoder, WordTokenizer
from .registry import register_text_encoder, register_vision_encoder

__all__ = ["TinyCNN", "TinyTextTransformer", "TinyBiGRU"]


class TinyCNN(VisionEncoder):
    """A small ResNet-free CNN: stem to stride 4, then three downsampling stages.

    Args:
        widths: channels of the four outputs (strides 4, 8, 16, 32).
        blocks_per_stage: 3x3 conv-BN-ReLU layers after each downsampling.
        coords: append two coordinate channels (x and y in ``[-1, 1]``) to the image before the
            first convolution (CoordConv, Liu et al. 2018), so that every feature can know where
            it is; a convolution alone is translation-equivariant and must infer position from
            the zero padding at the borders. This project's option for words like "left" and
            "topmost".
    """

    def __init__(
        self, widths: Sequence[int] = (32, 64, 96, 128), blocks_per_stage: int = 1, coords: bool = False
    ) -> None:
        super().__init__(IMAGENET_MEAN, IMAGENET_STD)
        w0 = widths[0]
        self.coords = bool(coords)
        c_in = 5 if self.coords else 3
        self.stem = nn.Sequential(ConvNormAct(c_in, w0 // 2, 3, 2), ConvNormAct(w0 // 2, w0, 3, 2))  # stride 4
        stages = []
        prev = w0
        for i, w in enumerate(widths):
            layers: list[nn.Module] = [] if i == 0 else [ConvNormAct(prev, w, 3, 2)]
            layers += [ConvNormAct(w, w, 3, 1) for _ in range(blocks_per_stage)]
            stages.append(nn.Sequential(*layers))
            prev = w
        self.stages = nn.ModuleList(stages)
        self.channels = tuple(widths)
        self.strides = (4, 8, 16, 32)

    def forward_features(self, x: Tensor) -> list[Tensor]:
        if self.coords:
            b, _, h, w = x.shape
            ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1).expand(b, 1, h, w)
            xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype).view(1, 1, 1, w).expand(b, 1, h, w)
            x = torch.cat([x, xs, ys], 1)  # [B, 3, H, W] -> [B, 5, H, W]
        x = self.stem(x)  # [B, C_in, H, W] -> [B, w0, H/4, W/4]
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs


class TinyTextTransformer(TextEncoder):
    """Word embeddings, learned positions and ``depth`` post-norm transformer layers.

    The sentence feature is the masked mean of the word features.

    Args:
        dim: feature width.
        depth: transformer layers.
        num_heads: attention heads.
        vocab: words of the :class:`WordTokenizer` (RefShapes' vocabulary by default).
        max_length: tokenizer length, special tokens included.
    """

    def __init__(
        self,
        dim: int = 64,
        depth: int = 2,
        num_heads: int = 4,
        vocab: Sequence[str] = REFSHAPES_VOCAB,
        max_length: int = 20,
    ) -> None:
        super().__init__()
        self.tokenizer = WordTokenizer(vocab, max_length=max_length)
        self.dim = dim
        self.embed = nn.Embedding(self.tokenizer.vocab_size, dim, padding_idx=self.tokenizer.pad_id)
        self.pos = nn.Parameter(torch.zeros(1, max_length, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, num_heads, dim * 4, dropout=0.0, batch_first=True, norm_first=False)
        self.layers = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)

    def forward(self, ids: Tensor, mask: Tensor) -> TextFeatures:
        x = self.embed(ids) + self.pos[:, : ids.shape[1]]  # [B, L] -> [B, L, C]
        x = self.layers(x, src_key_padding_mask=~mask)
        return TextFeatures(words=x, sentence=masked_mean(x, mask), mask=mask)


class TinyBiGRU(TextEncoder):
    """Embeddings -> bidirectional GRU (directions summed) -> self-attentive pooling.

    MCN's language branch, which LTS is recalled to share (docs/methods/lts.md#recalled-details
    and #the-mcn-family, [recall]): ``a = softmax_L(w^T tanh(W h_l))``, ``f = sum_l a_l h_l``.

    Args:
        dim: GRU hidden size per direction (= word and sentence feature width).
        embed_dim: word-embedding width.
        vocab, max_length: the :class:`WordTokenizer` built when no ``tokenizer`` is given.
        tokenizer: another tokenizer (e.g. a WordPiece one, for pre-trained embeddings).
        embeddings: ``[vocab_size, embed_dim]`` initial embedding table (pre-trained word
            vectors, as MCN's GloVe); ``freeze_embeddings`` keeps it fixed.
    """

    def __init__(
        self,
        dim: int = 64,
        embed_dim: int = 64,
        vocab: Sequence[str] = REFSHAPES_VOCAB,
        max_length: int = 20,
        *,
        tokenizer: Tokenizer | None = None,
        embeddings: Tensor | None = None,
        freeze_embeddings: bool = False,
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer if tokenizer is not None else WordTokenizer(vocab, max_length=max_length)
        self.dim = dim
        self.embed = nn.Embedding(self.tokenizer.vocab_size, embed_dim, padding_idx=self.tokenizer.pad_id)
        if embeddings is not None:
            if tuple(embeddings.shape) != (self.tokenizer.vocab_size, embed_dim):
                raise ValueError(
                    f"TinyBiGRU: embeddings must be [{self.tokenizer.vocab_size}, {embed_dim}], "
                    f"got {tuple(embeddings.shape)}"
                )
            with torch.no_grad():
                self.embed.weight.copy_(embeddings)
        self.embed.weight.requires_grad_(not freeze_embeddings)
        self.gru = nn.GRU(embed_dim, dim, batch_first=True, bidirectional=True)
        self.attn_proj = nn.Linear(dim, dim)
        self.attn_score = nn.Linear(dim, 1, bias=False)

    def forward(self, ids: Tensor, mask: Tensor) -> TextFeatures:
        x = self.embed(ids)  # [B, L, E]
        lengths = mask.sum(1).clamp_min(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=ids.shape[1])
        words = out[..., : self.dim] + out[..., self.dim :]  # [B, L, 2D] -> [B, L, D], directions summed
        scores = self.attn_score(torch.tanh(self.attn_proj(words))).squeeze(-1)  # [B, L]
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = scores.softmax(-1)
        sentence = (weights.unsqueeze(-1) * words).sum(1)  # [B, D]
        return TextFeatures(words=words, sentence=sentence, mask=mask)


@register_vision_encoder("tiny_cnn")
def tiny_cnn(widths: Sequence[int] = (32, 64, 96, 128), blocks_per_stage: int = 1, coords: bool = False) -> TinyCNN:
    return TinyCNN(widths, blocks_per_stage, coords)


@register_text_encoder("tiny_transformer")
def tiny_transformer(
    dim: int = 64, depth: int = 2, num_heads: int = 4, vocab: Sequence[str] = REFSHAPES_VOCAB, max_length: int = 20
) -> TinyTextTransformer:
    return TinyTextTransformer(dim, depth, num_heads, vocab, max_length)


@register_text_encoder("tiny_bigru")
def tiny_bigru(
    dim: int = 64, embed_dim: int = 64, vocab: Sequence[str] = REFSHAPES_VOCAB, max_length: int = 20
) -> TinyBiGRU:
    return TinyBiGRU(dim, embed_dim, vocab, max_length)
