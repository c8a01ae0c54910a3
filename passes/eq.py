"""EQ (EasyQuant, Wu et al. 2020): search activation and weight scales for cosine similarity.

Layer by layer, in network order, with the input the *quantized* network feeds that layer:

    S_a    = argmax_s  cos(Y_fp32, f(Q(X, s), Q(W, S_w)))           s in [0.5, 2] * S_a0
    S_w[c] = argmax_s  cos(Y_fp32[:, c], f_c(Q(X, S_a), Q(W_c, s)))  s in [0.5, 2] * S_w0[c]

alternating a few rounds, where ``f`` is the layer (conv as im2col @ W^T, or dense) with its
bias and output clamp, and ``Y_fp32`` the fp32 network's output of that layer. Each step is
one batched matmul per candidate (numpy, vectorized over channels).

The ``eq`` calibrator starts from MinMax ranges; ``layerwise_search`` tells the driver to
run this search after calibration (see ``tvmq.easyquant``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .calibrators import register_calibrator
from .graph import Layer
from .minmax import MinMaxObserver
from .qparams import WEIGHT_QMAX, activation_qparams, dequantize, quantize

NUM_STEPS = 100
LOW, HIGH = 0.5, 2.0
ROUNDS = 2
MAX_ROWS = 4096  # output positions sampled for the search


@register_calibrator("eq")
class EasyQuantObserver(MinMaxObserver):
    """MinMax ranges, refined afterwards by the layer-wise EasyQuant search."""

    layerwise_search = True


@dataclass
class LayerProblem:
    """A layer as matrices: ``rows_fp`` / ``rows_q`` (M, K) inputs, ``weight`` (C, K), ``target`` (M, C)."""

    rows_fp: np.ndarray
    rows_q: np.ndarray
    weight: np.ndarray
    bias: np.ndarray
    clamp: tuple[float, float]
    target: np.ndarray


def layer_problem(layer: Layer, x_fp: np.ndarray, x_q: np.ndarray, seed: int = 0) -> LayerProblem:
    """Lay a conv2d / dense layer out as matmuls over (a sample of) its output positions."""
    if layer.kind == "dense":
        rows_fp, rows_q, weight = x_fp, x_q, layer.weight.T
    else:
        rows_fp, rows_q = _im2col(x_fp, layer), _im2col(x_q, layer)
        weight = _dense_weight(layer.weight, int(layer.call.attrs.groups)).reshape(layer.weight.shape[0], -1)
    if len(rows_fp) > MAX_ROWS:
        keep = np.random.default_rng(seed).choice(len(rows_fp), MAX_ROWS, replace=False)
        rows_fp, rows_q = rows_fp[keep], rows_q[keep]
    bias = layer.bias if layer.bias is not None else np.zeros(weight.shape[0], np.float32)
    target = _apply(rows_fp, weight, bias, layer.clamp)
    return LayerProblem(rows_fp, rows_q, weight.astype(np.float32), bias, layer.clamp, target)


def search(problem: LayerProblem, act_range: tuple[float, float], dtype: str, per_channel: bool,
           weight_qmax: int = WEIGHT_QMAX):
    """Alternate the activation and weight searches (weights on ``[-weight_qmax, weight_qmax]``);
    return ``((lo, hi), weight scales)``."""
    factors = np.linspace(LOW, HIGH, NUM_STEPS)
    axis = 0 if per_channel else None
    w_scale = np.maximum(np.abs(problem.weight).max(axis=1 if per_channel else None) / weight_qmax, 1e-8)
    w_scale = w_scale.astype(np.float32)
    act_factor = 1.0
    for _ in range(ROUNDS):
        weight_q = _fake_weight(problem.weight, w_scale, axis, weight_qmax)
        scores = [_cosine(problem.target, _apply(_fake_act(problem.rows_q, act_range, f, dtype), weight_q,
                                                  problem.bias, problem.clamp)) for f in factors]
        act_factor = float(factors[int(np.argmax(scores))])
        rows = _fake_act(problem.rows_q, act_range, act_factor, dtype)
        w_scale = _search_weight_scales(problem, rows, w_scale, factors, axis, weight_qmax)
    return (act_range[0] * act_factor, act_range[1] * act_factor), w_scale


def _search_weight_scales(problem: LayerProblem, rows: np.ndarray, w_scale: np.ndarray, factors, axis,
                          weight_qmax: int):
    per_candidate = []
    for f in factors:
        out = _apply(rows, _fake_weight(problem.weight, w_scale * f, axis, weight_qmax), problem.bias, problem.clamp)
        per_candidate.append(_channel_cosine(problem.target, out) if axis is not None
                             else np.array([_cosine(problem.target, out)]))
    best = np.argmax(np.stack(per_candidate), axis=0)  # per channel (or one for the tensor)
    return (w_scale * factors[best] if axis is not None else w_scale * factors[best[0]]).astype(np.float32)


def _fake_act(rows: np.ndarray, act_range, factor: float, dtype: str) -> np.ndarray:
    qp = activation_qparams(act_range[0] * factor, act_range[1] * factor, dtype)
    return dequantize(quantize(rows, qp), qp)


def _fake_weight(weight: np.ndarray, scale: np.ndarray, axis, qmax: int = WEIGHT_QMAX) -> np.ndarray:
    scale = scale.reshape(-1, 1) if axis is not None else scale
    return np.clip(np.round(weight / scale), -qmax, qmax).astype(np.float32) * scale


def _apply(rows: np.ndarray, weight: np.ndarray, bias: np.ndarray, clamp) -> np.ndarray:
    return np.clip(rows @ weight.T + bias, clamp[0], clamp[1])


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))


def _channel_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(0) / np.maximum(np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0), 1e-30)


def _dense_weight(weight: np.ndarray, groups: int) -> np.ndarray:
    """A grouped OIHW weight as the equivalent ungrouped one (zeros outside each group)."""
    if groups == 1:
        return weight
    out_channels, per_group, kh, kw = weight.shape
    dense = np.zeros((out_channels, per_group * groups, kh, kw), weight.dtype)
    step = out_channels // groups
    for g in range(groups):
        dense[g * step:(g + 1) * step, g * per_group:(g + 1) * per_group] = weight[g * step:(g + 1) * step]
    return dense


def _im2col(x: np.ndarray, layer: Layer) -> np.ndarray:
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
