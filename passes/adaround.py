"""AdaRound (Nagel et al. 2020, "Up or Down? Adaptive Rounding for Post-Training Quantization"),
as AIMET's ``Adaround.apply_adaround`` does it, in vectorised numpy.

Per conv / dense layer, with the input the int8 network feeds it (``x_q``, fake-quantized) and the
fp32 network's output of that layer (``y``), learn for every weight whether to round down or up:

    W~    = s * clip(floor(W / s) + h(V), -qmax, qmax)
    h(V)  = clip(sigmoid(V) (zeta - gamma) + gamma, 0, 1)            zeta = 1.1, gamma = -0.1
    L     = mean_rows sum_channels (f(x_q W~^T + b) - y)^2 + lambda sum (1 - |2 h(V) - 1|^beta)

``f`` is the layer's fused clamp (ReLU / ReLU6), ``h(V)`` starts at the fractional part of ``W / s``
(so ``W~ = W`` at first), Adam minimises ``L`` over minibatches of rows, the regulariser is off for
the first ``warm_start`` of the iterations and ``beta`` then anneals from 20 to 2 (cosine), which
drives every ``h(V)`` to 0 or 1. The result is ``floor(W / s) + [V >= 0]``, clipped: each weight is
the floor or the ceil of ``W / s``, never further, on the layer's own scale ``s``.

A grouped conv is ``G`` independent problems (``rows (G, M, K)``, ``weight (G, O, K)``), solved as one
batched matmul; a dense layer or an ungrouped conv is ``G = 1``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

ZETA, GAMMA = 1.1, -0.1  # the rectified sigmoid's stretch (AIMET's defaults)
MAX_POOL_BYTES = 256 << 20  # the rows one layer keeps for its problem (input + target), at most


@dataclass(frozen=True)
class AdaRoundOptions:
    """AIMET's defaults: 10k iterations, regulariser weight 0.01, beta 20 -> 2, warm start 20 %,
    Adam at 1e-3; ``batch_rows`` output positions per iteration, ``max_rows`` kept per layer."""

    iterations: int = 10000
    reg_weight: float = 0.01
    beta_range: tuple[float, float] = (20.0, 2.0)
    warm_start: float = 0.2
    learning_rate: float = 1e-3
    batch_rows: int = 512
    max_rows: int = 16384
    seed: int = 0


@dataclass
class RoundingProblem:
    """One layer as ``G`` batched matmuls: ``rows (G, M, K)`` fake-quantized inputs, ``weight (G, O, K)``,
    ``scale`` broadcastable to it, ``bias (G, O)``, ``target (G, M, O)`` the fp32 outputs (clamped)."""

    rows: np.ndarray
    weight: np.ndarray
    scale: np.ndarray
    bias: np.ndarray
    clamp: tuple[float, float]
    target: np.ndarray
    qmax: int


@dataclass
class Rounding:
    """The learned integers ``(G, O, K)``, the final soft rounding ``h(V)`` and the loss history."""

    integers: np.ndarray
    soft: np.ndarray
    losses: list


def rectified_sigmoid(v: np.ndarray) -> np.ndarray:
    """``h(V) = clip(sigmoid(V) (zeta - gamma) + gamma, 0, 1)``."""
    return np.clip(_sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def initial_v(rest: np.ndarray) -> np.ndarray:
    """``V`` with ``h(V) = rest`` (the fractional part of ``W / s``): ``-log((zeta - gamma) / (rest - gamma) - 1)``."""
    return (-np.log((ZETA - GAMMA) / (rest - GAMMA) - 1.0)).astype(np.float32)


def beta_at(step: int, options: AdaRoundOptions) -> float | None:
    """The regulariser's exponent at ``step``: None during the warm start, then
    ``beta_end + (beta_start - beta_end) (1 + cos(pi t)) / 2`` with ``t`` the annealing's progress."""
    start = options.warm_start * options.iterations
    if step < start:
        return None
    progress = (step - start) / max(options.iterations - start, 1)
    high, low = options.beta_range
    return low + 0.5 * (high - low) * (1.0 + math.cos(progress * math.pi))


def reconstruction_error(problem: RoundingProblem, integers: np.ndarray) -> float:
    """``mean_rows sum_channels (f(x_q (s w_q)^T + b) - y)^2`` of ``integers`` on the whole problem."""
    out = _forward(problem.rows, problem.scale * integers.astype(np.float32), problem.bias, problem.clamp)[0]
    return float(((out - problem.target) ** 2).sum(axis=(0, 2)).mean())


def nearest(problem: RoundingProblem) -> np.ndarray:
    """Round to nearest (half to even), clipped: the rounding AdaRound improves on."""
    return np.clip(np.round(problem.weight / problem.scale), -problem.qmax, problem.qmax)


def learn_rounding(problem: RoundingProblem, options: AdaRoundOptions = AdaRoundOptions(),
                   progress=None) -> Rounding:
    """Minimise ``L`` over ``V`` by Adam; ``progress`` (a tqdm bar or None) ticks once per iteration."""
    scaled = problem.weight / problem.scale
    floor = np.floor(scaled).astype(np.float32)
    v = initial_v(np.clip(scaled - floor, 0.0, 1.0))
    adam = _Adam(v.shape, options.learning_rate)
    rng = np.random.default_rng(options.seed)
    rows_total = problem.rows.shape[1]
    losses = []
    for step in range(options.iterations):
        pick = rng.choice(rows_total, min(options.batch_rows, rows_total), replace=False)
        loss, grad = _loss_and_grad(problem, floor, v, problem.rows[:, pick], problem.target[:, pick],
                                    beta_at(step, options), options.reg_weight)
        v -= adam.step(grad)
        losses.append(loss)
        if progress is not None:
            progress.update(1)
    integers = np.clip(floor + (v >= 0), -problem.qmax, problem.qmax)
    return Rounding(integers.astype(np.int8), rectified_sigmoid(v), losses)


def _loss_and_grad(problem, floor, v, rows, target, beta, reg_weight):
    """``L`` and ``dL/dV`` on one minibatch (the chain rule through the clamp, the weight clip and ``h``)."""
    sig = _sigmoid(v)
    stretched = sig * (ZETA - GAMMA) + GAMMA
    h = np.clip(stretched, 0.0, 1.0)
    levels = floor + h
    inside = (levels >= -problem.qmax) & (levels <= problem.qmax)
    soft = problem.scale * np.clip(levels, -problem.qmax, problem.qmax)
    out, passes = _forward(rows, soft, problem.bias, problem.clamp)
    error = out - target
    loss = float((error ** 2).sum(axis=(0, 2)).mean())
    d_out = (2.0 / rows.shape[1]) * error * passes  # (G, M, O)
    d_soft = _batched_matmul(d_out.transpose(0, 2, 1), rows)  # (G, O, K)
    d_h = d_soft * problem.scale * inside
    if beta is not None:
        centred = 2.0 * h - 1.0
        loss += reg_weight * float((1.0 - np.abs(centred) ** beta).sum())
        d_h = d_h - reg_weight * beta * np.abs(centred) ** (beta - 1.0) * np.sign(centred) * 2.0
    d_v = d_h * (ZETA - GAMMA) * sig * (1.0 - sig) * ((stretched > 0.0) & (stretched < 1.0))
    return loss, d_v.astype(np.float32)


def _forward(rows, weight, bias, clamp):
    """``f(rows @ weight^T + b)`` per group and where the clamp lets the gradient through."""
    pre = _batched_matmul(rows, weight.transpose(0, 2, 1)) + bias[:, None, :]
    lo, hi = clamp
    return np.clip(pre, lo, hi), (pre >= lo) & (pre <= hi)


def _batched_matmul(a, b):
    """``a @ b`` per group: one BLAS call for a single group (numpy's batched loop on strided
    operands is ~50x slower), contiguous operands for many."""
    if a.shape[0] == 1:
        return (a[0] @ b[0])[None]
    return np.matmul(np.ascontiguousarray(a), np.ascontiguousarray(b))


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


class _Adam:
    """Adam (Kingma and Ba) with PyTorch's defaults: ``beta1 = 0.9``, ``beta2 = 0.999``, ``eps = 1e-8``."""

    def __init__(self, shape, learning_rate: float):
        self.m, self.v = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
        self.rate, self.t = learning_rate, 0

    def step(self, grad: np.ndarray) -> np.ndarray:
        self.t += 1
        self.m = 0.9 * self.m + 0.1 * grad
        self.v = 0.999 * self.v + 0.001 * grad * grad
        m_hat, v_hat = self.m / (1 - 0.9 ** self.t), self.v / (1 - 0.999 ** self.t)
        return (self.rate * m_hat / (np.sqrt(v_hat) + 1e-8)).astype(np.float32)


# ---- a layer as a rounding problem ------------------------------------------------------------


def grouped_weight(layer) -> np.ndarray:
    """The layer's weight as ``(G, O, K)``: a conv's OIHW per group, a dense layer's ``(K, N)`` transposed."""
    return _VIEWS[layer.kind][0](layer)


def layer_weight(grouped: np.ndarray, layer) -> np.ndarray:
    """:func:`grouped_weight`'s inverse: ``(G, O, K)`` back to the layer's weight layout."""
    return _VIEWS[layer.kind][1](grouped, layer)


def grouped_rows(rows: np.ndarray, layer) -> np.ndarray:
    """The kind's ``(M, K_total)`` rows (im2col) as ``(G, M, K)``: group ``g`` reads columns ``g K .. (g + 1) K``."""
    groups = layer.form.groups(layer)
    return np.ascontiguousarray(rows.reshape(rows.shape[0], groups, -1).transpose(1, 0, 2))


def _conv_weight(layer):
    groups = layer.form.groups(layer)
    out_channels = layer.weight.shape[0]
    return layer.weight.reshape(groups, out_channels // groups, -1)


_VIEWS = {
    "conv2d": (_conv_weight, lambda grouped, layer: grouped.reshape(layer.weight.shape)),
    "dense": (lambda layer: layer.weight.T[None], lambda grouped, layer: grouped[0].T),
}


def rounding_problem(layer, x_fp: np.ndarray, x_q: np.ndarray, fake_input, scale: np.ndarray, qmax: int,
                     options: AdaRoundOptions = AdaRoundOptions()) -> RoundingProblem:
    """The layer's problem from its fp32-network input ``x_fp`` and int8-network input ``x_q``:
    ``fake_input`` quantizes rows as the int8 layer reads them; at most ``options.max_rows`` output
    positions (fewer for wide layers: input and target within ``MAX_POOL_BYTES``), drawn at random."""
    weight = grouped_weight(layer).astype(np.float32)
    groups, out_per_group, k = weight.shape
    rows_fp, rows_q = layer.form.rows(x_fp, layer), layer.form.rows(x_q, layer)
    limit = max(1, min(options.max_rows, MAX_POOL_BYTES // (4 * groups * (k + out_per_group))))
    if len(rows_fp) > limit:
        keep = np.sort(np.random.default_rng(options.seed).choice(len(rows_fp), limit, replace=False))
        rows_fp, rows_q = rows_fp[keep], rows_q[keep]
    bias = layer.bias_or_zeros().astype(np.float32).reshape(groups, out_per_group)
    scale = np.broadcast_to(np.asarray(scale, np.float32).reshape(-1), (groups * out_per_group,))
    target = _forward(grouped_rows(rows_fp.astype(np.float32), layer), weight, bias, layer.clamp)[0]
    return RoundingProblem(grouped_rows(fake_input(rows_q).astype(np.float32), layer), weight,
                           scale.reshape(groups, out_per_group, 1), bias, layer.clamp, target, qmax)


def adaround_layer(layer, problem: RoundingProblem, options: AdaRoundOptions, progress=None) -> np.ndarray:
    """The layer's int8 weight in its own layout, rounded as AdaRound learns it."""
    return layer_weight(learn_rounding(problem, options, progress).integers, layer).astype(np.int8)


def with_weight(layer, weight: np.ndarray):
    """A copy of ``layer`` with another weight (e.g. its dequantized AdaRound weight, for its matrix view)."""
    return dataclasses.replace(layer, weight=weight)
