"""A fixed-size streaming histogram whose range grows with the data (O(bins) memory).

When a batch falls outside the current range, the range is widened (to the next power-of-two
multiple of its width, so regrowth is rare) and the old counts are redistributed into the new
bins by linear interpolation of their cumulative distribution, as torch's HistogramObserver and
ONNX Runtime's HistogramCalibrater do in spirit. A ``symmetric`` histogram spans ``[-h, h]``
(as ONNX Runtime's entropy histogram), so that 0 is the edge between its two middle bins and a
doubling keeps the old edges (every new bin is exactly two old ones).
"""

from __future__ import annotations

import numpy as np

NUM_BINS = 2048


class Histogram:
    """Counts of observed values over ``[lo, hi]`` in ``bins`` equal bins, plus the exact extremes."""

    def __init__(self, bins: int = NUM_BINS, symmetric: bool = False):
        if symmetric and bins % 2:
            raise ValueError(f"a symmetric histogram needs an even number of bins, got {bins}")
        self.bins, self.symmetric = bins, symmetric
        self.counts = np.zeros(bins, np.float64)
        self.lo = self.hi = None  # histogram range
        self.min, self.max = np.inf, -np.inf  # exact extremes seen

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(self.lo, self.hi, self.bins + 1)

    @property
    def centers(self) -> np.ndarray:
        edges = self.edges
        return (edges[:-1] + edges[1:]) / 2

    def add(self, values: np.ndarray) -> None:
        values = np.asarray(values, np.float32).ravel()
        if values.size == 0:
            return
        vmin, vmax = float(values.min()), float(values.max())
        self.min, self.max = min(self.min, vmin), max(self.max, vmax)
        if self.symmetric:
            vmin, vmax = -max(-vmin, vmax, 1e-8), max(-vmin, vmax, 1e-8)
        if self.lo is None:
            self.lo, self.hi = vmin, vmin + _least_width(vmin, vmax)
        elif vmin < self.lo or vmax > self.hi:
            self._grow(vmin, vmax)
        counts, _ = np.histogram(values, bins=self.bins, range=(self.lo, self.hi))
        self.counts += counts

    def _grow(self, vmin: float, vmax: float) -> None:
        """Double the width until it covers the new values, keeping the side that did not move
        (both sides move when symmetric: the range stays centred on 0)."""
        lo, hi = min(self.lo, vmin), max(self.hi, vmax)
        width = self.hi - self.lo
        while width < hi - lo:
            width *= 2
        if self.symmetric:
            new_lo = -width / 2
        else:
            new_lo = hi - width if vmin < self.lo and vmax <= self.hi else lo
        new_edges = np.linspace(new_lo, new_lo + width, self.bins + 1)
        self.counts = rebin(self.counts, self.edges, new_edges)
        self.lo, self.hi = new_edges[0], new_edges[-1]


def _least_width(vmin: float, vmax: float) -> float:
    """The range's first width: the data's, but at least 2**-10 of its magnitude, so that float32
    (numpy bins in the values' dtype, 2**-23 relative resolution) still splits it into 2,048
    bins: a constant tensor of 1e4 (MiniLM has them) made ``np.histogram`` refuse the range."""
    return max(vmax - vmin, 1e-8, max(abs(vmin), abs(vmax)) * 2.0 ** -10)


def rebin(counts: np.ndarray, old_edges: np.ndarray, new_edges: np.ndarray) -> np.ndarray:
    """Redistribute ``counts`` over ``new_edges`` (a superset range), uniform within each old bin."""
    cdf = np.concatenate([[0.0], np.cumsum(counts)])
    return np.diff(np.interp(new_edges, old_edges, cdf, left=0.0, right=cdf[-1]))


def quantization_mse(hist: Histogram, lo: float, hi: float, dtype: str) -> float:
    """Mean squared error of quantizing the histogram's values to ``[lo, hi]`` in ``dtype``.

    Each bin's count sits at its centre; clipping and rounding error are both counted.
    """
    from .qparams import activation_qparams, dequantize, quantize

    qp = activation_qparams(lo, hi, dtype)
    centers = hist.centers.astype(np.float32)
    error = centers - dequantize(quantize(centers, qp), qp)
    return float(np.dot(hist.counts, error.astype(np.float64) ** 2) / max(hist.counts.sum(), 1.0))


def quantization_sqnr(hist: Histogram, lo: float, hi: float, dtype: str) -> float:
    """SQNR in dB of quantizing the histogram's values to ``[lo, hi]``: signal power over MSE."""
    signal = float(np.dot(hist.counts, hist.centers.astype(np.float64) ** 2) / max(hist.counts.sum(), 1.0))
    noise = quantization_mse(hist, lo, hi, dtype)
    return float("inf") if noise == 0 else 10.0 * np.log10(max(signal, 1e-30) / noise)
