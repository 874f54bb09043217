"""Video data pipeline: decoding, datasets (Kinetics CSV layout, SSv2, lists of videos), sampling, transforms,
loaders."""
from regionvit_video.data.datasets import (DATASETS, DatasetFormatError, DatasetLayout, VideoDataset, VideoFile,
                                           VideoRecord, append_bad_video, list_videos, load_class_names,
                                           read_kinetics_csv, read_ssv2_split)
from regionvit_video.data.decoder import DecodeError, DecodeTimeout, decode_frames, open_video, read_frames
from regionvit_video.data.loader import (ResumableSampler, build_batch_transform, build_dataset, build_eval_dataset,
                                         build_live_windows, build_loader, build_timeline_dataset,
                                         build_window_dataset, collate_videos, raise_hung_decode, resolve_class_names)
from regionvit_video.data.long_video import WindowFrames, WindowPlan, plan_windows, window_offsets, window_views
from regionvit_video.data.mixup import VideoMixup, build_mixup
from regionvit_video.data.sliding_window import SlidingWindowClips
from regionvit_video.data.stream import LiveWindows, StreamError, StreamStalled, StreamWindow, is_live_source

__all__ = [
    "DATASETS", "DatasetFormatError", "DatasetLayout", "DecodeError", "DecodeTimeout", "LiveWindows",
    "ResumableSampler", "SlidingWindowClips", "StreamError", "StreamStalled", "StreamWindow", "VideoDataset",
    "VideoFile", "VideoMixup", "VideoRecord", "WindowFrames", "WindowPlan", "append_bad_video",
    "build_batch_transform", "build_dataset", "build_eval_dataset", "build_live_windows", "build_loader",
    "build_mixup", "build_timeline_dataset", "build_window_dataset", "collate_videos", "decode_frames",
    "is_live_source", "list_videos", "load_class_names", "open_video", "plan_windows", "raise_hung_decode",
    "read_frames", "read_kinetics_csv", "read_ssv2_split", "resolve_class_names", "window_offsets", "window_views",
]
