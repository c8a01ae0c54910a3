"""The quantization plan: keyed by ONNX names, overridden per layer, carried out by realize, saved.

Models (tests/onnx_models.py)::

    conv_chain:  x[N,8,12,12] --conv_a--> a --relu_a--> r --conv_b--> y
    dense_chain: x[N,20] --fc1 (Gemm)--> h --relu6--> r --fc2 (MatMul + Add)--> y
"""

import json

import numpy as np
import pytest
import tvm
from onnx import numpy_helper

import onnx_models
import tvmq
from tvmq.api import quantize
from tvmq import TvmqError
from tvmq.api import prepare_fp32
from tvmq.cli import _fp32_layers
from tvmq.frontend import load_model
from tvmq.passes.plan import (CALIBRATED, LATENCY_FALLBACK, USER_OVERRIDE, Scheme, onnx_aliases,
                              plan_quantization)
from tvmq.passes.qparams import activation_qparams, weight_qparams
from tvmq.passes.realize import Realize, RealizePlan, quantization_record

STATS = {"x": (-3.0, 3.0), "a": (-2.0, 4.0), "r": (0.0, 4.0), "y": (-1.0, 1.0)}


def _conv_chain(tmp_path):
    imported = load_model(onnx_models.save(onnx_models.conv_chain(), tmp_path / "conv.onnx"))
    return imported, prepare_fp32(imported.mod)


def test_plan_holds_each_layers_precision_reason_and_parameters(tmp_path):
    imported, fp32 = _conv_chain(tmp_path)
    scheme = Scheme("uint8", per_channel=True, weight_qmax=63)
    plan = plan_quantization(fp32["main"], STATS, scheme)
    assert sorted(plan.layers) == ["r", "y"]  # conv_a + bias + relu ends in r; conv_b + bias in y
    entry = plan.layers["r"]
    assert (entry.precision, entry.reason, entry.input, entry.chain[1:]) == ("int8", CALIBRATED, "x", ("a", "r"))
    weight = next(numpy_helper.to_array(t) for t in onnx_models.conv_chain().graph.initializer if t.name == "wa")
    want = weight_qparams(weight, axis=0, qmax=63)
    np.testing.assert_array_equal(entry.weight.scale, want.scale)
    assert (entry.weight.qmin, entry.weight.qmax) == (-63, 63)
    assert float(plan.activations["a"].scale) == float(activation_qparams(-2.0, 4.0, "uint8").scale)
    as_json = plan.to_json(imported.onnx_names, imported.nodes)
    rows = {row["tensor"]: row for row in as_json["layers"]}
    assert rows["r"]["node"] == "conv_a" and rows["y"]["node"] == "conv_b"
    assert rows["r"]["weight_range"] == [-63, 63] and rows["r"]["input"]["zero_point"] == [128]
    assert as_json["activations"]["a"]["range"] == [-2.0, 4.0]
    json.dumps(as_json)  # plain data


def test_realize_is_plan_then_carry_out(tmp_path):
    _, fp32 = _conv_chain(tmp_path)
    scheme = Scheme("uint8", per_channel=False)
    shift = {"y": np.linspace(-0.1, 0.1, 6).astype(np.float32)}
    direct = Realize(STATS, scheme, bias_shifts=shift, keep_fp32=["r"])(fp32)
    plan = plan_quantization(fp32["main"], STATS, scheme, bias_shifts=shift).with_precision(["r"], "fp32",
                                                                                             LATENCY_FALLBACK)
    tvm.ir.assert_structural_equal(RealizePlan(plan)(fp32), direct)
    record = quantization_record(direct)
    assert {"a": "r", "r": "r"}.items() <= record["kept_fp32"].items() and record["precision"]["y"] == "int8"


@pytest.mark.parametrize("pattern", ["conv_a", "conv_?", "a", "r"])
def test_override_by_node_tensor_or_glob_keeps_the_layer_fp32(tmp_path, pattern):
    imported, fp32 = _conv_chain(tmp_path)
    aliases = onnx_aliases(imported.onnx_names, imported.nodes)
    plan = plan_quantization(fp32["main"], STATS, Scheme(), overrides={pattern: "fp32"}, aliases=aliases)
    fp32_layers = plan.fp32_layers()
    assert "r" in fp32_layers and plan.layers["r"].reason == USER_OVERRIDE
    assert ("y" in fp32_layers) == (pattern == "conv_?")
    record = quantization_record(RealizePlan(plan)(fp32))
    assert record["precision"]["a"] == "fp32" and "r" not in record["weights"]
    assert record["kept_fp32"] == {}  # a user override is not the latency fallback's


def test_quantize_applies_config_layers_and_reports_unknown_names(tmp_path, rng):
    path = onnx_models.save(onnx_models.conv_chain(), tmp_path / "conv.onnx")
    calib = rng.standard_normal((8, 8, 12, 12)).astype(np.float32)
    quantized = quantize(path, calib, tvmq.Config(layers={"conv_b": "fp32"}))
    record = quantization_record(quantized.int8)
    assert record["precision"]["y"] == "fp32" and record["precision"]["r"] == "int8"
    assert quantized.plan.layers["y"].reason == USER_OVERRIDE
    kept = quantized.realize(quantized.program, keep_fp32=["r"])  # the latency fallback's call
    assert quantized.planned(["r"]).layers["r"].reason == LATENCY_FALLBACK
    assert quantization_record(kept)["precision"]["r"] == "fp32"
    with pytest.raises(TvmqError, match=r"no layer is named 'conv_z' .*layers: conv_a, conv_b$"):
        quantize(path, calib, tvmq.Config(layers={"conv_z": "fp32"}))


def test_config_refuses_an_unknown_precision():
    with pytest.raises(TvmqError, match=r"layer 'conv_a': unknown precision 'int4'; choose one of: int8, dynamic, fp32"):
        tvmq.Config(layers={"conv_a": "int4"})


def test_cli_fp32_layers_become_overrides():
    assert _fp32_layers("conv_a, /encoder/*/MatMul,") == {"conv_a": "fp32", "/encoder/*/MatMul": "fp32"}
    assert _fp32_layers("") == {}


def test_plan_is_saved_in_the_artifact_and_the_report(tmp_path, rng):
    path = onnx_models.save(onnx_models.dense_chain(), tmp_path / "dense.onnx")
    model = load_model(path)
    x_shape = [1 if d is None else d for d in model.inputs[0].shape]
    calib = rng.standard_normal((8, *x_shape[1:])).astype(np.float32)
    node = next(node for node, op in model.nodes.values() if op in ("MatMul", "Gemm"))
    compiled = tvmq.compile(path, calib, config=tvmq.Config(latency_runs=1, layers={node: "fp32"}))
    out = compiled.save(tmp_path / "out")
    saved = json.loads((out / "plan.json").read_text())
    assert saved == compiled.report["plan"] == json.loads((out / "report.json").read_text())["plan"]
    reasons = {row["node"]: row["reason"] for row in saved["layers"]}
    assert reasons[node] == USER_OVERRIDE and CALIBRATED in reasons.values()
    assert "plan.json" in json.loads((out / "manifest.json").read_text())["files"]
    precision = {row["name"]: row["precision"] for row in compiled.report["layers"]}
    assert precision[node] == "fp32"
    x = calib[:1]
    np.testing.assert_array_equal(tvmq.load(out).run(x), compiled.run(x))


def test_cli_unknown_fp32_layer_is_one_line_listing_valid_names(tmp_path, rng, capsys):
    from tvmq import cli

    path = onnx_models.save(onnx_models.conv_chain(), tmp_path / "conv.onnx")
    np.save(tmp_path / "calib.npy", rng.standard_normal((4, 8, 12, 12)).astype(np.float32))
    code = cli.main(["compile", path, "--calib", str(tmp_path / "calib.npy"), "--out", str(tmp_path / "out"),
                     "--fp32-layers", "conv_a,conv_q*", "--trials", "0"], isolated=False)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err[-1] == ("tvmq: error: no layer is named 'conv_q*' (--fp32-layers / Config.layers); "
                                     "layers: conv_a, conv_b")
    assert not (tmp_path / "out").exists()
