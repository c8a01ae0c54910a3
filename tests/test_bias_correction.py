"""Bias correction lowers each corrected layer's mean output error on held-out data."""

import numpy as np
import tvm

import onnx_models
from tvmq import layerwise
from tvmq.api import prepare_fp32
from tvmq.build import build, virtual_machine
from tvmq.calibrate import collect_ranges
from tvmq.data import Dataset
from tvmq.frontend import load_model
from tvmq.passes.expose import ExposeTensors
from tvmq.passes.qparams import quantize_bias
from tvmq.passes.realize import Scheme, quantization_record
from tvmq.targets import get_target


def _vm(mod):
    return virtual_machine(build(mod, get_target("host")))


def _outputs(mod, x, names):
    result = _vm(mod)["main"](tvm.runtime.tensor(x))
    return {name: result[i + 1].numpy() for i, name in enumerate(names)}


def test_corrected_layers_have_smaller_mean_error_on_held_out_data(tmp_path, rng):
    path = onnx_models.save(onnx_models.mobile_block(relu6=False), tmp_path / "block.onnx")
    imported = load_model(path)
    fp32 = prepare_fp32(imported.mod)
    calib = Dataset(rng.standard_normal((64, 4, 10, 10)).astype(np.float32))
    held_out = rng.standard_normal((64, 4, 10, 10)).astype(np.float32)
    stats, _ = collect_ranges(fp32, sorted(imported.nodes) + ["x"], calib, None, _vm, "minmax", "uint8", 64)
    scheme = Scheme("uint8", per_channel=False)
    plain, corrected = (layerwise.refine(fp32, stats, scheme, calib, None, _vm, 64, search_scales=False,
                                         correct_bias=bc) for bc in (False, True))
    assert sorted(corrected.bias_shifts) == ["rd", "re", "y"]
    names = quantization_record(plain.realize(scheme, expose=True)(fp32))["exposed"]
    reference = _outputs(ExposeTensors(names)(fp32), held_out, names)
    errors = {}
    for label, refined in (("plain", plain), ("corrected", corrected)):
        quantized = _outputs(refined.realize(scheme, expose=True)(fp32), held_out, names)
        errors[label] = {n: np.abs((quantized[n] - reference[n]).mean(axis=(0, 2, 3))).mean() for n in ("re", "rd", "y")}
    for layer in ("re", "rd", "y"):
        assert errors["corrected"][layer] < errors["plain"][layer], (layer, errors)


def test_int32_bias_is_within_one_accumulator_lsb(rng):
    bias = rng.standard_normal(64).astype(np.float32) * 3
    input_scale, weight_scale = np.float32(0.0173), rng.uniform(0.001, 0.05, 64).astype(np.float32)
    lsb = np.float64(input_scale) * weight_scale.astype(np.float64)
    bias_q = quantize_bias(bias, input_scale, weight_scale)
    assert bias_q.dtype == np.int32
    assert np.all(np.abs(bias_q * lsb - bias) <= lsb / 2 + 1e-12)
