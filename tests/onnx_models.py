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


def mobilenet_v3_block(seed=0) -> onnx.ModelProto:
    """MobileNetV3's stem and an inverted residual block with squeeze-excite (opset 14), tiny:

        x[N,3,16,16] --stem 3x3 s2 (8)--> s --HardSwish--> hs --expand 1x1 (16)--> e --HardSwish--> he
          --dw 3x3--> d --HardSwish--> hd --GAP--> g --squeeze 1x1 (4)--> q --relu--> rq
          --excite 1x1 (16)--> x1 --HardSigmoid--> a;  hd * a --> m --project 1x1 (8)--> p;  p + hs --> y
    """
    rng = np.random.default_rng(seed)

    def conv(name, out, inp, k, groups=1):
        return {f"w_{name}": (rng.standard_normal((out, inp // groups, k, k)) * 0.4).astype(np.float32),
                f"b_{name}": (rng.standard_normal(out) * 0.1).astype(np.float32)}

    inits = {**conv("stem", 8, 3, 3), **conv("expand", 16, 8, 1), **conv("dw", 16, 16, 3, groups=16),
             **conv("squeeze", 4, 16, 1), **conv("excite", 16, 4, 1), **conv("project", 8, 16, 1)}

    def node(op, inputs, output, **attrs):
        return helper.make_node(op, inputs, [output], name=output + "_" + op.lower(), **attrs)

    nodes = [
        node("Conv", ["x", "w_stem", "b_stem"], "s", kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4),
        node("HardSwish", ["s"], "hs"),
        node("Conv", ["hs", "w_expand", "b_expand"], "e", kernel_shape=[1, 1]),
        node("HardSwish", ["e"], "he"),
        node("Conv", ["he", "w_dw", "b_dw"], "d", kernel_shape=[3, 3], pads=[1] * 4, group=16),
        node("HardSwish", ["d"], "hd"),
        node("GlobalAveragePool", ["hd"], "g"),
        node("Conv", ["g", "w_squeeze", "b_squeeze"], "q", kernel_shape=[1, 1]),
        node("Relu", ["q"], "rq"),
        node("Conv", ["rq", "w_excite", "b_excite"], "x1", kernel_shape=[1, 1]),
        node("HardSigmoid", ["x1"], "a", alpha=1.0 / 6, beta=0.5),
        node("Mul", ["hd", "a"], "m"),
        node("Conv", ["m", "w_project", "b_project"], "p", kernel_shape=[1, 1]),
        node("Add", ["p", "hs"], "y"),
    ]
    return _model(nodes, [_value("x", ["N", 3, 16, 16])], [_value("y", ["N", 8, 8, 8])], inits, opset=14)


# ---- legal ONNX that real exporters write (tests/test_frontend_valid.py) --------------------

def _const(name, value) -> onnx.NodeProto:
    """A ``Constant`` node holding ``value`` (weights and shape operands as PaddlePaddle writes them)."""
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value), name))


def shape_arithmetic(seed=0) -> onnx.ModelProto:
    """A reshape target, gather indices and a scale computed from the input's shape (Paddle/PyTorch style).

        x[-1,3,H,W] --conv--> c[N,4,H,W];  s = Shape(c)
        Concat(Gather(s,[0,1]), ReduceProd(Gather(s,[2,3]))) --> Reshape(c) --> r[N,4,H*W]
        (C-1) - Range(0, C, 1) --> Gather(r, axis=1) --> g;  ConstantOfShape([C,1], 0.5) * g --> y
    """
    rng = np.random.default_rng(seed)
    nodes = [
        _const("w", (rng.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32)),
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Shape", ["c"], ["s"], name="shape"),
        _const("i01", np.array([0, 1], np.int64)), _const("i23", np.array([2, 3], np.int64)),
        helper.make_node("Gather", ["s", "i01"], ["nc"], name="gather_nc"),
        helper.make_node("Gather", ["s", "i23"], ["hw"], name="gather_hw"),
        helper.make_node("ReduceProd", ["hw"], ["area"], name="area", keepdims=1),
        helper.make_node("Concat", ["nc", "area"], ["target"], name="target", axis=0),
        helper.make_node("Reshape", ["c", "target"], ["r"], name="reshape"),
        _const("i1", np.array(1, np.int64)), _const("one", np.array(1, np.int64)),
        _const("zero", np.array(0, np.int64)), _const("one1", np.array([1], np.int64)),
        helper.make_node("Gather", ["s", "i1"], ["channels"], name="channels"),
        helper.make_node("Sub", ["channels", "one"], ["last"], name="last"),
        helper.make_node("Range", ["zero", "channels", "one"], ["ascending"], name="range"),
        helper.make_node("Sub", ["last", "ascending"], ["reversed"], name="reversed"),
        helper.make_node("Gather", ["r", "reversed"], ["g"], name="reverse_channels", axis=1),
        _const("i0_axes", np.array([0], np.int64)),
        helper.make_node("Unsqueeze", ["channels", "i0_axes"], ["c1"], name="unsqueeze"),
        helper.make_node("Concat", ["c1", "one1"], ["half_shape"], name="half_shape", axis=0),
        helper.make_node("ConstantOfShape", ["half_shape"], ["half"], name="half",
                         value=numpy_helper.from_array(np.array([0.5], np.float32))),
        helper.make_node("Mul", ["g", "half"], ["y"], name="scale"),
    ]
    return _model(nodes, [_value("x", [-1, 3, "H", "W"])], [_value("y", [-1, 4, None])], {})


def batch_arithmetic() -> onnx.ModelProto:
    """The batch size read by arithmetic TVM cannot keep symbolic:

        x[N,4,6] --Shape--> s --Gather(0)--> n --Mul(24)--> n24 --Concat(n24 ...)--> Reshape --> y[N*24]... then Relu
    """
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], name="shape"),
        helper.make_node("Gather", ["s", "i0"], ["n"], name="batch"),
        helper.make_node("Mul", ["n", "k"], ["n24"], name="times24"),
        helper.make_node("Reshape", ["x", "n24"], ["flat"], name="flatten"),
        helper.make_node("Relu", ["flat"], ["y"], name="relu"),
    ]
    inits = {"i0": np.array([0], np.int64), "k": np.array([24], np.int64)}
    return _model(nodes, [_value("x", ["N", 4, 6])], [_value("y", [None])], inits)


def dynamic_pad(seed=0) -> onnx.ModelProto:
    """Open-NSFW's SAME padding: pad amounts computed from the input's spatial size.

        x[1,3,8,8]; p = Gather(Shape(x), [2]) - 7 (= 1);  pads = Concat(0,0,p,p,0,0,p,p)
        x --Pad(constant 0, pads)--> xp --conv 3x3--> c --Pad(edge, pads)--> cp --MaxPool 3x3--> y
    """
    rng = np.random.default_rng(seed)
    inits = {"w": (rng.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32),
             "i2": np.array([2], np.int64), "seven": np.array([7], np.int64), "zeros": np.zeros(2, np.int64)}
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], name="shape"),
        helper.make_node("Gather", ["s", "i2"], ["h"], name="height"),
        helper.make_node("Sub", ["h", "seven"], ["p"], name="amount"),
        helper.make_node("Concat", ["zeros", "p", "p", "zeros", "p", "p"], ["pads"], name="pads", axis=0),
        helper.make_node("Pad", ["x", "pads"], ["xp"], name="pad", mode="constant"),
        helper.make_node("Conv", ["xp", "w"], ["c"], name="conv", kernel_shape=[3, 3]),
        helper.make_node("Pad", ["c", "pads"], ["cp"], name="pad_edge", mode="edge"),
        helper.make_node("MaxPool", ["cp"], ["y"], name="pool", kernel_shape=[3, 3]),
    ]
    return _model(nodes, [_value("x", [1, 3, 8, 8])], [_value("y", [1, 4, 8, 8])], inits)


def resize_empty_roi(opset=13, mode="linear", by_sizes=False) -> onnx.ModelProto:
    """Resize with an empty ``roi`` Constant (and an empty ``scales`` one when sized), as detectors write it.

        x[1,2,5,6] --conv 1x1--> c --Resize(roi=[], scales=[1,1,2,2] | sizes=[1,2,10,12])--> y
    """
    rng = np.random.default_rng(0)
    empty = np.zeros(0, np.float32)
    sized = [_const("roi", empty), _const("scales", empty), _const("sizes", np.array([1, 2, 10, 12], np.int64))]
    scaled = [_const("roi", empty), _const("scales", np.array([1, 1, 2, 2], np.float32))]
    inputs = ["c", "roi", "scales", "sizes"] if by_sizes else ["c", "roi", "scales"]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", kernel_shape=[1, 1]),
        *(sized if by_sizes else scaled),
        helper.make_node("Resize", inputs, ["y"], name="resize", mode=mode,
                         coordinate_transformation_mode="half_pixel" if mode == "linear" else "asymmetric",
                         **({"nearest_mode": "floor"} if mode == "nearest" else {})),
    ]
    inits = {"w": (rng.standard_normal((2, 2, 1, 1))).astype(np.float32)}
    return _model(nodes, [_value("x", [1, 2, 5, 6])], [_value("y", [1, 2, 10, 12])], inits, opset=opset)


def upsample(opset=9, mode="nearest") -> onnx.ModelProto:
    """x[1,2,4,4] --Relu--> r --Upsample(mode, x2)--> y: scales an input from opset 9, an attribute at 7."""
    scales = np.array([1, 1, 2, 2], np.float32)
    if opset >= 9:
        nodes = [helper.make_node("Relu", ["x"], ["r"]), _const("scales", scales),
                 helper.make_node("Upsample", ["r", "scales"], ["y"], mode=mode)]
    else:
        nodes = [helper.make_node("Relu", ["x"], ["r"]),
                 helper.make_node("Upsample", ["r"], ["y"], mode=mode, scales=[float(s) for s in scales])]
    return _model(nodes, [_value("x", [1, 2, 4, 4])], [_value("y", [1, 2, 8, 8])], {}, opset=opset)


def hard_activations(seed=0) -> onnx.ModelProto:
    """MobileNetV3's activations (opset 14):

        x[N,4,6,6] --conv--> c --HardSwish--> h --GAP--> g --HardSigmoid(0.2, 0.5)--> a;  h * a --> y
    """
    rng = np.random.default_rng(seed)
    inits = {"w": (rng.standard_normal((4, 4, 3, 3)) * 0.5).astype(np.float32)}
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("HardSwish", ["c"], ["h"], name="hardswish"),
        helper.make_node("GlobalAveragePool", ["h"], ["g"], name="gap"),
        helper.make_node("HardSigmoid", ["g"], ["a"], name="hardsigmoid", alpha=0.2, beta=0.5),
        helper.make_node("Mul", ["h", "a"], ["y"], name="excite"),
    ]
    return _model(nodes, [_value("x", ["N", 4, 6, 6])], [_value("y", ["N", 4, 6, 6])], inits, opset=14)


def split_slice_tensor_inputs(opset=13) -> onnx.ModelProto:
    """Split sizes and Slice bounds given as Constant tensors, not attributes:

        x[1,6,8] --Split(axis 1, [2,4])--> a, b;  b --Slice(starts [1], ends [-1], axes [2], steps [2])--> s
        Concat(a[:, :, 1:4:1] via Slice, s) --> y[1,6,3]
    """
    nodes = [
        _const("split", np.array([2, 4], np.int64)),
        helper.make_node("Split", ["x", "split"], ["a", "b"], name="split", axis=1),
        _const("starts", np.array([1], np.int64)), _const("ends", np.array([-1], np.int64)),
        _const("axes", np.array([2], np.int64)), _const("steps", np.array([2], np.int64)),
        helper.make_node("Slice", ["b", "starts", "ends", "axes", "steps"], ["s"], name="slice_b"),
        _const("a_start", np.array([1], np.int64)), _const("a_end", np.array([4], np.int64)),
        helper.make_node("Slice", ["a", "a_start", "a_end", "axes"], ["t"], name="slice_a"),
        helper.make_node("Concat", ["t", "s"], ["y"], name="concat", axis=1),
    ]
    return _model(nodes, [_value("x", [1, 6, 8])], [_value("y", [1, 6, 3])], {}, opset=opset)


def clip_attributes(seed=0) -> onnx.ModelProto:
    """Opset 10's Clip, bounds as attributes: x[N,6] --Gemm--> h --Clip(min 0, max 6)--> y."""
    rng = np.random.default_rng(seed)
    inits = {"w": (rng.standard_normal((6, 6)) * 2).astype(np.float32), "b": np.full(6, 0.5, np.float32)}
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["h"], name="fc", transB=1),
             helper.make_node("Clip", ["h"], ["y"], name="relu6", min=0.0, max=6.0)]
    return _model(nodes, [_value("x", ["N", 6])], [_value("y", ["N", 6])], inits, opset=10)


def at_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """``model`` declared at another ``ai.onnx`` opset (for graphs whose ops did not change)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.opset_import[0].version = opset
    onnx.checker.check_model(out)
    return out


def text_inputs(seed=0) -> onnx.ModelProto:
    """A BERT-style head with int64 token ids, an int64 attention mask and a bool flag:

        ids[N,T] --Gather(embedding[10,4])--> e[N,T,4];  mask[N,T] --Cast(float)--> m --Unsqueeze(-1)--> mu
        e * mu --> masked --ReduceSum(axis 1)--> pooled;  Where(flag[N,1], pooled, -pooled) --> y[N,4]
    """
    rng = np.random.default_rng(seed)
    inits = {"embedding": rng.standard_normal((10, 4)).astype(np.float32), "last": np.array([-1], np.int64),
             "axis1": np.array([1], np.int64)}
    nodes = [
        helper.make_node("Gather", ["embedding", "ids"], ["e"], name="embed"),
        helper.make_node("Cast", ["mask"], ["m"], name="mask_float", to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["m", "last"], ["mu"], name="mask_unsqueeze"),
        helper.make_node("Mul", ["e", "mu"], ["masked"], name="apply_mask"),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["pooled"], name="pool", keepdims=0),
        helper.make_node("Neg", ["pooled"], ["negated"], name="negate"),
        helper.make_node("Where", ["flag", "pooled", "negated"], ["y"], name="select"),
    ]
    inputs = [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", "T"]),
              helper.make_tensor_value_info("mask", TensorProto.INT64, ["N", "T"]),
              helper.make_tensor_value_info("flag", TensorProto.BOOL, ["N", 1])]
    return _model(nodes, inputs, [_value("y", ["N", 4])], inits)


def encoder_block(seq=16, width=32, heads=2, seed=0) -> onnx.ModelProto:
    """One transformer encoder layer on x[1, S, D] (BERT's shape, no mask):

        q, k, v = x Wq + bq, x Wk + bk, x Wv + bv, split into heads
        p = Softmax(q k^T / sqrt(D / H));  a = (p v) Wo + bo;  r = LayerNorm(a + x)
        y = GELU(r W1) W2 + r                       (GELU as 0.5 t (1 + erf(t / sqrt 2)))
    """
    rng = np.random.default_rng(seed)
    head = width // heads
    normal = lambda *shape: (0.2 * rng.standard_normal(shape)).astype(np.float32)  # noqa: E731
    inits = {**{f"w{t}": normal(width, width) for t in "qkvo"}, **{f"b{t}": normal(width) / 2 for t in "qkvo"},
             "w1": normal(width, 2 * width), "w2": normal(2 * width, width), "gamma": np.ones(width, np.float32),
             "beta": np.zeros(width, np.float32), "scale": np.array(head ** -0.5, np.float32),
             "half": np.array(0.5, np.float32), "one": np.array(1.0, np.float32),
             "root_half": np.array(0.5 ** 0.5, np.float32),
             "heads": np.array([1, seq, heads, head], np.int64), "merged": np.array([1, seq, width], np.int64)}
    node = helper.make_node
    nodes = []
    for t, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])):
        nodes += [node("MatMul", ["x", f"w{t}"], [f"{t}_mm"]), node("Add", [f"{t}_mm", f"b{t}"], [t]),
                  node("Reshape", [t, "heads"], [f"{t}_split"]), node("Transpose", [f"{t}_split"], [f"{t}_h"], perm=perm)]
    nodes += [node("MatMul", ["q_h", "k_h"], ["scores"]), node("Mul", ["scores", "scale"], ["scaled"]),
              node("Softmax", ["scaled"], ["probs"], axis=-1), node("MatMul", ["probs", "v_h"], ["context_h"]),
              node("Transpose", ["context_h"], ["context_t"], perm=[0, 2, 1, 3]),
              node("Reshape", ["context_t", "merged"], ["context"]),
              node("MatMul", ["context", "wo"], ["o_mm"]), node("Add", ["o_mm", "bo"], ["attended"]),
              node("Add", ["attended", "x"], ["residual"]),
              node("LayerNormalization", ["residual", "gamma", "beta"], ["normed"], axis=-1),
              node("MatMul", ["normed", "w1"], ["up"]), node("Mul", ["up", "root_half"], ["up_scaled"]),
              node("Erf", ["up_scaled"], ["erf"]), node("Add", ["erf", "one"], ["erf1"]),
              node("Mul", ["up", "erf1"], ["gelu2"]), node("Mul", ["gelu2", "half"], ["gelu"]),
              node("MatMul", ["gelu", "w2"], ["down"]), node("Add", ["down", "normed"], ["y"])]
    return _model(nodes, [_value("x", [1, seq, width])], [_value("y", [1, seq, width])], inits)
