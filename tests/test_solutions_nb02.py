"""Solutions of notebook 02's exercises."""

from __future__ import annotations

import pytest
import torch

from rislib.encoders import add_lora, build_text_encoder, build_vision_encoder, freeze, parameter_report
from rislib.encoders.hf_text import WordPieceTokenizer, bert_uncased_vocab
from solutions import nb02


def test_truncation_rate_counts_the_cut_expressions():
    tok = WordPieceTokenizer(vocab_file=bert_uncased_vocab(), max_length=8)
    texts = [
        "the red star",  # 5 tokens
        "the small red circle left of the star",  # 10 tokens: cut
        "the big hexagons",  # he ##xa ##gon ##s: 8 tokens, fits exactly
        "the second small blue square from the left",  # 10 tokens: cut
    ]
    assert nb02.truncation_rate(tok, texts) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        nb02.truncation_rate(tok, [])


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("resnet50", {}), ("darknet53", {}), ("efficientnet_lite0", {"pretrained": False}), ("tiny_cnn", {})],
)
def test_feature_sizes_predict_a_forward_pass_at_odd_sizes(name, kwargs):
    with torch.device("meta"):
        enc = build_vision_encoder(name, **kwargs)
        for h, w in [(417, 333), (480, 480), (97, 131)]:
            outs = enc(torch.empty(1, 3, h, w))
            assert nb02.feature_sizes(enc, h, w) == [tuple(o.shape[-2:]) for o in outs]


def test_lora_parameter_count_matches_the_parameter_report():
    enc = freeze(build_text_encoder("bert_tiny"))
    pattern = "bert.encoder.layer.*.attention.self.[qv]*"
    expected = nb02.lora_parameter_count(enc, pattern, rank=4)
    assert expected == 2 * 2 * 4 * (64 + 64)  # 2 layers x (query, value) x r (in + out)
    add_lora(enc, pattern, rank=4)
    assert parameter_report(enc).trainable == expected
