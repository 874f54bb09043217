"""Single-video prediction: top-k from the test views, class names, clear errors."""
import json
import os

import numpy as np
import pytest
import torch

from regionvit_video.config.load import load_config
from regionvit_video.data import resolve_class_names
from regionvit_video.data.decoder import DecodeError, read_frames
from regionvit_video.data.sampling import uniform_indices
from regionvit_video.data.transforms import eval_views
from regionvit_video.engine import NoCheckpointError
from regionvit_video.engine.build import build_model
from regionvit_video.engine.predict import predict

REALSHORT = os.path.join(os.path.dirname(__file__), "data", "realshort.mp4")
NAMES = ["move_left", "move_right", "move_up", "move_down", "grow", "shrink", "rotate_cw", "rotate_ccw"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    (root / "data").mkdir()
    (root / "data" / "classes.txt").write_text("\n".join(NAMES) + "\n")
    cfg = _cfg(root)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():  # a head that separates the classes clearly, temporal weights non-zero
        for name, p in model.named_parameters():
            if "temporal_fc" in name or "time_embed" in name or name.startswith("head."):
                p.normal_(0, 0.5)
    torch.save({"model_state": model.state_dict()}, root / "ckpt.pyth")
    return root, model


def _cfg(root, *opts):
    base = ["MODEL.ARCH", "regionvit_video_pico", "MODEL.NUM_CLASSES", "8", "DATA.NUM_FRAMES", "4",
            "DATA.TEST_SCALE", "32", "DATA.TEST_CROP_SIZE", "32", "TEST.NUM_SPATIAL_CROPS", "3",
            "TEST.NUM_ENSEMBLE_VIEWS", "2", "DATA.PATH_TO_DATA_DIR", str(root / "data"), "OUTPUT_DIR", str(root / "out"),
            "TEST.CHECKPOINT_FILE_PATH", str(root / "ckpt.pyth"), "PREDICT.ENABLE", "True", "PREDICT.INPUT", REALSHORT,
            "TRAIN.ENABLE", "False", "TEST.ENABLE", "False"]
    return load_config(None, base + list(opts), check_paths=False)


def test_top5_is_the_view_averaged_softmax(trained, capsys):
    root, model = trained
    result = predict(_cfg(root))
    # Expected: softmax of each of the 2 x 3 views, averaged.
    idx = lambda n, fps: np.concatenate([uniform_indices(n, 4, train=False, clip_idx=k, num_clips=2) for k in (0, 1)])
    frames = torch.from_numpy(read_frames(REALSHORT, idx)[0])
    views = torch.cat([eval_views(frames[k * 4:(k + 1) * 4], scale=32, crop_size=32, num_crops=3,
                                  mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)) for k in (0, 1)])
    with torch.no_grad():
        probs = model(views).softmax(-1).mean(0)
    order = probs.argsort(descending=True)[:5].tolist()
    assert [x["index"] for x in result["top_k"]] == order
    assert [x["class"] for x in result["top_k"]] == [NAMES[i] for i in order]  # from classes.txt in the data dir
    np.testing.assert_allclose([x["probability"] for x in result["top_k"]], probs[order].numpy(), rtol=1e-5)
    assert result["views"] == 6
    printed = capsys.readouterr().out
    assert NAMES[order[0]] in printed and "%" in printed
    saved = json.loads((root / "out" / "prediction.json").read_text())
    assert saved["top_k"][0]["class"] == NAMES[order[0]]


def test_class_names_sources(trained, tmp_path):
    root, _ = trained
    names_file = tmp_path / "names.txt"
    names_file.write_text("".join(f"n{i}\n" for i in range(8)))
    def names(*opts):  # the prediction's rule: a classes.txt next to the lists counts
        return resolve_class_names(_cfg(root, *opts), look_in_data_dir=True)

    assert names("DATA.CLASS_NAMES", str(names_file))[3] == "n3"
    assert names() == NAMES
    assert names("DATA.PATH_TO_DATA_DIR", str(tmp_path)) == [f"class_{i}" for i in range(8)]
    result = predict(_cfg(root, "PREDICT.TOP_K", "3", "DATA.CLASS_NAMES", str(names_file)))
    assert len(result["top_k"]) == 3 and all(x["class"].startswith("n") for x in result["top_k"])


def test_errors_are_clear(trained, tmp_path):
    root, _ = trained
    with pytest.raises(FileNotFoundError, match="PREDICT.INPUT"):
        predict(_cfg(root, "PREDICT.INPUT", str(tmp_path / "missing.mp4")))
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 1000)
    with pytest.raises(DecodeError, match="broken.mp4"):
        predict(_cfg(root, "PREDICT.INPUT", str(broken)))
    with pytest.raises(NoCheckpointError):
        predict(_cfg(root, "TEST.CHECKPOINT_FILE_PATH", "", "OUTPUT_DIR", str(tmp_path / "empty")))
