"""KLD (entropy) calibration, as in TensorRT: the clip threshold whose 8-bit histogram loses least.

For a window of ``n`` histogram bins that a candidate threshold keeps:

* P: the window's counts, with every count beyond the threshold added to the edge bin on its side;
* Q: the window's counts merged into ``levels`` chunks, the quantization levels that cover
  them, each chunk's mass spread evenly over the chunk's non-empty bins;
* both smoothed in count units (empty bins get ``eps`` counts, taken from the others, as
  MXNet's and ONNX Runtime's ``smooth_distribution`` do) and normalised;

and the threshold is the one minimising KL(P || Q) = sum_k p_k log(p_k / q_k) (Migacz,
"8-bit Inference with TensorRT", GTC 2017). The histogram has 2048 bins on each side of 0:

* a non-negative tensor (after ReLU): windows ``[0, T]`` of its 2048 positive bins, as TensorRT
  on |x|, with ``2 ** (bits - 1 + unsigned)`` levels (256 in uint8, 128 in int8, as NVIDIA's
  pytorch-quantization);
* a signed tensor: windows ``[-T, T]`` centred on 0 with ``2 ** bits`` levels across (128 a
  side, TensorRT's count), outliers added at both ends, as ONNX Runtime's entropy calibrator.
  Not |x|: folding the signs would pile, say, a normalised image's negative background spike
  onto the bin where its clipped bright strokes are added, and KL would not see the clipping.

In both, the bin ``[0, w)`` gets its neighbour's count first (pytorch-quantization does the
same to its bin 0): it holds every exact zero (after a ReLU, often most of the values), zero is
exact on every grid, yet a spike there makes KL prefer the narrowest chunks, the smallest T.

The range is ``[max(min, -T), min(max, T)]``.
"""

from __future__ import annotations

import numpy as np

from .calibrators import register_calibrator
from .histogram import NUM_BINS, Histogram

EPS = 1e-4  # counts given to an empty bin by smoothing
BITS = 8
SHORTLIST = 16  # candidates scored exactly, after a screening by the unsmoothed KL


def kl_threshold_bin(counts: np.ndarray, levels: int = 128) -> int:
    """One-sided: the number ``i`` of leading bins to keep, argmin of KL(P_i || Q_i) (first minimum).

    ``counts`` start at 0 (a histogram of |x| or of a non-negative x). When no candidate can
    be scored every bin is kept.
    """
    counts = np.asarray(counts, np.float64)
    keep = np.arange(levels, len(counts) + 1)
    best = _best_window(counts, np.zeros_like(keep), keep, levels)
    return len(counts) if best is None else int(keep[best])


def kl_symmetric_half_width(counts: np.ndarray, levels: int = 256) -> int:
    """Two-sided: the half width ``i`` (in bins) of the window ``[-T, T]`` around the middle edge.

    ``counts`` span ``[-h, h]`` with 0 at the edge between the two middle bins; ``levels``
    cover the whole window. Candidates run from ``levels / 2`` to every bin.
    """
    counts = np.asarray(counts, np.float64)
    middle = len(counts) // 2
    half = np.arange(levels // 2, middle + 1)
    best = _best_window(counts, middle - half, middle + half, levels)
    return middle if best is None else int(half[best])


def _best_window(counts, starts, stops, levels) -> int | None:
    """Index of the window ``counts[start:stop]`` with the least smoothed KL (the first, on ties).

    Every window is screened with the unsmoothed KL in closed form (``screening_divergences``,
    O(levels) each); the ``SHORTLIST`` best are scored exactly (``divergence``). Smoothing adds
    ``eps`` = 1e-4 counts per empty bin, so it reorders only near-ties; if no shortlisted window
    can be scored, all are. None when no window can be scored.
    """
    screen = screening_divergences(counts, starts, stops, levels)
    order = np.argsort(screen, kind="stable")
    for shortlist in (np.sort(order[:SHORTLIST]), np.arange(len(starts))):
        exact = np.array([divergence(counts, starts[k], stops[k], levels) for k in shortlist])
        if np.isfinite(exact).any():
            return int(shortlist[int(np.argmin(exact))])
    return None


def screening_divergences(counts, starts, stops, levels) -> np.ndarray:
    """Unsmoothed KL(P || Q) of every window, from prefix sums, without visiting its bins.

    With window counts ``c`` (``r`` once the clipped counts are added to its end bins, total
    ``S_p``), chunk masses ``m_j`` over ``s_j`` non-empty bins (total ``S_q``):

        KL = log(S_q / S_p) + (1 / S_p) * (sum_k r_k log r_k - sum_k r_k log(m_j(k) / s_j(k)))

    and ``sum_k c_k log(m_j / s_j) = sum_j m_j log(m_j / s_j)``. An empty end bin that receives
    clipped counts is given ``eps`` in Q, as smoothing would; inf for an empty window.
    """
    sizes = stops - starts
    prefix = lambda v: np.concatenate([[0.0], np.cumsum(v)])  # noqa: E731
    total, nonzero, entropy = prefix(counts), prefix(counts > 0), prefix(_xlogx(counts))
    # chunk j of a window is its bins [ceil(j n / levels), ceil((j + 1) n / levels)): exact in float64
    bounds = starts[:, None] + np.ceil(np.arange(levels + 1) * sizes[:, None] / levels).astype(np.int64)
    mass, support = np.diff(total[bounds], axis=1), np.diff(nonzero[bounds], axis=1)
    level = np.where(support > 0, mass / np.maximum(support, 1.0), 0.0)
    below, above = total[starts], total[-1] - total[stops]
    first, last = counts[starts], counts[stops - 1]
    own = entropy[stops] - entropy[starts] - _xlogx(first) - _xlogx(last) + _xlogx(first + below) \
        + _xlogx(last + above)
    cross = (_xlogx(mass) - mass * np.log(np.maximum(support, 1.0))).sum(1) \
        + below * np.log(np.where(first > 0, level[:, 0], EPS)) + above * np.log(np.where(last > 0, level[:, -1], EPS))
    s_p, s_q = total[-1], total[stops] - total[starts]
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.log(s_q / s_p) + (own - cross) / s_p
    return np.where(s_q > 0, kl, np.inf)


def _xlogx(v):
    v = np.asarray(v, np.float64)
    return np.where(v > 0, v * np.log(np.where(v > 0, v, 1.0)), 0.0)


def divergence(counts: np.ndarray, start: int, stop: int, levels: int) -> float:
    """KL(P || Q) of the window ``counts[start:stop]``, the counts outside it clipped onto its ends;
    P and Q smoothed (``smooth``) and normalised."""
    kept = counts[start:stop]
    n = len(kept)
    reference = kept.copy()
    reference[0] += counts[:start].sum()
    reference[-1] += counts[stop:].sum()
    chunk = (np.arange(n) * levels) // n
    nonzero = kept > 0
    mass = np.bincount(chunk, weights=kept, minlength=levels)
    support = np.bincount(chunk, weights=nonzero, minlength=levels)
    candidate = np.where(nonzero, mass[chunk] / np.maximum(support[chunk], 1.0), 0.0)
    p, q = smooth(reference), smooth(candidate)
    if p is None or q is None:
        return np.inf
    p, q = p / p.sum(), q / q.sum()
    mask = p > 0
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


def smooth(counts: np.ndarray, eps: float = EPS) -> np.ndarray | None:
    """Give empty bins ``eps`` counts, taking ``eps * n_empty / n_nonempty`` from each other bin.

    ``eps`` is in count units, not probability: a probability ``eps`` per empty bin would
    move up to ``eps * 2048`` (20%) of the mass into empty bins and fail for most thresholds
    of a histogram with a sparse tail. None when there is nothing to smooth from.
    """
    zeros = counts == 0
    n_zero, n_nonzero = int(zeros.sum()), int((~zeros).sum())
    if n_nonzero == 0:
        return None
    taken = eps * n_zero / n_nonzero
    if taken >= counts[~zeros].min():
        return None  # a bin too light to give: this candidate cannot be scored
    return np.where(zeros, eps, counts - taken)


def quantized_levels(dtype: str, unsigned: bool, bits: int = BITS) -> int:
    """Levels covering ``[0, T]``: ``2 ** (bits - 1 + unsigned)``; a symmetric int8 grid is always signed."""
    return 2 ** (bits - 1 + int(unsigned and dtype == "uint8"))


def without_zero_spike(counts: np.ndarray, zero_bin: int = 0) -> np.ndarray:
    """``counts`` with the bin ``[0, w)`` (every exact zero: ReLU's, padding's) given its right neighbour's count."""
    counts = np.array(counts, np.float64)
    if zero_bin + 1 < len(counts):
        counts[zero_bin] = counts[zero_bin + 1]
    return counts


@register_calibrator("kld")
class KLDObserver:
    """The KL-optimal threshold T on a histogram of x over ``[-h, h]`` (2048 bins a side).

    The same search for both activation dtypes; for uint8 the range is then mapped
    asymmetrically (``activation_qparams``), so a tensor whose negative side is short keeps
    it unclipped and spends the spare levels there.
    """

    def __init__(self, dtype: str = "uint8"):
        self.dtype = dtype
        self.hist = Histogram(2 * NUM_BINS, symmetric=True)

    def observe(self, values: np.ndarray) -> None:
        self.hist.add(values)

    def range(self) -> tuple[float, float]:
        hist = self.hist
        if hist.lo is None:
            raise ValueError("KLDObserver saw no data")
        middle = hist.bins // 2
        if hist.min >= 0:
            levels = quantized_levels(self.dtype, unsigned=True)
            width = kl_threshold_bin(without_zero_spike(hist.counts[middle:]), levels)
        else:
            width = kl_symmetric_half_width(without_zero_spike(hist.counts, middle),
                                            2 * quantized_levels(self.dtype, unsigned=False))
        threshold = float(hist.edges[middle + width])
        return max(hist.min, -threshold), min(hist.max, threshold)
