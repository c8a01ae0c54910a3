"""Dynamic quantization of a layer (what ONNX Runtime's / PyTorch's ``quantize_dynamic`` do): the
weight is int8 per channel at compile time (the plan's weight parameters), the input's scale and
zero point are computed at run time from the tensor itself, per tensor:

    lo = min(min(x), 0),  hi = max(max(x), 0)
    uint8: s = max((hi - lo) / 255, 1e-8),  z = round(-lo / s)
    int8:  s = max(max(-lo, hi) / 127, 1e-8),  z = 0           (the scheme's activation dtype)
    x_q  = clip(round(x / s) + z, qmin, qmax)
    acc  = matmul(x_q, w_q, out_dtype=int32) - int32(z) * sum_k w_q[k, n]   # the static rule's op
    y    = clamp(float(acc) * (s * s_w[n]) + (b[n] - shift[n]))             # fp32 out

A conv does the same with ``conv2d`` and ``sum_{i, ky, kx} w_q[o]`` per output channel, on an
input zero-padded in fp32 before it is quantized (0.0 quantizes to ``z`` exactly, so the border
reads real zeros and the integer conv pads nothing).
Per row (``Scheme.dynamic_granularity = "row"``: per token of a transformer's ``[B, S, K]``
activation) a dense layer takes ``lo`` / ``hi`` over each row's ``K`` values instead, so ``s`` and
``z`` are ``[..., 1]`` columns and the zero-point term their outer product with the column sums.
The zero-point term is a run-time scalar (column) times a compile-time per-channel sum, in int32; the
``1e-8`` floor (``TINY_SCALE``, as the static parameters) keeps an all-zero input finite (x_q = z = 0).
The result is fp32: the next op takes it as any fp32 value (quantizing it if it is int8).
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from ..qparams import DTYPE_RANGE, TINY_SCALE
from .common import clamp, const

SPAN = {"uint8": 255.0, "int8": 127.0}  # the quantizer's steps over [lo, hi] (uint8) or [0, max|x|] (int8)


def realize_dynamic(ctx, layer, entry) -> bool:
    """Emit ``layer`` (planned ``entry``, precision "dynamic") as above; its output is fp32."""
    dtype, form = ctx.plan.scheme.activation_dtype, layer.form
    builder, name = ctx.builder, layer.out.name
    x = form.padded_input(builder, layer, ctx.to_fp(layer.data))
    rows = ctx.plan.scheme.dynamic_granularity == "row" and form.row_axis is not None
    x_q, scale, zero_point = quantize_at_run_time(builder, x, dtype, name, form.row_axis if rows else None)
    w_q = entry.weight_integers(layer.weight)
    acc = form.integer_op(builder, layer, x_q, 0, w_q, padded=True)
    if zero_point is not None:
        reduce = tuple(i for i in range(w_q.ndim) if i != layer.channel_axis)
        sums = form.output_shape(w_q.sum(axis=reduce, dtype=np.int32), layer)  # sum_k w_q per output channel
        offset = relax.op.multiply(relax.op.astype(zero_point, "int32"), const(sums))
        acc = builder.emit(relax.op.subtract(acc, offset), f"{name}_acc")
    channels = w_q.shape[layer.channel_axis]
    w_scale = form.output_shape(np.broadcast_to(entry.weight.scale, (channels,)).astype(np.float32), layer)
    y = relax.op.multiply(relax.op.astype(acc, "float32"), relax.op.multiply(scale, const(w_scale)))
    bias = layer.bias_or_zeros() - (entry.bias_shift if entry.bias_shift is not None else 0.0)
    if layer.bias is not None or entry.bias_shift is not None:
        y = relax.op.add(y, const(form.output_shape(np.asarray(bias, np.float32), layer)))
    lo, hi = layer.clamp
    if np.isfinite(lo) or np.isfinite(hi):
        y = clamp(y, max(lo, -3.4e38), min(hi, 3.4e38))
    ctx.fp[layer.out] = builder.emit(y, name)
    ctx.record["weights"][name] = entry.weight.to_json()
    for chained in layer.chain:
        ctx.mark(chained, "dynamic")
        ctx.record["fused_into"][chained.name] = name
    return True


def quantize_at_run_time(builder, x, dtype: str, name: str, axis: int | None = None):
    """``(x_q, s, z)``: fp32 ``x`` on parameters computed from itself (per tensor, or reduced over
    ``axis``), ``x_q = clip(round(x / s) + z, qmin, qmax)`` in ``dtype``; ``z`` None for int8."""
    scale, zero_point = _runtime_qparams(builder, x, dtype, name, axis)
    qmin, qmax = DTYPE_RANGE[dtype]
    steps = relax.op.round(relax.op.divide(x, scale))
    if zero_point is not None:
        steps = relax.op.add(steps, zero_point)
    return builder.emit(relax.op.astype(clamp(steps, qmin, qmax), dtype), f"{name}_in_q"), scale, zero_point


def _runtime_qparams(builder, x, dtype: str, name: str, axis: int | None = None):
    """``(s, z)`` in fp32 computed from ``x``: scalars, or per row (reduced over ``axis``, kept as
    size 1); ``z`` None for symmetric int8."""
    axes = None if axis is None else [axis]
    lo, hi = relax.op.min(x, axes, keepdims=axis is not None), relax.op.max(x, axes, keepdims=axis is not None)
    lo = builder.emit(relax.op.minimum(lo, const(np.float32(0.0))), f"{name}_in_lo")
    hi = builder.emit(relax.op.maximum(hi, const(np.float32(0.0))), f"{name}_in_hi")
    span = relax.op.subtract(hi, lo) if dtype == "uint8" else relax.op.maximum(relax.op.negative(lo), hi)
    scale = relax.op.maximum(relax.op.divide(span, const(np.float32(SPAN[dtype]))), const(np.float32(TINY_SCALE)))
    scale = builder.emit(scale, f"{name}_in_scale")
    if dtype != "uint8":
        return scale, None
    zero_point = builder.emit(relax.op.round(relax.op.divide(relax.op.negative(lo), scale)), f"{name}_in_zp")
    return scale, zero_point
