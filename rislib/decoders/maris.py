"""MARIS/RISAM's Mutual-Aware Mask Decoder: SAM's two-way transformer driven by language.

Paper: Zhang et al., "Referring Image Segmentation via Mutual-Aware Attention Features",
arXiv 2311.15727 (v4 "RISAM"; v1 was titled "MARIS").

What the paper states (verified from its abstracts, ``docs/methods/maris.md#what-the-paper-states``):
the decoder (v1 "Mask Decoder", v4 "Mutual-Aware Mask Decoder") gives explicit linguistic
guidance, and contains a *multi-modal query token* that integrates linguistic information
and interacts with visual information simultaneously; the model builds on SAM.

Everything else is this project's interpretation
(``docs/methods/maris.md#mutual-aware-mask-decoder``, [proposal]): the paper's decoder depth,
width, token layout and query-token construction could not be read.

* SAM's mask decoder (Kirillov et al. 2023, section 3 and appendix A) with its sparse prompt
  tokens replaced by language: tokens ``T = [q_mm ; F_l'']`` where ``F_l''`` are the
  vision-aware words from the Language-Guided Attention and the multi-modal query token is
  ``q_mm = t + MLP(f_s'')``, ``t`` a learnable token and ``f_s''`` the masked mean of
  ``F_l''`` (so ``q_mm`` carries the sentence and, through LGA, visual evidence).
* The image side is the fused map ``F_v''`` plus SAM's dense "no mask" prompt embedding,
  with SAM's random-Fourier positional encoding.
* :class:`TwoWayTransformer`: per layer, token self-attention, token-to-image attention,
  token MLP, image-to-token attention (SAM's ``TwoWayAttentionBlock``), then a final
  token-to-image attention. Padded word tokens are masked as keys everywhere (SAM has no
  padding); the output does not depend on how much padding a batch carries.
* The mask is ``MLP(q_mm_out) . Upscale(image_out)`` with SAM's two transposed convolutions
  (x4) and SAM's 3-layer hypernetwork MLP: one output token, one mask.

Parameter names and shapes are SAM's (``segment_anything.modeling.transformer`` and
``mask_decoder``: ``transformer.layers.{i}.self_attn.q_proj``, ... ``norm1..norm4``,
``mlp.lin1/lin2``, ``final_attn_token_to_image``, ``norm_final_attn``, ``output_upscaling``,
``output_hypernetworks_mlps.0``), so :meth:`MutualAwareMaskDecoder.load_sam_weights` loads an
official checkpoint's decoder where the shapes allow, as the paper initialises from SAM.
What loads and what is new:

* loaded: the whole two-way transformer, ``output_upscaling``, ``output_hypernetworks_mlps.0``
  (SAM's single-mask output head), ``mask_tokens`` (SAM's single-mask token, row 0 of its
  four), and from SAM's prompt encoder ``pe_layer`` (the Gaussian frequency matrix) and
  ``no_mask_embed``;
* new (randomly initialised): ``query_mlp``, the sentence-to-token MLP of the multi-modal
  query token;
* unused SAM parameters: ``iou_token``, ``iou_prediction_head``, mask tokens 1-3 and their
  hypernetworks (SAM's multi-mask outputs), and the point/box/mask prompt embeddings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ..checkpoint import LoadReport, load_weights
from ..layers.attention import MultiHeadAttention
from ..layers.blocks import MLP, LayerNorm2d, flatten_hw, unflatten_hw

__all__ = [
    "RandomFourierPositionEncoding",
    "TokenMLP",
    "TwoWayAttentionBlock",
    "TwoWayTransformer",
    "MutualAwareMaskDecoder",
    "NEW_DECODER_MODULES",
]

NEW_DECODER_MODULES = ("query_mlp",)
"""Decoder modules that an official SAM checkpoint does not initialise."""

# Keys of SAM's prompt encoder that the decoder uses (prompt_encoder.<key> -> <key>).
_PROMPT_ENCODER_KEYS = ("pe_layer.positional_encoding_gaussian_matrix", "no_mask_embed.weight")


class RandomFourierPositionEncoding(nn.Module):
    """SAM's dense positional encoding (``PositionEmbeddingRandom``; Tancik et al. 2020).

    For a cell centre ``(x, y)`` in ``[0, 1]^2``: ``pe = [sin(2 pi G u), cos(2 pi G u)]``
    with ``u = 2 (x, y) - 1`` and ``G`` a fixed Gaussian ``[2, num_feats]`` matrix (a buffer,
    saved with the model and loaded from SAM's prompt encoder).

    Args:
        num_feats: half the output width (output is ``2 * num_feats`` channels).
        scale: standard deviation of ``G``.
    """

    def __init__(self, *, num_feats: int, scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn(2, num_feats))

    def forward(self, h: int, w: int) -> Tensor:
        """Encoding of an ``h x w`` grid, ``[1, 2 num_feats, h, w]``."""
        g = self.positional_encoding_gaussian_matrix
        ys = (torch.arange(h, device=g.device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=g.device, dtype=torch.float32) + 0.5) / w
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        coords = torch.stack([xx, yy], dim=-1) * 2 - 1  # [h, w, 2] in [-1, 1]
        proj = 2 * math.pi * (coords @ g.float())  # [h, w, num_feats]
        pe = torch.cat([proj.sin(), proj.cos()], dim=-1)  # [h, w, 2 num_feats]
        return pe.permute(2, 0, 1)[None].to(g.dtype)  # -> [1, C, h, w]


class TokenMLP(nn.Module):
    """SAM's ``MLPBlock``: ``lin2(act(lin1(x)))``.

    Args:
        dim: input and output width.
        mlp_dim: hidden width.
        activation: activation class (ReLU in SAM's two-way transformer).
    """

    def __init__(self, *, dim: int, mlp_dim: int, activation: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.lin1 = nn.Linear(dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, dim)
        self.act = activation()

    def forward(self, x: Tensor) -> Tensor:
        return self.lin2(self.act(self.lin1(x)))


class TwoWayAttentionBlock(nn.Module):
    """One layer of SAM's two-way transformer (SAM appendix A, "Lightweight mask decoder").

    (1) token self-attention, (2) token-to-image cross-attention, (3) token MLP,
    (4) image-to-token cross-attention; each followed by a residual and a LayerNorm
    (``norm1`` .. ``norm4``). Positional encodings are added to queries and keys (not values)
    of every attention, except the first layer's self-attention, which replaces the tokens
    (``skip_first_layer_pe``), as in SAM. The cross-attentions work at width
    ``dim // attention_downsample_rate``.

    Args:
        dim: token and image-embedding width.
        num_heads: attention heads.
        mlp_dim: hidden width of the token MLP.
        activation: the MLP's activation.
        attention_downsample_rate: width divisor of the cross-attentions (2 in SAM).
        skip_first_layer_pe: True for the first layer.
    """

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        activation: type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
    ) -> None:
        super().__init__()
        inner = dim // attention_downsample_rate
        self.self_attn = MultiHeadAttention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = MultiHeadAttention(dim, num_heads, inner_dim=inner)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = TokenMLP(dim=dim, mlp_dim=mlp_dim, activation=activation)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = MultiHeadAttention(dim, num_heads, inner_dim=inner)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(
        self, queries: Tensor, keys: Tensor, query_pe: Tensor, key_pe: Tensor, token_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """``queries [B, N, C]`` (tokens), ``keys [B, HW, C]`` (image), their encodings, and
        ``token_mask [B, N]`` (True on real tokens) -> updated ``(queries, keys)``."""
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries, key_padding_mask=token_mask)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries, key_padding_mask=token_mask)
        queries = self.norm1(queries)

        q, k = queries + query_pe, keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))  # tokens read the image
        queries = self.norm3(queries + self.mlp(queries))

        q, k = queries + query_pe, keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries, key_padding_mask=token_mask))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """SAM's two-way transformer (``segment_anything.modeling.TwoWayTransformer``) on
    :class:`rislib.layers.MultiHeadAttention`, with the same parameter names and shapes and
    an optional token padding mask.

    Args:
        depth: number of :class:`TwoWayAttentionBlock` layers (2 in SAM).
        dim: embedding width (256 in SAM).
        num_heads: attention heads (8 in SAM).
        mlp_dim: token MLP hidden width (2048 in SAM).
        activation: token MLP activation (ReLU in SAM).
        attention_downsample_rate: width divisor of the cross-attentions (2 in SAM).
    """

    def __init__(
        self,
        *,
        depth: int,
        dim: int,
        num_heads: int,
        mlp_dim: int,
        activation: type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                dim=dim,
                num_heads=num_heads,
                mlp_dim=mlp_dim,
                activation=activation,
                attention_downsample_rate=attention_downsample_rate,
                skip_first_layer_pe=i == 0,
            )
            for i in range(depth)
        )
        self.final_attn_token_to_image = MultiHeadAttention(
            dim, num_heads, inner_dim=dim // attention_downsample_rate
        )
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(
        self, image_embedding: Tensor, image_pe: Tensor, point_embedding: Tensor, token_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Run the decoder.

        Args:
            image_embedding: ``[B, C, h, w]``.
            image_pe: ``[1 or B, C, h, w]`` positional encoding of the image.
            point_embedding: ``[B, N, C]`` tokens; they are also their own positional
                encoding, re-added at every attention (SAM's convention).
            token_mask: ``[B, N]`` bool, True on real tokens (padding is never attended).

        Returns:
            ``(tokens [B, N, C], image [B, h*w, C])``.
        """
        keys = flatten_hw(image_embedding)  # [B, C, h, w] -> [B, hw, C]
        key_pe = flatten_hw(image_pe).expand(keys.shape[0], -1, -1)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, key_pe, token_mask)
        q, k = queries + point_embedding, keys + key_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q, k, keys))
        return queries, keys


class MutualAwareMaskDecoder(nn.Module):
    """The Mutual-Aware Mask Decoder with the multi-modal query token (RISAM v4; module
    docstring for what is verified and what is this project's interpretation).

    ``q_mm = mask_tokens + query_mlp(sentence)`` (or the learnable ``mask_tokens`` alone with
    ``use_mm_query=False``, the ablation "plain SAM mask token"); tokens ``[q_mm ; words]``
    and the image ``F_v'' + no_mask_embed`` pass through the two-way transformer; the mask is
    the hypernetwork of ``q_mm``'s output dotted with the x4 upscaled image embedding.

    Args:
        dim: width of everything (SAM's 256).
        depth: two-way transformer layers.
        num_heads: attention heads.
        mlp_dim: token MLP hidden width.
        attention_downsample_rate: cross-attention width divisor.
        use_mm_query: build the query token from the sentence (True) or use a plain
            learnable token (False).
    """

    def __init__(
        self,
        *,
        dim: int = 256,
        depth: int = 2,
        num_heads: int = 8,
        mlp_dim: int = 2048,
        attention_downsample_rate: int = 2,
        use_mm_query: bool = True,
    ) -> None:
        super().__init__()
        if dim % 8:
            raise ValueError(f"MutualAwareMaskDecoder: dim must be divisible by 8 (x4 upscaling to dim/8), got {dim}")
        self.dim = dim
        self.use_mm_query = use_mm_query
        self.mask_tokens = nn.Embedding(1, dim)  # t: the learnable part of the query token
        self.query_mlp = MLP(dim, dim, dim, num_layers=2) if use_mm_query else None
        self.no_mask_embed = nn.Embedding(1, dim)  # SAM's dense prompt when no mask is given
        self.pe_layer = RandomFourierPositionEncoding(num_feats=dim // 2)
        self.transformer = TwoWayTransformer(
            depth=depth,
            dim=dim,
            num_heads=num_heads,
            mlp_dim=mlp_dim,
            attention_downsample_rate=attention_downsample_rate,
        )
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList([MLP(dim, dim, dim // 8, num_layers=3, act=nn.ReLU)])

    def query_token(self, sentence: Tensor) -> Tensor:
        """The multi-modal query token ``[B, 1, C]`` from a sentence summary ``[B, C]``."""
        t = self.mask_tokens.weight[None].expand(sentence.shape[0], -1, -1)  # [1, C] -> [B, 1, C]
        if self.query_mlp is None:
            return t
        return t + self.query_mlp(sentence)[:, None]

    def forward(
        self, image_embedding: Tensor, words: Tensor, word_mask: Tensor, sentence: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Predict one mask per expression.

        Args:
            image_embedding: ``[B, C, h, w]`` language-aware pixels ``F_v''``.
            words: ``[B, L, C]`` vision-aware words ``F_l''``.
            word_mask: ``[B, L]`` bool, True on real tokens.
            sentence: ``[B, C]`` sentence summary ``f_s''`` for the query token.

        Returns:
            ``(logits [B, 1, 4h, 4w], query_out [B, C])``: mask logits and the query token
            after the transformer.
        """
        b, c, h, w = image_embedding.shape
        tokens = torch.cat([self.query_token(sentence), words], dim=1)  # [B, 1 + L, C]
        token_mask = torch.cat([word_mask.new_ones(b, 1), word_mask], dim=1)
        src = image_embedding + self.no_mask_embed.weight.view(1, c, 1, 1)
        pos = self.pe_layer(h, w).to(src.dtype)  # [1, C, h, w]
        hs, src = self.transformer(src, pos, tokens, token_mask)  # [B, 1 + L, C], [B, hw, C]
        query_out = hs[:, 0]
        up = self.output_upscaling(unflatten_hw(src, h, w))  # [B, C, h, w] -> [B, C/8, 4h, 4w]
        hyper = self.output_hypernetworks_mlps[0](query_out)  # [B, C/8]
        logits = torch.einsum("bc,bchw->bhw", hyper, up)[:, None]  # [B, 1, 4h, 4w]
        return logits, query_out

    def load_sam_weights(
        self,
        mask_decoder: Mapping[str, Tensor],
        prompt_encoder: Mapping[str, Tensor] | None = None,
        *,
        source: str = "SAM checkpoint",
    ) -> LoadReport:
        """Initialise from an official SAM decoder where the shapes allow.

        Args:
            mask_decoder: SAM's ``mask_decoder.*`` state dict, prefix removed
                (``rislib.encoders.sam.extract_mask_decoder_state_dict``).
            prompt_encoder: SAM's ``prompt_encoder.*`` state dict, prefix removed, for
                ``pe_layer`` and ``no_mask_embed`` (they stay random when None).
            source: name used in messages.

        Returns:
            A :class:`LoadReport`: ``loaded`` (our keys), ``missing`` (our keys SAM does not
            provide: the new modules) and ``unexpected`` (SAM keys not used, with their
            ``mask_decoder.``/``prompt_encoder.`` prefix).

        Raises:
            CheckpointMismatchError: when a key both have differs in shape (e.g. a SAM decoder
                of another width) or a key outside the new modules is absent.
        """
        own = self.state_dict()
        mapped: dict[str, Tensor] = {}
        unused: list[str] = []
        for k, v in mask_decoder.items():
            if k == "mask_tokens.weight":
                mapped[k] = v[:1]  # SAM's token 0 is its single-mask output token
                if v.shape[0] > 1:
                    unused.append("mask_decoder.mask_tokens.weight[1:]")
            elif k in own:
                mapped[k] = v
            else:
                unused.append(f"mask_decoder.{k}")
        allow_missing = [f"{m}.*" for m in NEW_DECODER_MODULES]
        if prompt_encoder is None:
            allow_missing += list(_PROMPT_ENCODER_KEYS)
        else:
            for k, v in prompt_encoder.items():
                if k in _PROMPT_ENCODER_KEYS:
                    mapped[k] = v
                else:
                    unused.append(f"prompt_encoder.{k}")
        report = load_weights(self, mapped, source=source, allow_missing=allow_missing)
        return LoadReport(loaded=report.loaded, missing=report.missing, unexpected=unused)
