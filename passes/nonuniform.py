"""Non-uniform weights (Huawei AMCT's approach): k of the int8 levels per layer, chosen by weighted k-means.

For a conv (groups 1) or dense layer with int8 weights ``q`` (nearest or AdaRound's, on the layer's
scales), the distinct values ``v`` with weights ``w_v = sum_{q_i = v} a_i`` (``a_i = 1``: value counts;
or an importance per weight, e.g. ``E[x^2]`` of the input it multiplies) are split into ``k`` levels
``c_1 < ... < c_k`` minimising

    sum_v w_v min_j (v - c_j)^2

exactly, by dynamic programming over the sorted values (1-D k-means has contiguous clusters:
Wang and Song 2011, Ckmeans.1d.dp); each level is its cluster's weighted mean rounded to an
integer. One level is pinned at 0 (the cluster nearest it moved there, then Lloyd steps with
that level fixed), so exact zeros stay exact and the zero padding of packed kernel layouts is one
of the k table entries. Each weight snaps to its nearest level: ``q' = c_{argmin_j |q - c_j|}``.

``q'`` goes into the plan (``LayerPlan.weight_q``, ``weight_levels = k``), so the simulation, the
integer module and the deployed one all compute with the same int8 integers; the artifact stores
them as ``log2(k)``-bit indices plus the k-entry table (:mod:`tvmq.weight_codecs`' ``lut``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .layers import find_layers
from .plan import LayerPlan, QuantPlan

LEVELS = (16, 32, 64)  # the k a layer may get
LLOYD_STEPS = 50


def kmeans_levels(values: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` integer levels (sorted, 0 among them) minimising ``sum_v w_v min_j (v - c_j)^2`` over the
    distinct integer ``values`` with ``weights`` (all of them when there are at most ``k``)."""
    values, weights = np.asarray(values, np.float64), np.asarray(weights, np.float64)
    if values.size <= k:
        every = np.union1d(values, [0.0])
        return every.astype(np.int64) if every.size <= k else _pinned(values, weights, values)
    return _pinned(values, weights, _optimal_centres(values, weights, k))


def _optimal_centres(x: np.ndarray, w: np.ndarray, k: int) -> np.ndarray:
    """Weighted 1-D k-means by dynamic programming: ``D[j, i]`` the least cost of ``x[:i + 1]`` in
    ``j + 1`` clusters, ``D[j, i] = min_m D[j - 1, m - 1] + cost(m, i)``; the clusters' weighted means."""
    n = x.size
    s1, s2, s3 = (np.concatenate([[0.0], np.cumsum(a)]) for a in (w, w * x, w * x * x))
    start, end = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")  # cluster x[start .. end]
    inside = start <= end
    mass = np.where(inside, s1[end + 1] - s1[start], 1.0)
    cost = np.where(inside, s3[end + 1] - s3[start] - (s2[end + 1] - s2[start]) ** 2 / mass, np.inf)
    best, choice = cost[0].copy(), np.zeros((k, n), np.int64)
    for j in range(1, k):
        total = np.concatenate([[np.inf], best[:-1]])[:, None] + cost  # D[j - 1, m - 1] + cost(m, i), m >= 1
        total[0] = np.inf
        choice[j] = total.argmin(axis=0)
        best = total[choice[j], np.arange(n)]
    bounds, end_at = [], n - 1
    for j in range(k - 1, -1, -1):
        begin = choice[j, end_at] if j else 0
        bounds.append((begin, end_at))
        end_at = begin - 1
    return np.array([(w[a:b + 1] * x[a:b + 1]).sum() / w[a:b + 1].sum() for a, b in reversed(bounds)])


def _pinned(x: np.ndarray, w: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """``centres`` rounded to integers with the one nearest 0 moved to 0, refined by Lloyd steps
    (assign each value to its nearest level, move every level but 0 to its members' rounded mean)."""
    levels = np.rint(centres)
    levels[np.abs(levels).argmin()] = 0.0
    for _ in range(LLOYD_STEPS):
        levels = np.unique(levels)
        members = _nearest(x, levels)
        moved = np.array([0.0 if c == 0 else np.rint((w * x)[members == j].sum() / w[members == j].sum())
                          if w[members == j].sum() > 0 else c for j, c in enumerate(levels)])
        if np.array_equal(np.unique(moved), levels):
            break
        levels = moved
    return np.unique(levels).astype(np.int64)


def _nearest(x: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Index of the nearest of the sorted ``levels`` for every ``x`` (a tie goes to the lower level)."""
    right = np.clip(np.searchsorted(levels, x), 1, max(levels.size - 1, 1))
    left = right - 1
    if levels.size == 1:
        return np.zeros(x.shape, np.int64)
    return np.where(np.abs(x - levels[left]) <= np.abs(x - levels[right]), left, right)


def snap(q: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Every int8 value of ``q`` replaced by its nearest level."""
    levels = np.sort(np.asarray(levels))
    return levels[_nearest(q.astype(np.float64), levels.astype(np.float64))].astype(np.int8)


def non_uniform(q: np.ndarray, k: int, importance: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(q', levels)``: ``q`` on its ``k`` weighted k-means levels (``importance`` broadcastable to ``q``,
    default 1 per weight: the value counts)."""
    values, inverse = np.unique(q, return_inverse=True)
    weight = np.ones(q.shape) if importance is None else np.broadcast_to(importance, q.shape)
    totals = np.bincount(inverse.ravel(), weights=np.asarray(weight, np.float64).ravel(), minlength=values.size)
    levels = kmeans_levels(values, np.maximum(totals, 1e-12), k)
    return snap(q, levels), levels


def eligible(func, plan: QuantPlan) -> list[str]:
    """The layers (plan tensors) that may take non-uniform weights: int8 convs of one group, int8 dense."""
    return [layer.out.name for layer in find_layers(func).values()
            if layer.out.name in plan.layers and plan.layers[layer.out.name].precision == "int8"
            and (layer.kind == "dense" or (layer.kind == "conv2d" and layer.form.groups(layer) == 1))]


def with_non_uniform(plan: QuantPlan, func, levels: dict, entry_of=None) -> QuantPlan:
    """A copy of ``plan`` whose layers in ``levels`` (plan tensor -> k) snap their int8 weights to k levels
    (``entry_of(name, k) -> LayerPlan``: a cache of :func:`non_uniform_entry`, default none)."""
    weights = {layer.out.name: layer.weight for layer in find_layers(func).values() if layer.out.name in levels}
    entry_of = entry_of or (lambda name, k: non_uniform_entry(plan.layers[name], weights[name], k))
    return dataclasses.replace(plan, layers={**plan.layers, **{name: entry_of(name, int(k))
                                                               for name, k in levels.items()}})


def non_uniform_entry(entry: LayerPlan, weight: np.ndarray, k: int) -> LayerPlan:
    """The layer's plan with its int8 weights (``entry.weight_integers(weight)``) on ``k`` levels."""
    snapped, _ = non_uniform(entry.weight_integers(weight), k)
    return dataclasses.replace(entry, weight_q=snapped, weight_levels=k)
