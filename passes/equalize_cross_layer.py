"""EqualizeCrossLayer: cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization").

For two layers joined by a ReLU (or directly), ``y = W2 relu(W1 x + b1) + b2``, scaling
output channel i of layer 1 by 1/s_i and input channel i of layer 2 by s_i keeps the function
(ReLU is positively homogeneous) while moving weight range between them:

    s_i = sqrt(r1_i * r2_i) / r2_i,   r1_i = max|W1[i, ...]|,   r2_i = max|W2[:, i, ...]|

after which both layers' channel i has range sqrt(r1_i r2_i). Chains (1x1 -> depthwise 3x3
-> 1x1) are equalized pair by pair, repeatedly, until the scales stop moving. A ReLU6 between
two layers does not commute with scaling; it is replaced by ReLU first, which changes fp32
outputs where activations exceeded 6 — the pass records every such replacement.

The pass appends what it did to the function attribute ``tvmq.passes`` (JSON list).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from .graph import append_note, batchnorm_stats, use_counts, with_batchnorm_stats, with_main
from .layers import Layer, find_layers

MAX_ITERATIONS = 20
TOLERANCE = 1e-6


def equalization_scales(range1: np.ndarray, range2: np.ndarray) -> np.ndarray:
    """``s_i = sqrt(r1_i r2_i) / r2_i``; channels with a zero, NaN or Inf range keep s_i = 1."""
    with np.errstate(divide="ignore", invalid="ignore"):
        scales = np.sqrt(range1 * range2) / range2
    return np.where(np.isfinite(scales) & (scales > 0), scales, 1.0).astype(np.float32)


@dataclass
class _Pair:
    first: Layer
    second: Layer


@tvm.transform.module_pass(opt_level=0, name="tvmq.EqualizeCrossLayer")
class EqualizeCrossLayer:
    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        func = mod["main"]
        layers = find_layers(func)
        pairs = layer_pairs(func, layers)
        weights = {id(layer): layer.weight.copy() for layer in layers.values()}
        biases = {id(layer): layer_bias(layer).copy() for layer in layers.values()}
        out_scales = {id(layer): np.ones_like(layer_bias(layer)) for layer in layers.values()}
        iterations = 0
        for iterations in range(1, MAX_ITERATIONS + 1):
            moved = max((_equalize(p, weights, biases, out_scales) for p in pairs), default=0.0)
            if moved < TOLERANCE:
                break
        relu6 = [p.first.out.name for p in pairs if np.isfinite(p.first.clamp[1])]
        rewritten = LayerRewriter(mod, pairs, weights, biases).visit_expr(func)
        rewritten = with_batchnorm_stats(rewritten, _scaled_stats(func, layers, out_scales))
        note = {"pass": "EqualizeCrossLayer", "pairs": [[p.first.out.name, p.second.out.name] for p in pairs],
                "iterations": iterations, "relu6_replaced_by_relu": relu6}
        return with_main(mod, append_note(rewritten, note))


def _scaled_stats(func: relax.Function, layers: dict, out_scales: dict) -> dict:
    """BatchNorm output statistics divided by the scale each output channel was divided by."""
    stats = batchnorm_stats(func)
    for layer in layers.values():
        for var in layer.chain:
            if var.name in stats:
                stats[var.name] = {k: v / out_scales[id(layer)] for k, v in stats[var.name].items()}
    return stats


def layer_bias(layer: Layer) -> np.ndarray:
    return layer.bias_or_zeros()


def layer_pairs(func: relax.Function, layers: dict) -> list[_Pair]:
    """Consecutive layers whose join is used once and is identity, ReLU or ReLU6."""
    uses = use_counts(func)
    by_input = {}
    for layer in layers.values():
        by_input.setdefault(layer.data, []).append(layer)
    pairs = []
    for first in layers.values():
        seconds = by_input.get(first.out, [])
        lo, hi = first.clamp
        if len(seconds) != 1 or uses[first.out] != 1 or lo not in (0.0, -np.inf) or (np.isfinite(hi) and lo != 0.0):
            continue
        if input_channel_axis(seconds[0]) is not None:
            pairs.append(_Pair(first, seconds[0]))
    return pairs


def input_channel_axis(layer: Layer) -> int | None:
    """The axis of ``layer.weight`` that indexes its input channels (None: not equalizable)."""
    return layer.form.input_channel_axis(layer)


def _channel_range(weight: np.ndarray, axis: int) -> np.ndarray:
    return np.abs(weight).max(axis=tuple(i for i in range(weight.ndim) if i != axis))


def _equalize(pair: _Pair, weights: dict, biases: dict, out_scales: dict) -> float:
    w1, w2 = weights[id(pair.first)], weights[id(pair.second)]
    out_axis, in_axis = pair.first.channel_axis, input_channel_axis(pair.second)
    scales = equalization_scales(_channel_range(w1, out_axis), _channel_range(w2, in_axis))
    weights[id(pair.first)] = w1 / _along(scales, out_axis, w1.ndim)
    biases[id(pair.first)] = biases[id(pair.first)] / scales
    out_scales[id(pair.first)] = out_scales[id(pair.first)] * scales
    weights[id(pair.second)] = w2 * _along(scales, in_axis, w2.ndim)
    return float(np.abs(np.log(scales)).max(initial=0.0))


def _along(values: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    shape = [1] * ndim
    shape[axis] = -1
    return values.reshape(shape)


@relax.expr_functor.mutator
class LayerRewriter(relax.PyExprMutator):
    """Swap in the equalized weights and biases; turn ReLU6 clamps between pairs into ReLU."""

    def __init__(self, mod, pairs: list[_Pair], weights: dict, biases: dict):
        super().__init__(mod)
        self.layer_of = {}
        for pair in pairs:
            for layer in (pair.first, pair.second):
                self.layer_of[layer.chain[0]] = layer
                if layer.bias is not None:
                    self.layer_of[layer.chain[1]] = layer
        self.relu6 = {p.first.chain[-1] for p in pairs if np.isfinite(p.first.clamp[1])}
        self.weights, self.biases = weights, biases

    def visit_var_binding_(self, binding):
        var, value = binding.var, binding.value
        layer = self.layer_of.get(var)
        if var in self.relu6:
            new = relax.op.nn.relu(self.visit_expr(value.args[0]))
        elif layer is not None and var.same_as(layer.chain[0]):
            weight = relax.const(self.weights[id(layer)].astype(np.float32))
            new = relax.Call(value.op, [self.visit_expr(value.args[0]), weight], value.attrs, value.ty_args)
        elif layer is not None:
            bias = layer.form.output_shape(self.biases[id(layer)], layer)
            new = relax.op.add(self.visit_expr(value.args[0]), relax.const(bias.astype(np.float32)))
        else:
            super().visit_var_binding_(binding)
            return
        self.set_var_remap(var, self.builder_.emit(new, var.name))
