"""conv2d (NCHW data, OIHW weight) as an int8 layer:

    acc[n, o, y, x] = sum_{i, ky, kx} (x_q[n, g(o) I + i, y s + ky d, x s + kx d] - z_in) w_q[o, i, ky, kx]

computed as ``conv2d(x_q, w_q, out_dtype=int32)`` with the ``- z_in sum w_q`` term folded into
the bias (``linear``); a padded conv on an input with a non-zero zero point pads with ``z_in``
first (``pad(x_q, z_in)``), so the border reads real zeros. Groups (depthwise included) are kept.
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from ..graph import constant_value
from ..layers import Layer, LayerKind, layer_kind
from . import realize_rule
from .common import const
from .linear import realize_layer

realize_rule("relax.nn.conv2d")(realize_layer)


@layer_kind
class Conv2D(LayerKind):
    """conv2d with a constant OIHW weight: output channels on weight axis 0 and output axis 1."""

    name, op, channel_axis = "conv2d", "relax.nn.conv2d", 0

    def weight(self, call):
        weight = constant_value(call.args[1])
        attrs = call.attrs
        if weight is None or attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW":
            return None
        return weight

    def output_channel_axis(self, out_ndim: int) -> int:
        return 1

    def output_shape(self, values, layer):
        return values.reshape(1, -1, 1, 1)

    def input_channel_axis(self, layer: Layer) -> int | None:
        """1 (I of OIHW) without groups, 0 for a depthwise conv (one input channel per output)."""
        groups = int(layer.call.attrs.groups)
        if groups == 1:
            return 1
        return 0 if groups == layer.weight.shape[0] and layer.weight.shape[1] == 1 else None

    def matrix(self, layer: Layer) -> np.ndarray:
        """``(O, C_in KH KW)``: the grouped weight as the equivalent ungrouped one, flattened."""
        return dense_weight(layer.weight, int(layer.call.attrs.groups)).reshape(layer.weight.shape[0], -1)

    def rows(self, x: np.ndarray, layer: Layer) -> np.ndarray:
        return im2col(x, layer)

    def groups(self, layer: Layer) -> int:
        return int(layer.call.attrs.groups)

    def expected_shift(self, error, expected_input, groups=1):
        """``shift[o] = sum_{i, taps} eps[o, i, ky, kx] E[x_{g(o) I + i}]`` (E[x] equal at every tap)."""
        expected_input = np.asarray(expected_input, np.float64)
        out_channels, in_per_group = error.shape[:2]
        per_tap = error.astype(np.float64).sum(axis=(2, 3))  # (O, I)
        group_of = np.arange(out_channels) // (out_channels // groups)
        inputs = expected_input.reshape(groups, in_per_group)[group_of]  # (O, I)
        return (per_tap * inputs).sum(axis=1).astype(np.float32)

    def padded_input(self, builder, layer, x):
        """fp32 ``x`` zero-padded as the conv pads (a dynamic layer's input: 0.0 quantizes to z exactly)."""
        top, left, bottom, right = [int(p) for p in layer.call.attrs.padding]
        if not any((top, left, bottom, right)):
            return x
        return builder.emit(relax.op.nn.pad(x, [0, 0, 0, 0, top, bottom, left, right]), f"{layer.out.name}_in_pad")

    def integer_op(self, builder, layer, x_q, zero_point, w_q, padded: bool = False):
        """``padded``: ``x_q`` is already padded (``padded_input``): the conv pads nothing."""
        attrs = layer.call.attrs
        padding = [0, 0, 0, 0] if padded else [int(p) for p in attrs.padding]
        if zero_point != 0 and any(padding):
            top, left, bottom, right = padding
            x_q = builder.emit(relax.op.nn.pad(x_q, [0, 0, 0, 0, top, bottom, left, right],
                                               pad_value=float(zero_point)), f"{layer.out.name}_pad")
            padding = [0, 0, 0, 0]
        conv = relax.op.nn.conv2d(x_q, const(w_q), strides=attrs.strides, padding=padding,
                                  dilation=attrs.dilation, groups=attrs.groups, out_dtype="int32")
        return builder.emit(conv, f"{layer.out.name}_int")


def dense_weight(weight: np.ndarray, groups: int) -> np.ndarray:
    """A grouped OIHW weight as the equivalent ungrouped one (zeros outside each group)."""
    if groups == 1:
        return weight
    out_channels, per_group, kh, kw = weight.shape
    dense = np.zeros((out_channels, per_group * groups, kh, kw), weight.dtype)
    step = out_channels // groups
    for g in range(groups):
        dense[g * step:(g + 1) * step, g * per_group:(g + 1) * per_group] = weight[g * step:(g + 1) * step]
    return dense


def im2col(x: np.ndarray, layer: Layer) -> np.ndarray:
    """(N, C, H, W) -> (N*OH*OW, C*KH*KW) patches, zero padded."""
    attrs = layer.call.attrs
    (top, left, bottom, right), (sh, sw), (dh, dw) = ([int(v) for v in attrs.padding],
                                                      [int(v) for v in attrs.strides],
                                                      [int(v) for v in attrs.dilation])
    _, _, kh, kw = layer.weight.shape
    x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    n, c, h, w = x.shape
    oh, ow = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
    cols = np.empty((n, c, kh, kw, oh, ow), x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = x[:, :, i * dh: i * dh + sh * oh: sh, j * dw: j * dw + sw * ow: sw]
    return cols.transpose(0, 4, 5, 1, 2, 3).reshape(n * oh * ow, c * kh * kw)
