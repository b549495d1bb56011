"""Write the golden fixtures of ``tests/test_golden.py`` by running the official LAVT, MagNet and ReLA code.

The tests prove that rislib computes what the released code computes: each fixture holds the
names and shapes of an official module's parameters, the seed that fills them
(``tests/golden_weights.py``), the inputs (or their seed) and the official outputs (shape,
statistics and up to 4,096 values at seeded positions). The tests rebuild the same weights,
load them into rislib through :mod:`rislib.models.official` and compare. The official code
itself is never copied into the project: this script imports it from copies you fetch.

Upstream commits (the fixtures name them too)::

    git clone https://github.com/yxchng/mask-grounding && git -C mask-grounding checkout 2debc7e
    git clone https://github.com/yz93/LAVT-RIS && git -C LAVT-RIS checkout 1da0af9
    git clone https://github.com/henghuiding/ReLA && git -C ReLA checkout 3ca9551
    python benchmarks/official_golden.py --magnet mask-grounding --lavt LAVT-RIS --rela ReLA

Only PyTorch, timm and numpy are needed besides rislib's environment: the few imports the
official code makes of mmcv/mmseg, fvcore, addict and detectron2 are replaced by small stubs
(none of them is on a computation path that a fixture exercises). Each case runs in its own
process, because LAVT and MagNet both name their packages ``lib`` and ``bert``.
``--only NAME`` regenerates one case; ``--list`` names them; ``--compare`` also runs rislib at the
same weights on the whole-model cases and prints the largest difference over *every* value
(the tests check 2,048 stored values per output; docs/fidelity.md quotes both).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from golden_weights import (  # noqa: E402
    FIXTURE_VERSION,
    generator_fingerprint,
    sample_output,
    seeded_input,
    seeded_state_dict,
)

COMMITS = {
    "magnet": "2debc7ed18ed5b77f9863340f014895b5d8186ab",
    "lavt": "1da0af9f21b637c0cae9ea1363d2dd9b40e19628",
    "rela": "3ca955198da8ace68f8980b6fcbada0791cc51c2",
}
REPOS = {
    "magnet": "github.com/yxchng/mask-grounding",
    "lavt": "github.com/yz93/LAVT-RIS",
    "rela": "github.com/henghuiding/ReLA",
}
SEED = 0
COMPARE = False  # --compare: also run rislib on the same weights and print whole-tensor differences
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


# ---- stubs for the official code's unused third-party imports ------------------------------------
class _Dict(dict):
    """addict.Dict: attribute access creating nested dicts."""

    def __getattr__(self, key):
        if key not in self:
            self[key] = _Dict()
        return self[key]

    def __setattr__(self, key, value):
        self[key] = value


def _module(name: str, **attrs) -> types.ModuleType:
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m


def _install_stubs(repo: Path) -> None:
    def c2_xavier_fill(m):  # fvcore's: kaiming-uniform, a=1 (weights are overwritten anyway)
        nn.init.kaiming_uniform_(m.weight, a=1)
        if m.bias is not None:
            nn.init.zeros_(m.bias)

    _module("mmseg")
    _module("mmseg.utils", get_root_logger=lambda *a, **k: None)
    _module("fvcore")
    _module("fvcore.nn").weight_init = _module("fvcore.nn.weight_init", c2_xavier_fill=c2_xavier_fill)
    _module("addict", Dict=_Dict)
    sys.path.insert(0, str(repo))
    if (repo / "lib").is_dir():
        importlib.import_module("lib")
        _module("lib.mmcv_custom", load_checkpoint=lambda *a, **k: None)  # only used to read checkpoints


def _commit(repo: Path, expected: str) -> str:
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        head = out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        head = (repo / ".commit").read_text().strip() if (repo / ".commit").is_file() else ""
    if head and head != expected:
        raise SystemExit(f"{repo}: HEAD is {head}, expected {expected} (git -C {repo} checkout {expected[:7]})")
    return head or expected


def _shapes(module: nn.Module, prefix: str = "") -> dict[str, list[int]]:
    """Parameters and BatchNorm running statistics of ``module`` (what the seeded weights fill)."""
    out = {prefix + n: list(p.shape) for n, p in module.named_parameters()}
    out.update(
        {prefix + n: list(b.shape) for n, b in module.named_buffers() if n.endswith(("running_mean", "running_var"))}
    )
    return out


def _fill(module: nn.Module, shapes: dict[str, list[int]], prefix: str = "", *, partial: bool = False) -> None:
    """Load the seeded values of ``shapes`` (keys ``prefix + name``) into ``module``; every parameter
    of the module must be filled unless ``partial`` (only the listed ones are used)."""
    sd = seeded_state_dict({k: v for k, v in shapes.items() if k.startswith(prefix)}, SEED)
    local = {k.removeprefix(prefix): v for k, v in sd.items()}
    missing, unexpected = module.load_state_dict(local, strict=False)
    real_missing = [] if partial else [k for k in missing if k in dict(module.named_parameters())]
    assert not real_missing and not unexpected, (real_missing, unexpected)


def _record(outputs: dict[str, torch.Tensor]) -> dict[str, dict]:
    return {name: sample_output(t, name) for name, t in outputs.items()}


def _sentences(lengths: list[int], n_tokens: int = 20, name: str = "ids") -> tuple[torch.Tensor, torch.Tensor]:
    """BERT-style ids: [CLS]=101, words in [1000, 30000), [SEP]=102, zero padding; and the 0/1 mask."""
    g = torch.Generator().manual_seed(7)
    ids = torch.zeros(len(lengths), n_tokens, dtype=torch.long)
    for b, n in enumerate(lengths):
        ids[b, 0] = 101
        ids[b, 1 : n - 1] = torch.randint(1000, 30000, (n - 2,), generator=g)
        ids[b, n - 1] = 102
    mask = (torch.arange(n_tokens)[None] < torch.tensor(lengths)[:, None]).long()
    return ids, mask


def _images(name: str, b: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images in [0, 1] (what rislib receives) and their ImageNet-normalised version (the official input)."""
    img = seeded_input(name, (b, 3, h, w), SEED).sigmoid()
    return img, (img - IMAGENET_MEAN) / IMAGENET_STD


def _swin_mask(h: int, w: int, window: int, shift: int, window_partition) -> torch.Tensor:
    """The SW-MSA mask, exactly as ``MMBasicLayer.forward`` builds it."""
    hp, wp = int(np.ceil(h / window)) * window, int(np.ceil(w / window)) * window
    img_mask = torch.zeros((1, hp, wp, 1))
    slices = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    cnt = 0
    for hs in slices:
        for ws in slices:
            img_mask[:, hs, ws, :] = cnt
            cnt += 1
    mw = window_partition(img_mask, window).view(-1, window * window)
    m = mw.unsqueeze(1) - mw.unsqueeze(2)
    return m.masked_fill(m != 0, -100.0).masked_fill(m == 0, 0.0)


def _maskformer_cfg(layers: int = 10):
    cfg = _Dict()
    cfg.MODEL.SEM_SEG_HEAD.COMMON_STRIDE = 4
    cfg.MODEL.MASK_FORMER.DROPOUT = 0.0
    cfg.MODEL.MASK_FORMER.NHEADS = 8
    cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS = 4
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 256
    cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = 256
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES = ["s1", "s2", "s3", "s4"]
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 1
    cfg.MODEL.MASK_FORMER.HIDDEN_DIM = 256
    cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES = 1
    cfg.MODEL.MASK_FORMER.DIM_FEEDFORWARD = 2048
    cfg.MODEL.MASK_FORMER.DEC_LAYERS = layers
    cfg.MODEL.MASK_FORMER.PRE_NORM = False
    return cfg  # test.py's configuration


def _input_shape(channels):
    return {f"s{i + 1}": _Dict(channel=c, stride=4 * 2**i) for i, c in enumerate(channels)}


# ---- MagNet cases (mask-grounding) ----------------------------------------------------------------
def case_magnet_stage_fusion(repo: Path) -> dict:
    """Stage-1 fusions of MagNet at C = 128 on a 15 x 15 map: image PWAM + gate, CAM, language PWAM
    (additive-mask quirk) + gate. ``MMBasicLayer`` with no Swin block, ``MultiModalBert.forward_pwam1``."""
    from bert.configuration_bert import BertConfig
    from bert.multimodal_bert import MultiModalBert
    from lib.backbone import MMBasicLayer

    image = MMBasicLayer(dim=128, depth=0, num_heads=4, window_size=12, downsample=None).eval()
    language = MultiModalBert(BertConfig(vocab_size=8, num_hidden_layers=1), embed_dim=128).eval()
    shapes = _shapes(image, "image_model.layers.0.")
    lang_shapes = {
        k: v
        for k, v in _shapes(language, "language_model.").items()
        if k.startswith(("language_model.pwams.0.", "language_model.res_gates.0."))
    }
    shapes.update(lang_shapes)
    _fill(image, shapes, "image_model.layers.0.")
    _fill(language, shapes, "language_model.", partial=True)  # stage 1's fusion only
    h = w = 15
    x = seeded_input("x", (2, h * w, 128), SEED)
    words = seeded_input("words", (2, 20, 768), SEED)
    lengths = [7, 12]
    mask = (torch.arange(20)[None] < torch.tensor(lengths)[:, None]).float()
    with torch.no_grad():
        cam_out, _, _, x_next, _, _ = image(x, h, w, words, mask[:, :, None])
        extended = (1.0 - mask[:, None, None, :]) * -10000.0  # BERT's extended mask, as test.py passes it
        _, words_next = language.forward_pwam1(x, words, extended)
    return {
        "weights": shapes,
        "inputs": {"x": list(x.shape), "words": list(words.shape)},
        "lengths": lengths,
        "hw": [h, w],
        "outputs": _record({"cam_out": cam_out, "x_next": x_next, "words_next": words_next}),
    }


def case_swin_blocks(repo: Path) -> dict:
    """An unshifted and a shifted Swin block (window 12, C = 128, 4 heads) on 15 x 15 and 30 x 30 maps."""
    from lib.backbone import SwinTransformerBlock, window_partition

    blocks = nn.ModuleList([SwinTransformerBlock(128, 4, window_size=12, shift_size=s) for s in (0, 6)]).eval()
    shapes = {f"layers.0.blocks.{k}": v for k, v in _shapes(blocks).items()}
    _fill(blocks, shapes, "layers.0.blocks.")
    outputs = {}
    for side in (15, 30):
        x = seeded_input(f"x{side}", (2, side * side, 128), SEED)
        mask = _swin_mask(side, side, 12, 6, window_partition)
        with torch.no_grad():
            for j, blk in enumerate(blocks):
                blk.H = blk.W = side
                x = blk(x, mask)
                outputs[f"side{side}_block{j}"] = x.view(2, side, side, 128)
    return {"weights": shapes, "inputs": {"x15": [2, 225, 128], "x30": [2, 900, 128]}, "outputs": _record(outputs)}


def case_deformable_pixel_decoder(repo: Path) -> dict:
    """Mask2Former's deformable pixel decoder as MagNet configures it (Swin-B widths), 96 x 128 input."""
    from modeling.pixel_decoder.msdeformattn import MSDeformAttnPixelDecoder

    channels = (128, 256, 512, 1024)
    dec = MSDeformAttnPixelDecoder(_input_shape(channels), 0.0, 8, 1024, 4, 256, 256, ["s1", "s2", "s3", "s4"], 4)
    dec = dec.eval()
    shapes = {f"classifier.pixel_decoder.{k}": v for k, v in _shapes(dec).items()}
    _fill(dec, shapes, "classifier.pixel_decoder.")
    sizes = [(24, 32), (12, 16), (6, 8), (3, 4)]
    feats = {
        f"s{i + 1}": seeded_input(f"s{i + 1}", (2, c, *hw), SEED) for i, (c, hw) in enumerate(zip(channels, sizes))
    }
    with torch.no_grad():
        mask_features, _, multi_scale = dec.forward_features(feats)
    outputs = {"mask_features": mask_features, **{f"multi_scale{i}": m for i, m in enumerate(multi_scale)}}
    return {"weights": shapes, "inputs": {k: list(v.shape) for k, v in feats.items()}, "outputs": _record(outputs)}


def case_transformer_decoder(repo: Path) -> dict:
    """Mask2Former's masked-attention decoder as MagNet configures it: 9 layers, one query, 256-d."""
    from modeling.MaskFormerModel import MaskFormerHead

    head = MaskFormerHead(_maskformer_cfg(), _input_shape((128, 256, 512, 1024)))
    dec = head.predictor.eval()
    shapes = {f"classifier.predictor.{k}": v for k, v in _shapes(dec).items()}
    _fill(dec, shapes, "classifier.predictor.")
    multi = [seeded_input(f"level{i}", (2, 256, *hw), SEED) for i, hw in enumerate([(3, 4), (6, 8), (12, 16)])]
    mask_features = seeded_input("mask_features", (2, 256, 24, 32), SEED)
    with torch.no_grad():
        out = dec(multi, mask_features)
    outputs = {"pred_logits": out["pred_logits"], "pred_masks": out["pred_masks"]}
    for i, aux in enumerate(out["aux_outputs"]):
        outputs[f"aux{i}_logits"], outputs[f"aux{i}_masks"] = aux["pred_logits"], aux["pred_masks"]
    inputs = {f"level{i}": list(m.shape) for i, m in enumerate(multi)}
    inputs["mask_features"] = list(mask_features.shape)
    return {"weights": shapes, "inputs": inputs, "outputs": _record(outputs)}


def _wrapper_module(repo: Path):
    sys.modules.setdefault("transforms", types.ModuleType("transforms"))  # test.py imports them, unused
    sys.modules.setdefault("utils", types.ModuleType("utils"))
    return importlib.import_module("test")


def case_inference_rule(repo: Path) -> dict:
    """``WrapperModel.semantic_inference`` after ``evaluate``'s resize (align_corners=True), threshold 0.5."""
    t = _wrapper_module(repo)
    wrapper = t.WrapperModel(nn.Identity(), nn.Identity(), nn.Identity(), None)
    logits = seeded_input("pred_logits", (3, 1, 2), SEED) * 3
    # smooth mask logits, as a trained decoder produces: a blurred random field, 30 x 30
    masks = F.avg_pool2d(seeded_input("pred_masks", (3, 1, 34, 34), SEED) * 8, 5, stride=1)
    with torch.no_grad():
        up = F.interpolate(masks, size=(120, 120), mode="bilinear", align_corners=True)
        prob = wrapper.semantic_inference(logits, up)
    return {
        "weights": {},
        "pred_logits": logits,
        "pred_masks": masks,
        "outputs": _record({"probability": prob, "mask": (prob > 0.5).float()}),
    }


def _magnet_wrapper(repo: Path, embed_dim: int, depths, heads, bert_layers: int, channels):
    t = _wrapper_module(repo)
    from bert.configuration_bert import BertConfig
    from bert.multimodal_bert import MultiModalBert
    from lib.multimodal_swin import MultiModalSwin
    from modeling.MaskFormerModel import MaskFormerHead

    swin = MultiModalSwin(
        embed_dim=embed_dim,
        depths=depths,
        num_heads=heads,
        window_size=12,
        ape=False,
        drop_path_rate=0.3,
        patch_norm=True,
        out_indices=(0, 1, 2, 3),
        use_checkpoint=False,
        num_heads_fusion=[1, 1, 1, 1],
        fusion_drop=0.0,
    )
    cut = [bert_layers * (i + 1) // 4 for i in range(4)]
    language = MultiModalBert(BertConfig(num_hidden_layers=bert_layers), embed_dim=embed_dim, pwam_idx=cut)
    language.pooler = None
    head = MaskFormerHead(_maskformer_cfg(), _input_shape(channels))
    return t.WrapperModel(swin, language, head, None).eval()


def _run_magnet(model, images: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """``WrapperModel.forward``, keeping the stage outputs and words (same calls, same order)."""
    im, lm = model.image_model, model.language_model
    l_mask = mask.unsqueeze(-1)
    x, wh, ww = im.forward_stem(images)
    words, ext = lm.forward_stem(ids, mask)
    out = {}
    for s in range(1, 5):
        x = getattr(im, f"forward_stage{s}")(x, wh, ww)
        words = getattr(lm, f"forward_stage{s}")(words, ext)
        res, _, _, x_next, wh, ww = getattr(im, f"forward_pwam{s}")(x, wh, ww, words, l_mask)
        _, words = getattr(lm, f"forward_pwam{s}")(x, words, ext)
        x = x_next
        out[f"stage{s}"] = res
    out["words"] = words
    preds, _ = model.classifier({f"s{s}": out[f"stage{s}"] for s in range(1, 5)})
    out["pred_masks"] = preds["pred_masks"]
    out["pred_logits"] = preds["pred_logits"]
    full = model(images, ids, mask)
    assert torch.equal(full["pred_masks"], preds["pred_masks"])  # the same computation as WrapperModel.forward
    return out


def _magnet_case(repo: Path, *, embed_dim, depths, heads, bert_layers, sizes, batch) -> dict:
    channels = [embed_dim * 2**i for i in range(4)]
    model = _magnet_wrapper(repo, embed_dim, depths, heads, bert_layers, channels)
    shapes = _shapes(model)
    _fill(model, shapes)
    records, inputs = {}, {}
    for h, w in sizes:
        lengths = [7, 12, 20][:batch]
        ids, mask = _sentences(lengths)
        images, normalised = _images(f"image{h}x{w}", batch, h, w)
        with torch.no_grad():
            out = _run_magnet(model, normalised, ids, mask)
            out["probability"] = model.semantic_inference(
                out["pred_logits"],
                F.interpolate(out["pred_masks"], size=(h, w), mode="bilinear", align_corners=True),
            )
        records.update({f"{h}x{w}/{k}": v for k, v in out.items()})
        inputs[f"{h}x{w}"] = {"batch": batch, "lengths": lengths}
    payload = {
        "weights": shapes,
        "config": {"embed_dim": embed_dim, "depths": list(depths), "heads": list(heads), "bert_layers": bert_layers},
        "inputs": inputs,
        "outputs": _record(records),
    }
    _compare("magnet", payload, records)
    return payload


def _compare(kind: str, payload: dict, official: dict[str, torch.Tensor]) -> None:
    """With ``--compare``: rislib's whole outputs at the same weights against the official ones."""
    if not COMPARE:
        return
    import test_golden as tg  # tests/ is on sys.path

    fx = {**payload, "meta": {"seed": SEED}}
    model = tg._magnet(fx) if kind == "magnet" else tg._lavt(fx)
    ours = tg.magnet_outputs(model, fx) if kind == "magnet" else tg.lavt_outputs(model, fx)
    for name, ref in official.items():
        if name in ours:
            diff = (ours[name].float() - ref.float()).abs().max().item()
            print(
                f"compare {name:28s} max abs diff over all {ref.numel():>9,} values: {diff:.2e} "
                f"(official max |x| {ref.abs().max().item():.3g})"
            )


def case_magnet_small(repo: Path) -> dict:
    """The whole released MagNet at a small width (Swin C = 32, 4-layer 768-d BERT), 96 x 96 and 100 x 84."""
    return _magnet_case(
        repo, embed_dim=32, depths=(2, 2, 2, 2), heads=(1, 2, 4, 8), bert_layers=4, sizes=[(96, 96), (100, 84)], batch=2
    )


def case_magnet_paper(repo: Path) -> dict:
    """The whole released MagNet at Swin-B + BERT-base, 480 x 480 (slow test)."""
    return _magnet_case(
        repo, embed_dim=128, depths=(2, 2, 18, 2), heads=(4, 8, 16, 32), bert_layers=12, sizes=[(480, 480)], batch=1
    )


# ---- LAVT cases ---------------------------------------------------------------------------------------
def _lavt_case(repo: Path, *, embed_dim, depths, heads, bert_layers, sizes, batch) -> dict:
    from bert.configuration_bert import BertConfig
    from bert.modeling_bert import BertModel
    from lib._utils import LAVT
    from lib.backbone import MultiModalSwinTransformer
    from lib.mask_predictor import SimpleDecoding

    backbone = MultiModalSwinTransformer(
        embed_dim=embed_dim,
        depths=depths,
        num_heads=heads,
        window_size=12,
        ape=False,
        drop_path_rate=0.3,
        patch_norm=True,
        out_indices=(0, 1, 2, 3),
        use_checkpoint=False,
        num_heads_fusion=[1, 1, 1, 1],
        fusion_drop=0.0,
    )
    model = LAVT(backbone, SimpleDecoding(8 * embed_dim)).eval()  # lib/segmentation.py's assembly
    bert = BertModel(BertConfig(num_hidden_layers=bert_layers)).eval()
    bert.pooler = None
    shapes = {**_shapes(model), **_shapes(bert, "bert.")}
    _fill(model, {k: v for k, v in shapes.items() if not k.startswith("bert.")})
    _fill(bert, shapes, "bert.")
    records, inputs = {}, {}
    for h, w in sizes:
        lengths = [7, 12, 20][:batch]
        ids, mask = _sentences(lengths)
        _, normalised = _images(f"image{h}x{w}", batch, h, w)
        with torch.no_grad():  # test.py's evaluate: BERT, then the model with (B, 768, N) words
            words = bert(ids, attention_mask=mask)[0]
            stages = backbone(normalised, words.permute(0, 2, 1), mask.unsqueeze(-1))
            logits = model(normalised, words.permute(0, 2, 1), l_mask=mask.unsqueeze(-1))
        out = {f"stage{i + 1}": s for i, s in enumerate(stages)}
        out.update({"words": words, "logits": logits, "mask": logits.argmax(1).float()})
        records.update({f"{h}x{w}/{k}": v for k, v in out.items()})
        inputs[f"{h}x{w}"] = {"batch": batch, "lengths": lengths}
    payload = {
        "weights": shapes,
        "config": {"embed_dim": embed_dim, "depths": list(depths), "heads": list(heads), "bert_layers": bert_layers},
        "inputs": inputs,
        "outputs": _record(records),
    }
    _compare("lavt", payload, records)
    return payload


def case_lavt_small(repo: Path) -> dict:
    """The whole released LAVT at a small width (Swin C = 32, 2-layer 768-d BERT), 96 x 96 and 100 x 84."""
    return _lavt_case(
        repo, embed_dim=32, depths=(2, 2, 2, 2), heads=(1, 2, 4, 8), bert_layers=2, sizes=[(96, 96), (100, 84)], batch=2
    )


def case_lavt_paper(repo: Path) -> dict:
    """The whole released LAVT at Swin-B + BERT-base, 480 x 480 (slow test)."""
    return _lavt_case(
        repo, embed_dim=128, depths=(2, 2, 18, 2), heads=(4, 8, 16, 32), bert_layers=12, sizes=[(480, 480)], batch=1
    )


# ---- metrics -----------------------------------------------------------------------------------------
def metric_pairs() -> tuple[np.ndarray, np.ndarray]:
    """200 hand-built (prediction, ground truth) pairs on 16 x 16 grids, ``[200, 16, 16]`` bool each.

    Rows 0-59: random rectangles (overlapping or not); 60-99: exact IoU ties at 0.5 ... 0.9
    (ten pixels of ground truth, a prediction covering 5 ... 9 of them, and variants with
    extra pixels); 100-129: empty ground truth with an empty prediction; 130-149: empty
    ground truth with a non-empty prediction; 150-169: an empty prediction of a real target;
    170-199: identical masks, single pixels, complements."""
    rng = np.random.RandomState(2024)
    n, s = 200, 16
    pred = np.zeros((n, s, s), bool)
    gt = np.zeros((n, s, s), bool)

    def rect():
        y0, x0 = rng.randint(0, s - 1, 2)
        y1, x1 = rng.randint(y0 + 1, s + 1), rng.randint(x0 + 1, s + 1)
        m = np.zeros((s, s), bool)
        m[y0:y1, x0:x1] = True
        return m

    for i in range(60):
        pred[i], gt[i] = rect(), rect()
    for k, i in enumerate(range(60, 100)):
        idx = rng.permutation(s * s)
        gt[i].flat[idx[:10]] = True
        hit = 5 + k % 5
        pred[i].flat[idx[:hit]] = True
        if k >= 20:  # IoU = hit / (10 + extra) with extra pixels outside the ground truth
            extra = k % 3
            pred[i].flat[idx[10 : 10 + extra]] = True
    for i in range(130, 150):
        pred[i] = rect()
    for i in range(150, 170):
        gt[i] = rect()
    for i in range(170, 200):
        kind = i % 3
        gt[i] = rect()
        if kind == 0:
            pred[i] = gt[i]
        elif kind == 1:
            pred[i].flat[rng.randint(s * s)] = True
        else:
            pred[i] = ~gt[i]
    return pred, gt


def case_lavt_metrics(repo: Path) -> dict:
    """LAVT ``test.py::evaluate`` (the protocol MagNet's test.py repeats) on the hand-built pairs."""
    t = importlib.import_module("test")
    pred, gt = metric_pairs()
    samples, captured = [], {}
    original_iou = t.computeIoU

    def compute_iou(p, g):
        i, u = original_iou(p, g)
        samples.append((int(i), int(u)))
        return i, u

    class _NumpyProxy:
        def __getattr__(self, name):
            return getattr(np, name)

        def mean(self, x, *a, **k):
            captured["mIoU"] = float(np.mean(x))
            return np.mean(x, *a, **k)

        def zeros(self, *a, **k):
            captured["seg_correct"] = np.zeros(*a, **k)
            return captured["seg_correct"]

    class _Model(nn.Module):  # returns the stored prediction as two-class logits
        def __init__(self):
            super().__init__()
            self.i = 0

        def forward(self, image, sentences, l_mask):
            p = torch.from_numpy(pred[self.i]).float()[None]
            self.i += 1
            return torch.stack([1 - p, p], dim=1)  # [1, 2, H, W]

    loader = [
        (
            torch.zeros(1, 3, 16, 16),
            torch.from_numpy(gt[i]).long()[None],
            torch.zeros(1, 1, 20, 1).long(),
            torch.ones(1, 1, 20, 1).long(),
        )
        for i in range(len(pred))
    ]
    t.computeIoU, t.np = compute_iou, _NumpyProxy()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        t.evaluate(_Model(), loader, None, torch.device("cpu"))
    return {
        "weights": {},
        "pred": torch.from_numpy(np.packbits(pred)),
        "gt": torch.from_numpy(np.packbits(gt)),
        "shape": list(pred.shape),
        "I": torch.tensor([s[0] for s in samples]),
        "U": torch.tensor([s[1] for s in samples]),
        "mIoU": captured["mIoU"],
        "precision_counts": torch.from_numpy(captured["seg_correct"].astype(np.int64)),
        "printed": [ln for ln in printed.getvalue().splitlines() if "IoU" in ln or "precision" in ln],
    }


def case_rela_metrics(repo: Path) -> dict:
    """ReLA ``ReferEvaluator`` (gIoU, cIoU, N-acc, T-acc, Pr@X) on the hand-built pairs, no-target = empty GT."""

    class _Evaluator:
        pass

    class _PathManager:
        @staticmethod
        def mkdirs(*a, **k):
            return None

    _module("detectron2")
    _module("detectron2.utils")
    _module("detectron2.utils.comm", all_gather=lambda x: [x], is_main_process=lambda: True, synchronize=lambda: None)
    _module("detectron2.utils.file_io", PathManager=_PathManager)
    _module("detectron2.evaluation")
    _module("detectron2.evaluation.evaluator", DatasetEvaluator=_Evaluator)
    path = repo / "gres_model" / "evaluation" / "refer_evaluation.py"
    spec = importlib.util.spec_from_file_location("rela_refer_evaluation", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    pred, gt = metric_pairs()
    ev = mod.ReferEvaluator("golden", distributed=False, output_dir=None)
    ev.reset()
    for i in range(len(pred)):
        p = torch.from_numpy(pred[i]).float()
        nt = not pred[i].any()  # a mask-only model says "no target" by predicting nothing
        ev.process(
            [
                {
                    "image_id": i,
                    "source": "grefcoco",
                    "gt_mask_merged": torch.from_numpy(gt[i]).long(),
                    "sentence": {"raw": "", "sent_id": i},
                    "empty": not gt[i].any(),
                }
            ],
            [{"ref_seg": torch.stack([1 - p, p]), "nt_label": torch.tensor([0.0, 1.0] if nt else [1.0, 0.0])}],
        )
    with contextlib.redirect_stdout(io.StringIO()):
        results = ev.evaluate()
    return {"weights": {}, "results": {k: float(v) for k, v in results["grefcoco"].items()}}


CASES = {
    "magnet_stage_fusion": ("magnet", case_magnet_stage_fusion),
    "swin_blocks": ("magnet", case_swin_blocks),
    "deformable_pixel_decoder": ("magnet", case_deformable_pixel_decoder),
    "transformer_decoder": ("magnet", case_transformer_decoder),
    "inference_rule": ("magnet", case_inference_rule),
    "magnet_small": ("magnet", case_magnet_small),
    "magnet_paper": ("magnet", case_magnet_paper),
    "lavt_small": ("lavt", case_lavt_small),
    "lavt_paper": ("lavt", case_lavt_paper),
    "lavt_metrics": ("lavt", case_lavt_metrics),
    "rela_metrics": ("rela", case_rela_metrics),
}


def run_case(name: str, repo: Path, out_dir: Path) -> Path:
    source, fn = CASES[name]
    commit = _commit(repo, COMMITS[source])
    _install_stubs(repo)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    payload = fn(repo)
    payload["meta"] = {
        "case": name,
        "doc": (fn.__doc__ or "").strip(),
        "upstream": f"{REPOS[source]} at {commit}",
        "version": FIXTURE_VERSION,
        "seed": SEED,
        "fingerprint": generator_fingerprint(),
        "torch": str(torch.__version__),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.pt"
    torch.save(payload, path)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--magnet", type=Path, help="checkout of github.com/yxchng/mask-grounding at 2debc7e")
    parser.add_argument("--lavt", type=Path, help="checkout of github.com/yz93/LAVT-RIS at 1da0af9")
    parser.add_argument("--rela", type=Path, help="checkout of github.com/henghuiding/ReLA at 3ca9551")
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "golden")
    parser.add_argument("--only", nargs="*", choices=sorted(CASES), help="cases to write (default: all)")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument(
        "--compare",
        action="store_true",
        help="whole-model cases: also run rislib at the same weights and print the max abs "
        "difference over every value (the tests see 2,048 per output)",
    )
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case in this process
    args = parser.parse_args(argv)
    if args.list:
        for name, (source, fn) in CASES.items():
            print(f"{name:26s} [{source}] {(fn.__doc__ or '').strip().splitlines()[0]}")
        return
    repos = {"magnet": args.magnet, "lavt": args.lavt, "rela": args.rela}
    if args.case:
        global COMPARE
        COMPARE = args.compare
        print(run_case(args.case, repos[CASES[args.case][0]].resolve(), args.out))
        return
    todo = args.only or list(CASES)
    missing = sorted({CASES[c][0] for c in todo if repos[CASES[c][0]] is None})
    if missing:
        parser.error(f"give the checkout(s) of {missing} (--{' --'.join(missing)})")
    summary = {}
    for name in todo:
        cmd = [sys.executable, __file__, "--case", name, "--out", str(args.out)] + (
            ["--compare"] if args.compare else []
        )
        for k, v in repos.items():
            if v is not None:
                cmd += [f"--{k}", str(v)]
        print(f"{name} ...", flush=True)
        subprocess.run(cmd, check=True)
        summary[name] = Path(args.out, f"{name}.pt").stat().st_size
    print(json.dumps(summary, indent=1))
    print(f"total {sum(summary.values()) / 1e6:.2f} MB in {args.out}")


if __name__ == "__main__":
    main()
