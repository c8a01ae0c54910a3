"""Quantization arithmetic and the MinMax observer, on arrays."""

import numpy as np
import pytest

from tvmq.passes.calibrators import make_observer
from tvmq.passes.qparams import (QParams, activation_qparams, dequantize, fold_zero_point, quantize, quantize_bias,
                                 weight_qparams)


def test_uint8_activation_range_includes_zero_and_maps_exactly():
    qp = activation_qparams(-1.0, 3.0, "uint8")
    assert qp.scale == pytest.approx(4.0 / 255)
    assert qp.zero_point == 64  # round(1 / (4/255)) = round(63.75)
    assert quantize(np.array([0.0], np.float32), qp)[0] == qp.zero_point  # real zero is exact
    positive = activation_qparams(0.5, 2.0, "uint8")
    assert positive.zero_point == 0 and positive.scale == pytest.approx(2.0 / 255)


def test_int8_activation_is_symmetric():
    qp = activation_qparams(-1.0, 3.0, "int8")
    assert qp.zero_point == 0 and qp.scale == pytest.approx(3.0 / 127)
    with pytest.raises(ValueError, match="unsupported activation dtype"):
        activation_qparams(0, 1, "int4")


def test_round_trip_error_is_at_most_half_a_step(rng):
    x = rng.uniform(-2, 5, 10_000).astype(np.float32)
    qp = activation_qparams(x.min(), x.max(), "uint8")
    assert np.abs(dequantize(quantize(x, qp), qp) - x).max() <= qp.scale / 2 + 1e-6


def test_per_channel_weights_use_each_channels_absmax(rng):
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    w[2] *= 10
    qp = weight_qparams(w, axis=0)
    np.testing.assert_allclose(qp.scale, np.abs(w).max(axis=(1, 2, 3)) / 127, rtol=1e-6)
    q = quantize(w, qp)
    assert q.dtype == np.int8 and np.abs(q).max() == 127 and np.abs(q).min(initial=0) >= 0
    assert weight_qparams(w, axis=None).scale.shape == ()


def test_seven_bit_weights_stay_in_their_range_even_with_a_smaller_scale(rng):
    """Targets whose kernel saturates int16 (vpmaddubsw) quantize weights onto [-63, 63]; a scale
    searched below absmax / 63 (EasyQuant) must clip there, not at the dtype's 127."""
    w = rng.standard_normal((4, 16)).astype(np.float32)
    qp = weight_qparams(w, axis=0, qmax=63)
    np.testing.assert_allclose(qp.scale, np.abs(w).max(axis=1) / 63, rtol=1e-6)
    assert np.abs(quantize(w, qp)).max() == 63 and qp.to_json()["qmax"] == 63
    narrower = QParams(qp.scale / 2, qp.zero_point, "int8", 0, limit=63)
    assert quantize(w, narrower).min() == -63 and quantize(w, narrower).max() == 63


def test_zero_point_folding_is_exact(rng):
    x = rng.integers(0, 256, (5, 20))
    w = rng.integers(-127, 128, (20, 6)).astype(np.int8)
    bias = rng.standard_normal(6).astype(np.float32)
    zero_point = 37
    bias_q = quantize_bias(bias, 0.02, np.full(6, 0.01, np.float32))
    folded = fold_zero_point(bias_q, w, zero_point, axis=1)
    np.testing.assert_array_equal(x @ w.astype(np.int64) + folded, (x - zero_point) @ w.astype(np.int64) + bias_q)


def test_minmax_observer_streams(rng):
    data = rng.standard_normal((10, 100)).astype(np.float32)
    observer = make_observer("minmax")
    for batch in data:
        observer.observe(batch)
    assert observer.range() == (float(data.min()), float(data.max()))
    with pytest.raises(KeyError, match="choose one of: .*minmax"):
        make_observer("nope")
