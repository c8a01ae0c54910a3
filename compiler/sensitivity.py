"""Per-layer sensitivity: the task metric with one layer's precision flipped, ranked.

From one calibration (every variant is the same plan with other layers kept fp32:
``_Quantized.realize(program, keep_fp32=...)``), for each int8 layer ``i``:

    recovered_i  = M(all int8 but i)  - M(all int8)     (the layer kept fp32, the rest int8)
    alone_i      = M(all fp32)        - M(only i int8)  (the layer int8, the rest fp32; optional)

``metric_drop`` is ``recovered_i``: the metric the quantized model loses to that layer in
context, which is what keeping it fp32 buys back and what mixed precision ranks by;
``metric_drop_alone`` is ``alone_i`` (AIMET's per-layer "quantize one at a time"). Each variant
is built once and evaluated once; :attr:`Sensitivity.seconds` says how long all of it took.

API (small on purpose; ``tvmq debug`` uses it too): :func:`measure` with any ``evaluate(keep_fp32)
-> metric`` and :func:`program_evaluator` for the usual one (each variant realized on the
analysis program, built for the host, run through :func:`tvmq.metric.module_run`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

from .metric import Metric, Run, evaluate as evaluate_metric, module_run

logger = logging.getLogger(__name__)

Evaluate = Callable[[tuple], float]  # layers kept fp32 (plan tensor names) -> metric


@dataclass(frozen=True)
class LayerSensitivity:
    """One layer: its plan tensor, ONNX node name, and the metric of each variant measured."""

    tensor: str
    name: str
    fp32_kept: float  # M(all int8 but this layer)
    int8_alone: float | None = None  # M(only this layer int8), when measured


@dataclass(frozen=True)
class Sensitivity:
    """The metric of fp32 and all-int8, each layer's variants, and the seconds they took."""

    fp32: float
    int8: float
    layers: tuple[LayerSensitivity, ...]
    seconds: float

    def recovered(self, layer: LayerSensitivity) -> float:
        return layer.fp32_kept - self.int8

    def ranked(self) -> list[LayerSensitivity]:
        """Layers by ``metric_drop``, the most sensitive first (ties by name, stably)."""
        return sorted(self.layers, key=lambda layer: (-self.recovered(layer), layer.name))

    def to_json(self) -> list[dict]:
        """report.json's ``sensitivity``: ``[{"name", "metric_drop", ...}]``, ranked."""
        rows = []
        for layer in self.ranked():
            row = {"name": layer.name, "tensor": layer.tensor, "metric_drop": round(self.recovered(layer), 6),
                   "metric_fp32_kept": layer.fp32_kept}
            if layer.int8_alone is not None:
                row |= {"metric_drop_alone": round(self.fp32 - layer.int8_alone, 6), "metric_int8_alone": layer.int8_alone}
            rows.append(row)
        return rows


def measure(evaluate: Evaluate, layers: list[str], names: dict | None = None, alone: bool = False,
            fp32: float | None = None, int8: float | None = None) -> Sensitivity:
    """Each of ``layers`` (plan tensor names) kept fp32 in turn (and with ``alone`` also int8 alone).

    ``evaluate(keep_fp32)`` returns the metric of the plan with those layers fp32; ``names``
    maps a tensor to its ONNX node name (the report's key); ``fp32`` / ``int8`` are the all-fp32
    / all-int8 metrics when already known (else measured here).
    """
    names = names or {}
    start = time.perf_counter()
    every = tuple(layers)
    fp32 = evaluate(every) if fp32 is None else fp32
    int8 = evaluate(()) if int8 is None else int8
    rows = []
    for tensor in layers:
        kept = evaluate((tensor,))
        only = evaluate(tuple(t for t in every if t != tensor)) if alone else None
        rows.append(LayerSensitivity(tensor, names.get(tensor, tensor), kept, only))
        logger.info("sensitivity %s: metric %.4f with it fp32 (all int8: %.4f)", names.get(tensor, tensor), kept, int8)
    seconds = round(time.perf_counter() - start, 2)
    logger.info("sensitivity of %d layers: %d variants in %.1f s", len(layers), len(layers) * (2 if alone else 1),
                seconds)
    return Sensitivity(fp32, int8, tuple(rows), seconds)


def program_evaluator(quantized, program, metric: Metric) -> Evaluate:
    """``evaluate(keep_fp32)``: the plan realized on ``program`` (:class:`tvmq.program.Program`)
    with ``keep_fp32`` fp32, built for the analysis target, ``metric`` run on it."""

    def evaluate(keep_fp32: tuple) -> float:
        run = program_run(program, quantized.realize(program, keep_fp32=keep_fp32))
        return evaluate_metric(metric, run, f"{len(keep_fp32)} layer(s) fp32")

    return evaluate


def program_run(program, mod) -> Run:
    """A :data:`~tvmq.metric.Run` of ``mod`` (``program.fp32`` or a plan realized on it) built for
    the analysis target, ``program.size`` samples a call where the batch is free."""
    inputs = [(spec.name, None if program.batch is None else spec.static_shape(program.batch))
              for spec in program.imported.inputs]
    return module_run(program.vm(mod), [], inputs, program.size)
