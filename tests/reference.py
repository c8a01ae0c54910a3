"""An independent numpy reference of tvmq's integer arithmetic (int64 accumulation)."""

from __future__ import annotations

import numpy as np


def conv2d_int(x_q: np.ndarray, w_q: np.ndarray, pad_value: int, stride: int, pad: int, dilation: int,
               groups: int) -> np.ndarray:
    """NCHW x OIHW integer convolution, accumulated exactly in int64."""
    n, c, h, w = x_q.shape
    o, cg, kh, kw = w_q.shape
    x = np.pad(x_q.astype(np.int64), ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=pad_value)
    oh = (h + 2 * pad - dilation * (kh - 1) - 1) // stride + 1
    ow = (w + 2 * pad - dilation * (kw - 1) - 1) // stride + 1
    out = np.zeros((n, o, oh, ow), np.int64)
    og = o // groups
    for g in range(groups):
        xs = x[:, g * cg:(g + 1) * cg]
        ws = w_q[g * og:(g + 1) * og].astype(np.int64)
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i * dilation: i * dilation + stride * oh: stride,
                           j * dilation: j * dilation + stride * ow: stride]
                out[:, g * og:(g + 1) * og] += np.einsum("nchw,oc->nohw", patch, ws[:, :, i, j])
    return out


def requantize(acc: np.ndarray, multiplier: np.ndarray, zero_point: int, lo: int, hi: int, dtype) -> np.ndarray:
    """``clip(round(float32(acc) * M) + z, lo, hi)`` in float32, as the compiled epilogue does."""
    scaled = acc.astype(np.float32) * multiplier.astype(np.float32)
    return np.clip(np.round(scaled) + np.float32(zero_point), lo, hi).astype(dtype)
