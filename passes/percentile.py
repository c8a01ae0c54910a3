"""Percentile calibration: clip to the p-th and (100-p)-th percentiles of the values seen."""

from __future__ import annotations

import numpy as np

from .calibrators import register_calibrator
from .histogram import Histogram

DEFAULT_PERCENTILE = 99.99


@register_calibrator("percentile")
class PercentileObserver:
    """The range ``[q(1 - p), q(p)]`` from a streaming histogram; a one-signed tensor keeps its 0 side."""

    def __init__(self, dtype: str = "uint8", percentile: float = DEFAULT_PERCENTILE):
        if not 50.0 < percentile <= 100.0:
            raise ValueError(f"percentile must be in (50, 100], got {percentile}")
        self.hist, self.fraction = Histogram(), percentile / 100.0

    def observe(self, values: np.ndarray) -> None:
        self.hist.add(values)

    def range(self) -> tuple[float, float]:
        hist = self.hist
        if hist.lo is None:
            raise ValueError("PercentileObserver saw no data")
        cdf = np.concatenate([[0.0], np.cumsum(hist.counts)]) / hist.counts.sum()
        lo = float(np.interp(1.0 - self.fraction, cdf, hist.edges))
        hi = float(np.interp(self.fraction, cdf, hist.edges))
        lo = hist.min if hist.min >= 0 else max(lo, hist.min)
        hi = hist.max if hist.max <= 0 else min(hi, hist.max)
        return lo, hi
