"""The dataset preparation scripts in datasets/: CSV building, decode check, pre-resize, SSv2 check."""
import importlib.util
import os
import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from regionvit_video.data import read_kinetics_csv
from regionvit_video.data.video_writer import write_video
from tiny_datasets import class_clip, make_kinetics_folder, make_ssv2_folder

REPO = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "datasets" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    info = make_kinetics_folder(tmp_path_factory.mktemp("k"), num_classes=3, videos_per_class=4, size=(48, 64),
                                frames=12, seed=2)
    root = Path(info["prefix"])
    (root / "class_01" / "broken.mp4").write_bytes(b"\x00" * 1000)
    return root


def test_prepare_kinetics_splits_checks_and_excludes_bad_videos(tree, tmp_path, capsys):
    prep = _load("prepare_kinetics")
    out = tmp_path / "lists"
    assert prep.main([str(tree), str(out), "--val-fraction", "0.25", "--check", "--workers", "2"]) == 0
    bad = (out / "bad_videos.txt").read_text().splitlines()
    assert len(bad) == 1 and bad[0].startswith(str(tree / "class_01" / "broken.mp4") + "\t")
    assert "1 of 13 videos do not decode" in capsys.readouterr().out
    train = read_kinetics_csv(out / "train.csv", num_classes=3, path_prefix=str(tree))
    val = read_kinetics_csv(out / "val.csv", num_classes=3, path_prefix=str(tree))
    assert len(train) == 9 and len(val) == 3  # 4 per class, 1 per class to val, broken one dropped
    assert {r.label for r in val} == {0, 1, 2} and not {r.path for r in train} & {r.path for r in val}
    assert all(os.path.isfile(r.path) and Path(r.path).parent.name == f"class_0{r.label}" for r in train)
    assert (out / "test.csv").read_text() == (out / "val.csv").read_text()  # no test split: copy of val
    assert (out / "classes.txt").read_text().split("\n")[:3] == ["class_00", "class_01", "class_02"]


def test_prepare_kinetics_split_folders_class_file_and_resize(tree, tmp_path):
    prep = _load("prepare_kinetics")
    root = tmp_path / "k"
    for split, cls in [("train", "class_00"), ("train", "class_02"), ("val", "class_02")]:
        shutil.copytree(tree / cls, root / split / cls.replace("_", " "), ignore=shutil.ignore_patterns("broken*"))
    write_video(root / "train" / "class 00" / "extra.webm", class_clip(1, 12, 48, 64, np.random.default_rng(0)),
                codec="libvpx-vp9")
    (root / "train" / "class 00" / "broken.avi").write_bytes(b"RIFF" + b"\x00" * 100)
    names = tmp_path / "names.txt"
    names.write_text("class 02\nclass 00\nclass 01\n")
    out, small = tmp_path / "lists", tmp_path / "small"
    assert prep.main([str(root), str(out), "--split-folders", "--classes", str(names), "--sep", ",", "--workers",
                      "1", "--resize-short-side", "32", "--resized-root", str(small)]) == 0
    train = read_kinetics_csv(out / "train.csv", num_classes=3, path_prefix=str(small), separator=",")
    val = read_kinetics_csv(out / "val.csv", num_classes=3, path_prefix=str(small), separator=",")
    assert sorted({r.label for r in train}) == [0, 1] and {r.label for r in val} == {0}  # class 02 is label 0
    assert len(train) == 9 and all(r.path.endswith(".mp4") and os.path.isfile(r.path) for r in train + val)
    assert "broken.avi\tresize failed" in (out / "bad_videos.txt").read_text()
    with av.open(train[0].path) as c:
        s = c.streams.video[0]
        frames = sum(1 for _ in c.decode(s))
        assert (s.codec_context.name, s.codec_context.height, s.codec_context.width) == ("h264", 32, 42)
    assert frames == 12


def test_prepare_kinetics_rejects_separator_inside_paths(tree, tmp_path):
    prep = _load("prepare_kinetics")
    root = tmp_path / "k"
    shutil.copytree(tree / "class_00", root / "air drumming")
    with pytest.raises(SystemExit, match="contains the separator"):
        prep.main([str(root), str(tmp_path / "out"), "--workers", "1"])


def test_check_ssv2_finds_missing_unlisted_broken_and_unknown_templates(tmp_path, capsys):
    info = make_ssv2_folder(tmp_path / "ssv2", videos_per_class=2, size=(32, 48), frames=8)
    check = _load("check_ssv2")
    data, videos = info["data_dir"], Path(info["prefix"])
    assert check.main([data, str(videos), "--decode", "--workers", "1"]) == 0
    (videos / "1001.webm").unlink()
    (videos / "1002.webm").write_bytes(b"not a video")
    (videos / "99.webm").write_bytes(b"")
    entries = (Path(data) / "something-something-v2-validation.json")
    entries.write_text(entries.read_text().replace("Putting [something] on a surface", "Flying [something]", 1))
    report = tmp_path / "report.txt"
    assert check.main([data, str(videos), "--decode", "--workers", "1", "--report", str(report)]) == 1
    text = report.read_text()
    assert "1001.webm\tlisted in validation but missing" in text
    assert "1002.webm\tdoes not decode" in text
    assert "Flying [something]" in text and "not in something-something-v2-labels.json" in text
    assert "unlisted=1" in capsys.readouterr().out
