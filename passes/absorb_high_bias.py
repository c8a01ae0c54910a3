"""AbsorbHighBias: move the part of a bias that always passes a ReLU into the next layer.

DFQ (Nagel et al. 2019, sec. 4.3): if layer 1's output channel i is N(mean_i, std_i) (its
folded BatchNorm's beta and |gamma|), then c_i = max(0, mean_i - 3 std_i) is (almost) always
below the ReLU's input, so relu(x - c) = relu(x) - c there and

    W2 relu(W1 x + b1) + b2  ~=  W2 relu(W1 x + b1 - c) + (b2 + W2 c)

with ``W2 c`` summed over input channels and kernel taps. The output range of layer 1 shrinks
by c (finer activation scales); the function changes only where the 3-sigma assumption fails
or where zero padding would have met the shifted values (image borders).
"""

from __future__ import annotations

import numpy as np
import tvm

from .equalize_cross_layer import LayerRewriter, input_channel_axis, layer_bias, layer_pairs
from .graph import append_note, batchnorm_stats, with_batchnorm_stats, with_main
from .layers import find_layers

SIGMAS = 3.0


def absorbable(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``c = max(0, mean - 3 std)``: the part of each channel that a ReLU always passes."""
    return np.maximum(0.0, mean - SIGMAS * std).astype(np.float32)


def input_shift(weight: np.ndarray, shift: np.ndarray, in_axis: int, out_axis: int) -> np.ndarray:
    """``W2 c``: what adding ``shift`` to every input channel adds to each output channel."""
    shape = [1] * weight.ndim
    shape[in_axis] = -1
    reduce = tuple(i for i in range(weight.ndim) if i != out_axis)
    return (weight * shift.reshape(shape)).sum(axis=reduce).astype(np.float32)


@tvm.transform.module_pass(opt_level=0, name="tvmq.AbsorbHighBias")
class AbsorbHighBias:
    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        func = mod["main"]
        layers, stats = find_layers(func), batchnorm_stats(func)
        pairs = [p for p in layer_pairs(func, layers) if p.first.clamp == (0.0, np.inf)
                 and p.second.bias is not None and _stats_of(p.first, stats) is not None]
        weights = {id(layer): layer.weight for layer in layers.values()}
        biases = {id(layer): layer_bias(layer).copy() for layer in layers.values()}
        absorbed = {}
        for pair in pairs:
            name = _stats_of(pair.first, stats)
            shift = absorbable(stats[name]["mean"], stats[name]["std"])
            if not shift.any():
                continue
            biases[id(pair.first)] -= shift
            biases[id(pair.second)] += input_shift(pair.second.weight, shift, input_channel_axis(pair.second),
                                                   pair.second.channel_axis)
            stats[name] = {"mean": stats[name]["mean"] - shift, "std": stats[name]["std"]}
            absorbed[pair.first.out.name] = float(shift.max())
        rewritten = LayerRewriter(mod, pairs, weights, biases).visit_expr(func)
        rewritten = with_batchnorm_stats(rewritten, stats)
        note = {"pass": "AbsorbHighBias", "layers": sorted(absorbed), "max_abs_bias_shift": max(absorbed.values(),
                                                                                                  default=0.0)}
        return with_main(mod, append_note(rewritten, note))


def _stats_of(layer, stats: dict) -> str | None:
    return next((v.name for v in layer.chain if v.name in stats), None)
