"""Tiny ONNX models built with onnx.helper, seeded, for focused tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _model(nodes, inputs, outputs, inits, opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _value(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def conv_chain(channels=8, groups=1, stride=1, pad=1, dilation=1, seed=0) -> onnx.ModelProto:
    """x -> Conv(3x3, groups, stride, pad, dilation) -> Relu -> Conv(1x1) -> y

        x[1,C,12,12] --conv_a--> a --relu_a--> r --conv_b--> y
    """
    rng = np.random.default_rng(seed)
    c = channels
    inits = {
        "wa": (rng.standard_normal((c, c // groups, 3, 3)) * 0.3).astype(np.float32),
        "ba": (rng.standard_normal(c) * 0.1).astype(np.float32),
        "wb": (rng.standard_normal((6, c, 1, 1)) * 0.3).astype(np.float32),
        "bb": (rng.standard_normal(6) * 0.1).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "wa", "ba"], ["a"], name="conv_a", kernel_shape=[3, 3], group=groups,
                         strides=[stride, stride], pads=[pad] * 4, dilations=[dilation, dilation]),
        helper.make_node("Relu", ["a"], ["r"], name="relu_a"),
        helper.make_node("Conv", ["r", "wb", "bb"], ["y"], name="conv_b", kernel_shape=[1, 1]),
    ]
    return _model(nodes, [_value("x", ["N", c, 12, 12])], [_value("y", ["N", 6, "H", "W"])], inits)


def edge_pad_chain(seed=0) -> onnx.ModelProto:
    """x --Conv--> y --Relu--> r --Pad(edge)--> rp --Conv--> out; TVM imports the edge Pad as a TIR function."""
    rng = np.random.default_rng(seed)
    inits = {
        "w": (rng.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32),
        "pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64),
        "w2": (rng.standard_normal((2, 4, 3, 3)) * 0.3).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["y"], ["r"]),
        helper.make_node("Pad", ["r", "pads"], ["rp"], mode="edge"),
        helper.make_node("Conv", ["rp", "w2"], ["out"], kernel_shape=[3, 3]),
    ]
    return _model(nodes, [_value("x", [1, 3, 8, 8])], [_value("out", [1, 2, 6, 6])], inits)


def dense_chain(seed=0) -> onnx.ModelProto:
    """x[N,20] --Gemm(transB)--> h --Clip(0,6)--> r --MatMul+Add--> y"""
    rng = np.random.default_rng(seed)
    inits = {
        "w1": (rng.standard_normal((16, 20)) * 0.3).astype(np.float32),
        "b1": (rng.standard_normal(16) * 0.1).astype(np.float32),
        "lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32),
        "w2": (rng.standard_normal((16, 5)) * 0.3).astype(np.float32),
        "b2": (rng.standard_normal(5) * 0.1).astype(np.float32),
    }
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1", transB=1),
        helper.make_node("Clip", ["h", "lo", "hi"], ["r"], name="relu6"),
        helper.make_node("MatMul", ["r", "w2"], ["m"], name="fc2"),
        helper.make_node("Add", ["m", "b2"], ["y"], name="fc2_bias"),
    ]
    return _model(nodes, [_value("x", ["N", 20])], [_value("y", ["N", 5])], inits)


def conv_bn(seed=0, weights_as_constant_nodes=False) -> onnx.ModelProto:
    """x -> Conv -> BatchNormalization -> Relu -> GlobalAveragePool -> Add(residual) -> Flatten -> y

        x[1,4,8,8] --conv--> c --bn--> b --relu--> r --gap--> g
                                              r + g --add--> s --flatten--> y
    """
    rng = np.random.default_rng(seed)
    inits = {
        "w": (rng.standard_normal((4, 4, 3, 3)) * 0.3).astype(np.float32),
        "gamma": rng.uniform(0.5, 1.5, 4).astype(np.float32), "beta": rng.standard_normal(4).astype(np.float32),
        "mean": rng.standard_normal(4).astype(np.float32), "var": rng.uniform(0.5, 2.0, 4).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["b"], name="bn"),
        helper.make_node("Relu", ["b"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        helper.make_node("Add", ["r", "g"], ["s"], name="residual"),
        helper.make_node("Flatten", ["s"], ["y"], name="flatten"),
    ]
    if weights_as_constant_nodes:
        constants = [helper.make_node("Constant", [], [k], value=numpy_helper.from_array(v, k)) for k, v in inits.items()]
        nodes, inits = constants + nodes, {}
    return _model(nodes, [_value("x", [1, 4, 8, 8])], [_value("y", [1, 256])], inits)


def twin_convs(seed=0, bias=True) -> onnx.ModelProto:
    """x[N,8,10,10] --conv_a+relu_a--> r --conv_b+relu_b--> y: two convs of one shape (one fp32 kernel),
    with biases or without."""
    rng = np.random.default_rng(seed)
    inits = {name: (rng.standard_normal(shape) * scale).astype(np.float32) for name, shape, scale in
             (("wa", (8, 8, 3, 3), 0.3), ("ba", (8,), 0.1), ("wb", (8, 8, 3, 3), 0.3), ("bb", (8,), 0.1))
             if bias or name.startswith("w")}
    a_in, b_in = (["x", "wa", "ba"], ["r", "wb", "bb"]) if bias else (["x", "wa"], ["r", "wb"])
    nodes = [
        helper.make_node("Conv", a_in, ["a"], name="conv_a", kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Relu", ["a"], ["r"], name="relu_a"),
        helper.make_node("Conv", b_in, ["b"], name="conv_b", kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Relu", ["b"], ["y"], name="relu_b"),
    ]
    return _model(nodes, [_value("x", ["N", 8, 10, 10])], [_value("y", ["N", 8, 10, 10])], inits)


def save(model: onnx.ModelProto, path) -> str:
    onnx.save(model, str(path))
    return str(path)


def pool_concat(seed=0) -> onnx.ModelProto:
    """Two conv branches joined by Concat, then AveragePool and a Gemm head.

        x[1,3,8,8] --conv_p--> p --relu_p--> rp --\\
                   --conv_q--> q --relu_q--> rq --concat--> c --avgpool(2x2)--> a --flatten--> f --fc--> y
    """
    rng = np.random.default_rng(seed)
    inits = {
        "wp": (rng.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32),
        "wq": (rng.standard_normal((4, 3, 1, 1)) * 2.0).astype(np.float32),
        "wf": (rng.standard_normal((3, 128)) * 0.1).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "wp"], ["p"], name="conv_p", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["p"], ["rp"], name="relu_p"),
        helper.make_node("Conv", ["x", "wq"], ["q"], name="conv_q", kernel_shape=[1, 1]),
        helper.make_node("Relu", ["q"], ["rq"], name="relu_q"),
        helper.make_node("Concat", ["rp", "rq"], ["c"], name="concat", axis=1),
        helper.make_node("AveragePool", ["c"], ["a"], name="avgpool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["a"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wf"], ["y"], name="fc", transB=1),
    ]
    return _model(nodes, [_value("x", [1, 3, 8, 8])], [_value("y", [1, 3])], inits)


def mobile_block(relu6=True, seed=0) -> onnx.ModelProto:
    """A MobileNetV2-style block with badly balanced channel ranges (per-tensor int8's nightmare).

        x[N,4,10,10] --expand 1x1--> e --relu(6)--> re --dw 3x3--> d --relu(6)--> rd --project 1x1--> y
    """
    rng = np.random.default_rng(seed)
    channel_scale = np.geomspace(0.02, 20.0, 12).astype(np.float32)
    inits = {
        "we": (rng.standard_normal((12, 4, 1, 1)) * channel_scale.reshape(-1, 1, 1, 1)).astype(np.float32),
        "be": (rng.standard_normal(12) * channel_scale * 0.1).astype(np.float32),
        "wd": (rng.standard_normal((12, 1, 3, 3)) / channel_scale.reshape(-1, 1, 1, 1)).astype(np.float32),
        "bd": (rng.standard_normal(12) * 0.1).astype(np.float32),
        "wp": (rng.standard_normal((6, 12, 1, 1)) * 0.3).astype(np.float32),
        "bp": (rng.standard_normal(6) * 0.1).astype(np.float32),
        "lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32),
    }
    act = (lambda i, o, n: helper.make_node("Clip", [i, "lo", "hi"], [o], name=n)) if relu6 else \
        (lambda i, o, n: helper.make_node("Relu", [i], [o], name=n))
    nodes = [
        helper.make_node("Conv", ["x", "we", "be"], ["e"], name="expand", kernel_shape=[1, 1]),
        act("e", "re", "expand_act"),
        helper.make_node("Conv", ["re", "wd", "bd"], ["d"], name="depthwise", kernel_shape=[3, 3], group=12,
                         pads=[1, 1, 1, 1]),
        act("d", "rd", "depthwise_act"),
        helper.make_node("Conv", ["rd", "wp", "bp"], ["y"], name="project", kernel_shape=[1, 1]),
    ]
    return _model(nodes, [_value("x", ["N", 4, 10, 10])], [_value("y", ["N", 6, 10, 10])], inits)


def high_bias_pair(seed=0) -> onnx.ModelProto:
    """Conv -> BatchNorm with a large beta -> Relu -> 1x1 Conv: the ReLU never clips.

        x[1,4,8,8] --conv--> c --bn(beta=5, gamma=1)--> b --relu--> r --conv 1x1--> y
    """
    rng = np.random.default_rng(seed)
    inits = {
        "w1": (rng.standard_normal((8, 4, 3, 3)) * 0.02).astype(np.float32),
        "gamma": np.ones(8, np.float32), "beta": np.full(8, 5.0, np.float32),
        "mean": np.zeros(8, np.float32), "var": np.ones(8, np.float32),
        "w2": (rng.standard_normal((4, 8, 1, 1)) * 0.5).astype(np.float32),
        "b2": np.zeros(4, np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c"], name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["b"], name="bn"),
        helper.make_node("Relu", ["b"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "w2", "b2"], ["y"], name="conv2", kernel_shape=[1, 1]),
    ]
    return _model(nodes, [_value("x", [1, 4, 8, 8])], [_value("y", [1, 4, 8, 8])], inits)


def conv_bn_relu_conv(relu6=False, seed=0) -> onnx.ModelProto:
    """Conv -> BatchNorm whose statistics match N(0, 1) inputs -> Relu / Clip(0, 6) -> 3x3 Conv whose
    output channels' weight ranges span 20x (coarse per-tensor int8 weights).

        x[N,8,10,10] --conv1 3x3 pad 1--> c --bn--> b --relu(6)--> r --conv2 3x3--> y[N,8,8,8]

    The BatchNorm's running mean / variance are conv1's output moments for i.i.d. N(0, 1) inputs
    (exact away from the zero-padded border), so its output is N(beta, |gamma|) per channel.
    """
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((16, 8, 3, 3)) * 0.2).astype(np.float32)
    ranges = np.geomspace(0.05, 1.0, 8).astype(np.float32).reshape(-1, 1, 1, 1)
    inits = {
        "w1": w1, "gamma": rng.uniform(0.5, 2.0, 16).astype(np.float32),
        "beta": rng.normal(0.5, 1.0, 16).astype(np.float32), "mean": np.zeros(16, np.float32),
        "var": (w1.astype(np.float64) ** 2).sum(axis=(1, 2, 3)).astype(np.float32),
        "w2": (rng.standard_normal((8, 16, 3, 3)) * ranges * 0.3).astype(np.float32),
        "b2": (rng.standard_normal(8) * 0.1).astype(np.float32),
        "lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32),
    }
    act = helper.make_node("Clip", ["b", "lo", "hi"], ["r"], name="relu6") if relu6 else \
        helper.make_node("Relu", ["b"], ["r"], name="relu")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c"], name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["b"], name="bn",
                         epsilon=1e-5),
        act,
        helper.make_node("Conv", ["r", "w2", "b2"], ["y"], name="conv2", kernel_shape=[3, 3]),
    ]
    return _model(nodes, [_value("x", ["N", 8, 10, 10])], [_value("y", ["N", 8, 8, 8])], inits)


def residual_block(seed=0) -> onnx.ModelProto:
    """ResNet's shortcut, in int8 because a conv reads the sum:

        x[N,8,10,10] --conv_a 3x3--> a --relu--> r --conv_b 1x1--> b;  b + x --add--> s --conv_c 1x1--> y
    """
    rng = np.random.default_rng(seed)
    inits = {f"w{n}": (rng.standard_normal((8, 8, k, k)) * 0.3).astype(np.float32)
             for n, k in (("a", 3), ("b", 1), ("c", 1))}
    inits.update({f"b{n}": (rng.standard_normal(8) * 0.1).astype(np.float32) for n in "abc"})
    nodes = [
        helper.make_node("Conv", ["x", "wa", "ba"], ["a"], name="conv_a", kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Relu", ["a"], ["r"], name="relu_a"),
        helper.make_node("Conv", ["r", "wb", "bb"], ["b"], name="conv_b", kernel_shape=[1, 1]),
        helper.make_node("Add", ["b", "x"], ["s"], name="shortcut"),
        helper.make_node("Conv", ["s", "wc", "bc"], ["y"], name="conv_c", kernel_shape=[1, 1]),
    ]
    return _model(nodes, [_value("x", ["N", 8, 10, 10])], [_value("y", ["N", 8, 10, 10])], inits)


def projection_block(seed=0) -> onnx.ModelProto:
    """ResNet's projection shortcut: both inputs of the add are convs, and a ReLU follows it:

        x[N,8,10,10] --conv_a 3x3--> a --relu--> r --conv_b 1x1--> b
        x --conv_p 1x1 (16)--> p;  b + p --add--> s --relu--> t --conv_c 1x1--> y
    """
    rng = np.random.default_rng(seed)
    inits = {"wa": (rng.standard_normal((8, 8, 3, 3)) * 0.3).astype(np.float32),
             "wb": (rng.standard_normal((16, 8, 1, 1)) * 0.3).astype(np.float32),
             "wp": (rng.standard_normal((16, 8, 1, 1)) * 0.3).astype(np.float32),
             "wc": (rng.standard_normal((8, 16, 1, 1)) * 0.3).astype(np.float32)}
    inits.update({f"b{n}": (rng.standard_normal(8 if n in "ac" else 16) * 0.1).astype(np.float32) for n in "abpc"})
    nodes = [
        helper.make_node("Conv", ["x", "wa", "ba"], ["a"], name="conv_a", kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Relu", ["a"], ["r"], name="relu_a"),
        helper.make_node("Conv", ["r", "wb", "bb"], ["b"], name="conv_b", kernel_shape=[1, 1]),
        helper.make_node("Conv", ["x", "wp", "bp"], ["p"], name="conv_p", kernel_shape=[1, 1]),
        helper.make_node("Add", ["b", "p"], ["s"], name="shortcut"),
        helper.make_node("Relu", ["s"], ["t"], name="relu_s"),
        helper.make_node("Conv", ["t", "wc", "bc"], ["y"], name="conv_c", kernel_shape=[1, 1]),
    ]
    return _model(nodes, [_value("x", ["N", 8, 10, 10])], [_value("y", ["N", 8, 10, 10])], inits)
