"""Analytic bias correction: its expected input against Monte Carlo, its output shift against a numpy conv,
and on a conv-BN-ReLU-conv model a smaller mean output error on held-out data."""

import numpy as np
import pytest
import tvm

import onnx_models
from reference import conv2d
from tvmq.api import prepare_fp32
from tvmq.build import build, virtual_machine
from tvmq.calibrate import collect_ranges
from tvmq.data import Dataset
from tvmq.frontend import load_model
from tvmq.passes.analytic_bias_correction import (analytic_bias_shifts, clipped_normal_mean,
                                                  expected_output_shift)
from tvmq.passes.expose import ExposeTensors
from tvmq.passes.graph import constant_value, dataflow_bindings, find_layers
from tvmq.passes.qparams import DTYPE_RANGE
from tvmq.passes.realize import Realize, Scheme, quantization_record
from tvmq.targets import get_target

CLAMPS = [(-np.inf, np.inf), (0.0, np.inf), (0.0, 6.0), (-1.0, 0.5)]


def _vm(mod):
    return virtual_machine(build(mod, get_target("host")))


def _outputs(mod, x, names):
    result = _vm(mod)["main"](tvm.runtime.tensor(x))
    return {name: result[i + 1].numpy() for i, name in enumerate(names)}


@pytest.mark.parametrize("lo, hi", CLAMPS)
def test_clipped_normal_mean_matches_monte_carlo(lo, hi):
    rng = np.random.default_rng(1)
    mean, std = np.array([-2.0, -0.3, 0.0, 0.7, 3.0, 8.0]), np.array([0.5, 1.0, 2.0, 1.3, 0.1, 3.0])
    samples = rng.normal(mean, std, size=(1_000_000, mean.size))
    empirical = np.clip(samples, lo, hi).mean(axis=0)
    standard_error = std / np.sqrt(len(samples))
    np.testing.assert_array_less(np.abs(clipped_normal_mean(mean, std, lo, hi) - empirical), 5 * standard_error + 1e-6)


def test_clipped_normal_mean_of_a_constant_channel_is_the_clipped_mean():
    np.testing.assert_allclose(clipped_normal_mean(np.array([-1.0, 3.0, 9.0]), np.zeros(3), 0.0, 6.0), [0, 3, 6])


@pytest.mark.parametrize("groups", [1, 2, 8])
def test_conv_output_shift_is_the_convolution_of_the_expected_input(rng, groups):
    error = rng.standard_normal((8, 8 // groups, 3, 3)).astype(np.float32)
    expected = rng.uniform(0, 2, 8).astype(np.float32)
    image = np.broadcast_to(expected.reshape(1, 8, 1, 1), (1, 8, 5, 5))
    want = conv2d(image, error, 0.0, 1, 0, 1, groups)[0, :, 1, 1]
    np.testing.assert_allclose(expected_output_shift(error, expected, "conv2d", groups), want, rtol=1e-5, atol=1e-5)


def test_dense_output_shift_is_expected_input_times_error(rng):
    error, expected = rng.standard_normal((6, 4)), rng.uniform(0, 2, 6)
    np.testing.assert_allclose(expected_output_shift(error, expected, "dense"), expected @ error, rtol=1e-5)


@pytest.mark.parametrize("relu6", [False, True])
def test_analytic_correction_lowers_held_out_mean_error(tmp_path, rng, relu6):
    path = onnx_models.save(onnx_models.conv_bn_relu_conv(relu6=relu6), tmp_path / "cbrc.onnx")
    fp32 = prepare_fp32(load_model(path).mod)
    calib = Dataset(rng.standard_normal((64, 8, 10, 10)).astype(np.float32))
    held_out = rng.standard_normal((128, 8, 10, 10)).astype(np.float32)
    stats, _ = collect_ranges(fp32, ["x", "c", "b", "r", "y"], calib, None, _vm, "minmax", "uint8", 64)
    scheme = Scheme("uint8", per_channel=False)
    correction = analytic_bias_shifts(fp32["main"], scheme)
    assert sorted(correction.bias_shifts) == ["y"] and correction.skipped == ["r"]  # conv1 reads x: no BN stats
    assert correction.note()["max_abs_bias_shift"] > 0
    names = quantization_record(Realize(stats, scheme, expose=True)(fp32))["exposed"]
    reference = _outputs(ExposeTensors(names)(fp32), held_out, names)["y"]
    errors = {}
    for label, shifts in (("plain", {}), ("analytic", correction.bias_shifts)):
        quantized = _outputs(Realize(stats, scheme, expose=True, bias_shifts=shifts)(fp32), held_out, names)["y"]
        errors[label] = np.abs((quantized - reference).mean(axis=(0, 2, 3))).mean()
    assert errors["analytic"] < 0.5 * errors["plain"], errors


def test_folded_int32_bias_is_the_corrected_float_bias_within_one_accumulator_lsb(tmp_path, rng):
    path = onnx_models.save(onnx_models.conv_bn_relu_conv(), tmp_path / "cbrc.onnx")
    fp32 = prepare_fp32(load_model(path).mod)
    layer = next(l for l in find_layers(fp32["main"]).values() if l.out.name == "y")
    stats = {"x": (-4.0, 4.0), "b": (-3.0, 5.0), "r": (0.0, 5.0), "y": (-2.0, 2.0)}
    scheme = Scheme("uint8", per_channel=False)
    shift = analytic_bias_shifts(fp32["main"], scheme).bias_shifts["y"]
    int8 = Realize(stats, scheme, bias_shifts={"y": shift})(fp32)
    record = quantization_record(int8)
    values = {b.var.name: b.value for b in dataflow_bindings(int8["main"])}
    w_q = constant_value(values["y_int"].args[1]).astype(np.int64)
    bias_q = constant_value(values["y_acc"].args[1]).reshape(-1).astype(np.int64)
    x_qp = record["activations"][record["range_of"]["r"]]
    unfolded = bias_q + x_qp["zero_point"][0] * w_q.sum(axis=(1, 2, 3))  # undo the zero-point fold
    lsb = np.float64(x_qp["scale"][0]) * np.float64(record["weights"]["y"]["scale"][0])
    assert np.all(np.abs(unfolded) < DTYPE_RANGE["int32"][1])
    np.testing.assert_array_less(np.abs(unfolded * lsb - (layer.bias - shift)), lsb)
