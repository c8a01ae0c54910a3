"""fp32 passes keep the function; realize really computes in integers."""

import re

import numpy as np
import onnxruntime as ort
import pytest
import tvm
from tvm import relax

import onnx_models
import tvmq
from tvmq.api import prepare_fp32
from tvmq.build import build, virtual_machine
from tvmq.frontend import load_model
from tvmq.passes.fold_batchnorm import FoldBatchNorm
from tvmq.passes.graph import dataflow_bindings, op_name
from tvmq.passes.realize import Realize, Scheme, quantization_record
from tvmq.targets import get_target


def _run(mod, x):
    vm = virtual_machine(build(mod, get_target("host")))
    return vm["main"](tvm.runtime.tensor(x)).numpy()


def _ops(mod):
    return [op_name(b.value) for b in dataflow_bindings(mod["main"])]


@pytest.mark.parametrize("constant_nodes", [False, True])
def test_fold_batchnorm_keeps_outputs_and_names(tmp_path, rng, constant_nodes):
    model = onnx_models.conv_bn(weights_as_constant_nodes=constant_nodes)
    path = onnx_models.save(model, tmp_path / "bn.onnx")
    mod = relax.transform.FoldConstant()(load_model(path).mod)
    assert "relax.nn.batch_norm" in _ops(mod)
    folded = FoldBatchNorm()(mod)
    assert "relax.nn.batch_norm" not in _ops(folded)
    assert "b" in [b.var.name for b in dataflow_bindings(folded["main"])], "BN output lost its ONNX name"
    x = rng.standard_normal((1, 4, 8, 8)).astype(np.float32)
    before, after = _run(mod, x), _run(folded, x)
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5 * np.abs(before).max())
    reference = ort.InferenceSession(path).run(None, {"x": x})[0]
    np.testing.assert_allclose(after, reference, rtol=1e-4, atol=1e-5)


def _legalized_scripts(mod):
    legal = relax.transform.LegalizeOps()(mod)
    return {gv.name_hint: legal[gv].script() for gv in legal.get_global_vars() if gv.name_hint != "main"}


def _buffer_dtypes(script):
    signature = script[script.index("def main("):script.index("):")]
    return re.findall(r'T\.Buffer\(\(.*?\), "(\w+)"\)', signature)


def test_realized_layers_take_int8_and_accumulate_in_int32(tmp_path):
    path = onnx_models.save(onnx_models.conv_chain(), tmp_path / "conv.onnx")
    fp32 = prepare_fp32(load_model(path).mod)
    stats = {"x": (-3.0, 3.0), "a": (-2.0, 4.0), "r": (0.0, 4.0), "y": (-1.0, 1.0)}
    int8 = Realize(stats, Scheme("uint8", per_channel=True))(fp32)
    scripts = _legalized_scripts(int8)
    convs = {name: s for name, s in scripts.items() if name.startswith("conv2d")}
    assert len(convs) == 2
    for script in convs.values():
        assert _buffer_dtypes(script) == ["uint8", "int8", "int32"]
        assert re.search(r'T\.Cast\("int32", \w+\[.*?\]\) \* T\.Cast\("int32", \w+\[.*?\]\)', script)
    assert "relax.nn.conv2d" in _ops(int8)
    assert not any("float32" in _buffer_dtypes(s)[0] for s in convs.values())
    assert quantization_record(int8)["precision"]["r"] == "int8"


def test_residual_add_and_global_pool_stay_int8(tmp_path, rng):
    path = onnx_models.save(onnx_models.conv_bn(), tmp_path / "bn.onnx")
    import tvmq

    calib = rng.standard_normal((16, 4, 8, 8)).astype(np.float32)
    compiled = tvmq.compile(path, calib, config=tvmq.Config(latency_runs=1))
    precision = {row["name"]: row["precision"] for row in compiled.report["layers"]}
    assert precision == {"conv": "int8", "bn": "int8", "relu": "int8", "gap": "int8", "residual": "int8",
                         "flatten": "int8"}
    x = calib[:1]
    reference = ort.InferenceSession(path).run(None, {"x": x})[0]
    assert np.abs(compiled.run(x) - reference).max() < 0.05 * np.abs(reference).max()


def test_unsupported_layers_fall_back_to_fp32(tmp_path, rng):
    from onnx import helper

    import tvmq

    model = onnx_models.conv_chain()
    node = helper.make_node("Sigmoid", ["r"], ["s"], name="sigmoid")
    model.graph.node.insert(2, node)
    model.graph.node[3].input[0] = "s"
    path = onnx_models.save(model, tmp_path / "sig.onnx")
    calib = rng.standard_normal((8, 8, 12, 12)).astype(np.float32)
    compiled = tvmq.compile(path, calib, config=tvmq.Config(latency_runs=1))
    precision = {row["name"]: row["precision"] for row in compiled.report["layers"]}
    assert precision["sigmoid"] == "fp32"
    assert precision["conv_a"] == precision["conv_b"] == "int8"
    assert compiled.report["accuracy"]["output_cosine"] > 0.99


def test_concat_and_average_pool_stay_int8(tmp_path, rng):
    import tvmq

    path = onnx_models.save(onnx_models.pool_concat(), tmp_path / "pc.onnx")
    calib = rng.standard_normal((16, 3, 8, 8)).astype(np.float32)
    compiled = tvmq.compile(path, calib, config=tvmq.Config(latency_runs=1))
    precision = {row["name"]: row["precision"] for row in compiled.report["layers"]}
    assert set(precision.values()) == {"int8"}, precision
    x = calib[:1]
    reference = ort.InferenceSession(path).run(None, {"x": x})[0]
    assert np.abs(compiled.run(x) - reference).max() < 0.05 * np.abs(reference).max()


def test_calibration_batch_is_bounded_by_activation_memory(tmp_path, monkeypatch):
    from tvmq import calibrate

    path = onnx_models.save(onnx_models.conv_chain(channels=8), tmp_path / "conv.onnx")
    fp32 = prepare_fp32(load_model(path).mod)
    names = ["x", "a", "r", "y"]  # 8x12x12 floats each, 6x12x12 for y: 17,280 bytes a sample
    assert calibrate.bounded_batch(fp32, names, 64) == 64
    monkeypatch.setattr(calibrate, "EXPOSED_BYTES_BUDGET", 100_000)
    assert calibrate.bounded_batch(fp32, names, 64) == 100_000 // (3 * 8 * 144 * 4 + 6 * 144 * 4)
    monkeypatch.setattr(calibrate, "EXPOSED_BYTES_BUDGET", 10)
    assert calibrate.bounded_batch(fp32, names, 64) == 1


def test_importer_tir_functions_survive_every_pass(tmp_path, rng):
    """TVM imports an edge Pad as a TIR function beside ``main``; no pass may drop it."""
    path = onnx_models.save(onnx_models.edge_pad_chain(), tmp_path / "edge_pad.onnx")
    assert len(load_model(path).mod.functions) > 1
    calib = rng.standard_normal((16, 3, 8, 8)).astype(np.float32)
    compiled = tvmq.compile(path, calib, config=tvmq.Config(cle=True, latency_runs=1))
    x = calib[:1]
    expected = ort.InferenceSession(path).run(None, {"x": x})[0]
    got = compiled.run(x)
    assert np.abs(got - expected).max() < 0.05 * np.abs(expected).max()


def test_constant_value_reads_tensor_constants_only():
    """TVM 0.27's scalar immediates are ``Constant`` too; reading one as a tensor crashed the
    x86 legalization of a module with a layer kept fp32 (a ``clip`` bound as a PrimValue)."""
    import tvm
    from tvm import relax

    from tvmq.passes.graph import constant_value

    assert constant_value(relax.prim_value(tvm.tirx.FloatImm("float32", 6.0))) is None
    np.testing.assert_array_equal(constant_value(relax.const(np.arange(3, dtype="float32"))), [0, 1, 2])
