"""ADMM range setting against a brute-force search of the scale on known distributions."""

import numpy as np
import pytest

from tvmq.passes.admm import admm_weight_scale, reconstruction_error
from tvmq.passes.calibrators import make_observer
from tvmq.passes.qparams import activation_qparams, weight_scale

RNG = np.random.default_rng(0)
DISTRIBUTIONS = {
    "gaussian": RNG.normal(0.0, 1.0, 100_000),
    "laplace": RNG.laplace(0.0, 1.0, 100_000),
    "student_t3": RNG.standard_t(3, 100_000),
    "relu_gaussian": np.maximum(RNG.normal(0.3, 1.0, 100_000), 0.0),
}


def _error(x, scale, zero_point, qmin, qmax):
    return reconstruction_error(x[None], np.ones((1, x.size)), np.array([scale], np.float64),
                                np.array([zero_point], np.float64), qmin, qmax)[0] / x.size


def _admm_error(x, dtype):
    observer = make_observer("admm", dtype)
    observer.observe(x)
    qp = activation_qparams(*observer.range(), dtype)
    qmin, qmax = (0, 255) if dtype == "uint8" else (-127, 127)
    return _error(x, float(qp.scale), float(qp.zero_point), qmin, qmax)


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_symmetric_admm_is_within_one_percent_of_the_brute_force_scale(name):
    x = DISTRIBUTIONS[name]
    absmax = np.abs(x).max()
    brute = min(_error(x, t / 127, 0.0, -127, 127) for t in np.linspace(absmax / 400, absmax, 400))
    assert _admm_error(x, "int8") <= 1.01 * brute
    assert _admm_error(x, "int8") < _error(x, absmax / 127, 0.0, -127, 127)  # better than min/max


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_asymmetric_admm_is_within_one_percent_of_a_brute_force_range(name):
    x = DISTRIBUTIONS[name]
    lo, hi = min(x.min(), 0.0), x.max()
    best = np.inf
    for a in np.linspace(0.05, 1.0, 40):
        for b in np.linspace(0.05, 1.0, 40):
            qp = activation_qparams(a * lo, b * hi, "uint8")
            best = min(best, _error(x, float(qp.scale), float(qp.zero_point), 0, 255))
    assert _admm_error(x, "uint8") <= 1.01 * best


def test_gaussian_threshold_lies_between_three_and_four_and_a_half_sigma():
    """The reference article: ADMM's threshold covers about mean +- 3 sigma on a normal (measured
    here at 8 bits with 100k samples: about 4 sigma, well inside the min/max range of ~4.5)."""
    observer = make_observer("admm", "int8")
    observer.observe(DISTRIBUTIONS["gaussian"])
    lo, hi = observer.range()
    assert lo == -hi and 3.0 < hi < 4.5


def test_admm_weight_scales_beat_absmax_per_channel():
    weight = RNG.laplace(0.0, 1.0, (8, 3, 3, 16)) * RNG.uniform(0.1, 2.0, (8, 1, 1, 1))
    admm, absmax = admm_weight_scale(weight, 0, 127), weight_scale(weight, 0, 127)
    rows = weight.reshape(8, -1)
    ones, zeros = np.ones_like(rows), np.zeros(8)
    assert admm.shape == (8,)
    errors = reconstruction_error(rows, ones, admm.astype(np.float64), zeros, -127, 127)
    assert np.all(errors <= reconstruction_error(rows, ones, absmax.astype(np.float64), zeros, -127, 127))


def test_admm_takes_a_constant_tensor_and_refuses_no_data():
    observer = make_observer("admm", "uint8")
    with pytest.raises(ValueError, match="saw no data"):
        observer.range()
    observer.observe(np.full(1000, 3.0, np.float32))
    lo, hi = observer.range()
    assert lo <= 0.0 and abs(hi - 3.0) < 0.05


def test_the_admm_calibrator_sets_the_plans_weight_ranges_too(tmp_path):
    """``--calibrator admm`` quantizes each layer's weights with ADMM's scales (the other
    calibrators keep absmax): the plan's weight scales are ``admm_weight_scale``'s, per channel."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    import onnx_models
    from tvmq import api
    from tvmq.config import Config
    from tvmq.passes.graph import find_layers

    path = onnx_models.save(onnx_models.conv_chain(), tmp_path / "m.onnx")
    calib = RNG.standard_normal((16, 8, 12, 12)).astype(np.float32)
    plans = {name: api.quantize(path, calib, Config(calibrator=name, batch_size=16)) for name in ("admm", "minmax")}
    layers = find_layers(plans["admm"].program.fp32["main"])
    assert layers
    for layer in layers.values():
        qmax = plans["admm"].scheme.weight_qmax
        admm = plans["admm"].plan.layers[layer.out.name].weight
        np.testing.assert_array_equal(admm.scale, admm_weight_scale(layer.weight, layer.channel_axis, qmax))
        absmax = plans["minmax"].plan.layers[layer.out.name].weight
        np.testing.assert_allclose(absmax.scale, weight_scale(layer.weight, layer.channel_axis, qmax))
        rows = np.moveaxis(layer.weight, layer.channel_axis, 0).reshape(admm.scale.size, -1).astype(np.float64)
        ones, zeros = np.ones_like(rows), np.zeros(admm.scale.size)
        errors = [reconstruction_error(rows, ones, qp.scale.astype(np.float64), zeros, -qmax, qmax) for qp in (admm, absmax)]
        assert np.all(errors[0] <= errors[1]) and np.any(errors[0] < errors[1])
