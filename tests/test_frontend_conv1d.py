"""1-D Conv / ConvTranspose as 2-D ones of height 1 (``tvmq.frontend.conv1d``): exact in fp32 against
ONNX Runtime, and int8 through the conv2d kernels; Squeeze with a negative axis after them."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import tvm
from onnx import TensorProto, helper

import onnx_models
import tvmq
from tvmq.build import build, virtual_machine
from tvmq.frontend import load_model
from tvmq.frontend.conv1d import conv1d_as_2d
from tvmq.frontend.shapes import infer_shapes
from tvmq.targets import get_target

LENGTH = 32


def audio_convs(opset=17, seed=0):
    """Silero-like 1-D convs, a 1-D transposed conv and a squeeze of the last axis.

        x[1,4,32] --conv_a(k5, pad 2)--> a --relu--> ra --conv_b(k3, stride 2, dil 2, pad 2, groups 2)--> b
        b --relu--> rb --deconv(k4, stride 2, pad 1, out_pad 1)--> d --conv_c(k=|d|, no pad)--> c[1,6,1]
        c --Squeeze(axes=-1)--> s[1,6] --Gemm--> y[1,3]
        conv_b's weight is computed, Mul(wb, 1) (folded before the rewrite when the frontend loads it)
    """
    rng = np.random.default_rng(seed)
    w = lambda *s: (rng.standard_normal(s) * 0.3).astype(np.float32)  # noqa: E731
    inits = {"wa": w(8, 4, 5), "ba": w(8), "wb": w(8, 4, 3), "one": np.array(1.0, np.float32),
             "wd": w(8, 5, 4), "bd": w(5), "wc": w(6, 5, 33), "wf": w(6, 3)}
    nodes = [
        helper.make_node("Conv", ["x", "wa", "ba"], ["a"], name="conv_a", kernel_shape=[5], pads=[2, 2]),
        helper.make_node("Relu", ["a"], ["ra"], name="relu_a"),
        helper.make_node("Mul", ["wb", "one"], ["wb_scaled"], name="weight_scale"),
        helper.make_node("Conv", ["ra", "wb_scaled"], ["b"], name="conv_b", kernel_shape=[3], strides=[2],
                         dilations=[2], pads=[2, 2], group=2),
        helper.make_node("Relu", ["b"], ["rb"], name="relu_b"),
        helper.make_node("ConvTranspose", ["rb", "wd", "bd"], ["d"], name="deconv", kernel_shape=[4], strides=[2],
                         pads=[1, 1], output_padding=[1]),
        helper.make_node("Conv", ["d", "wc"], ["c"], name="conv_c", kernel_shape=[33]),
        helper.make_node("Squeeze", ["c", "axes"], ["s"], name="squeeze_last") if opset >= 13
        else helper.make_node("Squeeze", ["c"], ["s"], name="squeeze_last", axes=[-1]),
        helper.make_node("Gemm", ["s", "wf"], ["y"], name="fc"),
    ]
    if opset >= 13:
        inits["axes"] = np.array([-1], np.int64)
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, LENGTH])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])]
    return onnx_models._model(nodes, inputs, outputs, inits, opset)


def _ops(model):
    return [n.op_type for n in model.graph.node]


def test_every_1d_conv_becomes_a_2d_one_of_height_1():
    model = infer_shapes(audio_convs())
    rewritten = infer_shapes(conv1d_as_2d(model))
    convs = [n for n in rewritten.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    assert len(convs) == 4 and [n.name for n in convs] == ["conv_a", "conv_b", "deconv", "conv_c"]
    attrs = {a.name: list(a.ints) for a in convs[1].attribute if a.ints}
    assert attrs == {"kernel_shape": [1, 3], "strides": [1, 2], "dilations": [1, 2], "pads": [0, 2, 0, 2]}
    assert {a.name: list(a.ints) for a in convs[2].attribute}["output_padding"] == [0, 1]
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in rewritten.graph.value_info}
    assert shapes["a/2d"] == [1, 8, 1, LENGTH] and shapes["a"] == [1, 8, LENGTH]
    assert "wa" not in {i.name for i in rewritten.graph.initializer}  # the 3-D weight is gone, its 4-D copy stays
    assert _ops(rewritten).count("Unsqueeze") == 5  # four inputs, one computed weight


@pytest.mark.parametrize("opset", [11, 17])
def test_fp32_matches_onnxruntime_exactly(opset, tmp_path, rng):
    path = onnx_models.save(audio_convs(opset), tmp_path / "audio.onnx")
    imported = load_model(path)
    text = str(imported.mod)
    assert "conv1d" not in text and text.count("R.nn.conv2d(") == 3 and text.count("conv2d_transpose(") == 1
    vm = virtual_machine(build(imported.mod, get_target("host")))
    x = rng.standard_normal((1, 4, LENGTH)).astype(np.float32)
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    want = ort.InferenceSession(path).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))


def test_int8_runs_the_convs_in_int8(tmp_path, rng):
    path = onnx_models.save(audio_convs(), tmp_path / "audio.onnx")
    calib = rng.standard_normal((16, 4, LENGTH)).astype(np.float32)
    compiled = tvmq.compile(path, calib, config=tvmq.Config(latency_runs=1))
    precision = {r["name"]: r["precision"] for r in compiled.report["layers"]}
    assert {precision[name] for name in ("conv_a", "conv_c", "fc")} == {"int8"}
    x = calib[:1]
    want = ort.InferenceSession(path).run(None, {"x": x})[0]
    got = compiled.run(x)
    assert got.shape == want.shape
    cosine = float(np.sum(got * want) / (np.linalg.norm(got) * np.linalg.norm(want)))
    assert cosine > 0.99
