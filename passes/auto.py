"""auto: per tensor, the calibrator whose range gives that tensor the best int8 SQNR.

Runs MinMax, KLD, Percentile and MSE side by side on the same batches and scores each
candidate range by the SQNR of quantizing the tensor's own calibration values with it.
"""

from __future__ import annotations

import numpy as np

from .calibrators import register_calibrator
from .histogram import Histogram, quantization_mse
from .kld import KLDObserver
from .minmax import MinMaxObserver
from .mse import MSEObserver
from .percentile import PercentileObserver


@register_calibrator("auto")
class AutoObserver:
    def __init__(self, dtype: str = "uint8"):
        self.dtype = dtype
        self.hist = Histogram()
        self.candidates = {"minmax": MinMaxObserver(), "kld": KLDObserver(dtype),
                           "percentile": PercentileObserver(dtype), "mse": MSEObserver(dtype)}
        self.chosen: str | None = None

    def observe(self, values: np.ndarray) -> None:
        self.hist.add(values)
        for observer in self.candidates.values():
            observer.observe(values)

    def range(self) -> tuple[float, float]:
        ranges = {name: obs.range() for name, obs in self.candidates.items()}
        errors = {name: quantization_mse(self.hist, lo, hi, self.dtype) for name, (lo, hi) in ranges.items()}
        self.chosen = min(errors, key=errors.get)  # least MSE = best SQNR: the signal is the same
        return ranges[self.chosen]
