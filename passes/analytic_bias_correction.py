"""Analytic bias correction from BatchNorm statistics (Nagel et al. 2019, "Data-Free
Quantization", sec. 4.2).

Quantizing a layer's weights, ``W_q = W + eps``, shifts its expected output by
``E[W_q x] - E[W x] = eps E[x]``. When the layer's input is a folded BatchNorm's output,
optionally clamped by a ReLU / ReLU6, each input channel c is modelled as a clipped normal

    x_c = clip(z, lo, hi),   z ~ N(mu_c, sigma_c),   mu_c = beta_c,  sigma_c = |gamma_c|

whose mean is, with a = (lo - mu) / sigma, b = (hi - mu) / sigma,

    E[x_c] = lo Phi(a) + hi (1 - Phi(b)) + mu (Phi(b) - Phi(a)) + sigma (phi(a) - phi(b))

(for a plain ReLU: mu Phi(mu / sigma) + sigma phi(mu / sigma)). The bias then becomes

    b' = b - eps E[x]        (summed over input channels and kernel taps)

and realize folds ``b'`` into the int32 bias, so the correction is free at run time. No data
is needed; only the weight error is corrected (not the activation rounding), and zero
padding at image borders is ignored, as in the paper. Layers whose input is not a
BatchNorm output with recorded statistics (``tvmq.batchnorm_stats``, kept up to date by CLE
and high-bias absorption) are skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from tvm import relax

from .graph import batchnorm_stats
from .layers import Layer, find_layers, kind_for
from .plan import Scheme, layer_weight_qparams
from .qparams import dequantize, quantize

_erf = np.vectorize(math.erf, otypes=[np.float64])


def normal_cdf(z: np.ndarray) -> np.ndarray:
    """``Phi(z) = (1 + erf(z / sqrt(2))) / 2``; exact 0 / 1 at -inf / +inf."""
    return 0.5 * (1.0 + _erf(np.asarray(z, np.float64) / math.sqrt(2.0)))


def normal_pdf(z: np.ndarray) -> np.ndarray:
    """``phi(z) = exp(-z^2 / 2) / sqrt(2 pi)``; 0 at +-inf."""
    z = np.asarray(z, np.float64)
    return np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def clipped_normal_mean(mean: np.ndarray, std: np.ndarray, lo: float = -np.inf, hi: float = np.inf) -> np.ndarray:
    """``E[clip(z, lo, hi)]`` for ``z ~ N(mean, std)``, per channel (``std == 0``: ``clip(mean)``)."""
    mean, std = np.asarray(mean, np.float64), np.abs(np.asarray(std, np.float64))
    safe = np.where(std > 0, std, 1.0)
    a, b = (lo - mean) / safe, (hi - mean) / safe
    cdf_a, cdf_b = normal_cdf(a), normal_cdf(b)
    below = lo * cdf_a if np.isfinite(lo) else 0.0
    above = hi * (1.0 - cdf_b) if np.isfinite(hi) else 0.0
    inside = mean * (cdf_b - cdf_a) + std * (normal_pdf(a) - normal_pdf(b))
    return np.where(std > 0, below + above + inside, np.clip(mean, lo, hi)).astype(np.float32)


def expected_output_shift(error: np.ndarray, expected_input: np.ndarray, kind: str,
                          groups: int = 1) -> np.ndarray:
    """``eps E[x]`` per output channel, as the layer kind ``kind`` computes it (its ``expected_shift``).

    conv2d: ``error`` (``W_q - W``) is OIHW with I = C_in / groups; output channel o reads input
    channels ``g * I ... g * I + I - 1`` of its group g = o // (O / groups) through every tap.
    dense: ``error`` is (K, N), the shift is ``E[x] @ eps``.
    """
    return kind_for(kind).expected_shift(error, expected_input, groups)


def weight_error(layer: Layer, scheme: Scheme, scale: np.ndarray | None = None) -> np.ndarray:
    """``W_q - W`` with the scales realize uses for ``layer``."""
    qp = layer_weight_qparams(layer, scheme, scale)
    return dequantize(quantize(layer.weight, qp), qp) - layer.weight


@dataclass
class AnalyticCorrection:
    """Per-layer bias shifts (layer output name -> values) and the layers left alone."""

    bias_shifts: dict = field(default_factory=dict)
    skipped: list = field(default_factory=list)

    def note(self) -> dict:
        largest = max((float(np.abs(v).max(initial=0.0)) for v in self.bias_shifts.values()), default=0.0)
        return {"pass": "CorrectBias", "method": "analytic", "layers": sorted(self.bias_shifts),
                "skipped": sorted(self.skipped), "max_abs_bias_shift": largest,
                "note": f"corrected {len(self.bias_shifts)} layers from BatchNorm statistics; skipped "
                        f"{len(self.skipped)} whose input has none"}


def analytic_bias_shifts(func: relax.Function, scheme: Scheme, weight_scales: dict | None = None
                         ) -> AnalyticCorrection:
    """The analytic bias shift of every layer whose input is a BatchNorm (+ clamp) output."""
    layers = find_layers(func)
    stats = batchnorm_stats(func)
    producer = {layer.out: layer for layer in layers.values()}
    result = AnalyticCorrection()
    for layer in layers.values():
        expected = predicted_input_mean(producer.get(layer.data), stats)
        if expected is None:
            result.skipped.append(layer.out.name)
            continue
        error = weight_error(layer, scheme, (weight_scales or {}).get(layer.out.name))
        result.bias_shifts[layer.out.name] = layer.form.expected_shift(error, expected, layer.form.groups(layer))
    return result


def predicted_input_mean(producer: Layer | None, stats: dict) -> np.ndarray | None:
    """E[x] per channel of ``producer``'s output, if its pre-clamp value is a recorded BatchNorm."""
    if producer is None:
        return None
    name = next((v.name for v in producer.chain if v.name in stats), None)
    if name is None or name != _pre_clamp(producer).name:
        return None
    return clipped_normal_mean(stats[name]["mean"], stats[name]["std"], *producer.clamp)


def _pre_clamp(layer: Layer):
    """The chain variable the clamp reads: the bias add (or the conv itself without one)."""
    return layer.chain[1] if layer.bias is not None else layer.chain[0]
