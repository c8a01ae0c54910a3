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
from .layers import Layer
from .minmax import MinMaxObserver
from .qparams import WEIGHT_QMAX, activation_qparams, dequantize, quantize, weight_scale

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
    """Lay a layer out as matmuls over (a sample of) its output positions (its kind's matrix view)."""
    form = layer.form
    rows_fp, rows_q, weight = form.rows(x_fp, layer), form.rows(x_q, layer), form.matrix(layer)
    if len(rows_fp) > MAX_ROWS:
        keep = np.random.default_rng(seed).choice(len(rows_fp), MAX_ROWS, replace=False)
        rows_fp, rows_q = rows_fp[keep], rows_q[keep]
    bias = layer.bias_or_zeros()
    target = _apply(rows_fp, weight, bias, layer.clamp)
    return LayerProblem(rows_fp, rows_q, weight.astype(np.float32), bias, layer.clamp, target)


def search(problem: LayerProblem, act_range: tuple[float, float], dtype: str, per_channel: bool,
           weight_qmax: int = WEIGHT_QMAX):
    """Alternate the activation and weight searches (weights on ``[-weight_qmax, weight_qmax]``);
    return ``((lo, hi), weight scales)``."""
    factors = np.linspace(LOW, HIGH, NUM_STEPS)
    axis = 0 if per_channel else None
    w_scale = weight_scale(problem.weight, axis, weight_qmax)
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
