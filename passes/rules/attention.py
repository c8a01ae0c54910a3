"""Activation x activation matmul (attention's ``Q K^T`` and ``softmax(.) V``) as int8:

    a_q = clip(round(a / s_a) + z_a)      the scheme's activation dtype (x86: uint8, z_a; ARM: int8, z_a = 0)
    b_q = clip(round(b / s_b))            symmetric int8, s_b = max|b| / 127
    acc = matmul(a_q, b_q, out_dtype=int32) - z_a sum_k b_q[..., k, n]  =  sum_k (a_q - z_a) b_q
    y   = float(acc) * (s_a s_b)                                 dequantize (an fp32 reader: Div, Softmax)
    y_q = clip(round(float(acc) * (s_a s_b / s_out) + z_out))    requantize (an int8 reader: Transpose)

Of the general ``sum (a - z_a)(b - z_b) = sum a b - z_b sum_k a - z_a sum_k b + K z_a z_b`` a
symmetric ``b`` keeps one cross term, a run-time column sum of ``b_q`` (none when ``a`` is int8): the
operands are then u8 x s8 on x86, the pair ``vpdpbusd`` / ``vpmaddubsw`` multiply, and s8 x s8 on
ARM (``sdot``). Planned "dynamic", both operands' parameters come from the tensors themselves at run
time (:func:`~tvmq.passes.rules.dynamic.quantize_at_run_time`; with ``dynamic_granularity = "row"``
per row of ``a`` and per column of ``b``, both of which factor out of the sum over ``k``) and ``y``
is fp32: ``y = float(acc) * (s_a s_b)``, ``acc = a_q b_q - z_a sum_k b_q`` with ``z_a`` run-time too.
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from ..layers import BatchMatMul
from ..plan import DYNAMIC, LATENCY_FALLBACK
from ..qparams import QParams, requantize_multiplier
from .common import const, round_to, same
from .dynamic import quantize_at_run_time


def realize_batch_matmul(ctx, var, value) -> bool:
    """Realize ``var = matmul(a, b)`` of two activations as planned; False keeps it fp32."""
    entry = ctx.plan.layers.get(var.name)
    if entry is None or entry.kind != BatchMatMul.kind:
        return False
    if entry.precision == DYNAMIC:
        return _realize_dynamic(ctx, var, value)
    if entry.precision != "int8" or ctx.to_q(value.args[0]) is None:
        if entry.reason == LATENCY_FALLBACK:
            ctx.record["kept_fp32"][var.name] = var.name
        return False
    (a_q, a_qp), b_qp = ctx.to_q(value.args[0]), entry.operand_qparams
    b_q = _operand(ctx, value.args[1], b_qp, var.name)
    zero_point = const(np.int32(a_qp.zero_point)) if int(a_qp.zero_point) else None
    acc = relax.op.astype(_accumulate(ctx.builder, a_q, b_q, zero_point, var.name), "float32")
    out_qp = ctx.activation_qparams(var) if var not in ctx.outputs and ctx.has_int8_reader(var) else None
    if out_qp is None:
        ctx.fp[var] = ctx.builder.emit(relax.op.multiply(acc, const(np.float32(a_qp.scale * b_qp.scale))), var.name)
    else:
        multiplier = requantize_multiplier(a_qp.scale, np.asarray(b_qp.scale), out_qp.scale)
        ctx.q[var] = (round_to(ctx.builder, relax.op.multiply(acc, const(multiplier)), out_qp, var.name), out_qp)
    _record(ctx, var, b_qp.to_json())
    return True


def _realize_dynamic(ctx, var, value) -> bool:
    """Both operands quantized on their own run-time parameters; the result fp32 (module docstring)."""
    builder, name = ctx.builder, var.name
    rows = ctx.plan.scheme.dynamic_granularity == "row"
    a_q, s_a, z_a = quantize_at_run_time(builder, ctx.to_fp(value.args[0]), ctx.plan.scheme.activation_dtype,
                                         f"{name}_a", -1 if rows else None)
    b_q, s_b, _ = quantize_at_run_time(builder, ctx.to_fp(value.args[1]), "int8", f"{name}_b", -2 if rows else None)
    zero_point = relax.op.astype(z_a, "int32") if z_a is not None else None
    acc = _accumulate(builder, a_q, b_q, zero_point, name)
    ctx.fp[var] = builder.emit(relax.op.multiply(relax.op.astype(acc, "float32"), relax.op.multiply(s_a, s_b)), name)
    ctx.mark(var, "dynamic")
    _record(ctx, var, DYNAMIC)
    return True


def _record(ctx, var, operand) -> None:
    """The record's ``batch_matmuls``: each realized one -> its operand's parameters (or "dynamic")."""
    ctx.record["batch_matmuls"] = {**ctx.record.get("batch_matmuls", {}), var.name: operand}


def _operand(ctx, b, qp: QParams, name: str):
    """``b`` as symmetric int8 on ``qp``: its quantized twin if already on ``qp``, else quantized from fp32."""
    if b in ctx.q and same(ctx.q[b][1], qp):
        return ctx.q[b][0]
    quantized = relax.op.quantize(ctx.to_fp(b), const(qp.scale), const(qp.zero_point), out_dtype="int8")
    return ctx.builder.emit(quantized, f"{name}_b_q")


def _accumulate(builder, a_q, b_q, zero_point, name: str):
    """``matmul(a_q, b_q) - z_a sum_k b_q`` in int32 (``zero_point`` an int32 expression, or None for 0)."""
    acc = builder.emit(relax.op.matmul(a_q, b_q, out_dtype="int32"), f"{name}_int")
    if zero_point is None:
        return acc
    sums = relax.op.sum(relax.op.astype(b_q, "int32"), axis=[-2], keepdims=True)
    return builder.emit(relax.op.subtract(acc, relax.op.multiply(zero_point, sums)), f"{name}_acc")
