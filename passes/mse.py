"""MSE calibration: the clip range that minimises the quantization mean-squared error.

Candidates shrink the observed range ``[min, max]`` by a common factor ``a`` in (0, 1]; the
error of each is computed on the streaming histogram for the activation dtype in use.
"""

from __future__ import annotations

import numpy as np

from .calibrators import register_calibrator
from .histogram import Histogram, quantization_mse

NUM_CANDIDATES = 200


@register_calibrator("mse")
class MSEObserver:
    def __init__(self, dtype: str = "uint8"):
        self.hist, self.dtype = Histogram(), dtype

    def observe(self, values: np.ndarray) -> None:
        self.hist.add(values)

    def range(self) -> tuple[float, float]:
        return best_range(self.hist, self.dtype, candidate_ranges(self.hist), quantization_mse)


def candidate_ranges(hist: Histogram) -> list[tuple[float, float]]:
    if hist.lo is None:
        raise ValueError("observer saw no data")
    factors = np.linspace(1.0 / NUM_CANDIDATES, 1.0, NUM_CANDIDATES)
    return [(hist.min * a, hist.max * a) for a in factors]


def best_range(hist: Histogram, dtype: str, candidates, loss) -> tuple[float, float]:
    """The candidate range with the smallest ``loss(hist, lo, hi, dtype)``."""
    losses = [loss(hist, lo, hi, dtype) for lo, hi in candidates]
    return tuple(float(v) for v in candidates[int(np.argmin(losses))])
