"""matmul with a constant 2-D weight (dense) as an int8 layer:

    acc[..., n] = sum_k (x_q[..., k] - z_in) w_q[k, n]

computed as ``matmul(x_q, w_q, out_dtype=int32)`` with ``- z_in sum_k w_q[k, n]`` folded into
the bias (``linear``). The weight is ``(K, N)``: output channels on its last axis. An N-D
activation (``[B, S, K]``, a transformer's Linear) is reshaped to ``[B S, K]`` around the
integer matmul (free: a view), so the target's packed 2-D int8 dense kernels apply to it.
A matmul of two activations (attention) is :mod:`tvmq.passes.rules.attention`'s.
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from ..graph import constant_value
from ..layers import Layer, LayerKind, layer_kind
from . import realize_rule
from .attention import realize_batch_matmul
from .common import const
from .linear import realize_layer



@realize_rule("relax.matmul")
def realize_matmul(ctx, var, value) -> bool:
    """A dense layer (a constant weight) or an activation x activation matmul."""
    return realize_layer(ctx, var, value) if var in ctx.layers else realize_batch_matmul(ctx, var, value)


@layer_kind
class Dense(LayerKind):
    """``x @ W`` with ``x`` of rank >= 2 and a constant ``(K, N)`` weight."""

    name, op, channel_axis, row_axis = "dense", "relax.matmul", 1, -1

    def weight(self, call):
        weight = constant_value(call.args[1])
        shape = getattr(call.args[0].ty, "shape", None)
        if weight is None or weight.ndim != 2 or shape is None or len(shape) < 2:
            return None
        return weight

    def output_channel_axis(self, out_ndim: int) -> int:
        return out_ndim - 1

    def output_shape(self, values, layer):
        return values.reshape(-1)

    def input_channel_axis(self, layer: Layer) -> int | None:
        return 0

    def matrix(self, layer: Layer) -> np.ndarray:
        return layer.weight.T

    def rows(self, x: np.ndarray, layer: Layer) -> np.ndarray:
        return x.reshape(-1, x.shape[-1])

    def expected_shift(self, error, expected_input, groups=1):
        """``shift = E[x] @ eps``."""
        return (np.asarray(expected_input, np.float64) @ error.astype(np.float64)).astype(np.float32)

    def padded_input(self, builder, layer, x):
        return x

    def integer_op(self, builder, layer, x_q, zero_point, w_q, padded: bool = False):
        name = f"{layer.out.name}_int"
        shape = list(layer.chain[0].ty.shape)
        if len(shape) == 2:
            return builder.emit(relax.op.matmul(x_q, const(w_q), out_dtype="int32"), name)
        rows = builder.emit(relax.op.reshape(x_q, (-1, w_q.shape[0])), f"{layer.out.name}_rows")
        acc = builder.emit(relax.op.matmul(rows, const(w_q), out_dtype="int32"), f"{name}2d")
        return builder.emit(relax.op.reshape(acc, shape), name)
