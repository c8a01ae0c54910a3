"""MergePads after the frontend's folding: Open-NSFW's runtime-computed SAME padding, folded and
merged into the Conv / MaxPool it feeds, exactly, with the batch left free."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from tvmq.frontend.fold import fold_constants
from tvmq.frontend.merge_pads import merge_pads


def _same_pad_model() -> onnx.ModelProto:
    """NHWC input; Pad amounts computed at run time from Shape (as the Open-NSFW export does),
    then Cast / Transpose / Conv; then an edge Pad before a MaxPool."""
    node = helper.make_node
    const = lambda name, value: node("Constant", [], [name], value=numpy_helper.from_array(np.array(value), name))  # noqa: E731
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [
        node("Shape", ["x"], ["shape"]),
        const("idx", np.array(1, np.int64)),
        node("Gather", ["shape", "idx"], ["h"], axis=0),       # static 8 while the batch is free
        const("two", np.array(2, np.int64)),
        node("Div", ["h", "two"], ["h2"]),                    # 4
        const("three", np.array(3, np.int64)),
        node("Sub", ["h2", "three"], ["p"]),                  # 1
        node("Unsqueeze", ["p", "zero_axis"], ["p1"]),
        const("zeros", np.zeros(1, np.int64)),
        node("Concat", ["zeros", "p1", "p1", "zeros", "zeros", "p1", "p1", "zeros"], ["pads"], axis=0),
        node("Pad", ["x", "pads"], ["xp"], mode="constant"),
        node("Cast", ["xp"], ["xc"], to=TensorProto.FLOAT),
        node("Transpose", ["xc"], ["xt"], perm=[0, 3, 1, 2]),
        node("Conv", ["xt", "w"], ["y"], kernel_shape=[3, 3]),
        node("Relu", ["y"], ["r"]),
        node("Pad", ["r", "edge_pads"], ["rp"], mode="edge"),
        node("MaxPool", ["rp"], ["out"], kernel_shape=[3, 3], strides=[2, 2]),
    ]
    graph = helper.make_graph(
        nodes, "same_pad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8, 8, 3])],  # the frontend names a free batch so
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 4, 4, 4])],
        [weight, numpy_helper.from_array(np.array([0], np.int64), "zero_axis"),
         numpy_helper.from_array(np.array([0, 0, 0, 0, 0, 0, 1, 1], np.int64), "edge_pads")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _rewritten(model):
    return merge_pads(fold_constants(onnx.shape_inference.infer_shapes(model, data_prop=True), free_batch=True))


def test_fold_and_merge_pads_are_exact_and_keep_the_batch_free(rng):
    model = _same_pad_model()
    rewritten = _rewritten(model)
    ops = [n.op_type for n in rewritten.graph.node]
    assert "Pad" not in ops and "Shape" not in ops
    assert ops == ["Cast", "Transpose", "Conv", "Relu", "MaxPool"]
    dims = rewritten.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch"
    for batch in (1, 3):
        x = rng.standard_normal((batch, 8, 8, 3)).astype(np.float32)
        want = ReferenceEvaluator(model).run(None, {"x": x})[0]
        got = ReferenceEvaluator(rewritten).run(None, {"x": x})[0]
        np.testing.assert_array_equal(got, want)


def test_edge_pad_wider_than_the_window_is_not_merged():
    model = _same_pad_model()
    for init in model.graph.initializer:
        if init.name == "edge_pads":
            init.CopyFrom(numpy_helper.from_array(np.array([0, 0, 0, 0, 0, 0, 3, 3], np.int64), "edge_pads"))
    rewritten = _rewritten(model)
    assert [n.op_type for n in rewritten.graph.node].count("Pad") == 1




def test_load_model_imports_the_merged_graph(tmp_path, rng):
    import onnxruntime as ort
    import tvm

    from tvmq.build import build, virtual_machine
    from tvmq.frontend import load_model
    from tvmq.targets import get_target

    path = tmp_path / "pad.onnx"
    onnx.save(_same_pad_model(), path)
    imported = load_model(path)
    assert "R.nn.pad" not in imported.mod["main"].script() and "padding=[1, 1, 1, 1]" in imported.mod["main"].script()
    x = rng.standard_normal((2, 8, 8, 3)).astype(np.float32)
    got = virtual_machine(build(imported.mod, get_target("host")))["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(got, ort.InferenceSession(str(path)).run(None, {"x": x})[0], rtol=1e-5, atol=1e-5)
