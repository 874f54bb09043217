"""Model EMA under DDP and on resume (issue 17, point 1).

Each rank seeds with RNG_SEED + rank, so until DDP broadcasts rank 0's weights the ranks' models differ,
and the trainer copies the EMA from the model before that broadcast and before a checkpoint is loaded.
In a fresh run this is erased by the first update (timm's ModelEmaV3 uses decay 0 at step 1), but a
resume from a checkpoint without EMA state (EMA switched on for the rest of a run) continues at a late
step with decay ~1: every rank keeps its own freshly initialised weights in its EMA (rank 0's is saved,
the others validate), none of them the resumed weights. Building the EMA after the DDP wrap and after the
checkpoint load (trainer.build_ema) fixes both.
"""
from __future__ import annotations

import pytest
import torch

from regionvit_video.config import load_config
from regionvit_video.engine import checkpoint as ck
from regionvit_video.engine import train
from regionvit_video.utils.io import safe_torch_load
from runs import fork, free_port, rank_env, wait
from tiny_datasets import make_kinetics_folder

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_kinetics_folder(tmp_path_factory.mktemp("ema"), num_classes=2, videos_per_class=2, size=(32, 40),
                                frames=8, seed=0)


def ema_cfg(dataset, out, *extra):
    opts = [*dataset["cfg_opts"], "MODEL.ARCH", "regionvit_video_pico", "DATA.NUM_FRAMES", "2",
            "DATA.TRAIN_JITTER_SCALES", "[32, 40]", "DATA.TRAIN_CROP_SIZE", "32", "DATA.TEST_SCALE", "32",
            "DATA.TEST_CROP_SIZE", "32", "TRAIN.BATCH_SIZE", "1", "DATA_LOADER.NUM_WORKERS", "0",
            "SOLVER.MAX_EPOCH", "1", "SOLVER.WARMUP_EPOCHS", "0", "SOLVER.BASE_LR", "0.001",
            "TRAIN.EVAL_PERIOD", "0", "MIXUP.ENABLE", "False", "AUG.RAND_AUGMENT", "False",
            "MODEL_EMA.ENABLE", "True", "MODEL_EMA.DECAY", "0.9", "DEVICE", "cpu", "OUTPUT_DIR", str(out), *extra]
    return load_config(None, [str(o) for o in opts])


def _train_recording_ema(cfgs, rank: int, tmp_path) -> int:
    """In a forked gloo process: train ``cfgs`` one after the other, save the weights of the last EMA made."""
    import timm.utils

    from regionvit_video.engine.distributed import cleanup_distributed, init_distributed

    made = []

    class RecordedEma(timm.utils.ModelEmaV3):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    timm.utils.ModelEmaV3 = RecordedEma
    di = init_distributed("cpu", "gloo")
    for cfg in cfgs:
        train(cfg, di)
    torch.save(made[-1].module.state_dict(), tmp_path / f"ema_rank{rank}.pt")
    cleanup_distributed()
    return 0


def _ema_of_each_rank(cfgs, tmp_path) -> list[dict[str, torch.Tensor]]:
    """Train ``cfgs`` one after the other in 2 forked gloo processes; each process saves the weights of the
    last EMA it made (timm's ModelEmaV3, recorded)."""
    port = free_port()
    pids = [fork(_train_recording_ema, cfgs, rank, tmp_path, env=rank_env(rank, 2, port)) for rank in range(2)]
    codes = [wait(pid) for pid in pids]
    assert codes == [0, 0], f"exit codes {codes}"
    return [torch.load(tmp_path / f"ema_rank{r}.pt") for r in range(2)]


def test_every_rank_keeps_the_same_ema(dataset, tmp_path):
    """2 gloo processes: epoch 1 without EMA, then epoch 2 resumed with EMA on. Both ranks end with equal EMA
    weights, equal to the EMA saved in the checkpoint."""
    out = tmp_path / "run"
    cfgs = [ema_cfg(dataset, out, "MODEL_EMA.ENABLE", "False"), ema_cfg(dataset, out, "SOLVER.MAX_EPOCH", "2")]
    ema0, ema1 = _ema_of_each_rank(cfgs, tmp_path)
    saved = safe_torch_load(ck.checkpoint_dir(out) / ck.checkpoint_name(2))["ema_state"]
    for name, value in ema0.items():
        torch.testing.assert_close(saved[name], value, rtol=0, atol=0, msg=lambda m: f"saved {name}: {m}")
        torch.testing.assert_close(ema1[name], value, rtol=0, atol=0, msg=lambda m: f"rank 1 {name}: {m}")


def test_a_fresh_runs_ema_is_the_same_on_every_rank(dataset, tmp_path):
    """From a random init (different on each rank until DDP's broadcast) the first update, at decay 0,
    makes every rank's EMA the broadcast model (equal EMAs even when the EMA was built before the DDP wrap)."""
    out = tmp_path / "run"
    ema0, ema1 = _ema_of_each_rank([ema_cfg(dataset, out)], tmp_path)
    for name, value in ema0.items():
        torch.testing.assert_close(ema1[name], value, rtol=0, atol=0, msg=lambda m: f"rank 1 {name}: {m}")


def test_resume_without_ema_state_starts_the_ema_from_the_resumed_weights(dataset, tmp_path):
    """Epoch 1 without EMA, then a resumed run with EMA on (decay 0.999999: it barely moves in 2 steps): the
    EMA starts from the checkpoint's weights, not from the freshly initialised model's."""
    out = tmp_path / "run"
    train(ema_cfg(dataset, out, "MODEL_EMA.ENABLE", "False"))
    resumed_from = safe_torch_load(ck.checkpoint_dir(out) / ck.checkpoint_name(1))["model_state"]
    train(ema_cfg(dataset, out, "SOLVER.MAX_EPOCH", "2", "MODEL_EMA.DECAY", "0.999999"))
    ema = safe_torch_load(ck.checkpoint_dir(out) / ck.checkpoint_name(2))["ema_state"]
    moved = {n: float((resumed_from[n] - t).abs().max()) for n, t in ema.items() if t.is_floating_point()}
    assert max(moved.values()) < 1e-5, sorted(moved.items(), key=lambda kv: -kv[1])[:3]
