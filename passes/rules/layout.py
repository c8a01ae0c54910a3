"""Data movement on quantized tensors.

* Reshape, transpose, squeeze, expand_dims and flatten move values without changing them:
  ``q_y = op(q_x)`` with the input's parameters.
* ``concat`` requantizes each input onto the output's parameters (those already on them are
  taken as they are): ``q_y = concat(clip(round((q_i - z_i) s_i / s_y + z_y)))``.
"""

from __future__ import annotations

from tvm import relax

from . import realize_rule
from .common import rescaled, round_to, same


@realize_rule("relax.reshape", "relax.permute_dims", "relax.squeeze", "relax.expand_dims", "relax.flatten")
def same_quantizer(ctx, var, value) -> bool:
    """The op on the quantized values, with the input's scale and zero point."""
    source = value.args[0]
    if source not in ctx.q:
        return False
    expr, qp = ctx.q[source]
    ctx.q[var] = (ctx.builder.emit(relax.Call(value.op, [expr, *value.args[1:]], value.attrs, value.ty_args),
                                   f"{var.name}_q"), qp)
    return True


@realize_rule("relax.concat")
def concat(ctx, var, value) -> bool:
    """Concatenate quantized tensors after requantizing each onto the output's scale."""
    fields = value.args[0].fields if isinstance(value.args[0], relax.Tuple) else []
    if not fields or not all(isinstance(f, relax.Var) for f in fields) or not any(f in ctx.q for f in fields):
        return False
    out_qp = ctx.activation_qparams(var) if var not in ctx.outputs else None
    if out_qp is None or any(ctx.to_q(f) is None for f in fields):
        return False
    parts = [ctx.q[f][0] if same(ctx.q[f][1], out_qp) else
             round_to(ctx.builder, rescaled(*ctx.q[f], out_qp), out_qp, f"{f.name}_rq") for f in fields]
    ctx.q[var] = (ctx.builder.emit(relax.op.concat(parts, axis=value.attrs.axis), f"{var.name}_q"), out_qp)
    return True
