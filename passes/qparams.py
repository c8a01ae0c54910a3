"""Quantization arithmetic: scales, zero points and requantize multipliers (pure numpy).

Conventions (as in ONNX QuantizeLinear): ``q = clip(round(x / scale) + zero_point, qmin, qmax)``
and ``x ~= scale * (q - zero_point)``; ``round`` is half-to-even, like ``np.round``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DTYPE_RANGE = {"uint8": (0, 255), "int8": (-128, 127), "int32": (-(2**31), 2**31 - 1)}
WEIGHT_QMAX = 127  # weights use the symmetric range [-127, 127] (a target may ask for less)
TINY_SCALE = 1e-8  # a tensor that is constant zero still needs a positive scale


@dataclass(frozen=True)
class QParams:
    """Scale and zero point of one tensor; arrays of length C when per channel along ``axis``.

    ``limit`` narrows the dtype's range to ``[-limit, limit]`` (symmetric weights).
    """

    scale: np.ndarray
    zero_point: np.ndarray
    dtype: str
    axis: int | None = None
    limit: int | None = None

    @property
    def qmin(self) -> int:
        return DTYPE_RANGE[self.dtype][0] if self.limit is None else -self.limit

    @property
    def qmax(self) -> int:
        return DTYPE_RANGE[self.dtype][1] if self.limit is None else self.limit

    def to_json(self) -> dict:
        out = {"scale": np.asarray(self.scale, np.float64).ravel().tolist(),
               "zero_point": np.asarray(self.zero_point).astype(int).ravel().tolist(),
               "dtype": self.dtype, "axis": self.axis}
        return out if self.limit is None else {**out, "qmin": self.qmin, "qmax": self.qmax}


def activation_qparams(lo: float, hi: float, dtype: str) -> QParams:
    """Per-tensor parameters for an activation observed in ``[lo, hi]``.

    ``uint8`` is asymmetric: the range is widened to include 0 (so zero padding and ReLU are
    exact) and mapped onto [0, 255]. ``int8`` is symmetric: scale = max(|lo|, |hi|) / 127,
    zero point 0, which is what signed dot-product instructions (ARM sdot, CUDA dp4a) want.
    """
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if dtype == "uint8":
        scale = max((hi - lo) / 255.0, TINY_SCALE)
        zero_point = int(np.clip(np.round(-lo / scale), 0, 255))
    elif dtype == "int8":
        scale = max(max(-lo, hi) / 127.0, TINY_SCALE)
        zero_point = 0
    else:
        raise ValueError(f"unsupported activation dtype {dtype!r}; use 'uint8' or 'int8'")
    return QParams(np.float32(scale), np.int32(zero_point), dtype)


def weight_qparams(weight: np.ndarray, axis: int | None, qmax: int = WEIGHT_QMAX) -> QParams:
    """Symmetric int8 parameters onto ``[-qmax, qmax]``, per channel along ``axis`` (or per tensor
    when ``axis`` is None)."""
    scale = weight_scale(weight, axis, qmax)
    return QParams(scale, np.zeros_like(scale, dtype=np.int32), "int8", axis, limit=qmax)


def weight_scale(weight: np.ndarray, axis: int | None, qmax: int = WEIGHT_QMAX) -> np.ndarray:
    """The symmetric absmax weight scale ``s_c = max(max_k |W[c, k]| / qmax, 1e-8)`` in fp32, per
    channel along ``axis`` (one scale for the tensor when ``axis`` is None). The one place it is computed."""
    reduce = None if axis is None else tuple(i for i in range(weight.ndim) if i != axis)
    absmax = np.abs(weight).max(axis=reduce, initial=0.0)
    return np.maximum(absmax / qmax, TINY_SCALE).astype(np.float32)


def weight_bits(qmax: int) -> int:
    """Bits of the symmetric range ``[-qmax, qmax]``: 8 for 127, 7 for 63."""
    return int(qmax).bit_length() + 1


def broadcastable(values: np.ndarray, axis: int | None, ndim: int) -> np.ndarray:
    """Reshape per-channel ``values`` so they broadcast along ``axis`` of an ``ndim`` tensor."""
    values = np.asarray(values)
    if axis is None or values.ndim == 0:
        return values
    shape = [1] * ndim
    shape[axis] = values.size
    return values.reshape(shape)


def quantize(x: np.ndarray, qp: QParams) -> np.ndarray:
    """``clip(round(x / scale) + zero_point)`` in the dtype of ``qp``."""
    scale = broadcastable(qp.scale, qp.axis, x.ndim)
    zero_point = broadcastable(qp.zero_point, qp.axis, x.ndim)
    q = np.round(x / scale) + zero_point
    return np.clip(q, qp.qmin, qp.qmax).astype(qp.dtype)


def dequantize(q: np.ndarray, qp: QParams) -> np.ndarray:
    scale = broadcastable(qp.scale, qp.axis, q.ndim)
    zero_point = broadcastable(qp.zero_point, qp.axis, q.ndim)
    return ((q.astype(np.int32) - zero_point) * scale).astype(np.float32)


def quantize_bias(bias: np.ndarray, input_scale: float, weight_scale: np.ndarray) -> np.ndarray:
    """Bias in int32 at scale ``s_in * s_w`` (the accumulator's scale), saturated to int32."""
    bias_scale = np.float64(input_scale) * weight_scale.astype(np.float64)
    q = np.round(bias.astype(np.float64) / bias_scale)
    return np.clip(q, *DTYPE_RANGE["int32"]).astype(np.int32)


def fold_zero_point(bias_q: np.ndarray, weight_q: np.ndarray, input_zero_point: int, axis: int) -> np.ndarray:
    """Fold the input zero point into the int32 bias, so the kernel needs no runtime correction.

    ``sum_k (x_k - z) w_k = sum_k x_k w_k - z * sum_k w_k``: the second term is a per-output-
    channel constant, exact when padding is filled with ``z`` too.
    """
    reduce = tuple(i for i in range(weight_q.ndim) if i != axis)
    weight_sum = weight_q.astype(np.int64).sum(axis=reduce)
    folded = bias_q.astype(np.int64) - int(input_zero_point) * weight_sum
    return np.clip(folded, *DTYPE_RANGE["int32"]).astype(np.int32)


def requantize_multiplier(input_scale: float, weight_scale: np.ndarray, output_scale: float) -> np.ndarray:
    """The fp32 multiplier ``s_in * s_w / s_out`` applied to the int32 accumulator."""
    return (np.float64(input_scale) * weight_scale.astype(np.float64) / np.float64(output_scale)).astype(np.float32)
