"""The integer layer rule shared by conv2d and matmul (``tvmq.passes.layers``):

    acc = op(x_q, w_q, out_dtype=int32) + bias_q                        # int8 x int8 -> int32
    y_q = clip(round(float(acc) * M) + z_out, lo_q, hi_q)               # fused requantize + clamp

with ``w_q`` symmetric int8 on ``[-weight_qmax, weight_qmax]`` (the plan's weight parameters),
``bias_q = round((b - shift) / (s_in s_w)) - z_in sum_k w_q`` in int32 (the input zero point
folded in, so the kernel needs no runtime correction) and ``M = s_in s_w / s_out`` in fp32.
A layer whose result leaves the function, or has no calibrated range (an LSTM gate matmul,
whose sum with the other gate terms stays fp32), is dequantized from the accumulator instead:
``y = clamp(float(acc) * s_in s_w)``. A layer planned "dynamic" quantizes its input at run
time instead (:mod:`tvmq.passes.rules.dynamic`).
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from ..qparams import QParams, fold_zero_point, quantize_bias, requantize_multiplier
from ..plan import DYNAMIC
from .common import clamp, const
from .dynamic import realize_dynamic

LATENCY_FALLBACK = "latency fallback"


def realize_layer(ctx, var, value) -> bool:
    """Realize the layer that starts at ``var`` as planned; False keeps its whole chain fp32."""
    layer = ctx.layers.get(var)
    if layer is None:
        return False
    entry = ctx.plan.layers.get(layer.out.name)
    if entry is not None and entry.precision == DYNAMIC:
        return realize_dynamic(ctx, layer, entry)
    if entry is None or entry.precision != "int8":
        if entry is not None and entry.reason == LATENCY_FALLBACK:
            ctx.record["kept_fp32"].update({v.name: layer.out.name for v in layer.chain})
        return False
    out_qp = None if layer.out in ctx.outputs else ctx.activation_qparams(layer.out)
    if ctx.to_q(layer.data) is None:
        return False
    x_q, x_qp = ctx.to_q(layer.data)
    w_qp = entry.weight
    w_q, bias_q, w_scale = layer_integers(layer, entry, x_qp.scale)
    bias_q = fold_zero_point(bias_q, w_q, int(x_qp.zero_point), layer.channel_axis)
    acc = layer.form.integer_op(ctx.builder, layer, x_q, int(x_qp.zero_point), w_q)
    acc = ctx.builder.emit(relax.op.add(acc, const(layer.form.output_shape(bias_q, layer))),
                           f"{layer.out.name}_acc")
    ctx.record["weights"][layer.out.name] = w_qp.to_json()
    for chained in layer.chain:
        ctx.mark(chained, "int8")
        ctx.record["fused_into"][chained.name] = layer.out.name
    if out_qp is None:
        ctx.fp[layer.out] = _dequantize_accumulator(ctx, acc, layer, x_qp.scale * w_scale)
    else:
        ctx.q[layer.out] = (_requantize(ctx, acc, layer, x_qp.scale, w_scale, out_qp), out_qp)
    return True


def layer_integers(layer, entry, input_scale) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(w_q, bias_q, s_w)`` of an int8 layer planned as ``entry`` (a ``LayerPlan``) on an input of
    scale ``s_in``: ``w_q = quantize(W)`` (or the plan's learned integers), ``bias_q = round((b - shift) / (s_in s_w))`` in int32 (the
    input zero point not folded in yet) and the weight scale per output channel."""
    w_q = entry.weight_integers(layer.weight)
    channels = layer.weight.shape[layer.channel_axis]
    w_scale = np.broadcast_to(entry.weight.scale, (channels,)).astype(np.float32)
    bias = layer.bias_or_zeros() - (entry.bias_shift if entry.bias_shift is not None else 0.0)
    return w_q, quantize_bias(bias, input_scale, w_scale), w_scale


def _requantize(ctx, acc, layer, x_scale, w_scale: np.ndarray, out_qp: QParams):
    multiplier = requantize_multiplier(x_scale, w_scale, out_qp.scale)
    lo, hi = clamp_range(layer.clamp, out_qp)
    scaled = relax.op.multiply(relax.op.astype(acc, "float32"), const(layer.form.output_shape(multiplier, layer)))
    shifted = relax.op.add(relax.op.round(scaled), const(np.float32(out_qp.zero_point)))
    return ctx.builder.emit(relax.op.astype(clamp(shifted, lo, hi), out_qp.dtype), f"{layer.out.name}_q")


def _dequantize_accumulator(ctx, acc, layer, acc_scale: np.ndarray):
    scaled = relax.op.multiply(relax.op.astype(acc, "float32"),
                               const(layer.form.output_shape(acc_scale.astype(np.float32), layer)))
    lo, hi = layer.clamp
    if np.isfinite(lo) or np.isfinite(hi):
        scaled = clamp(scaled, max(lo, -3.4e38), min(hi, 3.4e38))
    return ctx.builder.emit(scaled, layer.out.name)


def clamp_range(bounds: tuple[float, float], qp: QParams) -> tuple[int, int]:
    """The quantized output range: the dtype's range narrowed by a fused ReLU / Clip,
    ``[max(qmin, z + round(lo / s)), min(qmax, z + round(hi / s))]``."""
    lo, hi = bounds
    scale, zero_point = float(qp.scale), int(qp.zero_point)
    qlo = qp.qmin if not np.isfinite(lo) else max(qp.qmin, zero_point + int(np.round(lo / scale)))
    qhi = qp.qmax if not np.isfinite(hi) else min(qp.qmax, zero_point + int(np.round(hi / scale)))
    return qlo, qhi
