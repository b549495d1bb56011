"""RISDataset (train / eval protocols, pure-function draws, hflip with word swapping) and collate_batch."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from rislib import Batch
from rislib.data import RISDataset, collate_batch, flip_expression, generate_refshapes, open_source, restore_mask
from rislib.data.transforms import resize_pair


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    out = tmp_path_factory.mktemp("refshapes")
    counts = {"train": 10, "val": 4, "testA": 2, "testB": 2, "testC": 2}
    generate_refshapes(out, seed=3, size=64, counts=counts, generalized=True, workers=0, progress=False)
    return out


def test_train_mode_one_item_per_ref_eval_mode_one_per_sentence(root):
    src = open_source(root, "refshapes")
    refs = src.refs("val")
    train = RISDataset(src, "val", mode="train", image_size=32)
    ev = RISDataset(src, "val", mode="eval", image_size=32)
    assert len(train) == len(refs)
    assert len(ev) == sum(len(r["sentences"]) for r in refs)
    seen = {(ev[i]["meta"]["ref_id"], ev[i]["meta"]["sent_id"]) for i in range(len(ev))}
    assert seen == {(r["ref_id"], s["sent_id"]) for r in refs for s in r["sentences"]}
    item = train[0]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert float(item["image"].min()) >= 0.0 and float(item["image"].max()) <= 1.0
    assert item["mask"].shape == (1, 32, 32) and set(item["mask"].unique().tolist()) <= {0.0, 1.0}
    assert item["text"] in {s["sent"] for s in refs[0]["sentences"]}
    meta = item["meta"]
    for key in ("ref_id", "sent_id", "image_id", "file_name", "split", "dataset", "orig_size", "type", "no_target"):
        assert key in meta
    assert meta["orig_size"] == (64, 64) and meta["dataset"] == "refshapes" and meta["split"] == "val"
    # the mask at S = original size equals the loader's mask
    full = RISDataset(src, "val", mode="eval", image_size=64)
    assert torch.equal(full[0]["mask"][0].bool(), torch.from_numpy(src.mask(refs[0])))


def test_train_draws_are_a_pure_function_of_seed_epoch_index(root):
    src = open_source(root, "refshapes")
    a = RISDataset(src, "train", image_size=32, hflip=True, seed=5)
    b = RISDataset(src, "train", image_size=32, hflip=True, seed=5)
    for ds in (a, b):
        ds.set_epoch(2)
    # b is read in another order and after touching other epochs: draws must not depend on history
    b.set_epoch(0)
    _ = [b[i] for i in range(len(b))]
    b.set_epoch(2)
    order = list(range(len(a)))[::-1]
    got_b = {i: (b[i]["text"], b[i]["meta"]["flipped"]) for i in order}
    got_a = {i: (a[i]["text"], a[i]["meta"]["flipped"]) for i in range(len(a))}
    assert got_a == got_b
    # epochs differ somewhere (sentence or flip), and the seed matters
    draws = lambda ds, e: [ds.draws(i, e) for i in range(len(ds))]  # noqa: E731
    assert draws(a, 0) != draws(a, 1)
    c = RISDataset(src, "train", image_size=32, hflip=True, seed=6)
    assert draws(a, 0) != draws(c, 0)
    assert any(f for _, f in draws(a, 0)) and not all(f for _, f in draws(a, 0))


def test_hflip_mirrors_image_and_mask_and_swaps_words(root):
    src = open_source(root, "refshapes")
    plain = RISDataset(src, "train", image_size=32, hflip=False)
    flipped = RISDataset(src, "train", image_size=32, hflip=True)
    idx = next(i for i in range(len(flipped)) if flipped.draws(i, 0)[1])
    f, p = flipped[idx], plain[idx]
    assert f["meta"]["flipped"] and not p["meta"]["flipped"]
    assert torch.equal(f["image"], p["image"].flip(-1)) and torch.equal(f["mask"], p["mask"].flip(-1))
    sent_idx = flipped.draws(idx, 0)[0]
    original = src.refs("train")[idx]["sentences"][sent_idx]["sent"]
    assert f["text"] == flip_expression(original)
    flipped_text = flip_expression("the leftmost star left of the Right circle")
    assert flipped_text == "the rightmost star right of the Left circle"
    assert flip_expression("the second square from the right") == "the second square from the left"
    assert flip_expression("a bright light") == "a bright light"  # whole words only
    # eval mode never flips
    ev = RISDataset(src, "val", mode="eval", hflip=True)
    assert not any(ev[i]["meta"]["flipped"] for i in range(len(ev)))


def test_collate_and_dataloader_with_two_workers(root):
    src = open_source(root, "grefshapes")
    ds = RISDataset(src, "train", image_size=32, hflip=True, seed=1)
    ds.set_epoch(1)
    loader = DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate_batch)
    batches = list(loader)
    assert all(isinstance(b, Batch) for b in batches)
    assert sum(len(b) for b in batches) == len(ds)
    direct = collate_batch([ds[i] for i in range(4)])
    assert batches[0].text == direct.text and torch.equal(batches[0].images, direct.images)
    assert torch.equal(batches[0].masks, direct.masks)
    nt = [m["no_target"] for b in batches for m in b.meta]
    masks = torch.cat([b.masks for b in batches])
    assert any(nt) and all(masks[i].sum() == 0 for i, v in enumerate(nt) if v)


def test_letterbox_keeps_aspect_and_restore_mask_inverts_it():
    import numpy as np
    from PIL import Image

    h, w = 40, 80
    mask = np.zeros((h, w), dtype=bool)
    mask[10:30, 20:60] = True
    image = Image.fromarray(np.full((h, w, 3), 200, dtype=np.uint8))
    img, m, lb = resize_pair(image, mask, 32, "letterbox")
    assert img.shape == (32, 32, 3) and lb.resized == (16, 32) and lb.offset == (0, 8)
    assert not m[:8].any() and not m[24:].any() and tuple(img[0, 0]) == (124, 116, 104)
    back = restore_mask(torch.from_numpy(m.astype(np.float32)), (h, w), lb) > 0.5
    assert back.shape == (h, w)
    assert (back.numpy() == mask).mean() > 0.97
    img2, m2, lb2 = resize_pair(image, mask, 32, "squash")
    assert lb2 is None and m2.shape == (32, 32) and m2[8:12, 8:24].all()
    back2 = restore_mask(torch.from_numpy(m2.astype(np.float32))[None, None], (h, w))
    assert back2.shape == (1, 1, h, w) and ((back2[0, 0] > 0.5).numpy() == mask).mean() > 0.97


@pytest.mark.parametrize(
    "dataset, mode, resize", [("refshapes", "train", "squash"), ("grefshapes", "eval", "letterbox")]
)
def test_preload_gives_the_items_of_reading_the_files(root, tmp_path, dataset, mode, resize):
    src = open_source(root, dataset)
    plain = RISDataset(src, "train", mode=mode, image_size=40, hflip=True, seed=2, resize=resize)
    fresh = RISDataset(src, "train", mode=mode, image_size=40, hflip=True, seed=2, resize=resize)
    assert not fresh.preloaded
    fresh.preload(cache_dir=tmp_path, progress=False)
    saved = list(tmp_path.glob("*.npz"))
    assert fresh.preloaded and len(saved) == 1
    again = RISDataset(src, "train", mode=mode, image_size=40, hflip=True, seed=2, resize=resize)
    again.preload(cache_dir=tmp_path, progress=False)  # read back from the cache file
    images = fresh._preloaded["images"]
    assert images.shape[0] == len({r["image_id"] for r in src.refs("train")})  # one row per image
    assert fresh.preload_bytes() == images.nbytes + fresh._preloaded["masks"].nbytes
    for epoch in (0, 3):
        for ds in (plain, fresh, again):
            ds.set_epoch(epoch)
        for i in range(len(plain)):
            a, b, c = plain[i], fresh[i], again[i]
            for other in (b, c):
                assert torch.equal(a["image"], other["image"]) and torch.equal(a["mask"], other["mask"])
                assert a["text"] == other["text"] and a["meta"] == other["meta"]
    # another size is another cache file, not a stale hit
    RISDataset(src, "train", mode=mode, image_size=24, resize=resize).preload(cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob("*.npz"))) == 2
