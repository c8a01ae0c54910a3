"""Mixed precision under an accuracy budget: the fastest measured build whose metric meets it.

The budget is a floor under the task metric ``M`` (higher is better), from fp32's ``M_fp32``:

    threshold = max(M_fp32 - max_accuracy_drop, M_fp32 - max_relative_drop * |M_fp32|)

(either bound alone when one is given). Candidates, each built for the target and verified
with the real metric on that build:

1. all fp32, all int8, all int8 with the latency fallback's layers fp32 (those whose int8
   kernel plus quantize / dequantize edges measured slower than their fp32 kernel by its
   margins), and all int8 with every layer measured faster in fp32 kept fp32 (no margin);
2. when none of the int8 ones meets the budget, layers kept fp32 in the order of metric
   recovered per µs lost,

       gain_i = recovered_i / (fp32_us_i - int8_us_i)

   (``recovered_i`` from :mod:`tvmq.sensitivity`; each layer's µs from the kernels timed in the
   fp32 and int8 builds, its quantize / dequantize edges included: :func:`tvmq.latency.attribute`),
   layers no slower in fp32 first. The shortest prefix of that order that meets the budget is
   found by bisection (the metric assumed to grow with the prefix; the whole order is the
   fp32 model, which always meets it), one build per prefix tried;
3. where dense layers can quantize their input at run time (``dynamic``: int8 weights, the
   input's scale from the tensor itself), all of them dynamic instead of int8, and the prefix
   found with its dense layers dynamic instead of fp32: two builds more.

Every configuration tried is one point of the accuracy-vs-latency curve. All of them are timed
whole in one interleaved run (:func:`tvmq.choose.time_modules`) and the fastest that meets the
budget is deployed.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

from .errors import TvmqError
from .latency import LayerLatency, slower_in_int8

logger = logging.getLogger(__name__)

ACCURACY_BUDGET = "accuracy budget"  # the plan's reason for a layer this search keeps fp32
FP32, INT8, FALLBACK = "fp32", "int8", "int8 + latency fallback"
DENSE_DYNAMIC = "int8, dense layers dynamic"
FASTER_FP32 = "int8, layers faster in fp32 kept fp32"


@dataclass(frozen=True)
class Budget:
    """How far below fp32 the metric may go: in the metric's units and / or as a share of fp32's."""

    max_drop: float | None = None
    max_relative_drop: float | None = None

    def __post_init__(self):
        if self.max_drop is None and self.max_relative_drop is None:
            raise TvmqError("an accuracy budget needs --max-accuracy-drop or --max-relative-drop")
        for flag, value in (("--max-accuracy-drop", self.max_drop), ("--max-relative-drop", self.max_relative_drop)):
            if value is not None and not value >= 0:
                raise TvmqError(f"{flag} must be a number >= 0, got {value}")
        if self.max_relative_drop is not None and self.max_relative_drop >= 1:
            raise TvmqError(f"--max-relative-drop is a share of fp32's metric below 1, got {self.max_relative_drop}")

    def threshold(self, reference: float) -> float:
        """The lowest metric that meets the budget, ``reference`` being fp32's."""
        floors = [reference - self.max_drop] if self.max_drop is not None else []
        if self.max_relative_drop is not None:
            floors.append(reference - self.max_relative_drop * abs(reference))
        return max(floors)

    def to_json(self) -> dict:
        return {"max_accuracy_drop": self.max_drop, "max_relative_drop": self.max_relative_drop}


@dataclass
class Point:
    """One configuration tried: the layers kept fp32 (plan tensors), its metric and measured ms."""

    label: str
    fp32_layers: tuple
    metric: float
    built: object = field(repr=False)
    latency_ms: float | str | None = None
    dynamic_layers: tuple = ()  # int8 weights, input quantized at run time


@dataclass
class Outcome:
    """The deployed point, every point tried (in order), the ranking and what it took."""

    chosen: Point
    points: list
    reference: float
    threshold: float
    order: list
    sensitivity: object  # tvmq.sensitivity.Sensitivity, None when no ranking was needed
    seconds: float

    def to_json(self, budget: Budget, metric_name: str, node_of: Callable[[str], str]) -> dict:
        """report.json's ``mixed_precision``: ``{"budget", "metric", "fp32_layers", "latency_ms", "curve", ...}``."""
        return {"budget": budget.to_json() | {"threshold": round(self.threshold, 6)}, "metric_name": metric_name,
                "metric": self.chosen.metric, "fp32_metric": self.reference,
                "fp32_layers": [node_of(t) for t in self.chosen.fp32_layers],
                "dynamic_layers": [node_of(t) for t in self.chosen.dynamic_layers], "latency_ms": self.chosen.latency_ms,
                "configuration": self.chosen.label,
                "curve": [{"configuration": p.label, "fp32_layers": len(p.fp32_layers),
                           "dynamic_layers": len(p.dynamic_layers), "metric": p.metric,
                           "latency_ms": p.latency_ms, "meets_budget": p.metric >= self.threshold}
                          for p in self.points],
                "order": [{"name": node_of(t), "gain_per_us": g} for t, g in self.order],
                "sensitivity_seconds": self.sensitivity.seconds if self.sensitivity else None,
                "search_seconds": self.seconds}


def rank(layers: list[str], recovered: dict[str, float], latencies: dict[str, LayerLatency]) -> list[tuple]:
    """``[(layer, gain)]``, the order to keep layers fp32 in: layers no slower in fp32 first
    (by metric recovered), then by ``gain = recovered / µs lost``, highest first. A layer with
    no timing counts the median µs lost of those with one (1 µs when none has)."""
    lost = {name: _lost_us(latencies.get(name)) for name in layers}
    known = [us for us in lost.values() if us is not None and us > 0]
    typical = statistics.median(known) if known else 1.0
    lost = {name: typical if us is None else us for name, us in lost.items()}

    def key(name):
        free = lost[name] <= 0
        return (not free, -recovered[name] if free else -recovered[name] / lost[name], name)

    return [(name, None if lost[name] <= 0 else round(recovered[name] / lost[name], 6))
            for name in sorted(layers, key=key)]


def search(layers: list[str], latencies: dict[str, LayerLatency], budget: Budget, build, score, timer,
           sensitivity_of, fallback: bool = True, dynamic: list[str] = ()) -> Outcome:
    """The fastest configuration that meets ``budget``.

    ``layers``: the int8 layers (plan tensors); ``build(keep_fp32) -> built`` builds a
    configuration for the target; ``score(built) -> metric`` runs the real metric on it;
    ``timer({label: built}) -> {label: ms}`` times builds whole, interleaved;
    ``sensitivity_of() -> Sensitivity`` ranks layers (called only when int8 misses the budget);
    ``fallback``: try the latency fallback's configuration too; ``dynamic``: the layers that may
    quantize their input at run time instead (dense ones), tried all at once in place of int8 and
    in place of fp32 in the prefix found (``build(keep_fp32, dynamic)``).
    """
    start = time.perf_counter()
    points = []

    def attempt(label: str, keep: tuple, dynamic_layers: tuple = ()) -> Point:
        built = build(keep, dynamic_layers) if dynamic_layers else build(keep)
        point = Point(label, keep, score(built), built, dynamic_layers=dynamic_layers)
        logger.info("mixed precision: %s (%d layer(s) fp32): metric %.5f", label, len(keep), point.metric)
        points.append(point)
        return point

    everything = tuple(layers)
    fp32 = attempt(FP32, everything)
    threshold = budget.threshold(fp32.metric)
    int8 = attempt(INT8, ())
    fallback_keep = tuple(slower_in_int8(latencies)) if fallback else ()
    candidates = [int8] + ([attempt(FALLBACK, fallback_keep)] if fallback_keep else [])
    faster = tuple(name for name in layers if (_lost_us(latencies.get(name)) or 0.0) < 0)
    if fallback and faster and set(faster) != set(fallback_keep) and len(faster) < len(layers):
        candidates.append(attempt(FASTER_FP32, faster))
    order, sensitivity = [], None
    if not any(p.metric >= threshold for p in candidates) and layers:
        sensitivity = sensitivity_of()
        recovered = {row.tensor: sensitivity.recovered(row) for row in sensitivity.layers}
        order = rank(layers, recovered, latencies)
        if dynamic:
            attempt(DENSE_DYNAMIC, (), tuple(dynamic))
        found = _bisect([name for name, _ in order], threshold, attempt)
        swapped = tuple(name for name in found if name in dynamic)
        if swapped:
            attempt(f"{len(found)} most gainful, dense ones dynamic", tuple(n for n in found if n not in swapped),
                    swapped)
    _time(points, timer)
    meeting = [p for p in points if p.metric >= threshold]
    chosen = min(meeting, key=lambda p: (_ms(p), len(p.fp32_layers)))
    logger.info("mixed precision: deploying %s (%d layer(s) fp32), metric %.5f >= %.5f, %s ms", chosen.label,
                len(chosen.fp32_layers), chosen.metric, threshold, chosen.latency_ms)
    return Outcome(chosen, points, fp32.metric, threshold, order, sensitivity, round(time.perf_counter() - start, 1))


def _bisect(order: list[str], threshold: float, attempt) -> tuple:
    """Try prefixes of ``order`` kept fp32 until the shortest that meets ``threshold`` is found
    and return it (prefix 0 is all int8, which misses; the whole order is fp32, which meets)."""
    low, high = 0, len(order)
    while high - low > 1:
        middle = (low + high) // 2
        point = attempt(f"{middle} most gainful fp32", tuple(order[:middle]))
        low, high = (low, middle) if point.metric >= threshold else (middle, high)
    return tuple(order[:high])


def _time(points: list[Point], timer) -> None:
    """Each point's ms, all timed in one interleaved run (a build shared by points, once)."""
    unique = {}
    for point in points:
        unique.setdefault(id(point.built), point.built)
    measured = timer({str(key): built for key, built in unique.items()})
    for point in points:
        point.latency_ms = measured[str(id(point.built))]


def _ms(point: Point) -> float:
    """A point's ms for choosing; untimed (an emulator's reason) counts as fp32-layers order only."""
    return point.latency_ms if isinstance(point.latency_ms, (int, float)) else 0.0


def _lost_us(timing: LayerLatency | None) -> float | None:
    """µs a layer adds by running fp32 instead of int8 (its edges included); None when unmeasured."""
    if timing is None or timing.fp32_us is None or timing.int8_us is None:
        return None
    return timing.fp32_us - timing.int8_us
