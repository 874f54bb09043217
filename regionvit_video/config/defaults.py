"""Every configuration key the toolkit reads, with its default and meaning.

An fvcore ``CfgNode`` tree with PySlowFast's key names where PySlowFast has one. YAML files in
``configs/`` override these; ``KEY VALUE`` pairs on the command line override the YAML. Batch sizes
are per process (one process per GPU under torchrun). Only builders read the config: modules take
plain typed arguments.
"""
from fvcore.common.config import CfgNode

_C = CfgNode()

# ---------------------------------------------------------------------------------------------- #
# Top level
# ---------------------------------------------------------------------------------------------- #
# Where checkpoints, logs, stats, plots and results go.
_C.OUTPUT_DIR = "./output"
# Seed for python, numpy and torch (each process adds its rank; each worker its id).
_C.RNG_SEED = 0
# Log a progress line every LOG_PERIOD iterations.
_C.LOG_PERIOD = 10
# torch.distributed backend: "auto" picks nccl on CUDA and gloo on CPU.
_C.DIST_BACKEND = "auto"
# "auto" (CUDA if available), "cuda" or "cpu".
_C.DEVICE = "auto"

# ---------------------------------------------------------------------------------------------- #
# Training
# ---------------------------------------------------------------------------------------------- #
_C.TRAIN = CfgNode()
_C.TRAIN.ENABLE = True
# "kinetics" (Kinetics CSV layout, also custom datasets) or "ssv2".
_C.TRAIN.DATASET = "kinetics"
# Clips per process per iteration.
_C.TRAIN.BATCH_SIZE = 8
# Run the single-view validation every EVAL_PERIOD epochs (0: never).
_C.TRAIN.EVAL_PERIOD = 1
# Save an epoch checkpoint every CHECKPOINT_PERIOD epochs (and always after the last).
_C.TRAIN.CHECKPOINT_PERIOD = 1
# Also save a mid-epoch checkpoint every CHECKPOINT_ITER_PERIOD iterations (0: off).
_C.TRAIN.CHECKPOINT_ITER_PERIOD = 0
# Keep the newest CHECKPOINT_KEEP checkpoints (0: keep all).
_C.TRAIN.CHECKPOINT_KEEP = 3
# Resume from the newest checkpoint in OUTPUT_DIR/checkpoints if there is one.
_C.TRAIN.AUTO_RESUME = True
# Start from this toolkit checkpoint's weights (fine-tuning; optimizer state not restored).
_C.TRAIN.CHECKPOINT_FILE_PATH = ""
# Autocast on CUDA: "none", "bf16" or "fp16" (fp16 uses a GradScaler). Also the precision of every
# inference pass: validation, test, features and prediction (engine/build.py: inference_autocast). The GPU
# recipes in configs/ set bf16; on CPU every value runs in float32 (a warning says so).
_C.TRAIN.MIXED_PRECISION = "none"
# False: on CUDA, TF32 matmuls/convolutions and cudnn.benchmark (fast; a resumed run then matches an
# uninterrupted one to rounding, not bit for bit). True: torch.use_deterministic_algorithms(True,
# warn_only=True), cudnn.deterministic, no TF32, CUBLAS_WORKSPACE_CONFIG=:4096:8 (slower; on CUDA a
# resumed run is then bitwise equal). See engine/build.py configure_backends.
_C.TRAIN.DETERMINISTIC = False
# Accumulate gradients over this many iterations before an optimizer step.
_C.TRAIN.GRAD_ACCUM_STEPS = 1
# Stop the run when more than this fraction of an epoch's samples failed to decode.
_C.TRAIN.MAX_BAD_VIDEO_FRACTION = 0.1

# ---------------------------------------------------------------------------------------------- #
# Testing (the multi-view protocol of the paper)
# ---------------------------------------------------------------------------------------------- #
_C.TEST = CfgNode()
_C.TEST.ENABLE = True
_C.TEST.DATASET = "kinetics"
# Videos per process per iteration (each expands to NUM_ENSEMBLE_VIEWS x NUM_SPATIAL_CROPS views).
_C.TEST.BATCH_SIZE = 4
# Checkpoint to test; empty: the newest in OUTPUT_DIR/checkpoints. Neither existing is an error.
_C.TEST.CHECKPOINT_FILE_PATH = ""
# Temporal clips per video.
_C.TEST.NUM_ENSEMBLE_VIEWS = 1
# Spatial crops per clip along the long side: 1 (centre) or 3 (start, centre, end).
_C.TEST.NUM_SPATIAL_CROPS = 3
# Split file to test on: "test" reads test.csv (Kinetics) or the validation json (SSv2).
_C.TEST.SPLIT = "test"

# ---------------------------------------------------------------------------------------------- #
# Data
# ---------------------------------------------------------------------------------------------- #
_C.DATA = CfgNode()
# Folder with {train,val,test}.csv (Kinetics layout) or the SSv2 json files.
_C.DATA.PATH_TO_DATA_DIR = ""
# Prepended to every video path of the lists (SSv2: the folder of <id>.webm).
_C.DATA.PATH_PREFIX = ""
# Separator between path and label in the CSV lists.
_C.DATA.PATH_LABEL_SEPARATOR = " "
# Text file of class names, one per line (line i: class i). Empty: the dataset's own.
_C.DATA.CLASS_NAMES = ""
# Frames per clip.
_C.DATA.NUM_FRAMES = 8
# "uniform": NUM_FRAMES segments over the whole video (the paper); "dense": NUM_FRAMES frames
# SAMPLING_RATE apart in a window at a random (train) or evenly spaced (test) position.
_C.DATA.SAMPLING = "uniform"
_C.DATA.SAMPLING_RATE = 8
# Frame rate the dense SAMPLING_RATE refers to (videos at other rates are resampled in time).
_C.DATA.TARGET_FPS = 30
# Training: short side scaled uniformly into this range, then a random square crop.
_C.DATA.TRAIN_JITTER_SCALES = [256, 320]
_C.DATA.TRAIN_CROP_SIZE = 224
# Testing: short side scaled to TEST_SCALE, then crops of TEST_CROP_SIZE.
_C.DATA.TEST_SCALE = 256
_C.DATA.TEST_CROP_SIZE = 224
# Per-channel normalisation (ImageNet, as the RegionViT checkpoints were trained with).
_C.DATA.MEAN = [0.485, 0.456, 0.406]
_C.DATA.STD = [0.229, 0.224, 0.225]
# Horizontal flip in training. SSv2 configs set it False (left/right is in its labels).
_C.DATA.RANDOM_FLIP = True
# "decord" (default) or "pyav".
_C.DATA.DECODER = "decord"
# Decoder threads per reader.
_C.DATA.DECODE_THREADS = 1
# Seconds a single video decode may take before it counts as failed (0: no bound). Enforced by a
# SIGALRM timer in the decoding process; a DataLoader worker stuck in native code is also ended
# after 2 x DECODE_TIMEOUT + 10 s (see regionvit_video/data/decoder.py).
_C.DATA.DECODE_TIMEOUT = 60.0
# Attempts at a failing training video before another sample replaces it.
_C.DATA.NUM_RETRIES = 2

# ---------------------------------------------------------------------------------------------- #
# Augmentation
# ---------------------------------------------------------------------------------------------- #
_C.AUG = CfgNode()
# RandAugment with the same parameters for all frames of a clip.
_C.AUG.RAND_AUGMENT = True
_C.AUG.RA_MAGNITUDE = 9
_C.AUG.RA_NUM_LAYERS = 2
# Random erasing probability (same rectangle on all frames).
_C.AUG.RE_PROB = 0.25

# ---------------------------------------------------------------------------------------------- #
# Mixup / CutMix on video batches (spatial dimensions only)
# ---------------------------------------------------------------------------------------------- #
_C.MIXUP = CfgNode()
_C.MIXUP.ENABLE = True
_C.MIXUP.ALPHA = 0.8
_C.MIXUP.CUTMIX_ALPHA = 1.0
# Probability of applying mixup or cutmix to a batch.
_C.MIXUP.PROB = 1.0
# Probability of cutmix rather than mixup when both are on.
_C.MIXUP.SWITCH_PROB = 0.5
_C.MIXUP.LABEL_SMOOTHING = 0.1

# ---------------------------------------------------------------------------------------------- #
# Model
# ---------------------------------------------------------------------------------------------- #
_C.MODEL = CfgNode()
# Registered model name (regionvit_video.models.list_models()).
_C.MODEL.ARCH = "regionvit_video_small"
_C.MODEL.NUM_CLASSES = 400
# Image checkpoint (official RegionViT ImageNet-1K file) to inflate; empty: random init.
_C.MODEL.PRETRAINED = ""
# Temporal attention init when inflating: "zero" (fresh, temporal_fc zeroed) or "copy"
# (TimeSformer's rule: copy the block's spatial attention, temporal_fc zeroed).
_C.MODEL.TEMPORAL_INIT = "zero"
# Init of the temporal parameters of a model built without MODEL.PRETRAINED (inflation always sets both
# to zero). TIME_EMBED_INIT: "zeros" (TimeSformer's), "trunc_normal" (std 0.02) or "normal" (std 1);
# TEMPORAL_FC_INIT: "zeros" (TimeSformer's) or "trunc_normal". Zeros/zeros starts exactly invariant to
# frame order; from scratch on order-dependent classes use "normal" / "trunc_normal" (configs/demo.yaml).
_C.MODEL.TIME_EMBED_INIT = "zeros"
_C.MODEL.TEMPORAL_FC_INIT = "zeros"
_C.MODEL.DROP_PATH_RATE = 0.1
_C.MODEL.DROPOUT_RATE = 0.0
# Recompute each block's activations in the backward pass (saves memory).
_C.MODEL.ACT_CHECKPOINT = False
# torch.compile the model (nn.Module.compile: state_dict keys unchanged) for training and inference. The first
# iterations compile (minutes on CPU); whether it pays: benchmarks/README.md. MODEL.COMPILE_BACKEND: torch.compile's
# backend ("inductor" generates kernels; "aot_eager" only traces, to check a model compiles). MODEL.COMPILE_SCOPE:
# "model" compiles the whole model as one graph; "blocks" compiles each repeated block (regional compilation:
# blocks of one shape share a graph, so it compiles faster; the stems and heads run eagerly).
_C.MODEL.COMPILE = False
_C.MODEL.COMPILE_BACKEND = "inductor"
_C.MODEL.COMPILE_SCOPE = "model"

# ---------------------------------------------------------------------------------------------- #
# Optimisation
# ---------------------------------------------------------------------------------------------- #
_C.SOLVER = CfgNode()
# Any timm optimizer name: "adamw", "sgd", ...
_C.SOLVER.OPTIMIZING_METHOD = "adamw"
# Learning rate for a global batch of SOLVER.REFERENCE_BATCH_SIZE clips (TRAIN.BATCH_SIZE x processes x
# TRAIN.GRAD_ACCUM_STEPS). LR_SCALING "none": used as it is, whatever the global batch; "linear": BASE_LR,
# WARMUP_START_LR and COSINE_END_LR are multiplied by global batch / REFERENCE_BATCH_SIZE (the linear
# scaling rule, as PySlowFast's SOLVER.BASE_LR_SCALE_NUM_SHARDS and mmaction2's auto_scale_lr do). The log
# prints the global batch, the processes and the effective lr.
_C.SOLVER.BASE_LR = 2e-4
_C.SOLVER.LR_SCALING = "none"
_C.SOLVER.REFERENCE_BATCH_SIZE = 64
_C.SOLVER.WEIGHT_DECAY = 1e-4
_C.SOLVER.MOMENTUM = 0.9
_C.SOLVER.MAX_EPOCH = 30
# "cosine" (timm's CosineLRScheduler, per iteration, to COSINE_END_LR) or "steps_with_relative_lrs"
# (PySlowFast's: LRS[i] * BASE_LR from epoch STEPS[i] on).
_C.SOLVER.LR_POLICY = "cosine"
# steps_with_relative_lrs: epochs where each relative lr starts (first 0, increasing, < MAX_EPOCH) and the
# relative lrs, e.g. STEPS [0, 11, 14], LRS [1, 0.1, 0.01] (TimeSformer's K400 recipe).
_C.SOLVER.STEPS = []
_C.SOLVER.LRS = []
_C.SOLVER.WARMUP_EPOCHS = 2.0
_C.SOLVER.WARMUP_START_LR = 1e-6
_C.SOLVER.COSINE_END_LR = 1e-6
# Clip the gradient norm to this value (0: off).
_C.SOLVER.CLIP_GRAD_NORM = 0.0

# Exponential moving average of the weights.
_C.MODEL_EMA = CfgNode()
_C.MODEL_EMA.ENABLE = False
_C.MODEL_EMA.DECAY = 0.9998

# ---------------------------------------------------------------------------------------------- #
# Data loading
# ---------------------------------------------------------------------------------------------- #
_C.DATA_LOADER = CfgNode()
# Worker processes per training/testing process.
_C.DATA_LOADER.NUM_WORKERS = 4
_C.DATA_LOADER.PIN_MEMORY = True
# Keep freed memory in the loading processes (the workers, or the main process with NUM_WORKERS 0)
# for the next clips instead of returning it to the OS after each one: glibc mallopt, no effect
# elsewhere; the training transform then runs faster (regionvit_video/utils/malloc.py; figures in
# benchmarks/README.md).
_C.DATA_LOADER.RETAIN_FREED_MEMORY = True
# Training clips leave the loading processes as augmented uint8 (C, T, H, W) and are normalised and
# randomly erased (AUG.RE_PROB) on the training device, batch by batch, as timm's PrefetchLoader
# does: a quarter of the bytes through worker shared memory, pinned memory and the host-to-device
# copy, and less work per clip in the workers (benchmarks/bench_loader.py, figures in
# benchmarks/README.md). False: the workers return normalised, erased float clips (PySlowFast's way).
# val/test views are always normalised in the workers.
_C.DATA_LOADER.NORMALIZE_ON_DEVICE = True

# ---------------------------------------------------------------------------------------------- #
# Feature extraction
# ---------------------------------------------------------------------------------------------- #
_C.FEATURES = CfgNode()
# Extract features. An inference job: TRAIN.ENABLE and TEST.ENABLE then default to False (derived
# in config/load.py, logged) unless set explicitly in the YAML chain or on the command line.
# Weights: TEST.CHECKPOINT_FILE_PATH, else the newest checkpoint in OUTPUT_DIR/checkpoints, else
# MODEL.PRETRAINED (inflated).
_C.FEATURES.ENABLE = False
# A Kinetics-layout CSV or a folder of videos (searched recursively).
_C.FEATURES.INPUT = ""
# "video": one vector per video (test views averaged); "clips": a sliding window over the video.
_C.FEATURES.MODE = "video"
# In "video" mode keep every view (V, D) instead of the mean (D).
_C.FEATURES.KEEP_VIEWS = False
# Sliding window stride (in STRIDE_UNIT) and window length in frames for "clips" mode.
_C.FEATURES.STRIDE = 16.0
_C.FEATURES.STRIDE_UNIT = "frames"
_C.FEATURES.WINDOW = 64
# Also store the pooled maps of forward_intermediates: RegionViT's 4 stages (local tokens), TimeSformer's
# blocks (patch tokens).
_C.FEATURES.STAGE_FEATURES = False
# "float32" or "float16".
_C.FEATURES.DTYPE = "float32"
_C.FEATURES.BATCH_SIZE = 4

# ---------------------------------------------------------------------------------------------- #
# Single-video prediction (engine/predict.py; these keys were DEMO.* before)
# ---------------------------------------------------------------------------------------------- #
_C.PREDICT = CfgNode()
# Predict the top-k classes of PREDICT.INPUT with the test's checkpoint and views. As FEATURES.ENABLE:
# TRAIN.ENABLE and TEST.ENABLE then default to False unless set explicitly.
_C.PREDICT.ENABLE = False
_C.PREDICT.INPUT = ""
_C.PREDICT.TOP_K = 5

# ---------------------------------------------------------------------------------------------- #
# Timeline of a long video or a live stream (engine/timeline.py)
# ---------------------------------------------------------------------------------------------- #
_C.TIMELINE = CfgNode()
# Slide a window over TIMELINE.INPUT and write OUTPUT_DIR/timeline.{csv,png,json} and timeline_segments.csv,
# with the test's checkpoint, frames and views in every window. As FEATURES.ENABLE: TRAIN.ENABLE and
# TEST.ENABLE then default to False unless set explicitly.
_C.TIMELINE.ENABLE = False
# A video file; or a live source read with PyAV as it arrives: a camera ("/dev/video0"), a URL ("rtsp://...",
# "http://...") or "-" for a stream on stdin (e.g. MPEG-TS: ffmpeg ... -f mpegts - | python run_net.py ...).
_C.TIMELINE.INPUT = ""
# Window length and stride in seconds (round(seconds x fps) frames; windows start every stride while they fit in
# the video). DATA.NUM_FRAMES frames are sampled in each window as the test samples a whole video
# (DATA.SAMPLING, TEST.NUM_ENSEMBLE_VIEWS clips), each with the TEST.NUM_SPATIAL_CROPS crops. Set the window to
# the length of what the model was trained to recognise (the demo's clips: about 1 s; Kinetics: up to 10 s).
_C.TIMELINE.WINDOW_SECONDS = 2.0
_C.TIMELINE.STRIDE_SECONDS = 1.0
# Windows whose top-1 probability is below this are left out of timeline_segments.csv (0: none left out).
_C.TIMELINE.SCORE_THRESHOLD = 0.0
# Classes (names and probabilities) per window in timeline.csv.
_C.TIMELINE.TOP_K = 5
# Windows per forward pass (a file; a live source predicts each window as it completes).
_C.TIMELINE.BATCH_SIZE = 4
# A live source that sends no frame for this long (or none within this long of starting) is reported as
# stalled and the job ends (exit status 1) with what it predicted written.
_C.TIMELINE.STALL_SECONDS = 10.0
# When the model is slower than a live source: "realtime" skips the windows it could not take in time (its
# predictions stay current; skipped windows are counted), "every_window" makes the reader wait (every window is
# predicted, the predictions fall behind). "auto": realtime for cameras and URLs, every_window for stdin.
_C.TIMELINE.LIVE_MODE = "auto"
# The decoder of a video file (a live source is always read with PyAV). PyAV: it continues from where it stopped
# and keeps nothing else, so memory stays flat however long the video; decord's loading process grew from 1.0 to
# 2.1 GB between a 1- and a 10-minute video, and was 2.7x slower on the dense windows (benchmarks/README.md).
_C.TIMELINE.DECODER = "pyav"


# ---------------------------------------------------------------------------------------------- #
# Export (engine/export.py): the test's weights as a pretrained folder or an ONNX file
# ---------------------------------------------------------------------------------------------- #
_C.EXPORT = CfgNode()
# Export the checkpoint the test would use (TEST.CHECKPOINT_FILE_PATH, else the newest in OUTPUT_DIR) to
# OUTPUT_DIR/export/ with a parity check on a real clip in OUTPUT_DIR/export/export_report.json. As
# FEATURES.ENABLE: TRAIN.ENABLE and TEST.ENABLE then default to False unless set explicitly.
_C.EXPORT.ENABLE = False
# "pretrained": model.safetensors + config.json (models.from_pretrained rebuilds it, no pickle);
# "onnx": model.onnx (opset EXPORT.OPSET, dynamic batch, input B, 3, T, H, W at the test's size).
_C.EXPORT.FORMAT = "pretrained"
_C.EXPORT.OPSET = 18
# "model": the checkpoint's model_state (what the test evaluates); "ema": its EMA weights.
_C.EXPORT.WEIGHTS = "model"
# The video of the parity check (its test views); "" = the first video of the test list.
_C.EXPORT.INPUT = ""


def get_cfg() -> CfgNode:
    """A fresh copy of the defaults."""
    return _C.clone()
