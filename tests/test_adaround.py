"""AdaRound (``tvmq.passes.adaround``): the learned rounding on tiny layers, then end to end through
``tvmq.compile``, the deployed int8 module bit for bit against a numpy integer reference with the
learned weights.

    x[1,8,12,12] --conv_a 3x3 + bias + relu--> r --conv_b 1x1 + bias--> y      (onnx_models.conv_chain)
"""

import numpy as np
import pytest

import tvmq
from tvmq.data import Dataset
from tvmq.passes.adaround import (AdaRoundOptions, RoundingProblem, _loss_and_grad, beta_at, grouped_rows,
                                  grouped_weight, initial_v, layer_weight, learn_rounding, nearest,
                                  reconstruction_error, rectified_sigmoid)

from onnx_models import conv_chain, save
from reference import conv2d_int, requantize

FAST = AdaRoundOptions(iterations=600, learning_rate=1e-2, batch_rows=256)


def _problem(rng, groups=1, rows=1024, k=32, out=8, qmax=7, clamp=(0.0, np.inf)):
    """A random layer whose input carries int8-like rounding noise (what AdaRound compensates)."""
    x = rng.normal(size=(groups, rows, k)).astype(np.float32)
    w = (rng.normal(size=(groups, out, k)) * 0.1).astype(np.float32)
    scale = (np.abs(w).max(axis=2, keepdims=True) / qmax).astype(np.float32)
    bias = (rng.normal(size=(groups, out)) * 0.05).astype(np.float32)
    target = np.clip(np.matmul(x, w.transpose(0, 2, 1)) + bias[:, None], *clamp)
    return RoundingProblem(np.round(x * 4) / 4, w, scale, bias, clamp, target, qmax)


@pytest.mark.parametrize("groups", [1, 3])
def test_adaround_beats_nearest_rounding_on_the_layer_output(rng, groups):
    problem = _problem(rng, groups)
    learned = learn_rounding(problem, FAST)
    assert reconstruction_error(problem, learned.integers) < 0.97 * reconstruction_error(problem, nearest(problem))


def test_learned_rounding_is_only_ever_floor_or_ceil(rng):
    problem = _problem(rng, qmax=3)  # a narrow range: some weights sit on the clip
    learned = learn_rounding(problem, FAST).integers.astype(np.float64)
    scaled = problem.weight / problem.scale
    floor, ceil = np.clip(np.floor(scaled), -3, 3), np.clip(np.ceil(scaled), -3, 3)
    assert np.all((learned == floor) | (learned == ceil))
    assert np.any(learned != np.clip(np.round(scaled), -3, 3))  # it did change something


def test_the_regulariser_drives_h_to_zero_or_one(rng):
    problem = _problem(rng)
    options = AdaRoundOptions(iterations=1000, learning_rate=1e-2, batch_rows=256)
    binary = [np.mean((soft < 1e-3) | (soft > 1 - 1e-3)) for soft in
              (learn_rounding(problem, options).soft, learn_rounding(problem, AdaRoundOptions(
                  iterations=1000, learning_rate=1e-2, batch_rows=256, reg_weight=0.0)).soft)]
    assert binary[0] > 0.99 and binary[1] < 0.5, binary


def test_gradient_matches_finite_differences(rng):
    problem = _problem(rng, rows=64, k=6, out=3)
    floor = np.floor(problem.weight / problem.scale).astype(np.float32)
    v = rng.normal(size=problem.weight.shape) * 0.5
    loss, grad = _loss_and_grad(problem, floor, v, problem.rows, problem.target, 4.0, 0.01)
    for index in [(0, 0, 0), (0, 2, 5), (0, 1, 3)]:
        step = np.zeros_like(v)
        step[index] = 1e-5
        ahead = _loss_and_grad(problem, floor, v + step, problem.rows, problem.target, 4.0, 0.01)[0]
        assert grad[index] == pytest.approx((ahead - loss) / 1e-5, rel=2e-2, abs=1e-6)


def test_schedule_and_relaxation_follow_aimet():
    options = AdaRoundOptions(iterations=100)
    assert beta_at(19, options) is None and beta_at(20, options) == pytest.approx(20.0)
    assert beta_at(99, options) == pytest.approx(2.0, abs=0.01)
    rest = np.array([0.0, 0.25, 0.5, 0.99], np.float32)
    assert rectified_sigmoid(initial_v(rest)) == pytest.approx(rest, abs=1e-5)


def test_grouped_views_round_trip_through_the_layers_layout(tmp_path):
    from tvmq.frontend import load_model
    from tvmq.passes.layers import find_layers

    for groups in (1, 4):
        imported = load_model(save(conv_chain(groups=groups), tmp_path / f"g{groups}.onnx"))
        for layer in find_layers(imported.mod["main"]).values():
            grouped = grouped_weight(layer)
            assert grouped.shape[0] == layer.form.groups(layer)
            assert np.array_equal(layer_weight(grouped, layer), layer.weight)
            rows = layer.form.rows(np.ones((1, layer.weight.shape[1] * layer.form.groups(layer), 12, 12),
                                           np.float32), layer)
            assert grouped_rows(rows, layer).shape[:2] == (grouped.shape[0], len(rows))


def test_compiled_adaround_module_is_bit_exact_with_the_integer_reference(tmp_path, rng):
    """conv_a (3x3, pad 1, ReLU) requantizes into uint8, conv_b's accumulator is dequantized:

        x_q = clip(round(x / s_x) + z_x),  acc_a = sum (x_q - z_x) w_a + round(b_a / (s_x s_a))
        r_q = clip(round(acc_a * s_x s_a / s_r) + z_r, z_r, 255),  y = float(acc_b) * (s_r s_b)
    with ``w_a``, ``w_b`` the integers AdaRound learned (the artifact's qdq_weights)."""
    model = save(conv_chain(), tmp_path / "chain.onnx")
    calib = Dataset(rng.normal(size=(32, 8, 12, 12)).astype(np.float32))
    config = tvmq.Config(rounding="adaround", adaround_iterations=200, latency_runs=1, weight_bits=6)
    compiled = tvmq.compile(model, calib, config=config)
    layers = {entry["node"]: entry for entry in compiled.plan["layers"]}
    assert {entry["rounding"] for entry in layers.values()} == {"adaround"}
    w_a, w_b = compiled.qdq_weights["weight_0"], compiled.qdq_weights["weight_1"]
    weights = {name: np.asarray(init) for name, init in _initializers(model).items()}
    nearest_a = np.clip(np.round(weights["wa"] / _per_channel(layers["conv_a"]["weight"]["scale"])), -31, 31)
    assert np.abs(w_a - nearest_a).max() == 1 and np.any(w_a != nearest_a)  # learned, one step at most
    x = rng.normal(size=(1, 8, 12, 12)).astype(np.float32)
    got = compiled.run(x)
    want = _reference(x, compiled.plan, layers, w_a, w_b, weights)
    assert np.array_equal(np.asarray(got if not isinstance(got, list) else got[0]), want)


def _initializers(path):
    import onnx
    from onnx import numpy_helper

    return {init.name: numpy_helper.to_array(init) for init in onnx.load(path).graph.initializer}


def _per_channel(scale):
    return np.asarray(scale, np.float32).reshape(-1, 1, 1, 1)


def _reference(x, plan, layers, w_a, w_b, weights):
    acts = plan["activations"]
    s_x, z_x = np.float32(acts["x"]["scale"][0]), int(acts["x"]["zero_point"][0])
    s_r, z_r = np.float32(acts["r"]["scale"][0]), int(acts["r"]["zero_point"][0])
    s_a = np.asarray(layers["conv_a"]["weight"]["scale"], np.float32)
    s_b = np.asarray(layers["conv_b"]["weight"]["scale"], np.float32)
    x_q = np.clip(np.round(x / s_x) + z_x, 0, 255).astype(np.int64)
    bias_a = np.round(weights["ba"].astype(np.float64) / (np.float64(s_x) * s_a.astype(np.float64)))
    acc_a = conv2d_int(x_q - z_x, w_a, 0, 1, 1, 1, 1) + bias_a.astype(np.int64).reshape(1, -1, 1, 1)
    multiplier = (np.float64(s_x) * s_a.astype(np.float64) / np.float64(s_r)).astype(np.float32)
    r_q = requantize(acc_a, multiplier.reshape(1, -1, 1, 1), z_r, z_r, 255, np.int64)
    bias_b = np.round(weights["bb"].astype(np.float64) / (np.float64(s_r) * s_b.astype(np.float64)))
    acc_b = conv2d_int(r_q - z_r, w_b, 0, 1, 0, 1, 1) + bias_b.astype(np.int64).reshape(1, -1, 1, 1)
    return acc_b.astype(np.float32) * (s_r * s_b).astype(np.float32).reshape(1, -1, 1, 1)


def test_refinement_builds_the_int8_network_once_when_only_weights_change(tmp_path, rng, caplog):
    """AdaRound changes constants only: the lifted-weight module is built once for both layers."""
    import logging

    from tvmq.api import quantize

    model = save(conv_chain(), tmp_path / "chain.onnx")
    calib = Dataset(rng.normal(size=(16, 8, 12, 12)).astype(np.float32))
    with caplog.at_level(logging.INFO, logger="tvmq.layerwise"):
        quantized = quantize(model, calib, tvmq.Config(rounding="adaround", adaround_iterations=20))
    assert len(quantized.refined.weight_integers) == 2
    assert any("refined 2 layers" in r.getMessage() and "; 1 builds)" in r.getMessage() for r in caplog.records)
