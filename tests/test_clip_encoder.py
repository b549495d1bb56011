"""CLIP towers: loading the official Hugging Face key layout, position resampling, tokenizer."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPModel

from rislib.checkpoint import CheckpointMismatchError
from rislib.encoders import add_parallel_adapters, build_text_encoder, build_vision_encoder, freeze
from rislib.encoders.clip import CLIP_MEAN, CLIP_STD, CLIPBPETokenizer, read_clip_state_dict

WORDS = ["the", "red", "blue", "circle", "star", "left", "of", "big"]


def _byte_symbols() -> list[str]:
    """CLIP's printable stand-ins for the 256 byte values (GPT-2's byte-to-unicode table)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in keep]
    return [chr(c) for c in keep] + [chr(256 + i) for i in range(len(extra))]


def _write_tiny_clip(folder, *, image_size: int = 224) -> CLIPModel:
    """A small CLIPModel saved with ``save_pretrained``: the published checkpoints' layout, plus a BPE vocab."""
    chars = _byte_symbols()
    vocab = chars + [c + "</w>" for c in chars]
    merges = []
    for w in WORDS:  # merge each word left to right into one token
        cur = w[0]
        for i, c in enumerate(w[1:], start=1):
            nxt = c + "</w>" if i == len(w) - 1 else c
            merges.append((cur, nxt))
            cur = cur + nxt
            vocab.append(cur)
    vocab = list(dict.fromkeys(vocab)) + ["<|startoftext|>", "<|endoftext|>"]
    merges = list(dict.fromkeys(merges))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    sot, eot = len(vocab) - 2, len(vocab) - 1
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=16, bos_token_id=sot, eos_token_id=eot, pad_token_id=eot,
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
            image_size=image_size, patch_size=16,
        ),
        projection_dim=16,
    )  # fmt: skip
    torch.manual_seed(3)
    model = CLIPModel(config).eval()
    with torch.no_grad():  # make the position table non-trivial so resampling is visible
        model.vision_model.embeddings.position_embedding.weight.normal_()
    model.save_pretrained(folder)
    return model


def _normalise(images: torch.Tensor) -> torch.Tensor:
    return (images - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    return folder, _write_tiny_clip(folder)


def test_vision_tower_loads_hf_folder_and_reproduces_its_hidden_states(clip_folder):
    folder, ref = clip_folder
    enc = build_vision_encoder("clip_vit_b16", checkpoint=folder, taps=(1, 2)).eval()
    assert enc.channels == (32, 32) and enc.strides == (16, 16)
    assert len(enc.model.encoder.layers) == 2, "blocks after the last tap are dropped"
    images = torch.rand(2, 3, 224, 224)
    feats = enc(images)
    with torch.no_grad():
        hs = ref.vision_model(pixel_values=_normalise(images), output_hidden_states=True).hidden_states
    for f, t in zip(feats, (1, 2)):
        expected = hs[t][:, 1:].transpose(1, 2).reshape(2, 32, 14, 14)  # [B, HW, C] -> [B, C, H, W]
        torch.testing.assert_close(f, expected, rtol=0, atol=1e-6)


def test_vision_tower_loads_a_prefixed_state_dict_file_strictly(clip_folder, tmp_path):
    folder, ref = clip_folder
    sd = {k: v.clone() for k, v in ref.state_dict().items()}  # full CLIPModel: both towers + projections
    sd["vision_model.embeddings.position_ids"] = torch.arange(197)[None]  # older files kept this buffer
    torch.save(sd, tmp_path / "pytorch_model.bin")
    from_folder = build_vision_encoder("clip_vit_b16", checkpoint=folder, taps=(3,)).eval()
    # a file has no config: build the same architecture from scratch, then load the file
    enc = build_vision_encoder("clip_vit_b16", checkpoint=folder, taps=(3,))
    with torch.no_grad():
        for p in enc.parameters():
            p.zero_()
    report = enc.load_checkpoint(tmp_path / "pytorch_model.bin")
    assert "embeddings.patch_embedding.weight" in report.loaded
    x = torch.rand(1, 3, 64, 96)
    torch.testing.assert_close(enc.eval()(x)[0], from_folder(x)[0], rtol=0, atol=0)
    bad = dict(sd)
    del bad["vision_model.encoder.layers.0.mlp.fc1.weight"]
    with pytest.raises(CheckpointMismatchError, match=r"missing keys.*layers\.0\.mlp\.fc1\.weight"):
        enc.load_checkpoint(bad)
    bad = dict(sd, **{"vision_model.encoder.extra.weight": torch.zeros(1)})
    with pytest.raises(CheckpointMismatchError, match=r"unexpected keys.*encoder\.extra\.weight"):
        enc.load_checkpoint(bad)
    vision_only, _ = read_clip_state_dict(sd, "vision")
    assert not any(k.startswith(("text_model", "visual_projection", "logit_scale")) for k in vision_only)


@pytest.mark.parametrize("side", [128, 256, 480])
def test_position_table_is_resampled_bicubically_to_the_input_grid(clip_folder, side):
    folder, ref = clip_folder
    enc = build_vision_encoder("clip_vit_b16", checkpoint=folder, taps=(1,), img_size=side).eval()
    images = torch.rand(1, 3, side, side)
    (feat,) = enc(images)
    n = side // 16
    assert feat.shape == (1, 32, n, n)
    # independent computation: patchify, class token, 14x14 table resized to n x n, one block
    emb = ref.vision_model.embeddings
    with torch.no_grad():
        tokens = emb.patch_embedding(_normalise(images)).flatten(2).transpose(1, 2)  # [1, n*n, C]
        tokens = torch.cat([emb.class_embedding.view(1, 1, -1), tokens], 1)
        table = emb.position_embedding.weight  # [1 + 196, C]
        grid = table[1:].reshape(1, 14, 14, 32).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(n, n), mode="bicubic", align_corners=False)
        pos = torch.cat([table[:1], grid.flatten(2).transpose(1, 2)[0]])
        x = ref.vision_model.pre_layrnorm(tokens + pos)
        x = ref.vision_model.encoder.layers[0](x, None)
    torch.testing.assert_close(feat, x[:, 1:].transpose(1, 2).reshape(1, 32, n, n), rtol=1e-5, atol=1e-5)


def test_text_tower_loads_hf_folder_with_its_bpe_and_pools_at_end_of_text(clip_folder):
    folder, ref = clip_folder
    enc = build_text_encoder("clip_text_b16", checkpoint=folder, max_length=12).eval()
    assert isinstance(enc.tokenizer, CLIPBPETokenizer) and enc.dim == 32
    ti = enc.tokenizer(["the red circle", "big blue star left of the red circle"])
    assert ti.tokens[0] == ["<|startoftext|>", "the", "red", "circle", "<|endoftext|>"]
    assert ti.mask.sum(1).tolist() == [5, 10]
    out = enc(ti.ids, ti.mask)
    with torch.no_grad():
        expected = ref.text_model(input_ids=ti.ids, attention_mask=ti.mask.long())
    torch.testing.assert_close(out.words, expected.last_hidden_state, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.sentence, expected.pooler_output, rtol=0, atol=1e-6)
    # padding does not change a short expression's features (causal attention + mask)
    alone = enc.tokenizer(["the red circle"])
    torch.testing.assert_close(enc(alone.ids, alone.mask).sentence[0], out.sentence[0], rtol=1e-5, atol=1e-6)


def test_bpe_tokenizer_cuts_long_expressions_and_keeps_end_of_text(clip_folder):
    folder, _ = clip_folder
    tok = CLIPBPETokenizer(folder, max_length=6)
    with pytest.warns(UserWarning, match="cut to 6 tokens"):
        ti = tok(["the big blue star left of the red circle"])
    assert ti.ids.shape == (1, 6) and ti.ids[0, -1].item() == tok.eos_id and ti.ids[0, 0].item() == tok.bos_id
    with pytest.raises(ValueError, match="empty expression"):
        tok(["  "])
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        CLIPBPETokenizer(folder / "nowhere")


def test_tiny_towers_shapes_validation_and_adapters_start_as_identity():
    enc = build_vision_encoder("clip_tiny", img_size=128, taps=(1, 3), width=32, depth=3, num_heads=2).eval()
    feats = enc(torch.rand(2, 3, 128, 96))
    assert [tuple(f.shape) for f in feats] == [(2, 32, 8, 6), (2, 32, 8, 6)]
    with pytest.raises(ValueError, match="taps must increase within 1..3"):
        build_vision_encoder("clip_tiny", taps=(2, 4), depth=3)
    with pytest.raises(ValueError, match="multiple of the patch size 16"):
        enc(torch.rand(1, 3, 100, 128))
    text = build_text_encoder("clip_text_tiny", width=32, depth=1, num_heads=2, max_length=8).eval()
    ti = text.tokenizer(["the big star", "red"])
    out = text(ti.ids, ti.mask)
    assert out.words.shape == (2, 5, 32) and out.sentence.shape == (2, 32)
    torch.testing.assert_close(out.sentence[1], out.words[1, 2])  # [CLS] red [SEP]: pooled at [SEP]
    # the PEFT pattern reaches every kept block of both towers; zero-init adapters change nothing
    before = [f.clone() for f in enc(torch.ones(1, 3, 32, 32))]
    freeze(enc)
    names = add_parallel_adapters(enc, enc.adapter_pattern, rank=4)
    assert names == [f"model.encoder.layers.{i}.mlp" for i in range(3)]
    assert add_parallel_adapters(text, text.adapter_pattern, rank=4) == ["model.encoder.layers.0.mlp"]
    for a, b in zip(enc(torch.ones(1, 3, 32, 32)), before):
        torch.testing.assert_close(a, b)


def test_pretrained_text_tower_refuses_the_word_tokenizer(clip_folder, tmp_path):
    folder, ref = clip_folder
    torch.save(ref.state_dict(), tmp_path / "weights.pt")
    with pytest.raises(ValueError, match="needs CLIP's BPE tokenizer"):
        build_text_encoder("clip_text_b16", checkpoint=tmp_path / "weights.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        enc = build_text_encoder("clip_text_b16", checkpoint=folder, tokenizer=folder, max_length=16)
    assert enc.tokenizer.max_length == 16
