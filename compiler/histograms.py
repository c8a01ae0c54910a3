"""The worst layers' fp32 activations and weights as histograms, with their clipping ranges
(report.json's ``histograms``, drawn by ``report.html``).

Activations stream: each evaluation batch's fp32 value of a planned tensor adds to a fixed-bin
histogram over its clipping range ``[lo, hi]`` widened by a quarter of its width on each side
(values beyond fall in ``below`` / ``above``), from at most ``SAMPLE`` values a batch (strided), so
no activation is kept and big tensors cost little. Weights are drawn in quantization steps of
their own channel, ``w / s_c``: whatever lies beyond ``[qmin, qmax]`` is clipped.
"""

from __future__ import annotations

import numpy as np

BINS = 48
SAMPLE = 1 << 16
WORST = 3


class ActivationHistograms:
    """Fixed-bin histograms of fp32 tensors over their clipping ``ranges`` (tensor -> ``(lo, hi)``)."""

    def __init__(self, ranges: dict):
        self.ranges, self.counts, self.outside = dict(ranges), {}, {}

    def add(self, name: str, values: np.ndarray) -> None:
        """Add one batch of ``name``'s fp32 values (ignored for a tensor without a range)."""
        if name not in self.ranges:
            return
        flat = np.asarray(values, np.float32).ravel()
        flat = flat[::max(1, flat.size // SAMPLE)]
        edges = activation_edges(*self.ranges[name])
        counts, _ = np.histogram(flat, edges)
        self.counts[name] = self.counts.get(name, 0) + counts
        below, above = self.outside.get(name, (0, 0))
        self.outside[name] = (below + int((flat < edges[0]).sum()), above + int((flat > edges[-1]).sum()))

    def to_json(self, name: str) -> dict | None:
        if name not in self.counts:
            return None
        below, above = self.outside[name]
        lo, hi = self.ranges[name]
        return {"range": [float(lo), float(hi)], "edges": _floats(activation_edges(lo, hi)),
                "counts": self.counts[name].astype(int).tolist(), "below": below, "above": above}


def activation_edges(lo: float, hi: float) -> np.ndarray:
    """``BINS + 1`` edges over ``[lo - w/4, hi + w/4]``, ``w = hi - lo`` (at least 1e-6)."""
    margin = max(float(hi) - float(lo), 1e-6) / 4
    return np.linspace(float(lo) - margin, float(hi) + margin, BINS + 1)


def weight_histogram(weight: np.ndarray, scale, axis: int | None, qmin: int, qmax: int) -> dict:
    """``weight / scale`` (per channel along ``axis``, else one scale) in quantization steps."""
    scale = np.asarray(scale, np.float64)
    if axis is not None and scale.ndim:
        shape = [1] * weight.ndim
        shape[axis] = -1
        scale = scale.reshape(shape)
    steps = (weight / np.maximum(scale, 1e-30)).ravel()
    edges = np.linspace(min(qmin * 1.25, steps.min()), max(qmax * 1.25, steps.max()), BINS + 1)
    counts, _ = np.histogram(steps, edges)
    return {"range": [qmin, qmax], "edges": _floats(edges), "counts": counts.astype(int).tolist(),
            "below": int((steps < qmin - 0.5).sum()), "above": int((steps > qmax + 0.5).sum()),
            "unit": "quantization steps of the channel's scale"}


def worst_layers(plan, sqnr: dict, activations: ActivationHistograms, func, nodes: dict, onnx_names: dict,
                 count: int = WORST) -> list[dict]:
    """The ``count`` int8 layers of ``plan`` with the lowest output SQNR: their output activation's
    and weight's histograms, keyed by ONNX node and tensor names (``nodes``: tensor -> (node, op))."""
    from tvmq.passes.graph import find_layers

    weights = {layer.out.name: layer.weight for layer in find_layers(func).values()}
    ranked = sorted((entry for entry in plan.layers.values()
                     if entry.precision == "int8" and sqnr.get(entry.tensor) is not None and entry.tensor in weights),
                    key=lambda entry: sqnr[entry.tensor])
    out = []
    for entry in ranked[:count]:
        w, db = entry.weight, sqnr[entry.tensor]
        out.append({"layer": next((nodes[t][0] for t in entry.chain if t in nodes), entry.tensor),
                    "tensor": onnx_names.get(entry.tensor, entry.tensor), "sqnr_db": round(float(db), 2),
                    "activation": activations.to_json(entry.tensor),
                    "weight": weight_histogram(weights[entry.tensor], w.scale, w.axis, w.qmin, w.qmax)})
    return out


def _floats(values) -> list[float]:
    return [round(float(v), 6) for v in values]
