"""Multi-head attention with RegionViT's relative position bias, run through ``F.scaled_dot_product_attention``.

One module serves RegionViT's regional self-attention (RSA: plain attention over the regional tokens of
an image), its local self-attention (LSA: inside each window [regional token, ws*ws local tokens], with
the relative-position bias on the local-local block and the padding mask) and, in the video model, the
temporal attention (no bias). Parameter names (``qkv``, ``proj``, ``rel_pos``) match the official
``AttentionWithRelPos`` so official checkpoints load as they are.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import trunc_normal_


def rel_pos_index(window_size: int) -> torch.Tensor:
    """Official RegionViT index map into the (2ws-1)^2 relative-position table, shape (ws^2, ws^2).

    Entry [q, k] for query (qy, qx) and key (ky, kx), row-major inside the window, is
    ``((ky-qy + ws//2) mod (2ws-1)) * (2ws-1) + ((kx-qx + ws//2) mod (2ws-1))``: the offset is key minus
    query, shifted by ws//2 (not Swin's ws-1) and wrapped, because the official code indexes a
    (2ws-1)x(2ws-1) arange with possibly negative Python indices. Still a bijection onto the table, but a
    different memory layout from Swin's; official weights need exactly this map.
    """
    ws = window_size
    size = 2 * ws - 1
    ys, xs = torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")
    coords = torch.stack([ys.flatten(), xs.flatten()])  # 2, ws*ws
    offset = (coords[:, None, :] - coords[:, :, None] + ws // 2) % size  # 2, query, key
    return offset[0] * size + offset[1]


# On CPU, sequences of at most this many tokens skip SDPA: its flash kernel costs several times the explicit
# einsum/softmax path for the temporal attention's T = 8; from about 50 tokens (the local windows) they are
# even (figures: benchmarks/README.md, "Attention kernels on CPU").
CPU_SDPA_MIN_TOKENS = 16

# The attention core runs on at most this many sequences at a time (with a window mask: the largest multiple of
# the window count not above it). CUDA's fused SDPA kernels put the batch on a grid axis limited to 65,535
# blocks, and the temporal attention's batch is B x windows x (1 + ws^2), 3,200 per 8x224 clip for RegionViT-S/M:
# one kernel call would fail from about 21 clips (TEST.BATCH_SIZE 7 with 3 crops). Chunks of 2^15 keep
# each kernel call far below the limit and the per-call work large.
ATTENTION_BATCH_CHUNK = 32768


def open_fully_masked_rows(mask: torch.Tensor) -> torch.Tensor:
    """``mask`` (..., N, N) bool (True = may attend) with key 0 allowed on every row that allows no key.

    Such rows are the queries of padding tokens (their outputs are cropped). A softmax over keys that are all
    masked is undefined: the explicit path's ``finfo.min`` fill gives a uniform row, but CUDA's fused SDPA
    kernels have returned NaN there (pytorch/pytorch#110213), and the attention of a real token to a masked key
    (weight 0) then multiplies 0 by NaN. A padding query that no real query attends to can take any finite
    value; key 0 (the window's regional token, always valid) is one. Rows that allow a key are unchanged, so
    real tokens get exactly the official outputs. No host synchronisation.
    """
    no_key = ~mask.any(dim=-1)  # ..., N
    mask = mask.clone()
    mask[..., 0] |= no_key
    return mask


class RelPosAttention(nn.Module):
    """Multi-head self-attention, optionally with RegionViT's relative position bias and window mask.

    Args:
        dim: channels C (input and output).
        num_heads: heads; head_dim = C / num_heads.
        qkv_bias: bias on the fused qkv projection (official RegionViT: True).
        attn_drop: dropout on the attention weights.
        proj_drop: dropout after the output projection.
        window_size: ws of the local windows; creates ``rel_pos`` of shape (heads, (2ws-1)^2). ``None``:
            no relative bias (e.g. temporal attention).
    """

    fused_attn: bool

    def __init__(
        self,
        dim: int,
        *,
        num_heads: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        window_size: int | None = None,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.fused_attn = True  # False: the explicit softmax path, written as the official code computes it
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.window_size = window_size
        if window_size is not None:
            self.rel_pos = nn.Parameter(torch.zeros(num_heads, (2 * window_size - 1) ** 2))
            trunc_normal_(self.rel_pos, std=0.02)
            # A non-persistent buffer: follows .to(device) but stays out of the state_dict, as in the official code.
            self.register_buffer("rel_pos_index", rel_pos_index(window_size), persistent=False)
        else:
            self.rel_pos = None

    def _bias(self, num_tokens: int, dtype: torch.dtype) -> torch.Tensor:
        """(heads, N, N) additive bias: table values on the local-local block, 0 on the regional token's row/col."""
        n_local = num_tokens - 1
        if self.window_size is None or n_local != self.window_size**2:
            raise ValueError(
                f"local attention needs 1 + ws^2 = {1 + (self.window_size or 0) ** 2} tokens per window, "
                f"got {num_tokens}"
            )
        rel = self.rel_pos[:, self.rel_pos_index].view(self.num_heads, n_local, n_local)
        return F.pad(rel, (1, 0, 1, 0)).to(dtype)

    def forward(
        self,
        x: torch.Tensor,
        *,
        rel_pos: bool = False,
        mask: torch.Tensor | None = None,
        num_windows: int | None = None,
    ) -> torch.Tensor:
        """Attend within each sequence of ``x``.

        Args:
            x: (B', N, C) sequences.
            rel_pos: add the relative position bias (local attention over [regional, ws^2 local] tokens).
            mask: (nW, N, N) bool, True = may attend; windows are the fastest-varying part of B'
                (B' = batch * nW). Masked scores are replaced by ``finfo(dtype).min`` after the bias is
                added, as in the official code. A row that allows no key (a padding query) gets key 0
                (:func:`open_fully_masked_rows`), so no kernel sees a fully masked row.
            num_windows: nW, required with ``mask``.

        Returns:
            (B', N, C). The attention runs on chunks of at most :data:`ATTENTION_BATCH_CHUNK` sequences.
        """
        Bp, N, C = x.shape
        qkv = self.qkv(x).view(Bp, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # B', heads, N, head_dim

        step = ATTENTION_BATCH_CHUNK
        if mask is not None:
            if num_windows is None or Bp % num_windows:
                raise ValueError(f"mask needs num_windows dividing the batch {Bp}, got {num_windows}")
            mask = open_fully_masked_rows(mask)
            step = max(1, step // num_windows) * num_windows  # whole images per chunk: the mask repeats per image
        bias = self._bias(N, q.dtype) if rel_pos else None  # heads, N, N
        if self.fused_attn and (q.device.type != "cpu" or N > CPU_SDPA_MIN_TOKENS):
            # SDPA takes its CPU flash kernel only for a 4-D mask (a 3-D one falls back to the math path,
            # about 2.5x slower on the local windows); on CUDA a 4-D mask works with every backend.
            attend, window_bias = self._sdpa, None
            if mask is not None:
                base = bias if bias is not None else torch.zeros(self.num_heads, N, N, dtype=q.dtype, device=q.device)
                window_bias = base.masked_fill(~mask[:, None], torch.finfo(q.dtype).min)  # nW, heads, N, N
        else:
            attend, window_bias = self._explicit, None
        # Under torch.compile / torch.export the batch may be symbolic: one call, no Python loop over it (a
        # loop would fix the exported graph's batch size).
        if torch.compiler.is_compiling() or Bp <= step:
            out = attend(q, k, v, bias, mask, window_bias, num_windows)  # B', heads, N, head_dim
        else:
            out = torch.cat([attend(q[i:i + step], k[i:i + step], v[i:i + step], bias, mask, window_bias, num_windows)
                             for i in range(0, Bp, step)])

        # B', heads, N, head_dim -> B', N, C. Eagerly a reshape: a free view of the CPU flash kernel's output, a
        # copy of the explicit path's. Under torch.export an explicit contiguous copy: a reshape is traced as a
        # view with the strides of the CPU flash kernel's output, which the ONNX exporter's SDPA (another layout)
        # cannot take with the (1, heads, N, N) bias mask. Same values, bit for bit, either way.
        out = out.transpose(1, 2)
        if torch.compiler.is_exporting():
            out = out.clone(memory_format=torch.contiguous_format)
        out = out.reshape(Bp, N, C)
        return self.proj_drop(self.proj(out))

    def _sdpa(self, q, k, v, bias, mask, window_bias, num_windows) -> torch.Tensor:
        """``F.scaled_dot_product_attention`` on (b, heads, N, head_dim); ``window_bias`` (nW, heads, N, N) is
        the bias with masked entries at ``finfo.min``, repeated here for the b / nW images of the chunk."""
        b, heads, N, _ = q.shape
        if window_bias is not None:
            # nW, heads, N, N -> b, heads, N, N (windows fastest in b)
            attn_mask = window_bias.expand(b // num_windows, -1, -1, -1, -1).reshape(b, heads, N, N)
        else:
            attn_mask = bias.unsqueeze(0) if bias is not None else None  # 1, heads, N, N
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.attn_drop.p if self.training else 0.0, scale=self.scale
        )

    def _explicit(self, q, k, v, bias, mask, window_bias, num_windows) -> torch.Tensor:
        """The explicit softmax path (the official computation); on CPU also the fast one for short
        sequences (the temporal attention over T frames), where SDPA's flash kernel is 2-4x slower."""
        b, heads, N, _ = q.shape
        attn = torch.einsum("bhnd,bhmd->bhnm", q, k) * self.scale  # b, heads, N, N
        if bias is not None:
            attn = attn + bias.to(attn.dtype)
        if mask is not None:
            attn = attn.view(b // num_windows, num_windows, heads, N, N)
            attn = attn.masked_fill(~mask[:, None], torch.finfo(attn.dtype).min).view(b, heads, N, N)
        return torch.einsum("bhnm,bhmd->bhnd", self.attn_drop(attn.softmax(dim=-1)), v)
