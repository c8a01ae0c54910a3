"""The ONNX frontend: checked import, ONNX names on Relax variables, static shapes, clear errors."""

import numpy as np
import onnxruntime as ort
import pytest
import tvm
import onnx
from onnx import helper

import onnx_models
from tvmq import TvmqError
from tvmq.build import build, virtual_machine
from tvmq.frontend import load_model
from tvmq.passes.graph import dataflow_bindings
from tvmq.targets import get_target


def test_bundled_model_keeps_onnx_tensor_names(bundled):
    imported = load_model(bundled[0])
    names = {b.var.name for b in dataflow_bindings(imported.mod["main"])}
    assert {"conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "flat", "fc1", "relu3", "logits"} <= names
    assert imported.inputs[0].shape == (None, 1, 28, 28)  # the batch stays free until deployment
    assert imported.nodes["conv1"] == ("conv1", "Conv")


def test_import_matches_onnxruntime(bundled):
    imported = load_model(bundled[0])
    x = np.load(bundled[2])["x"][:4]
    vm = virtual_machine(build(imported.mod, get_target("host")))
    ours = vm["main"](tvm.runtime.tensor(x)).numpy()
    reference = ort.InferenceSession(str(bundled[0])).run(None, {"input": x})[0]
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-4)


def test_symbolic_spatial_dims_need_a_static_shape(tmp_path):
    model = onnx_models.conv_chain()
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"
    path = onnx_models.save(model, tmp_path / "sym.onnx")
    with pytest.raises(TvmqError, match=r"free dimensions \(\?, 8, \?, 12\).*--input-shape x:1,8,32,12"):
        load_model(path)
    imported = load_model(path, {"x": (2, 8, 12, 12)})
    assert imported.inputs[0].shape == (2, 8, 12, 12)


def test_wrong_or_absurd_input_shapes_are_refused(tmp_path):
    path = onnx_models.save(onnx_models.conv_chain(), tmp_path / "m.onnx")
    with pytest.raises(TvmqError, match="cannot set it to"):
        load_model(path, {"x": (1, 3, 12, 12)})
    with pytest.raises(TvmqError, match="unknown input"):
        load_model(path, {"image": (1, 8, 12, 12)})
    with pytest.raises(TvmqError, match="absurdly large"):
        load_model(path, {"x": (1 << 40, 8, 12, 12)})


def test_unsupported_operator_is_named(tmp_path):
    model = onnx_models.conv_chain()
    model.graph.node.append(helper.make_node("Celu", ["y"], ["z"], name="odd_activation"))
    model.graph.output[0].name = "z"
    path = onnx_models.save(model, tmp_path / "celu.onnx")
    with pytest.raises(TvmqError, match=r"unsupported operator Celu \(node 'odd_activation'\)"):
        load_model(path)


def test_empty_and_graphless_files_are_refused(tmp_path):
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(TvmqError, match="is empty"):
        load_model(tmp_path / "empty.onnx")
    (tmp_path / "nograph.onnx").write_bytes(helper.make_model(helper.make_graph([], "g", [], [])).SerializeToString())
    with pytest.raises(TvmqError, match="no nodes"):
        load_model(tmp_path / "nograph.onnx")


@pytest.mark.parametrize("location", ["../../etc/passwd", "/etc/passwd", "missing.bin"])
def test_external_data_outside_the_model_folder_is_refused(tmp_path, location):
    model = onnx_models.conv_chain()
    weight = model.graph.initializer[0]
    weight.ClearField("raw_data")
    del weight.float_data[:]
    weight.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(8 * 8 * 9 * 4))):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    (tmp_path / "m.onnx").write_bytes(model.SerializeToString())
    with pytest.raises(TvmqError, match="outside the model's folder or missing; refusing to read it"):
        load_model(tmp_path / "m.onnx")


def test_external_data_beside_the_model_is_read(tmp_path, rng):
    model = onnx_models.conv_chain()
    onnx.save(model, str(tmp_path / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    assert (tmp_path / "weights.bin").is_file()
    x = rng.standard_normal((1, 8, 12, 12)).astype(np.float32)
    vm = virtual_machine(build(load_model(tmp_path / "m.onnx").mod, get_target("host")))
    reference = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"x": x})[0]
    np.testing.assert_allclose(vm["main"](tvm.runtime.tensor(x)).numpy(), reference, rtol=1e-4, atol=1e-4)
