"""Element-wise ops on quantized tensors.

* ``relu(x)`` commutes with an affine quantizer: ``q_y = max(q_x, z_x)``, same parameters.
* A residual ``add(a, b)`` of two tensors (one already quantized) requantizes both onto the
  output's parameters: ``q_y = clip(round((q_a - z_a) s_a / s_y + (q_b - z_b) s_b / s_y + z_y))``,
  unless only fp32 ops read its result (a transformer's residual stream into LayerNorm): then
  rounding it to 8 bits would only add error, so it adds in fp32.
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from . import realize_rule
from .common import rescaled, round_to


@realize_rule("relax.nn.relu")
def relu(ctx, var, value) -> bool:
    source = value.args[0]
    if source not in ctx.q:
        return False
    expr, qp = ctx.q[source]
    zero = relax.const(np.array(qp.zero_point).astype(qp.dtype))
    ctx.q[var] = (ctx.builder.emit(relax.op.maximum(expr, zero), f"{var.name}_q"), qp)
    return True


@realize_rule("relax.add")
def add(ctx, var, value) -> bool:
    """Residual add of two quantized tensors: requantize both onto the output's scale."""
    a, b = value.args
    if not (isinstance(a, relax.Var) and isinstance(b, relax.Var)) or not (a in ctx.q or b in ctx.q):
        return False
    if var in ctx.outputs or not ctx.has_int8_reader(var):
        return False
    out_qp = ctx.activation_qparams(var)
    if out_qp is None or ctx.to_q(a) is None or ctx.to_q(b) is None:
        return False
    total = relax.op.add(rescaled(*ctx.q[a], out_qp), rescaled(*ctx.q[b], out_qp))
    ctx.q[var] = (round_to(ctx.builder, total, out_qp, var.name), out_qp)
    return True
