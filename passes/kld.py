"""KLD (entropy) calibration, as in TensorRT: the clip threshold whose 8-bit histogram loses least.

For each candidate threshold bin ``i`` of the |x| histogram (2048 bins):

* P: the first ``i`` bins, with every count beyond the threshold added to bin ``i-1``;
* Q: those ``i`` bins merged into ``levels`` chunks, the quantization levels that cover
  them: 128 for |x| in symmetric int8 (one sign's worth, as TensorRT), 256 for x in
  asymmetric uint8; each chunk's mass spread evenly over the chunk's non-empty bins;
* both smoothed (empty bins get ``eps``, taken from the others) and normalised;

and the threshold is the edge of the ``i`` minimising KL(P || Q) (Migacz, "8-bit Inference
with TensorRT", GTC 2017).
"""

from __future__ import annotations

import numpy as np

from .calibrators import register_calibrator
from .histogram import Histogram

EPS = 1e-4


def kl_threshold_bin(counts: np.ndarray, levels: int = 128) -> int:
    """The number of leading bins to keep: argmin over ``i`` of KL(P_i || Q_i)."""
    counts = np.asarray(counts, np.float64)
    best_bin, best_kl = len(counts), np.inf
    for i in range(levels, len(counts) + 1):
        kl = _divergence(counts, i, levels)
        if kl < best_kl:
            best_bin, best_kl = i, kl
    return best_bin


def _divergence(counts: np.ndarray, i: int, levels: int) -> float:
    kept = counts[:i]
    reference = kept.copy()
    reference[-1] += counts[i:].sum()
    chunk = (np.arange(i) * levels) // i
    nonzero = kept > 0
    mass = np.bincount(chunk, weights=kept, minlength=levels)
    support = np.bincount(chunk, weights=nonzero, minlength=levels)
    candidate = np.where(nonzero, mass[chunk] / np.maximum(support[chunk], 1.0), 0.0)
    p, q = smooth(reference), smooth(candidate)
    if p is None or q is None:
        return np.inf
    mask = p > 0
    with np.errstate(divide="ignore"):
        return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


def smooth(dist: np.ndarray, eps: float = EPS) -> np.ndarray | None:
    """Give empty bins ``eps`` of probability, taken evenly from the others; then normalise."""
    zeros = dist == 0
    n_zero, n_nonzero = int(zeros.sum()), int((~zeros).sum())
    if n_nonzero == 0:
        return None
    total = dist.sum()
    p = dist / total
    taken = eps * n_zero / n_nonzero
    if taken >= p[~zeros].min():
        return None  # too little mass to smooth: this candidate cannot be scored
    return np.where(zeros, eps, p - taken)


@register_calibrator("kld")
class KLDObserver:
    """The KL-optimal clip threshold, on the histogram the activation dtype calls for.

    For symmetric ``int8`` the histogram is of |x| and the range ``[-T, T]`` (TensorRT).
    For asymmetric ``uint8`` the histogram is of x itself, from its minimum, and only the top
    is clipped: folding signs together would merge, say, an image's negative background with
    its bright strokes; the 256 levels above the minimum are the ones being compared.
    """

    def __init__(self, dtype: str = "uint8"):
        self.dtype = dtype
        self.hist = Histogram(lower=0.0) if dtype == "int8" else Histogram()
        self.min, self.max = np.inf, -np.inf

    def observe(self, values: np.ndarray) -> None:
        self.min, self.max = min(self.min, float(values.min())), max(self.max, float(values.max()))
        self.hist.add(np.abs(values) if self.dtype == "int8" else values)

    def range(self) -> tuple[float, float]:
        if self.hist.lo is None:
            raise ValueError("KLDObserver saw no data")
        levels = 128 if self.dtype == "int8" else 256
        threshold = float(self.hist.edges[kl_threshold_bin(self.hist.counts, levels)])
        if self.dtype == "int8":
            return max(self.min, -threshold), min(self.max, threshold)
        return self.min, min(self.max, threshold)
