"""The training engine: schedules, parameter groups, accumulation, NaN stop, files, recipes.

The toy data set defined here and :func:`build_toy` (the BatchNorm-free toy model of
``toy_model.py``) are also used by ``test_resume.py`` and ``test_ddp.py`` (also from
subprocesses), so they live at module level.
"""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset
from toy_model import TrainerToyModel, register_toy_models

from rislib import Batch
from rislib.engine.distributed import ShardedEpochSampler
from rislib.engine.ema import ModelEMA
from rislib.engine.recipes import get_recipe
from rislib.engine.trainer import LRSchedule, NonFiniteLossError, TrainConfig, Trainer, find_checkpoints, lr_factor
from rislib.models import load_model


# ---- a BatchNorm-free toy model (tests/toy_model.py) and a toy data set ---------------------------
def build_toy(**overrides) -> TrainerToyModel:
    """The ``_trainer_toy`` model (registered on first use; subprocesses of the DDP tests too)."""
    from rislib.models import build_model

    register_toy_models()
    return build_model("_trainer_toy", "tiny", **overrides)  # type: ignore[return-value]


class ToyShapes(Dataset):
    """A bright square in the left or right half, a dim one in the other; the text says which.

    Noise depends on ``(seed, epoch, index)`` like ``RISDataset``'s augmentation.
    """

    def __init__(self, n: int = 48, size: int = 32, seed: int = 0) -> None:
        self.n, self.size, self.seed, self.epoch = n, size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        s = self.size
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch * 1_009 + i)
        rng = torch.Generator().manual_seed(self.seed * 7_919 + i)  # layout: fixed per index
        image = torch.rand(3, s, s, generator=g) * 0.3
        mask = torch.zeros(1, s, s)
        side = i % 2
        k = s // 4
        for half, colour in ((side, (0.9, 0.2, 0.2)), (1 - side, (0.2, 0.2, 0.9))):
            y = int(torch.randint(0, s - k, (1,), generator=rng))
            x = half * s // 2 + int(torch.randint(0, s // 2 - k, (1,), generator=rng))
            image[:, y : y + k, x : x + k] = torch.tensor(colour)[:, None, None]
            if half == side:
                mask[:, y : y + k, x : x + k] = 1
        text = "the red square on the left" if side == 0 else "the red square on the right"
        return {"image": image, "text": text, "mask": mask, "index": i}


def toy_collate(items) -> Batch:
    return Batch(
        images=torch.stack([it["image"] for it in items]),
        text=[it["text"] for it in items],
        masks=torch.stack([it["mask"] for it in items]),
        meta=[{"index": it["index"]} for it in items],
    )


def toy_evaluate(model, dataset, *, batch_size, out_dir, run_info):
    batch = toy_collate([dataset[i] for i in range(len(dataset))])
    pred = model.predict(batch)
    gt = batch.masks > 0.5
    inter = (pred & gt).flatten(1).sum(1).float()
    union = (pred | gt).flatten(1).sum(1).float()
    return {"mIoU": 100 * (inter / union).mean().item(), "oIoU": 100 * (inter.sum() / union.sum()).item()}


def toy_config(tmp_path, **kw) -> TrainConfig:
    base = dict(out_dir=str(tmp_path / "run"), steps=6, batch_size=8, lr=3e-3, progress=False, log_every=1)
    base.update(kw)
    return TrainConfig(**base)


# ---- schedules -----------------------------------------------------------------------------
def test_lr_factor_matches_direct_formulas():
    T, W, w0 = 100, 10, 1e-3
    for s in (0, 3, 9):
        assert lr_factor(s, total_steps=T, schedule="cosine", warmup_steps=W, warmup_start_factor=w0) == (
            pytest.approx(w0 + (1 - w0) * s / W)
        )
    for s in (10, 37, 99):
        p = (s - W) / (T - W)
        cos = 0.5 * (1 + math.cos(math.pi * p))
        assert lr_factor(s, total_steps=T, schedule="cosine", warmup_steps=W) == pytest.approx(cos)
        assert lr_factor(s, total_steps=T, schedule="cosine", warmup_steps=W, min_factor=0.1) == pytest.approx(
            0.1 + 0.9 * cos
        )
        assert lr_factor(s, total_steps=T, schedule="poly", warmup_steps=W, poly_power=0.9) == pytest.approx(
            (1 - p) ** 0.9
        )
    # LAVT: lr = base * (1 - it / total) ** 0.9 per iteration, no warmup
    for it in (0, 1, 50, 99):
        assert lr_factor(it, total_steps=T, schedule="poly") == pytest.approx((1 - it / T) ** 0.9)
    # MCN-style steps at 30/35/40 of 45 epochs
    ms = (30 / 45, 35 / 45, 40 / 45)
    got = [lr_factor(s, total_steps=450, schedule="step", milestones=ms) for s in (0, 299, 300, 349, 350, 400, 449)]
    assert got == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.001, 0.001])
    assert lr_factor(70, total_steps=T, schedule="constant", warmup_steps=W) == 1.0
    with pytest.raises(ValueError, match="schedule must be one of"):
        lr_factor(0, total_steps=T, schedule="linear")


def test_schedule_keeps_each_groups_lr_scale_and_resumes():
    p1, p2 = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([{"params": [p1], "lr_scale": 1.0}, {"params": [p2], "lr_scale": 0.1}], lr=1.0)
    sched = LRSchedule(opt, base_lr=2e-3, total_steps=20, schedule="poly", warmup_steps=4)
    for _ in range(7):
        sched.step()
    f = (1 - (7 - 4) / 16) ** 0.9
    assert opt.param_groups[0]["lr"] == pytest.approx(2e-3 * f)
    assert opt.param_groups[1]["lr"] == pytest.approx(2e-4 * f)
    again = LRSchedule(opt, base_lr=2e-3, total_steps=20, schedule="poly", warmup_steps=4)
    again.load_state_dict(sched.state_dict())
    assert opt.param_groups[1]["lr"] == pytest.approx(2e-4 * f)


def test_trainer_param_groups_scale_backbone_lr(tmp_path):
    model = build_toy(backbone_lr_scale=0.25)
    tr = Trainer(model, toy_config(tmp_path, schedule="constant", lr=1e-3), train_dataset=ToyShapes(16))
    by_name = {g["name"]: g for g in tr.optimizer.param_groups}
    assert by_name["backbone"]["lr"] == pytest.approx(2.5e-4) and by_name["head"]["lr"] == pytest.approx(1e-3)
    assert by_name["head_no_decay"]["weight_decay"] == 0.0 and by_name["head"]["weight_decay"] == 0.01
    backbone_ids = {id(p) for m in model.backbone_modules() for p in m.parameters()}
    assert all(id(p) in backbone_ids for p in by_name["backbone"]["params"])
    # after warmup-free cosine steps the ratio stays 0.25
    cfg2 = toy_config(tmp_path, schedule="cosine")
    tr2 = Trainer(build_toy(backbone_lr_scale=0.25), cfg2, train_dataset=ToyShapes(16))
    tr2.train_step(toy_collate([ToyShapes(16)[i] for i in range(8)]))
    g = {x["name"]: x for x in tr2.optimizer.param_groups}
    assert g["backbone"]["lr"] / g["head"]["lr"] == pytest.approx(0.25)
    assert g["head"]["lr"] == pytest.approx(3e-3 * 0.5 * (1 + math.cos(math.pi / 6)))


# ---- accumulation, loss falls, files ---------------------------------------------------------
def test_grad_accumulation_equals_a_bigger_batch(tmp_path):
    data = ToyShapes(16)
    batch = toy_collate([data[i] for i in range(8)])
    halves = [toy_collate([data[i] for i in range(4)]), toy_collate([data[i] for i in range(4, 8)])]
    torch.manual_seed(3)
    a = build_toy()
    b = build_toy()
    b.load_state_dict(a.state_dict())
    grads = {}

    def keep(name):
        def hook(opt, args, kwargs):
            grads[name] = [p.grad.clone() for g in opt.param_groups for p in g["params"]]

        return hook

    ta = Trainer(a, toy_config(tmp_path, grad_clip=None), train_dataset=data)
    tb = Trainer(b, toy_config(tmp_path, grad_clip=None, grad_accum=2), train_dataset=data)
    assert tb.micro_batch_size == 4
    ta.optimizer.register_step_pre_hook(keep("a"))
    tb.optimizer.register_step_pre_hook(keep("b"))
    va = ta.train_step(batch)
    vb = tb.train_step(halves)
    assert va["total"] == pytest.approx(vb["total"], rel=1e-5) and va["bce"] == pytest.approx(vb["bce"], rel=1e-5)
    for ga, gb in zip(grads["a"], grads["b"]):
        torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-6)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-6)


def test_gradient_clipping_scales_the_gradients_the_optimiser_sees(tmp_path):
    # Adam is almost invariant to a uniform gradient scale, so clipping barely changes the weights:
    # look at the gradients at the optimiser step instead.
    data = ToyShapes(16)
    batch = toy_collate([data[i] for i in range(8)])
    norms = {}
    for clip in (None, 0.01):
        torch.manual_seed(3)
        trainer = Trainer(build_toy(), toy_config(tmp_path, grad_clip=clip), train_dataset=data)

        def at_step(opt, args, kwargs, clip=clip):
            grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
            norms[clip] = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))

        trainer.optimizer.register_step_pre_hook(at_step)
        logged = trainer.train_step(batch)["grad_norm"]  # the norm before clipping, in both cases
        assert logged == pytest.approx(norms[None], rel=1e-4)
    assert norms[None] > 0.05  # so that clipping at 0.01 has something to do
    assert norms[0.01] == pytest.approx(0.01, rel=1e-3)


def test_fit_loss_falls_and_writes_logs_curves_summary_checkpoints(tmp_path):
    torch.manual_seed(0)
    model = build_toy()
    cfg = toy_config(tmp_path, steps=None, epochs=6, lr=1e-2, log_every=2, warmup_steps=2, keep_last=2,
                     run_info={"dataset": "toyshapes"})  # fmt: skip
    seen = []
    tr = Trainer(model, cfg, train_dataset=ToyShapes(48), val_dataset=ToyShapes(16, seed=5), collate_fn=toy_collate,
                 evaluate_fn=toy_evaluate, callbacks=[lambda t, info: seen.append(info)])  # fmt: skip
    res = tr.fit()
    run = tmp_path / "run"
    train_rows = [r for r in res.history if r["kind"] == "train"]
    val_rows = [r for r in res.history if r["kind"] == "val"]
    assert [r["step"] for r in train_rows] == list(range(2, 37, 2))
    assert len(val_rows) == 6 and all("mIoU" in r for r in val_rows)  # one per epoch, the last at the end
    first, last = train_rows[0]["loss/total"], train_rows[-1]["loss/total"]
    assert last < 0.7 * first, (first, last)
    assert [i["step"] for i in seen] == list(range(1, 37)) and set(seen[0]["losses"]) == {"total", "bce", "dice"}
    # files
    logged = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert logged == json.loads(json.dumps(res.history))
    with open(run / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(res.history)
    assert {"loss/total", "loss/bce", "loss/dice", "lr", "samples_per_s", "grad_norm", "mIoU"} <= set(rows[0])
    assert (run / "curves.png").stat().st_size > 5000
    summary = json.loads((run / "summary.json").read_text())
    for key in ("model", "preset", "dataset", "recipe", "train_minutes", "samples_per_s", "steps", "device",
                "peak_memory_mb", "metrics"):  # fmt: skip
        assert key in summary
    assert summary["model"] == "_trainer_toy" and summary["dataset"] == "toyshapes" and summary["steps"] == 36
    assert summary["status"] == "completed" and summary["metrics"] == {k: val_rows[-1][k] for k in ("mIoU", "oIoU")}
    assert summary["best"]["value"] == max(r["mIoU"] for r in val_rows)
    assert [s for s, _ in find_checkpoints(run)] == [36, 30]  # keep_last=2, epoch ends + the end
    # final.pt and best.pt load with the registry's loader; final equals the trained weights
    final = load_model(res.final_checkpoint)
    for k, v in model.state_dict().items():
        assert torch.equal(final.state_dict()[k], v.cpu())
    best = torch.load(res.best_checkpoint, weights_only=True)
    assert best["metrics"]["mIoU"] == summary["best"]["value"]
    assert isinstance(load_model(res.best_checkpoint), TrainerToyModel)


def test_nan_loss_stops_with_step_and_term_and_keeps_last_good_checkpoint(tmp_path):
    def poison(trainer, info):
        if info["step"] == 5:
            trainer.model.poison = float("nan")

    cfg = toy_config(tmp_path, steps=12, save_every=4)
    tr = Trainer(build_toy(), cfg, train_dataset=ToyShapes(48), collate_fn=toy_collate, callbacks=[poison])
    with pytest.raises(NonFiniteLossError, match=r"step 6 .*loss term 'dice' is nan") as err:
        tr.fit()
    run = tmp_path / "run"
    assert "step_0000004.pt" in str(err.value)
    assert [s for s, _ in find_checkpoints(run)] == [4]
    ckpt = torch.load(run / "checkpoints" / "step_0000004.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert ckpt["trainer"]["progress"]["step"] == 4
    assert not (run / "final.pt").exists()
    # the weights in memory were not touched by the bad step either
    assert all(torch.isfinite(p).all() for p in tr.model.parameters())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"].startswith("stopped: non-finite") and "dice" in summary["error"]


def test_a_non_finite_step_leaves_weights_and_batchnorm_statistics_untouched(tmp_path):
    model = build_toy()
    model.vision_encoder.conv1 = nn.Sequential(model.vision_encoder.conv1, nn.BatchNorm2d(8))
    tr = Trainer(model, toy_config(tmp_path), train_dataset=ToyShapes(16))
    data = ToyShapes(16)
    tr.train_step(toy_collate([data[i] for i in range(8)]))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt_before = tr.optimizer.state_dict()["state"][0]["exp_avg"].clone()
    bad = toy_collate([data[i] for i in range(8, 16)])
    bad.images[0, :, 0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match=r"step 2 .*loss term 'bce' is nan"):
        tr.train_step(bad)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert torch.equal(tr.optimizer.state_dict()["state"][0]["exp_avg"], opt_before) and tr.step == 1
    assert tr.schedule.step_count == 1


def test_time_budget_stops_with_a_resumable_checkpoint(tmp_path):
    cfg = toy_config(tmp_path, steps=50, max_minutes=1e-9)
    res = Trainer(build_toy(), cfg, train_dataset=ToyShapes(48), collate_fn=toy_collate).fit()
    assert res.summary["status"] == "time budget" and res.summary["steps"] == 1
    assert [s for s, _ in find_checkpoints(tmp_path / "run")] == [1] and res.final_checkpoint.is_file()


# ---- pieces --------------------------------------------------------------------------------
def test_sampler_is_seeded_sharded_and_skips_done_steps():
    full = ShardedEpochSampler(num_samples=20, global_batch_size=8, seed=4)
    assert full.steps_per_epoch == 2 and len(full) == 16
    full.set_epoch(3)
    order = [i for _, i in full]
    assert order == full.permutation(3)[:16].tolist() and len(set(order)) == 16
    assert order != [i for _, i in (full.set_epoch(4), full)[1]]
    shards = []
    for r in range(2):
        s = ShardedEpochSampler(num_samples=20, global_batch_size=8, rank=r, world_size=2, seed=4)
        s.set_epoch(3)
        shards.append([i for _, i in s])
    # step k's global batch = rank 0's 4 samples then rank 1's 4 samples
    assert shards[0][:4] + shards[1][:4] == order[:8] and shards[0][4:] + shards[1][4:] == order[8:]
    full.set_epoch(3, skip_steps=1)
    assert [i for _, i in full] == order[8:] and len(full) == 8
    with pytest.raises(ValueError, match="not divisible by the 3 processes"):
        ShardedEpochSampler(num_samples=20, global_batch_size=8, world_size=3)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        ShardedEpochSampler(num_samples=5, global_batch_size=8)


def test_ema_follows_the_direct_formula():
    torch.manual_seed(0)
    m = nn.Linear(3, 2)
    ema = ModelEMA(m, decay=0.9)
    start = m.weight.detach().clone()
    with torch.no_grad():
        m.weight.add_(1.0)
    ema.update(m)  # ramp: d = min(0.9, 1/10) = 0.1
    torch.testing.assert_close(ema.module.weight, 0.1 * start + 0.9 * (start + 1))
    prev = ema.module.weight.clone()
    ema.update(m)  # d = min(0.9, 2/11)
    d = 2 / 11
    torch.testing.assert_close(ema.module.weight, d * prev + (1 - d) * (start + 1))
    again = ModelEMA(nn.Linear(3, 2), decay=0.5)
    again.load_state_dict(ema.state_dict())
    assert again.updates == 2 and torch.equal(again.module.weight, ema.module.weight)


def test_train_config_and_recipes_validate():
    with pytest.raises(ValueError, match="exactly one of epochs / steps"):
        TrainConfig(epochs=2, steps=3)
    with pytest.raises(ValueError, match=r"TrainConfig.schedule: expected one of"):
        TrainConfig(steps=3, schedule="linear")
    mag = get_recipe("magnet", "paper")
    assert (mag.lr, mag.weight_decay, mag.schedule, mag.poly_power, mag.batch_size, mag.epochs, mag.image_size) == (
        5e-5, 0.01, "poly", 0.9, 32, 40, 480,
    )  # fmt: skip
    lts = get_recipe("lts", "paper")
    assert lts.optimizer == "adam" and lts.lr * lts.backbone_lr_scale == pytest.approx(1e-4) and lts.image_size == 416
    assert get_recipe("maris", "paper").image_size == 1024 and get_recipe("haris", "paper").schedule == "cosine"
    cfg = mag.train_config(out_dir="x", steps=10)
    assert cfg.steps == 10 and cfg.epochs is None and cfg.lr == 5e-5 and cfg.run_info["recipe"] == "paper"
    assert get_recipe("anything", "cpu").image_size == 128
    with pytest.raises(KeyError, match="no paper recipe"):
        get_recipe("_trainer_toy", "paper")
    with pytest.raises(TypeError, match="unknown TrainConfig field"):
        mag.train_config(learning_rate=1)
    with pytest.raises(ValueError, match=r"batch_size: 6 is not divisible"):
        Trainer(build_toy(), TrainConfig(steps=2, batch_size=6, grad_accum=4, progress=False))


def test_parse_assignments_reads_python_literals():
    from rislib.engine.train_cli import parse_assignments, parse_counts

    got = parse_assignments(["use_vga=false", "k=3", "lr=1e-4", "dims=(64, 128)", "vision=swin_b", "x=None"])
    assert got == {"use_vga": False, "k": 3, "lr": 1e-4, "dims": (64, 128), "vision": "swin_b", "x": None}
    assert parse_counts("train=6,val=2") == {"train": 6, "val": 2} and parse_counts(None) is None
    with pytest.raises(ValueError, match="expected key=value"):
        parse_assignments(["use_vga"])


def test_bench_measures_both_sides_and_merges_result_files(tmp_path):
    from rislib.engine.bench_cli import run_benchmark, write_result

    rec = run_benchmark(["_trainer_toy"], batch_size=4, steps=1, warmup=1, rounds=2, progress=False)
    sides = {r["side"]: r for r in rec["results"]}
    assert set(sides) == {"plain", "fast"} and rec["device_slug"] == "cpu"
    assert sides["plain"]["options"]["attention"].startswith("sdpa math")
    # the toy's cpu recipe trains NCHW: so does the fast side by default, its yardstick channels-last
    assert not sides["fast"]["options"]["channels_last"] and sides["fast"]["options"]["reference_channels_last"]
    assert len(sides["fast"]["train_samples_per_s_rounds"]) == 2 and sides["fast"]["train_samples_per_s"] > 0
    ratio = sides["fast"]["train_samples_per_s"] / sides["plain"]["train_samples_per_s"]
    assert rec["speedup_fast_over_plain"]["_trainer_toy@32"]["train"] == pytest.approx(ratio)
    path = write_result(rec, tmp_path)
    other = {**rec, "results": [{**r, "model": "other"} for r in rec["results"]],
             "speedup_fast_over_plain": {"other": {"train": 1.0}}}  # fmt: skip
    assert write_result(other, tmp_path) == path
    merged = json.loads(path.read_text())
    assert sorted({r["model"] for r in merged["results"]}) == ["_trainer_toy", "other"] and len(merged["results"]) == 4


def test_size_schedule_resizes_training_images_at_the_scheduled_steps(tmp_path):
    model = build_toy()
    sizes = []
    original = model.forward

    def spy(batch):
        sizes.append(batch.images.shape[-1])
        return original(batch)

    model.forward = spy
    cfg = toy_config(tmp_path, steps=8, size_schedule=((0.0, 16), (0.75, 32)))
    tr = Trainer(model, cfg, train_dataset=ToyShapes(64), collate_fn=toy_collate)
    assert [tr.train_size(s) for s in (0, 5, 6, 7)] == [16, 16, 32, 32]
    res = tr.fit()
    assert sizes == [16] * 6 + [32] * 2 and res.summary["steps"] == 8
    assert res.summary["train_cpu_minutes"] > 0
    # masks stay at the data set's size: the loss upsamples the smaller logits to them
    batch = toy_collate([ToyShapes(2)[i] for i in range(2)])
    tr.step = 0
    prepared = tr._prepare(batch)
    assert prepared.images.shape[-1] == 16 and prepared.masks.shape[-1] == 32
    plain = Trainer(build_toy(), toy_config(tmp_path), train_dataset=ToyShapes(8), collate_fn=toy_collate)
    assert plain.train_size() is None
    for bad in (((0.5, 16),), ((0.0, 16), (0.0, 32)), ((0.0, 16), (1.0, 32)), ((0.0, 4),), (64,), ((0.0,),)):
        with pytest.raises(ValueError, match="size_schedule"):
            toy_config(tmp_path, size_schedule=bad)
    assert toy_config(tmp_path, size_schedule=None).size_schedule == ()  # None: no schedule, as ()


def test_cpu_threads_follow_the_load_unless_given(monkeypatch):
    from rislib.engine import threads

    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(threads.os, "cpu_count", lambda: 4)
        monkeypatch.setattr(threads.os, "getloadavg", lambda: (2.6, 0.0, 0.0))
        assert threads.free_cpu_threads(default=4) == 1  # 4 cores, 2.6 busy: round(1.4)
        monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.2, 0.0, 0.0))
        assert threads.free_cpu_threads(default=4) == 4 and threads.free_cpu_threads(default=2) == 2
        monkeypatch.setattr(threads.os, "getloadavg", lambda: (9.0, 0.0, 0.0))
        assert threads.free_cpu_threads(default=4) == 1  # never below one
        assert threads.set_cpu_threads(3) == 3 and torch.get_num_threads() == 3
        assert threads.set_cpu_threads(None) == 1 and torch.get_num_threads() == 1
        with pytest.raises(ValueError, match="threads"):
            threads.set_cpu_threads(-1)
    finally:
        torch.set_num_threads(before)
