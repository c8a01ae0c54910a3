"""Small Relax builders the rules share: constants, fp32 clamps, rounding onto a quantizer."""

from __future__ import annotations

import numpy as np
from tvm import relax

from ..qparams import QParams


def const(value):
    return relax.const(np.asarray(value))


def clamp(expr, lo: float, hi: float):
    """``min(max(expr, lo), hi)`` on fp32: unlike ``relax.clip`` these ops carry layout
    inference, so a target's layout conversion passes straight through the requantize."""
    lower = relax.op.maximum(expr, const(np.float32(lo)))
    return relax.op.minimum(lower, const(np.float32(hi)))


def rescaled(expr, qp: QParams, out_qp: QParams):
    """``(q - z) * s / s_out`` in fp32: a quantized value expressed in steps of ``out_qp``."""
    centred = relax.op.subtract(relax.op.astype(expr, "float32"), const(np.float32(qp.zero_point)))
    return relax.op.multiply(centred, const(np.float32(qp.scale / out_qp.scale)))


def round_to(builder, value, qp: QParams, name: str, centred: bool = True):
    """``cast(clip(round(value [+ z]), qmin, qmax))``: fp32 steps of ``qp`` as its integer dtype."""
    if centred:
        value = relax.op.add(value, const(np.float32(qp.zero_point)))
    clipped = clamp(relax.op.round(value), qp.qmin, qp.qmax)
    return builder.emit(relax.op.astype(clipped, qp.dtype), f"{name}_q")


def same(a: QParams, b: QParams) -> bool:
    return a.dtype == b.dtype and float(a.scale) == float(b.scale) and int(a.zero_point) == int(b.zero_point)
