"""The ONNX frontend: checked import, ONNX names on Relax variables, static shapes, clear errors."""

import logging

import numpy as np
import onnxruntime as ort
import pytest
import tvm
import onnx
from onnx import helper

import onnx_models
from tvmq import TvmqError
from tvmq.build import build, virtual_machine
from tvmq.frontend import InputSpec, importer, load_model
from tvmq.frontend.fold import fold_constants
from tvmq.frontend.shapes import infer_shapes, set_input_shapes
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


# ---- input shapes ------------------------------------------------------------------------------

def test_minus_one_zero_and_named_dims_are_free(tmp_path):
    path = onnx_models.save(onnx_models.shape_arithmetic(), tmp_path / "m.onnx")  # declared (-1, 3, H, W)
    assert load_model(path, {"x": (1, 3, 6, 8)}).inputs[0].shape == (1, 3, 6, 8)
    model = onnx_models.conv_chain()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 0  # "dynamic", as some exporters write it
    imported = load_model(onnx_models.save(model, tmp_path / "zero.onnx"))
    assert imported.inputs[0].shape == (None, 8, 12, 12)


def test_free_dims_error_lists_every_input_in_one_line(tmp_path):
    path = onnx_models.save(onnx_models.text_inputs(), tmp_path / "m.onnx")
    expected = (r"^input 'ids' has free dimensions \(\?, \?\); give static shapes with --input-shape NAME:D0,D1,\.\.\. "
                r"\(inputs: ids \(\?, \?\) int64, mask \(\?, \?\) int64, flag \(\?, 1\) bool\); "
                r"e\.g\. --input-shape ids:1,32$")
    with pytest.raises(TvmqError, match=expected):
        load_model(path)


def test_every_input_gets_its_spec_and_shared_dim_names_agree(tmp_path):
    path = onnx_models.save(onnx_models.text_inputs(), tmp_path / "m.onnx")
    specs = load_model(path, {"ids": (2, 5)}).inputs  # mask (N, T) and flag (N, 1) share ids' names
    assert [(s.name, s.shape, s.dtype, s.is_float) for s in specs] == [
        ("ids", (2, 5), "int64", False), ("mask", (2, 5), "int64", False), ("flag", (2, 1), "bool", False)]
    with pytest.raises(TvmqError, match="dimension 'N' is set to 2 and to 3; inputs that share a dimension name"):
        load_model(path, {"ids": (2, 5), "mask": (3, 5)})
    with pytest.raises(TvmqError, match=r"cannot take the invalid shape \(0, 5\)"):
        load_model(path, {"ids": (0, 5)})


@pytest.mark.parametrize("dtype, is_float", [("float32", True), ("float16", True), ("bfloat16", True),
                                             ("int64", False), ("int32", False), ("bool", False)])
def test_input_spec_is_float(dtype, is_float):
    assert InputSpec("x", (None, 3), dtype).is_float is is_float


def test_free_batch_that_tvm_cannot_keep_symbolic_is_fixed_to_one(tmp_path, caplog):
    path = onnx_models.save(onnx_models.batch_arithmetic(), tmp_path / "m.onnx")
    with caplog.at_level(logging.INFO, logger="tvmq.frontend"):
        imported = load_model(path)
    assert imported.inputs[0].shape == (1, 4, 6)
    assert any("fixing the free batch dimension to 1" in r.getMessage() for r in caplog.records)


def test_zero_sizes_from_bad_attributes_are_still_refused(tmp_path):
    model = onnx_models.conv_chain(pad=0, dilation=6)  # 12 - 2 * 6 = 0 output rows
    with pytest.raises(TvmqError, match=r"tensor 'a' is given the empty or negative shape \(\?, 8, 0, 0\)"):
        load_model(onnx_models.save(model, tmp_path / "m.onnx"))


# ---- folding ---------------------------------------------------------------------------------------

def _shaped(model, shape):
    specs = [InputSpec("x", shape, "float32")]
    return infer_shapes(set_input_shapes(model, specs))


def _ort(model, x):
    return ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]


def test_folding_leaves_only_float_ops_under_their_onnx_names(rng):
    model = _shaped(onnx_models.shape_arithmetic(), (1, 3, 6, 8))
    folded = fold_constants(model)
    assert [(n.op_type, n.output[0]) for n in folded.graph.node] == [
        ("Conv", "c"), ("Reshape", "r"), ("Gather", "g"), ("Mul", "y")]
    x = rng.standard_normal((1, 3, 6, 8)).astype(np.float32)
    np.testing.assert_allclose(_ort(folded, x), _ort(model, x), rtol=1e-6, atol=0)


def test_folding_with_a_free_batch_keeps_what_reads_the_batch(rng):
    model = _shaped(onnx_models.shape_arithmetic(), (None, 3, 6, 8))
    folded = fold_constants(model, free_batch=True)
    computed = {o for n in folded.graph.node for o in n.output}
    assert "nc" in computed and "target" in computed  # Gather(Shape, [0, 1]) holds the batch
    assert {"area", "reversed", "half"} <= {init.name for init in folded.graph.initializer}
    x = rng.standard_normal((3, 3, 6, 8)).astype(np.float32)
    np.testing.assert_allclose(_ort(folded, x), _ort(model, x), rtol=1e-6, atol=0)


def test_imported_variables_keep_the_names_of_unfolded_tensors(tmp_path):
    path = onnx_models.save(onnx_models.shape_arithmetic(), tmp_path / "m.onnx")
    imported = load_model(path, {"x": (1, 3, 6, 8)})
    names = {b.var.name for b in dataflow_bindings(imported.mod["main"])}
    assert {"c", "r", "g", "y"} <= names
    assert imported.nodes["r"] == ("reshape", "Reshape")


# ---- importer registry ------------------------------------------------------------------------------

def test_registry_converter_gets_importer_inputs_attrs_opset(tmp_path, monkeypatch, rng):
    """A converter registered for an op TVM lacks is called as fn(importer, inputs, attrs, opset)."""
    from tvm import relax

    seen = {}

    def celu(importer, inputs, attrs, opset):
        seen.update(opset=opset, alpha=attrs["alpha"], inputs=len(inputs))
        x, alpha = inputs[0], relax.const(attrs["alpha"], "float32")
        negative = relax.op.multiply(alpha, relax.op.subtract(relax.op.exp(relax.op.divide(x, alpha)),
                                                              relax.const(1.0, "float32")))
        return importer.bb.emit(relax.op.where(relax.op.greater(x, relax.const(0.0, "float32")), x, negative))

    monkeypatch.setitem(importer.REGISTRY, "Celu", celu)
    model = onnx_models.conv_chain()
    model.graph.node.append(helper.make_node("Celu", ["y"], ["z"], name="celu", alpha=0.5))
    model.graph.output[0].name = "z"
    path = onnx_models.save(model, tmp_path / "celu.onnx")
    x = rng.standard_normal((1, 8, 12, 12)).astype(np.float32)
    vm = virtual_machine(build(load_model(path).mod, get_target("host")))
    reference = ort.InferenceSession(path).run(None, {"x": x})[0]
    np.testing.assert_allclose(vm["main"](tvm.runtime.tensor(x)).numpy(), reference, rtol=1e-4, atol=1e-5)
    assert seen == {"opset": 17, "alpha": 0.5, "inputs": 1}


def test_registry_converter_returning_none_falls_back_to_tvm(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setitem(importer.REGISTRY, "Relu", lambda *args: calls.append(args[3]))
    path = onnx_models.save(onnx_models.conv_chain(), tmp_path / "m.onnx")
    names = {b.var.name for b in dataflow_bindings(load_model(path).mod["main"])}
    assert calls == [17] and "r" in names


def test_folding_keeps_constants_that_only_a_subgraph_reads(rng):
    """x[1,2]; sf = Cast(Shape(x)) is folded, and the If branches that read it still find it."""
    branch = lambda op: helper.make_graph([helper.make_node(op, ["x", "sf"], ["b"])], op, [],
                                          [helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [1, 2])])
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Cast", ["s"], ["sf"], to=onnx.TensorProto.FLOAT),
             helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
             helper.make_node("Greater", ["total", "zero"], ["positive"]),
             helper.make_node("If", ["positive"], ["y"], then_branch=branch("Add"), else_branch=branch("Sub"))]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2])],
                              [onnx.numpy_helper.from_array(np.array(0.0, np.float32), "zero")])
    model = infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    folded = fold_constants(model)
    assert "sf" in {init.name for init in folded.graph.initializer}
    assert [n.op_type for n in folded.graph.node] == ["ReduceSum", "Greater", "If"]
    for x in (np.ones((1, 2), np.float32), -np.ones((1, 2), np.float32)):
        np.testing.assert_array_equal(_ort(folded, x), _ort(model, x))
