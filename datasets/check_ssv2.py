#!/usr/bin/env python
"""Check a Something-Something-V2 copy: the jsons against the video files, and decodability.

Reads ``something-something-v2-labels.json``, ``-train.json`` and ``-validation.json`` from
``DATA_DIR`` and the ``<id>.webm`` files in ``VIDEO_DIR`` (DATA.PATH_PREFIX), and reports:

- entries whose template (brackets removed) is not in the labels json, or that lack id/template;
- listed videos that are missing, and files in VIDEO_DIR that no split lists;
- with ``--decode``: videos that do not decode (8 frames over the whole video; decord with the
  PyAV fallback), checked in parallel with a progress bar.

Problems are printed and written to ``--report`` (``path_or_entry<TAB>problem``). The exit code is
1 when a listed video is missing or broken, or an entry is malformed, else 0.

Example::

    python datasets/check_ssv2.py /data/ssv2/labels /data/ssv2/20bn-something-something-v2 --decode --workers 8
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from regionvit_video.data.prepare import check_job, parallel_map

SPLIT_FILES = {"train": "something-something-v2-train.json", "validation": "something-something-v2-validation.json"}
LABELS_FILE = "something-something-v2-labels.json"


def check(data_dir: str, video_dir: str, *, decode: bool = False, workers: int = 1,
          extension: str = ".webm") -> tuple[list[tuple[str, str]], dict]:
    """Returns ``(problems, counts)``; problems are (path or entry, description)."""
    problems: list[tuple[str, str]] = []
    data_dir, video_dir = Path(data_dir), Path(video_dir)
    labels_path = data_dir / LABELS_FILE
    try:
        labels = json.loads(labels_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return [(str(labels_path), f"cannot read labels json: {e}")], {}
    listed: dict[str, str] = {}
    counts = {"classes": len(labels)}
    for split, name in SPLIT_FILES.items():
        path = data_dir / name
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            problems.append((str(path), f"cannot read: {e}"))
            continue
        counts[split] = len(entries)
        for n, entry in enumerate(entries):
            if not isinstance(entry, dict) or "id" not in entry or "template" not in entry:
                problems.append((f"{path}#{n}", "entry needs 'id' and 'template'"))
                continue
            template = str(entry["template"]).replace("[", "").replace("]", "")
            if template not in labels:
                problems.append((f"{path}#{n} (id {entry['id']})", f"template {entry['template']!r} not in {LABELS_FILE}"))
            listed[str(entry["id"])] = split
    present = {p.stem: p for p in video_dir.glob(f"*{extension}")} if video_dir.is_dir() else {}
    if not video_dir.is_dir():
        problems.append((str(video_dir), "video folder not found"))
    missing = sorted(set(listed) - set(present), key=lambda s: (len(s), s))
    problems += [(str(video_dir / f"{vid}{extension}"), f"listed in {listed[vid]} but missing") for vid in missing]
    unlisted = sorted(set(present) - set(listed))
    counts.update(present=len(present), missing=len(missing), unlisted=len(unlisted))
    if decode:
        paths = [str(present[vid]) for vid in listed if vid in present]
        broken = [(p, why) for p, why in parallel_map(check_job, paths, workers, "decode") if why]
        problems += [(p, f"does not decode: {why}") for p, why in broken]
        counts["broken"] = len(broken)
    return problems, {**counts, "unlisted_ids": unlisted[:20]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_dir", help="folder with the three something-something-v2-*.json files")
    p.add_argument("video_dir", help="folder with <id>.webm (DATA.PATH_PREFIX)")
    p.add_argument("--decode", action="store_true", help="also check that every listed video decodes")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    p.add_argument("--extension", default=".webm")
    p.add_argument("--report", default=None, help="write problems here (path<TAB>problem)")
    a = p.parse_args(argv)
    problems, counts = check(a.data_dir, a.video_dir, decode=a.decode, workers=a.workers, extension=a.extension)
    print("SSv2 copy: " + ", ".join(f"{k}={v}" for k, v in counts.items() if k != "unlisted_ids"))
    if counts.get("unlisted"):
        print(f"  {counts['unlisted']} video files are in no split (e.g. {counts['unlisted_ids'][:5]}); "
              "the test split's videos are expected here")
    for where, what in problems[:50]:
        print(f"  {where}: {what}")
    if len(problems) > 50:
        print(f"  ... {len(problems) - 50} more")
    if a.report:
        with open(a.report, "w", encoding="utf-8") as f:
            f.writelines(f"{where}\t{' '.join(what.split())}\n" for where, what in problems)
    print("OK" if not problems else f"{len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
