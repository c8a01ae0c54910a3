"""Empirical bias correction (Nagel et al. 2019, sec. 4.2; AIMET's empirical BC).

Quantizing weights and inputs shifts a layer's expected output: E[W_q x_q] != E[W x]. On
calibration data, with the input the int8 network really feeds the layer, the per-channel
mean of that shift (before the layer's clamp) is subtracted from the bias:

    b' = b - mean_rows( (x_q W_q^T + b) - (x W^T + b) )

Realize then folds ``b'`` into the int32 bias, so the correction costs nothing at run time.
"""

from __future__ import annotations

import numpy as np

from .eq import LayerProblem, _fake_act, _fake_weight
from .plan import Scheme
from .qparams import weight_scale as absmax_scale


def bias_shift(problem: LayerProblem, act_range: tuple[float, float], scheme: Scheme,
               weight_scale: np.ndarray | None = None, qmax: int | None = None,
               weight_fake: np.ndarray | None = None) -> np.ndarray:
    """The per-channel amount to subtract from the layer's bias; ``qmax``: the layer's weight range
    (default the scheme's); ``weight_fake``: its dequantized weight (C, K) when it is not
    ``round(W / s)`` (AdaRound's)."""
    axis = 0 if scheme.per_channel else None
    qmax = scheme.weight_qmax if qmax is None else qmax
    if weight_scale is None:
        weight_scale = absmax_scale(problem.weight, axis, qmax)
    rows = _fake_act(problem.rows_q, act_range, 1.0, scheme.activation_dtype)
    if weight_fake is None:
        weight_fake = _fake_weight(problem.weight, weight_scale, axis, qmax)
    quantized = rows @ weight_fake.T
    exact = problem.rows_fp @ problem.weight.T
    return (quantized - exact).mean(axis=0).astype(np.float32)
