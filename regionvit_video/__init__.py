"""regionvit-video: RegionViT with divided space-time attention for video action recognition.

Paper: Chen et al., "RegionViT: Regional-to-Local Attention for Vision Transformers", ICLR 2022
(https://arxiv.org/abs/2106.02689). The video extension follows TimeSformer's divided space-time
attention (Bertasius et al., ICML 2021): a temporal attention before every R2L encoder.
"""
from regionvit_video._compat import install_pytorchvideo_shim as _install_pytorchvideo_shim

_install_pytorchvideo_shim()

__version__ = "0.1.0"
