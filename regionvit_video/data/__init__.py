"""Video data pipeline: decoding, datasets (Kinetics CSV layout, SSv2), sampling, transforms, loaders."""
from regionvit_video.data.datasets import (DatasetFormatError, VideoDataset, VideoRecord, append_bad_video,
                                           load_class_names, read_kinetics_csv, read_ssv2_split)
from regionvit_video.data.decoder import DecodeError, DecodeTimeout, open_video, read_frames
from regionvit_video.data.loader import (ResumableSampler, build_batch_transform, build_dataset, build_loader,
                                         collate_videos, raise_hung_decode)
from regionvit_video.data.mixup import VideoMixup, build_mixup

__all__ = [
    "DatasetFormatError", "DecodeError", "DecodeTimeout", "ResumableSampler", "VideoDataset", "VideoMixup",
    "VideoRecord", "append_bad_video", "build_batch_transform", "build_dataset", "build_loader", "build_mixup",
    "collate_videos", "load_class_names", "open_video", "raise_hung_decode", "read_frames", "read_kinetics_csv",
    "read_ssv2_split",
]
