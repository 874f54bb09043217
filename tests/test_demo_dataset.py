"""The synthetic direction-paired action dataset: determinism, balance, reversal pairs, real files."""
import collections
import os

import numpy as np
import pytest

from regionvit_video.data.decoder import read_frames
from regionvit_video.demo.synthetic_actions import (
    CLASS_NAMES,
    PAIRED_CLASS,
    generate_clip,
    make_synthetic_actions,
    motion_label,
    render_clip,
    sample_clip_spec,
)

SMALL = dict(num_train=16, num_val=8, num_test=8, size=32, num_frames=8, fps=12.0, workers=0, progress=False)


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "data"
    return make_synthetic_actions(root, seed=3, **SMALL)


def _read_csv(path):
    rows = []
    for line in open(path).read().splitlines():
        rel, label = line.rsplit(" ", 1)
        rows.append((rel, int(label)))
    return rows


def _decoded(path):
    """Every frame, through the toolkit's decoder (decord, or PyAV where decord fails on the frame size)."""
    frames, _, _ = read_frames(path, lambda n, fps: range(n))
    return frames


def test_layout_balance_and_labels(small_dataset):
    root = small_dataset["root"]
    assert open(small_dataset["classes_file"]).read().splitlines() == list(CLASS_NAMES)
    for split, n in (("train", 16), ("val", 8), ("test", 8)):
        rows = _read_csv(small_dataset[f"{split}_csv"])
        assert len(rows) == n
        counts = collections.Counter(label for _, label in rows)
        assert set(counts) == set(range(8)) and len(set(counts.values())) == 1, counts
        for rel, label in rows:
            assert not os.path.isabs(rel) and rel.startswith(f"{split}/{CLASS_NAMES[label]}/")
            assert os.path.getsize(os.path.join(root, rel)) > 0
    # no temporary files left behind
    assert not [f for _, _, fs in os.walk(root) for f in fs if ".partial" in f]


def test_files_decode_at_the_requested_geometry(small_dataset):
    for rel, _ in _read_csv(small_dataset["val_csv"]):
        frames, indices, reader = read_frames(os.path.join(small_dataset["root"], rel), lambda n, fps: range(n))
        assert reader.num_frames == 8 and list(indices) == list(range(8))
        assert reader.fps == pytest.approx(12.0, rel=0.01)
        assert frames.shape == (8, 32, 32, 3) and frames.dtype == np.uint8
        assert frames.std() > 5  # not blank


def test_same_seed_same_frames_and_bytes_other_seed_differs(small_dataset, tmp_path):
    """On one machine a seed gives the same rendered frames, the same files byte for byte, and so the same
    decoded frames: drawing is numpy on the clip's own generators, RGB -> YUV is integer arithmetic
    (video_writer.rgb_to_yuv420p) and x264 runs single-threaded. Each stage is checked on its own, so a
    failure says which one is not reproducible."""
    spec = generate_clip(3, "train", 4, 32, 8, 12.0)
    first = render_clip(spec)
    for _ in range(3):
        np.testing.assert_array_equal(render_clip(spec), first, err_msg="drawing is not reproducible")
    again = make_synthetic_actions(tmp_path / "again", seed=3, **{**SMALL, "workers": 2})  # and other workers
    other = make_synthetic_actions(tmp_path / "other", seed=4, **SMALL)
    rows = _read_csv(small_dataset["train_csv"])
    assert rows == _read_csv(again["train_csv"]) == _read_csv(other["train_csv"])
    differ = 0
    for rel, _ in rows:
        path_a, path_b = os.path.join(small_dataset["root"], rel), os.path.join(again["root"], rel)
        np.testing.assert_array_equal(_decoded(path_a), _decoded(path_b), err_msg=f"decoded frames differ: {rel}")
        a = open(path_a, "rb").read()
        assert a == open(path_b, "rb").read(), f"same frames, other bytes: {rel}"
        differ += a != open(os.path.join(other["root"], rel), "rb").read()
    assert differ == len(rows)  # every video depends on the seed


def test_idempotent_and_keyed_by_parameters(tmp_path):
    root = tmp_path / "d"
    params = dict(SMALL, num_train=8, num_val=8, num_test=0)
    first = make_synthetic_actions(root, **params)
    assert first["generated"]
    path = os.path.join(root, _read_csv(first["train_csv"])[0][0])
    mtime = os.stat(path).st_mtime_ns
    second = make_synthetic_actions(root, **params)
    assert not second["generated"] and os.stat(path).st_mtime_ns == mtime
    # A missing file makes the folder incomplete: regenerated.
    os.remove(path)
    assert make_synthetic_actions(root, **params)["generated"] and os.path.isfile(path)
    # Other parameters: regenerated to the new size.
    third = make_synthetic_actions(root, **dict(params, size=40))
    assert third["generated"] and _decoded(path).shape[1:3] == (40, 40)


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="num_val"):
        make_synthetic_actions(tmp_path, num_val=-1)
    with pytest.raises(ValueError, match="size"):
        make_synthetic_actions(tmp_path, size=8)
    with pytest.raises(ValueError, match="label"):
        sample_clip_spec(8, np.random.default_rng(0))


def _measured_motion(spec):
    """Label read off the rendered target mask alone (centroid, area, orientation around the centre)."""
    _, mask = render_clip(spec, return_mask=True)
    t, n, _ = mask.shape
    ys, xs = np.mgrid[0:n, 0:n] + 0.5
    area = mask.sum(axis=(1, 2))
    cx = (mask * xs).sum(axis=(1, 2)) / area
    cy = (mask * ys).sum(axis=(1, 2)) / area
    # Direction from the rotation centre to the mask centroid (every shape's centroid is off-centre).
    phi = np.unwrap(np.arctan2(cy - spec.center_y, cx - spec.center_x))
    turn, growth = phi[-1] - phi[0], area[-1] / area[0]
    dx, dy = cx[-1] - cx[0], cy[-1] - cy[0]
    if np.hypot(dx, dy) > 0.25 * n:  # translation classes move 0.35-0.55 of the frame, others < 0.1
        if abs(dx) > abs(dy):
            return 1 if dx > 0 else 0
        return 3 if dy > 0 else 2
    if abs(np.log(growth)) > np.log(1.8):
        return 4 if growth > 1 else 5
    if abs(turn) > np.deg2rad(60):
        return 6 if turn > 0 else 7  # angles grow clockwise on screen (y down)
    return -1  # no clear motion


@pytest.mark.parametrize("label", range(8))
def test_reversing_a_video_gives_its_paired_class(label):
    pair = PAIRED_CLASS[label]
    assert PAIRED_CLASS[pair] == label and pair != label
    for index in range(label, label + 8 * 6, 8):  # six clips of this class
        spec = generate_clip(11, "train", index, 48, 12, 15.0)
        assert spec.label == label == motion_label(spec) == _measured_motion(spec)
        rev = spec.reversed()
        assert rev.label == pair == motion_label(rev) == _measured_motion(rev)
        # Playing the frames backwards is exactly a clip of the paired class.
        np.testing.assert_array_equal(render_clip(rev), render_clip(spec)[::-1])


def test_reversed_file_matches_the_paired_clip(small_dataset):
    rel, label = _read_csv(small_dataset["train_csv"])[4]  # a "grow" clip
    spec = generate_clip(3, "train", 4, 32, 8, 12.0)
    assert spec.label == label == 4
    decoded = _decoded(os.path.join(small_dataset["root"], rel)).astype(np.float32)
    paired = render_clip(spec.reversed()).astype(np.float32)
    err_reversed = np.abs(decoded[::-1] - paired).mean()
    err_forward = np.abs(decoded - paired).mean()
    assert err_reversed < 3.5  # codec error only (the clips carry mild sensor noise)
    assert err_forward > err_reversed + 2.0


def test_single_frames_do_not_give_the_direction_away():
    """Within a pair, the first-frame and last-frame statistics are mirrored: no static cue."""
    rng = np.random.default_rng(0)
    specs = [sample_clip_spec(lab, rng, size=64, num_frames=16) for lab in (0, 1) for _ in range(300)]
    start_left = np.array([s.center_x[0] for s in specs[:300]])
    start_right = np.array([s.center_x[0] for s in specs[300:]])
    end_right = np.array([s.center_x[-1] for s in specs[300:]])
    # The left-movers start where the right-movers end, and the position distribution of every frame
    # pools to the same one across the pair.
    assert abs(np.median(start_left) - np.median(end_right)) < 2.0
    assert np.median(start_left) > np.median(start_right) + 10


def test_make_demo_pipeline_end_to_end(tmp_path, monkeypatch, capsys):
    """`python -m regionvit_video.demo` on a tiny dataset: every step runs and the summary points at real files."""
    import json

    from regionvit_video.demo import __main__ as demo

    monkeypatch.setattr(demo, "DEMO_DATA", dict(num_train=16, num_val=8, num_test=8, size=32, num_frames=8,
                                                 fps=12.0, seed=0, workers=0, progress=False))
    out = tmp_path / "out"
    code = demo.main(["--data", str(tmp_path / "data"), "--output", str(out), "--threads", "1",
                      "DATA.NUM_FRAMES", "2", "DATA.TRAIN_JITTER_SCALES", "[32,32]", "DATA.TRAIN_CROP_SIZE", "32",
                      "DATA.TEST_SCALE", "32", "DATA.TEST_CROP_SIZE", "32", "SOLVER.MAX_EPOCH", "1",
                      "TRAIN.BATCH_SIZE", "8", "DATA_LOADER.NUM_WORKERS", "0", "SOLVER.WARMUP_EPOCHS", "0.0"])
    assert code == 0
    summary = json.loads((out / "demo_summary.json").read_text())
    assert 0.0 <= summary["test_top1"] <= 100.0 and os.path.isfile(summary["checkpoint"])
    index = open(os.path.join(summary["features_dir"], "index.csv")).read().splitlines()
    assert len(index) == 1 + 8  # header + one test video per class
    assert json.loads((out / "prediction.json").read_text())["top_k"][0]["class"] in CLASS_NAMES
    assert (out / "test_results.json").is_file()
    printed = capsys.readouterr().out
    assert "test top-1" in printed and str(out / "training_curves.png") in printed
