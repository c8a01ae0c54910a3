"""ADMM calibration: quantization as encode-decode, the range found by alternating minimisation.

The clip range is the ``(s, z)`` that minimises the weighted reconstruction error

    E(s, z) = sum_i w_i * (x_i - s * (q_i - z))**2,   q_i = clip(round(x_i / s) + z, qmin, qmax)

by alternating the two blocks of variables:

* encode: the codes ``q`` for the current ``(s, z)``; rounding to the nearest level, clipped, is
  the best code on a uniform grid, so this step does not raise ``E``;
* decode: the least-squares ``(s, z)`` for those codes: ``x ~ s*q + c`` fitted by weighted linear
  regression, ``z = clip(round(-c / s))``, then ``s = <x, q - z>_w / <q - z, q - z>_w`` for that
  integer ``z`` (symmetric: ``z = 0``, only the last formula).

until the codes stop changing (or ``MAX_ITERATIONS``). Each step lowers ``E`` but the fixed point
is local: started from the min/max range alone it stays there (the extreme values sit on the last
level, and refitting keeps them there), so the iteration starts from many ranges at once (one
row each), the min/max range with each end shrunk by factors in ``STARTS`` (20 starts; 400 when asymmetric, about 2 s a tensor), and keeps the fixed
point of lowest ``E``. Activations run on their streaming
histogram (bin centres weighted by counts, O(bins) memory); :func:`admm_weight_scale` runs on
a weight tensor per output channel and sets the weight ranges of ``--calibrator admm``.
"""

from __future__ import annotations

import numpy as np

from .calibrators import register_calibrator
from .histogram import Histogram
from .qparams import DTYPE_RANGE, TINY_SCALE

MAX_ITERATIONS = 100
STARTS = np.linspace(0.05, 1.0, 20)  # starting ranges, as fractions of the min/max range


@register_calibrator("admm")
class ADMMObserver:
    """The range of the ``(s, z)`` minimising the histogram's reconstruction error in ``dtype``
    (uint8: asymmetric; int8: symmetric, zero point 0)."""

    def __init__(self, dtype: str = "uint8"):
        self.hist, self.dtype = Histogram(), dtype

    @staticmethod
    def weight_scale(weight: np.ndarray, axis: int | None, qmax: int) -> np.ndarray:
        return admm_weight_scale(weight, axis, qmax)

    def observe(self, values: np.ndarray) -> None:
        self.hist.add(values)

    def range(self) -> tuple[float, float]:
        hist = self.hist
        if hist.lo is None:
            raise ValueError("ADMMObserver saw no data")
        qmin, qmax = DTYPE_RANGE[self.dtype]  # int8 is symmetric onto [-127, 127], as activation_qparams
        if self.dtype == "int8":
            starts = STARTS * _absmax(hist) / qmax  # one row per starting scale
            x, w = _rows(hist, starts.size)
            s = admm_symmetric(x, w, qmax, starts)
            s = s[np.argmin(reconstruction_error(x, w, s, np.zeros_like(s), -qmax, qmax))]
            return float(-s * qmax), float(s * qmax)
        lo_factor, hi_factor = (a.ravel() for a in np.meshgrid(STARTS, STARTS))  # both ends shrink apart
        x, w = _rows(hist, lo_factor.size)
        s, z = admm_asymmetric(x, w, qmin, qmax, lo_factor * min(hist.min, 0.0), hi_factor * max(hist.max, 0.0))
        best = np.argmin(reconstruction_error(x, w, s, z, qmin, qmax))
        return float(-z[best] * s[best]), float((qmax - z[best]) * s[best])


def admm_weight_scale(weight: np.ndarray, axis: int | None, qmax: int) -> np.ndarray:
    """Symmetric scales onto ``[-qmax, qmax]`` minimising each channel's (along ``axis``; the whole
    tensor when None) squared quantization error, from the absmax scale."""
    rows = weight.reshape(1, -1) if axis is None else np.moveaxis(weight, axis, 0).reshape(weight.shape[axis], -1)
    rows = rows.astype(np.float64)
    absmax, ones = np.abs(rows).max(axis=1) / qmax, np.ones_like(rows)
    scale, _ = best_fixed_point(rows, ones, lambda a: (admm_symmetric(rows, ones, qmax, a * absmax), 0.0), -qmax, qmax)
    return scale.astype(np.float32)


def best_fixed_point(x: np.ndarray, w: np.ndarray, solve, qmin: int, qmax: int):
    """Per row, the ``(s, z)`` of lowest ``E`` among ``solve(a)`` for the starting factors ``a`` in ``STARTS``."""
    best_s = best_z = best_e = None
    for a in STARTS:
        s, z = solve(a)
        z = np.broadcast_to(np.asarray(z, np.float64), s.shape)
        e = reconstruction_error(x, w, s, z, qmin, qmax)
        if best_e is None:
            best_s, best_z, best_e = s.copy(), z.copy(), e
            continue
        better = e < best_e
        best_s, best_z, best_e = np.where(better, s, best_s), np.where(better, z, best_z), np.minimum(e, best_e)
    return best_s, best_z


def reconstruction_error(x, w, s, z, qmin: int, qmax: int) -> np.ndarray:
    """Per row, ``E(s, z) = sum_i w_i (x_i - s (clip(round(x_i / s) + z) - z))^2``."""
    s, z = s[:, None], z[:, None]
    q = np.clip(np.round(x / s) + z, qmin, qmax)
    return (w * (x - s * (q - z)) ** 2).sum(axis=1)


def admm_symmetric(x: np.ndarray, w: np.ndarray, qmax: int, start) -> np.ndarray:
    """Per row of ``x`` (weights ``w``), the scale ``s`` of the fixed point of: ``q = clip(round(x / s),
    -qmax, qmax)``; ``s = <x, q>_w / <q, q>_w``."""
    s = np.maximum(np.asarray(start, np.float64).reshape(-1), TINY_SCALE)
    codes = None
    for _ in range(MAX_ITERATIONS):
        q = np.clip(np.round(x / s[:, None]), -qmax, qmax)
        if codes is not None and np.array_equal(q, codes):
            break
        codes = q
        qq = (w * q * q).sum(axis=1)
        s = np.where(qq > 0, (w * x * q).sum(axis=1) / np.maximum(qq, 1e-300), s)
        s = np.maximum(s, TINY_SCALE)
    return s


def admm_asymmetric(x: np.ndarray, w: np.ndarray, qmin: int, qmax: int, lo: np.ndarray, hi: np.ndarray):
    """Per row of ``x`` (weights ``w``), ``(s, z)`` of the fixed point of: ``q = clip(round(x / s) + z)``;
    ``x ~ s*q + c`` by weighted least squares, ``z = clip(round(-c / s))``, ``s`` refitted for ``z``.
    Row ``r`` starts from the range ``[lo[r], hi[r]]`` (which holds 0)."""
    s = np.maximum((np.asarray(hi, np.float64) - lo) / (qmax - qmin), TINY_SCALE)
    z = np.clip(np.round(qmin - lo / s), qmin, qmax)
    codes = None
    total = np.maximum(w.sum(axis=1), 1e-300)
    for _ in range(MAX_ITERATIONS):
        q = np.clip(np.round(x / s[:, None]) + z[:, None], qmin, qmax)
        if codes is not None and np.array_equal(q, codes):
            break
        codes = q
        mean_q, mean_x = (w * q).sum(axis=1) / total, (w * x).sum(axis=1) / total
        var_q = (w * (q - mean_q[:, None]) ** 2).sum(axis=1)
        cov = (w * (q - mean_q[:, None]) * (x - mean_x[:, None])).sum(axis=1)
        slope = np.where(var_q > 0, cov / np.maximum(var_q, 1e-300), s)
        slope = np.maximum(slope, TINY_SCALE)
        z = np.clip(np.round(mean_q - mean_x / slope), qmin, qmax)
        centred = q - z[:, None]
        cc = (w * centred * centred).sum(axis=1)
        s = np.maximum(np.where(cc > 0, (w * x * centred).sum(axis=1) / np.maximum(cc, 1e-300), slope), TINY_SCALE)
    return s, z


def _rows(hist: Histogram, count: int):
    """The histogram as ``count`` identical rows of values and weights (one per starting point)."""
    shape = (count, hist.bins)
    return np.broadcast_to(hist.centers, shape), np.broadcast_to(hist.counts, shape)


def _absmax(hist: Histogram) -> float:
    return max(-hist.min, hist.max, TINY_SCALE)
