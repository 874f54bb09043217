"""Engine parts without a training run: optimizer groups, schedule, checkpoint files, RNG, metrics."""
from __future__ import annotations

import logging
import os
import random
import signal

import numpy as np
import pytest
import torch

from regionvit_video.config import load_config
from regionvit_video.config.load import ConfigError
from regionvit_video.engine import checkpoint as ck
from regionvit_video.engine.build import build_model
from regionvit_video.engine.meters import MultiViewAggregator, ensemble_views, topk_correct
from regionvit_video.engine.optim import build_optimizer, build_scheduler, build_train_loss, weight_decay_split
from regionvit_video.utils.io import safe_torch_load


def _cfg(*opts):
    return load_config(None, ["TRAIN.ENABLE", "False", "TEST.ENABLE", "False", "MODEL.ARCH", "regionvit_video_pico",
                              "MODEL.NUM_CLASSES", "5", "DATA.NUM_FRAMES", "4", *opts])


def test_no_weight_decay_on_norms_biases_rel_pos_and_embeddings():
    cfg = _cfg()
    model = build_model(cfg)
    decay, no_decay = weight_decay_split(model)
    rel_pos = [n for n, _ in model.named_parameters() if n.endswith("rel_pos")]
    ln2d = [f"{m}.{p}" for m, mod in model.named_modules() if type(mod).__name__ == "LayerNorm2d"
            for p, _ in mod.named_parameters(recurse=False)]
    assert rel_pos and ln2d, "the model should have rel_pos tables and LayerNorm2d layers"
    assert all(p.ndim > 1 for n, p in model.named_parameters() if n in ln2d and n.endswith("weight"))
    assert set(rel_pos) <= set(no_decay) and set(ln2d) <= set(no_decay)
    assert "time_embed" in no_decay
    assert all(not n.endswith(".bias") for n in decay)
    assert "cls_token.proj.weight" in decay  # RegionViT's regional tokenizer conv is decayed like patch_embed
    assert any(n.endswith("attn.qkv.weight") for n in decay) and "head.weight" in decay

    opt = build_optimizer(cfg, model)
    assert type(opt).__name__ == "AdamW"
    wd_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    params = dict(model.named_parameters())
    assert all(wd_of[id(params[n])] == 0.0 for n in rel_pos + ln2d)
    assert all(wd_of[id(params[n])] == cfg.SOLVER.WEIGHT_DECAY for n in decay)


def test_lr_scaling_is_linear_in_the_global_batch_when_asked(caplog):
    """SOLVER.BASE_LR is stated for SOLVER.REFERENCE_BATCH_SIZE; "linear" scales every absolute lr by the
    global batch (clips x processes x accumulation) over it, "none" leaves them as they are."""
    model = torch.nn.Linear(2, 2)
    base = ("SOLVER.BASE_LR", "0.1", "SOLVER.WARMUP_START_LR", "0.01", "SOLVER.COSINE_END_LR", "0.001",
            "SOLVER.WARMUP_EPOCHS", "1.0", "SOLVER.MAX_EPOCH", "3", "TRAIN.BATCH_SIZE", "4",
            "TRAIN.GRAD_ACCUM_STEPS", "2", "SOLVER.REFERENCE_BATCH_SIZE", "16")
    schedules = {}
    for scaling, world, factor in (("none", 4, 1.0), ("linear", 4, 2.0), ("linear", 1, 0.5)):
        cfg = _cfg(*base, "SOLVER.LR_SCALING", scaling)
        with caplog.at_level(logging.INFO, logger="regionvit_video.engine.optim"):
            opt = build_optimizer(cfg, model, world_size=world)
        assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * factor)
        assert f"global batch {4 * world * 2}" in caplog.text and f"effective lr {0.1 * factor:g}" in caplog.text
        caplog.clear()
        sched = build_scheduler(cfg, opt, updates_per_epoch=10, world_size=world)
        lrs = []
        for step in range(31):
            sched.step_update(step)
            lrs.append(opt.param_groups[0]["lr"])
        schedules[(scaling, world)] = (factor, lrs)
    _, plain = schedules[("none", 4)]
    assert plain[0] == pytest.approx(0.01) and plain[30] == pytest.approx(0.001)  # warm-up start, cosine end
    for factor, lrs in schedules.values():  # the whole schedule scales, warm-up start and end included
        assert lrs == pytest.approx([factor * lr for lr in plain])
    with pytest.raises(ConfigError, match="SOLVER.LR_SCALING"):
        _cfg("SOLVER.LR_SCALING", "sqrt")


def test_cosine_schedule_with_warmup_per_iteration():
    cfg = _cfg("SOLVER.MAX_EPOCH", "4", "SOLVER.WARMUP_EPOCHS", "1.0", "SOLVER.BASE_LR", "0.1",
               "SOLVER.WARMUP_START_LR", "0.0", "SOLVER.COSINE_END_LR", "0.0")
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = build_scheduler(cfg, opt, updates_per_epoch=10)
    lrs = []
    for step in range(41):
        sched.step_update(step)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(0.0)
    assert lrs[5] == pytest.approx(0.05)             # linear warm-up over the first 10 updates
    assert lrs[20] == pytest.approx(0.05, rel=1e-6)  # half way through the cosine: base / 2
    assert lrs[40] == pytest.approx(0.0, abs=1e-9)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


@pytest.mark.parametrize("warmup", [0.0, 1.5])
def test_steps_with_relative_lrs_schedule_follows_pyslowfast(warmup):
    """TimeSformer's recipe: lr x0.1 at epochs 11 and 14 (PySlowFast's STEPS / LRS), per iteration."""
    cfg = _cfg("SOLVER.MAX_EPOCH", "15", "SOLVER.BASE_LR", "0.005", "SOLVER.LR_POLICY", "steps_with_relative_lrs",
               "SOLVER.STEPS", "[0, 11, 14]", "SOLVER.LRS", "[1.0, 0.1, 0.01]", "SOLVER.WARMUP_EPOCHS", str(warmup),
               "SOLVER.WARMUP_START_LR", "0.0")
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([p], lr=cfg.SOLVER.BASE_LR)
    sched = build_scheduler(cfg, opt, updates_per_epoch=10)
    lrs = []
    for step in range(150):
        sched.step_update(step)
        lrs.append(opt.param_groups[0]["lr"])
    if warmup:  # linear from WARMUP_START_LR to the stepped lr at the end of the warm-up (PySlowFast)
        assert lrs[0] == 0.0 and lrs[5] == pytest.approx(0.005 * 5 / 15) and lrs[15] == pytest.approx(0.005)
    else:
        assert lrs[0] == pytest.approx(0.005)
    assert lrs[109] == pytest.approx(0.005) and lrs[110] == pytest.approx(0.0005)
    assert lrs[139] == pytest.approx(0.0005)
    assert lrs[140] == pytest.approx(0.00005) and lrs[149] == pytest.approx(0.00005)
    # Resuming restores the schedule: a fresh scheduler loaded from the state dict gives the same lr.
    state = sched.state_dict()
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=cfg.SOLVER.BASE_LR)
    resumed = build_scheduler(cfg, opt2, updates_per_epoch=10)
    resumed.load_state_dict(state)
    resumed.step_update(120)
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.0005)


def test_losses_follow_mixup_and_smoothing():
    assert type(build_train_loss(_cfg(), mixup_enabled=True)).__name__ == "SoftTargetCrossEntropy"
    assert type(build_train_loss(_cfg(), mixup_enabled=False)).__name__ == "LabelSmoothingCrossEntropy"
    assert isinstance(build_train_loss(_cfg("MIXUP.LABEL_SMOOTHING", "0.0"), mixup_enabled=False),
                      torch.nn.CrossEntropyLoss)


def test_checkpoint_names_sort_chronologically(tmp_path):
    chrono = [ck.checkpoint_name(1, 50), ck.checkpoint_name(1), ck.checkpoint_name(2, 10), ck.checkpoint_name(2, 200),
              ck.checkpoint_name(2), ck.checkpoint_name(3, 5), ck.checkpoint_name(10)]
    assert chrono[1] == "checkpoint_epoch_00001.pyth"
    assert sorted(chrono) == chrono
    d = ck.checkpoint_dir(tmp_path)
    d.mkdir(parents=True)
    for name in reversed(chrono):
        (d / name).write_bytes(b"x")
    (d / ".checkpoint_epoch_00011.pyth.abc.tmp").write_bytes(b"partial")  # an interrupted write
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == chrono
    assert ck.latest_checkpoint(tmp_path).name == "checkpoint_epoch_00010.pyth"
    removed = ck.prune_checkpoints(tmp_path, keep=2)
    assert [p.name for p in removed] == chrono[:-2]
    assert [p.name for p in ck.list_checkpoints(tmp_path)] == chrono[-2:]


def test_rng_state_round_trips_through_weights_only_checkpoint(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    state = ck.get_rng_state()
    expected = (random.random(), np.random.rand(), np.random.randn(), torch.rand(1).item())
    path = ck.save_checkpoint(tmp_path / "c.pyth", model_state={"w": torch.ones(1)}, rng_states=[state])
    loaded = safe_torch_load(path)  # weights_only: only tensors and plain values inside
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    ck.set_rng_state(loaded["rng_states"][0])
    assert (random.random(), np.random.rand(), np.random.randn(), torch.rand(1).item()) == expected


def test_load_checkpoint_rejects_foreign_files(tmp_path):
    torch.save({"model": {"w": torch.ones(1)}}, tmp_path / "official.pth")
    with pytest.raises(ValueError, match="not a regionvit-video checkpoint.*MODEL.PRETRAINED"):
        ck.load_checkpoint(tmp_path / "official.pth")


def test_model_state_must_match_strictly(tmp_path):
    model = torch.nn.Linear(2, 3)
    state = {"module.weight": torch.zeros(3, 2), "module.bias": torch.zeros(3)}
    ck.load_model_state(model, state)  # DDP prefix stripped
    assert torch.equal(model.weight, torch.zeros(3, 2))
    with pytest.raises(RuntimeError, match="missing keys"):
        ck.load_model_state(model, {"weight": torch.zeros(3, 2)}, source="x.pyth")


def test_kill_during_checkpoint_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    """SIGKILL in the middle of torch.save: the previous file stays intact and is still the latest."""
    good = ck.checkpoint_dir(tmp_path) / ck.checkpoint_name(1)
    ck.save_checkpoint(good, model_state={"w": torch.arange(4.0)}, epoch=1)
    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):  # f: the open temporary file
        real_save(obj, f, *args, **kwargs)
        f.flush()
        f.truncate(f.tell() // 2)  # leave a half-written file behind, then die
        os.kill(os.getpid(), signal.SIGKILL)

    pid = os.fork()
    if pid == 0:  # child: overwrite the epoch-1 file, then write epoch 2; killed during the first write
        try:
            monkeypatch.setattr(torch, "save", dying_save)
            ck.save_checkpoint(good, model_state={"w": torch.zeros(4)}, epoch=2)
            ck.save_checkpoint(ck.checkpoint_dir(tmp_path) / ck.checkpoint_name(2), model_state={}, epoch=2)
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    leftovers = [p.name for p in ck.checkpoint_dir(tmp_path).iterdir()]
    assert any(n.endswith(".tmp") for n in leftovers)  # the write really was cut
    assert ck.latest_checkpoint(tmp_path) == good
    loaded = ck.load_checkpoint(good)
    assert loaded["epoch"] == 1 and torch.equal(loaded["model_state"]["w"], torch.arange(4.0))


def test_multiview_ensemble_and_metrics():
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]]])  # 1 video, 2 views, 3 classes
    p = ensemble_views(logits)
    expected = (torch.softmax(logits[0, 0], -1) + torch.softmax(logits[0, 1], -1)) / 2
    torch.testing.assert_close(p[0], expected)
    assert p.argmax().item() == 2  # softmax averaging, not a vote

    hits = topk_correct(torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]]), torch.tensor([2, 0]), ks=(1, 2))
    assert hits[1].tolist() == [False, True] and hits[2].tolist() == [True, True]

    agg = MultiViewAggregator(num_classes=3)
    scores = torch.eye(3)[[0, 1, 1, 2]]  # predictions 0, 1, 1, 2
    agg.add(torch.tensor([0, 1, 2, 3]), scores, torch.tensor([0, 1, 2, 2]), ["a", "b", "c", "d"])
    agg.add(torch.tensor([0]), scores[:1], torch.tensor([0]), ["a"])  # sampler padding: same video again
    agg.add_failed([{"index": 4, "path": "e", "error": "moov atom not found"}])
    m = agg.gather().metrics()
    assert m["num_videos"] == 4
    assert m["top1_acc"] == pytest.approx(75.0)
    assert m["mean_class_accuracy"] == pytest.approx(100 * (1 + 1 + 0.5) / 3)
    assert agg.confusion_matrix().tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    assert list(agg.failed) == [4]


class _CallsGetcwd:
    """Pickles to a call of ``os.getcwd``: a real pickle needing a global weights_only forbids."""

    def __reduce__(self):
        return (os.getcwd, ())


def test_safe_torch_load_tells_damaged_files_from_unsafe_pickles(tmp_path):
    from regionvit_video.utils.io import CheckpointReadError, UnsafeCheckpointError

    good = tmp_path / "good.pyth"
    torch.save({"w": torch.arange(3.0)}, good)
    legacy = tmp_path / "legacy.pth"  # pre-1.6 format: a pickle stream, not a zip archive
    torch.save({"w": torch.arange(3.0)}, legacy, _use_new_zipfile_serialization=False)
    assert torch.equal(safe_torch_load(legacy)["w"], torch.arange(3.0))
    files = {"random": os.urandom(4096), "empty": b"", "text": b"version https://git-lfs.github.com/spec/v1\n",
             "truncated_zip": good.read_bytes()[:200]}
    for name, content in files.items():
        path = tmp_path / f"{name}.pyth"
        path.write_bytes(content)
        with pytest.raises(RuntimeError) as info:
            safe_torch_load(path)
        assert not isinstance(info.value, UnsafeCheckpointError), name
        assert isinstance(info.value, CheckpointReadError) and str(path) in str(info.value), name
        if name != "truncated_zip":
            assert "not a torch checkpoint file (truncated or corrupted?)" in str(info.value), name
    for legacy_format in (False, True):
        evil = tmp_path / f"evil_{legacy_format}.pyth"
        torch.save({"x": _CallsGetcwd()}, evil, _use_new_zipfile_serialization=not legacy_format)
        with pytest.raises(UnsafeCheckpointError, match="refused to load .*getcwd"):
            safe_torch_load(evil)


def test_stale_temporary_checkpoint_files_are_removed(tmp_path, caplog, monkeypatch):
    d = ck.checkpoint_dir(tmp_path)
    ck.save_checkpoint(d / ck.checkpoint_name(1), model_state={})
    stale = [d / ".checkpoint_epoch_00002.pyth.1a2b3c4d5e6f.tmp", d / ".checkpoint_epoch_00002-iter_000004.pyth.x.tmp"]
    for p in stale:
        p.write_bytes(b"\0" * 100)
    other = [d / ".other.tmp", d / "notes.txt"]
    for p in other:
        p.write_text("keep")
    monkeypatch.setattr(logging.getLogger("regionvit_video"), "propagate", True)  # setup_logging turns it off
    with caplog.at_level("INFO", logger="regionvit_video"):
        removed = ck.remove_stale_temporary_files(tmp_path)
    assert sorted(removed) == sorted(stale) and not any(p.exists() for p in stale)
    assert all(p.exists() for p in other) and (d / ck.checkpoint_name(1)).is_file()
    assert all(str(p) in caplog.text for p in stale)
    assert ck.remove_stale_temporary_files(tmp_path / "nowhere") == []


def test_load_newest_checkpoint_falls_back_past_damaged_files_but_never_past_unsafe_ones(tmp_path, caplog, monkeypatch):
    from regionvit_video.utils.io import CheckpointReadError, UnsafeCheckpointError

    d = ck.checkpoint_dir(tmp_path)
    assert ck.load_newest_checkpoint(tmp_path) == (None, None)
    good = ck.save_checkpoint(d / ck.checkpoint_name(1), model_state={"w": torch.ones(2)}, epoch=1)
    truncated = d / ck.checkpoint_name(2, 1)
    truncated.write_bytes(good.read_bytes()[:150])
    empty = d / ck.checkpoint_name(2)
    empty.write_bytes(b"")
    monkeypatch.setattr(logging.getLogger("regionvit_video"), "propagate", True)  # setup_logging turns it off
    with caplog.at_level("WARNING", logger="regionvit_video"):
        path, content = ck.load_newest_checkpoint(tmp_path)
    assert path == good and content["epoch"] == 1
    assert f"{empty} is damaged" in caplog.text and f"{truncated} is damaged" in caplog.text
    assert truncated.exists() and empty.exists()  # kept for inspection

    evil = d / ck.checkpoint_name(3)
    torch.save({"model_state": {"w": _CallsGetcwd()}}, evil)
    with pytest.raises(UnsafeCheckpointError, match=str(evil)):
        ck.load_newest_checkpoint(tmp_path)
    evil.unlink()
    good.write_bytes(b"PK\x03\x04" + os.urandom(64))
    with pytest.raises(CheckpointReadError, match="no checkpoint in .* loads") as info:
        ck.load_newest_checkpoint(tmp_path)
    assert all(str(p) in str(info.value) for p in (good, truncated, empty))
