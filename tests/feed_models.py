"""Tiny multi-input ONNX models (onnx.helper, seeded): two float inputs, token ids with a mask,
and a model whose inputs share no batch axis (a recurrent state)."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from onnx_models import _model


def two_images(seed=0):
    """Two float images, each convolved, summed: a multi-input CNN.

        a[N,4,8,8] --conv_a--> ca --relu--> ra --+
                                                 +--add--> s --conv_s--> y[N,3,8,8]
        b[N,4,8,8] --conv_b--> cb ---------------+
    """
    rng = np.random.default_rng(seed)
    w = lambda *s: (rng.standard_normal(s) * 0.3).astype(np.float32)  # noqa: E731
    inits = {"wa": w(6, 4, 3, 3), "wb": w(6, 4, 1, 1), "ws": w(3, 6, 3, 3), "bs": w(3)}
    nodes = [
        helper.make_node("Conv", ["a", "wa"], ["ca"], name="conv_a", kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Relu", ["ca"], ["ra"], name="relu_a"),
        helper.make_node("Conv", ["b", "wb"], ["cb"], name="conv_b", kernel_shape=[1, 1]),
        helper.make_node("Add", ["ra", "cb"], ["s"], name="add"),
        helper.make_node("Conv", ["s", "ws", "bs"], ["y"], name="conv_s", kernel_shape=[3, 3], pads=[1] * 4),
    ]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 4, 8, 8]) for n in ("a", "b")]
    return _model(nodes, inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 8, 8])], inits)


def token_classifier(vocab=50, width=16, classes=5, seed=0):
    """int64 token ids and an int64 mask: embedding lookup, masked mean, two dense layers.

        ids[N,T] --Gather(table)--> e[N,T,W] --*mask--> m --ReduceSum(T)--> s --/count--> mean
        mask[N,T] --Cast--> mf --Unsqueeze--> mu             mf --ReduceSum--> count
        mean --Gemm--> h --Relu--> r --Gemm--> logits[N,C]
    """
    rng = np.random.default_rng(seed)
    inits = {"table": rng.standard_normal((vocab, width)).astype(np.float32),
             "w1": (rng.standard_normal((width, width)) * 0.3).astype(np.float32),
             "b1": (rng.standard_normal(width) * 0.1).astype(np.float32),
             "w2": (rng.standard_normal((width, classes)) * 0.3).astype(np.float32),
             "axis1": np.array([1], np.int64), "axis2": np.array([2], np.int64)}
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["e"], name="embed"),
        helper.make_node("Cast", ["mask"], ["mf"], name="mask_float", to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mf", "axis2"], ["mu"], name="mask_unsqueeze"),
        helper.make_node("Mul", ["e", "mu"], ["m"], name="masked"),
        helper.make_node("ReduceSum", ["m", "axis1"], ["s"], name="sum", keepdims=0),
        helper.make_node("ReduceSum", ["mf", "axis1"], ["count"], name="count", keepdims=1),
        helper.make_node("Div", ["s", "count"], ["mean"], name="mean"),
        helper.make_node("Gemm", ["mean", "w1", "b1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Gemm", ["r", "w2"], ["logits"], name="fc2"),
    ]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["N", 7]) for n in ("ids", "mask")]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])]
    return _model(nodes, inputs, outputs, inits)


def stateful_dense(width=8, seed=0):
    """A frame and a state ``[2, 1, W]`` that share no batch axis (as an LSTM's ``h``), and two outputs.

        x[1,W] --Gemm--> d ------------+
                                       +--add--> y[1,W] --Relu--> out[1,W]
        h[2,1,W] --ReduceMean(0)--> hm3 --+
        h --Mul(0.5)--> h_next[2,1,W]
    """
    rng = np.random.default_rng(seed)
    inits = {"w": (rng.standard_normal((width, width)) * 0.3).astype(np.float32),
             "b": (rng.standard_normal(width) * 0.1).astype(np.float32),
             "half": np.array(0.5, np.float32), "axis0": np.array([0], np.int64)}
    nodes = [
        helper.make_node("Gemm", ["x", "w", "b"], ["d"], name="fc"),
        helper.make_node("ReduceMean", ["h"], ["hm3"], name="state_mean", axes=[0], keepdims=0),
        helper.make_node("Add", ["d", "hm3"], ["y"], name="add"),
        helper.make_node("Relu", ["y"], ["out"], name="relu"),
        helper.make_node("Mul", ["h", "half"], ["h_next"], name="decay"),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width]),
              helper.make_tensor_value_info("h", TensorProto.FLOAT, [2, 1, width])]
    outputs = [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, width]),
               helper.make_tensor_value_info("h_next", TensorProto.FLOAT, [2, 1, width])]
    return _model(nodes, inputs, outputs, inits, opset=13)
