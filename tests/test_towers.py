"""The towers every model owns: built from the config, PEFT in one place, text tokenised once."""

from __future__ import annotations

import warnings

import pytest
import torch

from rislib.data import TokenizingCollate, collate_batch
from rislib.encoders import build_text_encoder
from rislib.models import build_model
from rislib.models.towers import apply_peft, build_tower
from rislib.types import Batch, TextInput, tokenize


def _items(n: int = 2) -> list[dict]:
    texts = ["the red circle", "a small blue square left of the star"]
    return [
        {"image": torch.rand(3, 32, 32), "mask": torch.zeros(1, 32, 32), "text": texts[i % 2], "meta": {"ref_id": i}}
        for i in range(n)
    ]


def test_collate_with_the_model_tokenizer_gives_token_ids_and_keeps_the_expressions():
    enc = build_text_encoder("tiny_transformer", dim=16, depth=1, num_heads=2)
    items = _items()
    batch = TokenizingCollate(enc.tokenizer)(items)
    assert isinstance(batch.text, TextInput)
    assert torch.equal(batch.text.ids, enc.tokenizer([it["text"] for it in items]).ids)
    assert batch.raw_text == [it["text"] for it in items]
    assert collate_batch(items, enc.tokenizer).raw_text == batch.raw_text
    assert tokenize(batch.text, enc.tokenizer) is batch.text  # tokenised once: a TextInput passes through


def test_a_hand_written_batch_of_strings_gives_the_same_output_as_a_tokenised_one():
    model = build_model("xattn", "tiny").eval()
    images = torch.rand(2, 3, 128, 128)
    texts = ["the red circle", "the blue star"]
    with torch.no_grad():
        raw = model(Batch(images, texts)).logits
        tokenised = model(Batch(images, texts).tokenized(model.tokenizer)).logits
    assert torch.equal(raw, tokenised)


def test_build_tower_fills_image_size_and_text_length_from_the_config():
    clip = build_tower("vision", "clip_tiny", {"width": 32, "depth": 1, "num_heads": 2, "taps": (1,)}, None,
                       image_size=96, max_tokens=12)  # fmt: skip
    assert clip.img_size == 96
    text = build_tower("text", "tiny_transformer", {"dim": 16, "depth": 1, "num_heads": 2}, None,
                       image_size=96, max_tokens=12)  # fmt: skip
    assert text.tokenizer.max_length == 12
    cnn = build_tower("vision", "tiny_cnn", {"widths": (8, 8, 8, 8)}, None, image_size=96, max_tokens=12)
    assert not hasattr(cnn, "img_size")  # a CNN takes no input size


def test_apply_peft_freezes_adds_adapters_where_the_encoder_declares_and_refuses_otherwise():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clip = build_tower("text", "clip_text_tiny", {"width": 16, "depth": 2, "num_heads": 2}, None,
                           image_size=64, max_tokens=8)  # fmt: skip
        names = apply_peft(clip, "adapter", owner="Test", tower="text", name="clip_text_tiny", pretrained=True, rank=4)
    assert names == [f"model.encoder.layers.{i}.mlp" for i in range(2)]
    trainable = {n for n, p in clip.named_parameters() if p.requires_grad}
    assert trainable and all(".adapter." in n for n in trainable)
    cnn = build_tower("vision", "tiny_cnn", {"widths": (8, 8, 8, 8)}, None, image_size=64, max_tokens=8)
    with pytest.raises(ValueError, match="declares no 'adapter_pattern'"):
        apply_peft(cnn, "adapter", owner="Test", tower="vision", name="tiny_cnn", pretrained=True, rank=4)
    with pytest.raises(ValueError, match="PEFT mode"):
        apply_peft(cnn, "lora", owner="Test", tower="vision", name="tiny_cnn", pretrained=True)


def test_frozen_towers_stay_in_eval_mode_and_are_no_backbone_group():
    with pytest.warns(UserWarning, match="freezes the randomly initialised CLIP text encoder"):
        model = build_model("haris", "tiny", peft="frozen", peft_towers=("text",))
    model.train()
    assert not model.text_encoder.training and model.vision_encoder.training
    assert model.backbone_modules() == [model.vision_encoder]
    assert all(not p.requires_grad for p in model.text_encoder.parameters())


@pytest.mark.parametrize("name", ["xattn", "lts", "magnet"])
def test_frozen_towers_of_a_method_without_peft_settings_train_nothing_and_run_without_gradients(name):
    model = build_model(name, "tiny", frozen_towers=("vision",))
    model.train()
    assert model.tower_mode("vision") == "frozen" and model.tower_mode("text") == "full"
    assert not model.vision_encoder.training and model.text_encoder.training
    assert all(not p.requires_grad for p in model.vision_encoder.parameters())
    before = {k: v.clone() for k, v in model.vision_encoder.state_dict().items()}
    images = torch.rand(2, 3, 128, 128)
    batch = Batch(images, ["the red circle", "the blue star"], masks=(torch.rand(2, 1, 128, 128) > 0.5).float())
    maps = model.run_vision_tower(images)
    assert not any(m.requires_grad for m in maps)  # no graph through the frozen tower
    model.loss(batch, model(batch))["total"].backward()
    assert all(p.grad is None for p in model.vision_encoder.parameters())
    assert any(p.grad is not None for p in model.text_encoder.parameters())
    after = model.vision_encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm statistics untouched too


def test_frozen_towers_is_refused_by_methods_with_their_own_peft_settings_and_checked():
    with pytest.raises(ValueError, match="HARIS sets its towers' PEFT modes itself"):
        build_model("haris", "tiny", frozen_towers=("vision",))
    with pytest.raises(ValueError, match=r"frozen_towers: expected a subset of \('vision', 'text'\)"):
        build_model("xattn", "tiny", frozen_towers=("image",))
