"""An independent numpy reference of tvmq's integer arithmetic (int64 accumulation)."""

from __future__ import annotations

import numpy as np


def conv2d_int(x_q: np.ndarray, w_q: np.ndarray, pad_value: int, stride: int, pad: int, dilation: int,
               groups: int) -> np.ndarray:
    """NCHW x OIHW integer convolution, accumulated exactly in int64."""
    return conv2d(x_q, w_q, pad_value, stride, pad, dilation, groups, np.int64)


def conv2d(x_q: np.ndarray, w_q: np.ndarray, pad_value, stride: int, pad: int, dilation: int, groups: int,
           dtype=np.float64) -> np.ndarray:
    """NCHW x OIHW convolution accumulated in ``dtype``, one kernel tap at a time."""
    n, c, h, w = x_q.shape
    o, cg, kh, kw = w_q.shape
    x = np.pad(x_q.astype(dtype), ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=pad_value)
    oh = (h + 2 * pad - dilation * (kh - 1) - 1) // stride + 1
    ow = (w + 2 * pad - dilation * (kw - 1) - 1) // stride + 1
    out = np.zeros((n, o, oh, ow), dtype)
    og = o // groups
    for g in range(groups):
        xs = x[:, g * cg:(g + 1) * cg]
        ws = w_q[g * og:(g + 1) * og].astype(dtype)
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i * dilation: i * dilation + stride * oh: stride,
                           j * dilation: j * dilation + stride * ow: stride]
                out[:, g * og:(g + 1) * og] += np.einsum("nchw,oc->nohw", patch, ws[:, :, i, j])
    return out


def weights_at_clamp(rng, shape, qmax: int, pair_axis: int) -> np.ndarray:
    """Weights all at +-qmax, one sign per adjacent pair along the reduction axis ``pair_axis``:
    the worst case for x86 ``vpmaddubsw``, which adds each pair of u8 x s8 products into an int16."""
    signs_shape = list(shape)
    signs_shape[pair_axis] //= 2
    return (np.repeat(rng.choice([-1, 1], signs_shape), 2, axis=pair_axis) * qmax).astype(np.int8)


def requantize(acc: np.ndarray, multiplier: np.ndarray, zero_point: int, lo: int, hi: int, dtype) -> np.ndarray:
    """``clip(round(float32(acc) * M) + z, lo, hi)`` in float32, as the compiled epilogue does."""
    scaled = acc.astype(np.float32) * multiplier.astype(np.float32)
    return np.clip(np.round(scaled) + np.float32(zero_point), lo, hi).astype(dtype)


def dynamic_qparams(x: np.ndarray, dtype: str, rows: bool = False) -> tuple:
    """``(s, z, qmin, qmax)`` of a dynamic layer's input in float32, from its own range widened to 0
    (per row: over the last axis, as ``[..., 1]`` columns): uint8 ``s = (hi - lo) / 255``,
    ``z = round(-lo / s)``; int8 ``s = max(-lo, hi) / 127``, ``z = 0`` (``s >= 1e-8``)."""
    f32 = np.float32
    axis = -1 if rows else None
    lo = np.minimum(x.min(axis=axis, keepdims=rows), f32(0)).astype(f32)
    hi = np.maximum(x.max(axis=axis, keepdims=rows), f32(0)).astype(f32)
    if dtype == "uint8":
        scale = np.maximum((hi - lo) / f32(255), f32(1e-8)).astype(f32)
        return scale, np.round(-lo / scale).astype(np.int64), 0, 255
    return np.maximum(np.maximum(-lo, hi) / f32(127), f32(1e-8)).astype(f32), np.int64(0), -128, 127


def _dynamic_output(acc, scale, w_scale, bias, clamp, shape) -> np.ndarray:
    """``clamp(float(acc) * (s * s_w) + b)`` in float32, per-channel values shaped ``shape``."""
    f32 = np.float32
    y = acc.astype(f32) * (scale * w_scale.astype(f32).reshape(shape))
    if bias is not None:
        y = y + bias.astype(f32).reshape(shape)
    return np.clip(y, *clamp).astype(f32)


def dynamic_dense(x: np.ndarray, w_q: np.ndarray, w_scale: np.ndarray, bias: np.ndarray | None, dtype: str,
                  clamp: tuple[float, float] = (-np.inf, np.inf), rows: bool = False) -> np.ndarray:
    """A dynamic dense layer (``tvmq.passes.rules.dynamic``) in float32 / int64:
    ``x_q @ w_q - z sum_k w_q``, then ``float(acc) * (s * s_w) + b``, clamped (per row: ``s``, ``z`` columns)."""
    scale, zero_point, qmin, qmax = dynamic_qparams(x, dtype, rows)
    x_q = np.clip(np.round(x / scale) + zero_point.astype(np.float32), qmin, qmax).astype(np.int64)
    acc = x_q @ w_q.astype(np.int64) - zero_point * w_q.astype(np.int64).sum(axis=0)
    return _dynamic_output(acc, scale, w_scale, bias, clamp, (-1,))


def dynamic_conv(x: np.ndarray, w_q: np.ndarray, w_scale: np.ndarray, bias: np.ndarray | None, dtype: str,
                 pad: int, groups: int = 1, clamp: tuple[float, float] = (-np.inf, np.inf)) -> np.ndarray:
    """A dynamic NCHW conv (stride 1): ``x_q`` padded with ``z`` (a real zero), the int64 conv minus
    ``z sum w_q[o]``, then as :func:`dynamic_dense`."""
    scale, zero_point, qmin, qmax = dynamic_qparams(x, dtype)
    x_q = np.clip(np.round(x / scale) + np.float32(zero_point), qmin, qmax).astype(np.int64)
    acc = conv2d_int(x_q, w_q, int(zero_point), 1, pad, 1, groups)
    acc = acc - zero_point * w_q.astype(np.int64).sum(axis=(1, 2, 3)).reshape(1, -1, 1, 1)
    return _dynamic_output(acc, scale, w_scale, bias, clamp, (1, -1, 1, 1))
