"""QDQ ONNX out: ``tvmq export-qdq`` writes the deployed plan as a QDQ model that onnx.checker accepts
and ONNX Runtime runs within one output-quantizer step of tvmq's int8 module, and that tvmq
imports back (no calibration data) into the same int8 module.

Outputs are compared in steps of the output tensor's calibrated quantizer (``output_steps`` of
``test_qdq_import``): a layer whose result leaves the model is dequantized from its accumulator in
both, so only float rounding (and ONNX Runtime's own rounding of averages and sums) tells them apart.
"""

from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

import tvmq
from tvmq.cli import main as cli
from tvmq.passes.plan import AUTO_NAME

from test_mobilenet import MODEL as MOBILENET
from test_qdq_import import output_steps

CASES = {"cnn": {}, "mobilenet": {"cle": True, "absorb_high_bias": True, "bias_correction": "analytic"}}


@pytest.fixture(scope="module", params=sorted(CASES))
def exported(request, bundled, tmp_path_factory):
    """``(name, source model, CompiledModel, artifact directory, exported QDQ file, eval images)``."""
    model = bundled[0] if request.param == "cnn" else MOBILENET
    calib, evaluation = np.load(bundled[1])["x"][:64], np.load(bundled[2])["x"][::20]
    compiled = tvmq.compile(model, calib, config=tvmq.Config(latency_runs=1, **CASES[request.param]))
    folder = tmp_path_factory.mktemp(request.param)
    compiled.save(folder / "artifact")
    assert cli(["export-qdq", folder / "artifact", folder / "qdq.onnx"], isolated=False) == 0
    return request.param, model, compiled, folder / "artifact", folder / "qdq.onnx", evaluation


def _runs(run, x):
    return np.concatenate([run(x[i:i + 1]) for i in range(len(x))])


def test_checker_accepts_it_and_onnx_runtime_agrees_within_one_step(exported):
    name, _, compiled, _, path, x = exported
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    int8 = [e for e in compiled.plan["layers"] if e["precision"] == "int8"]
    assert "BatchNormalization" not in ops and ops.count("QuantizeLinear") >= len(int8)
    assert ops.count("DequantizeLinear") == ops.count("QuantizeLinear") + 2 * len(int8)  # + weight, bias
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name
    ref = _runs(lambda v: session.run(None, {feed: v})[0], x)
    got = _runs(compiled.run, x)
    out = compiled.plan["activations"][compiled.manifest["outputs"][0]]
    steps = output_steps(ref, got, SimpleNamespace(scale=out["scale"][0], zero_point=out["zero_point"][0]))
    print(f"{name}: {int((steps > 0).sum())} of {steps.size} output values differ (by one step)")
    assert steps.max() <= 1 and (steps > 0).mean() < 0.05


def _layer_weight(model: onnx.ModelProto, tensor: str) -> tuple[onnx.NodeProto, np.ndarray, np.ndarray]:
    """The Conv / Gemm / MatMul behind a layer's output ``tensor`` (through its Relu / Clip / bias Add),
    the int8 weight its DequantizeLinear reads and that weight dequantized, in tvmq's layout."""
    producer = {o: n for n in model.graph.node for o in n.output}
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    node = producer[tensor]
    while node.op_type not in ("Conv", "Gemm", "MatMul"):
        node = producer[node.input[0]]
    dequantize = producer[node.input[1]]
    weight, scale = inits[dequantize.input[0]], inits[dequantize.input[1]]
    axis = next((a.i for a in dequantize.attribute if a.name == "axis"), 1)
    shape = [1] * weight.ndim
    shape[axis] = -1
    value = weight.astype(np.float32) * scale.reshape(shape if scale.ndim else ())
    transposed = any(a.name == "transB" and a.i for a in node.attribute)
    return node, *((weight.T, value.T) if transposed else (weight, value))


def test_weights_are_the_ones_tvmq_quantized(exported):
    """Each int8 layer's exported weight is realize's (after BatchNorm folding, CLE, high-bias
    absorption), not a quantization of the source model's weight."""
    name, source, compiled, _, path, _ = exported
    model, integers = onnx.load(str(path)), compiled.qdq_weights
    src = onnx.load(str(source))
    inits = {t.name: numpy_helper.to_array(t) for t in src.graph.initializer}
    src_weight = {n.name: inits[n.input[1]] for n in src.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")}
    changed = 0
    for index, tensor in enumerate(integers["tensors"]):
        node, weight, value = _layer_weight(model, str(tensor))
        assert weight.dtype == np.int8
        np.testing.assert_array_equal(weight, integers[f"weight_{index}"])
        original = src_weight[node.name].T if node.op_type == "Gemm" else src_weight[node.name]
        step = np.abs(value).max() / np.abs(weight).max()
        changed += not np.allclose(value, original, rtol=0, atol=step)  # a quantized source weight is within a step
    assert len(integers["tensors"]) == {"cnn": 4, "mobilenet": 15}[name]
    print(f"{name}: {changed} of {len(integers['tensors'])} exported weights are not the source's")
    assert changed == {"cnn": 0, "mobilenet": 14}[name]  # all but the last Gemm (no BatchNorm, no CLE pair)


def test_reimport_gives_back_the_same_int8_module(exported):
    _, _, compiled, _, path, x = exported
    back = tvmq.compile(path, config=tvmq.Config(latency_runs=1))  # a QDQ model: no calibration data
    ours, theirs = compiled.manifest["quantization"], back.manifest["quantization"]
    for section in ("activations", "weights", "range_of"):
        assert theirs[section] == ours[section], section
    named = {k: v for k, v in ours["precision"].items() if not AUTO_NAME.match(k)}
    assert {k: v for k, v in theirs["precision"].items() if not AUTO_NAME.match(k)} == named
    planned = {e["tensor"]: (e["precision"], e["weight"]["scale"]) for e in compiled.plan["layers"]}
    assert {e["tensor"]: (e["precision"], e["weight"]["scale"]) for e in back.plan["layers"]} == planned
    np.testing.assert_array_equal(_runs(back.run, x), _runs(compiled.run, x))
    again = back.export_qdq(path.with_name("again.onnx"))  # from an artifact of a QDQ model: the same file
    assert _initializers(again) == _initializers(path)


def _initializers(path) -> dict:
    """The quantized constants (int8 weights, int32 biases, zero points) and scales, by name."""
    return {t.name: numpy_helper.to_array(t).tobytes() for t in onnx.load(str(path)).graph.initializer
            if t.data_type != onnx.TensorProto.FLOAT or t.name.endswith("scale")}


@pytest.mark.parametrize("exported", ["cnn"], indirect=True)
def test_bad_source_or_old_artifact_is_one_line_and_writes_nothing(exported, tmp_path, capsys):
    _, _, _, artifact, _, _ = exported
    out = tmp_path / "out.onnx"
    assert cli(["export-qdq", artifact, out, "--model", MOBILENET], isolated=False) == 1
    assert "is not the model this artifact was compiled from" in capsys.readouterr().err
    assert cli(["export-qdq", artifact, out, "--model", tmp_path / "missing.onnx"], isolated=False) == 1
    assert "not found" in capsys.readouterr().err

    import json
    import shutil

    old = tmp_path / "old"
    shutil.copytree(artifact, old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["files"].pop("qdq_weights.npz")
    (old / "manifest.json").write_text(json.dumps(manifest))
    assert cli(["export-qdq", old, out], isolated=False) == 1
    err = capsys.readouterr().err
    assert "older tvmq" in err and "qdq_weights.npz" in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.glob("*.onnx*")) == [] and list(tmp_path.glob(".out.onnx*")) == []
