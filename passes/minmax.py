"""MinMax calibration: the smallest and largest value ever seen (O(1) state)."""

from __future__ import annotations

import numpy as np

from .calibrators import register_calibrator


@register_calibrator("minmax")
class MinMaxObserver:
    """Running ``min`` / ``max`` over every batch; robust to nothing, exact for bounded tensors."""

    def __init__(self, dtype: str = "uint8"):
        self.lo, self.hi = np.inf, -np.inf

    def observe(self, values: np.ndarray) -> None:
        self.lo = min(self.lo, float(values.min()))
        self.hi = max(self.hi, float(values.max()))

    def range(self) -> tuple[float, float]:
        if self.lo > self.hi:
            raise ValueError("MinMaxObserver saw no data")
        return self.lo, self.hi
