"""Pooling on quantized tensors.

* ``max_pool2d`` commutes with an affine quantizer: it runs on ``q_x`` unchanged (``layout``).
* ``avg_pool2d`` and ``mean`` over H, W keep the input's parameters:
  ``q_y = clip(round(mean(float(q_x))))``; a padded average pool that counts the padding is
  refused when ``z_x != 0`` (its zeros would average in as ``-z_x s_x``).
"""

from __future__ import annotations

from tvm import relax

from ..graph import op_name
from . import realize_rule
from .common import round_to
from .layout import same_quantizer

realize_rule("relax.nn.max_pool2d")(same_quantizer)


@realize_rule("relax.mean", "relax.nn.avg_pool2d")
def average(ctx, var, value) -> bool:
    """Average pooling and mean over H, W keep the input's scale and zero point: round(mean(q))."""
    source = value.args[0]
    if source not in ctx.q:
        return False
    expr, qp = ctx.q[source]
    if op_name(value) == "relax.mean" and [int(a) for a in value.attrs.axis] != [2, 3]:
        return False
    if op_name(value) == "relax.nn.avg_pool2d" and int(qp.zero_point) != 0 and \
            value.attrs.count_include_pad and any(int(p) for p in value.attrs.padding):
        return False  # padded zeros would be averaged in as real values -zp * scale
    mean = relax.Call(value.op, [relax.op.astype(expr, "float32"), *value.args[1:]], value.attrs, value.ty_args)
    ctx.q[var] = (round_to(ctx.builder, mean, qp, var.name, centred=False), qp)
    return True
