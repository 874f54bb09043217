"""Video data pipeline: decoding, datasets (Kinetics CSV layout, SSv2, lists of videos), sampling, transforms,
loaders."""
from regionvit_video.data.datasets import (DATASETS, DatasetFormatError, DatasetLayout, VideoDataset, VideoFile,
                                           VideoRecord, append_bad_video, list_videos, load_class_names,
                                           read_kinetics_csv, read_ssv2_split)
from regionvit_video.data.decoder import DecodeError, DecodeTimeout, decode_frames, open_video, read_frames
from regionvit_video.data.loader import (ResumableSampler, build_batch_transform, build_dataset, build_eval_dataset,
                                         build_loader, build_window_dataset, collate_videos, raise_hung_decode,
                                         resolve_class_names)
from regionvit_video.data.mixup import VideoMixup, build_mixup
from regionvit_video.data.sliding_window import SlidingWindowClips

__all__ = [
    "DATASETS", "DatasetFormatError", "DatasetLayout", "DecodeError", "DecodeTimeout", "ResumableSampler",
    "SlidingWindowClips", "VideoDataset", "VideoFile", "VideoMixup", "VideoRecord", "append_bad_video",
    "build_batch_transform", "build_dataset", "build_eval_dataset", "build_loader", "build_mixup",
    "build_window_dataset", "collate_videos", "decode_frames", "list_videos", "load_class_names", "open_video",
    "raise_hung_decode", "read_frames", "read_kinetics_csv", "read_ssv2_split", "resolve_class_names",
]
