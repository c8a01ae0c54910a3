"""MobileNetV2- and ResNet-50-shaped ONNX models (224x224, random He-initialised weights, BatchNorm
already folded into conv biases), built with onnx.helper: the speed benchmark's standard shapes.

Random weights are fine for latency; nothing here is meant to classify anything.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MOBILENET_V2_BLOCKS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                       (6, 160, 3, 2), (6, 320, 1, 1)]  # (expansion, channels, repeats, first stride)
RESNET50_STAGES = [(3, 64), (4, 128), (6, 256), (3, 512)]  # (bottlenecks, width); expansion 4


class _Graph:
    """Accumulates nodes and initializers; each helper returns its output tensor name."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.count = [], [], 0

    def _name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}{self.count}"

    def _init(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    def conv(self, x: str, c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1) -> str:
        name = self._name("conv")
        fan_in = c_in // groups * k * k
        w = self._init(name + ".w", self.rng.standard_normal((c_out, c_in // groups, k, k)) * np.sqrt(2.0 / fan_in))
        b = self._init(name + ".b", self.rng.standard_normal(c_out) * 0.05)
        self.nodes.append(helper.make_node("Conv", [x, w, b], [name], name=name, kernel_shape=[k, k],
                                           strides=[stride, stride], pads=[k // 2] * 4, group=groups))
        return name

    def unary(self, op: str, x: str, **attrs) -> str:
        name = self._name(op.lower())
        self.nodes.append(helper.make_node(op, [x], [name], name=name, **attrs))
        return name

    def relu6(self, x: str) -> str:
        name = self._name("relu6")
        lo, hi = self._init(name + ".lo", np.array(0.0)), self._init(name + ".hi", np.array(6.0))
        self.nodes.append(helper.make_node("Clip", [x, lo, hi], [name], name=name))
        return name

    def add(self, a: str, b: str) -> str:
        name = self._name("add")
        self.nodes.append(helper.make_node("Add", [a, b], [name], name=name))
        return name

    def classifier(self, x: str, channels: int, classes: int = 1000) -> str:
        pooled = self.unary("Flatten", self.unary("GlobalAveragePool", x))
        name = self._name("fc")
        w = self._init(name + ".w", self.rng.standard_normal((classes, channels)) * np.sqrt(1.0 / channels))
        b = self._init(name + ".b", np.zeros(classes))
        self.nodes.append(helper.make_node("Gemm", [pooled, w, b], [name], name=name, transB=1))
        return name

    def model(self, name: str, output: str, classes: int = 1000) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name,
                                  [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
                                  [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", classes])],
                                  self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model


def mobilenet_v2(seed: int = 0) -> onnx.ModelProto:
    """MobileNetV2 1.0 (3.5 M parameters): inverted residual blocks with ReLU6 and linear bottlenecks."""
    g = _Graph(seed)
    x, channels = g.relu6(g.conv("input", 3, 32, 3, stride=2)), 32
    for expansion, width, repeats, first_stride in MOBILENET_V2_BLOCKS:
        for i in range(repeats):
            stride, hidden = (first_stride if i == 0 else 1), channels * expansion
            h = g.relu6(g.conv(x, channels, hidden, 1)) if expansion != 1 else x
            h = g.relu6(g.conv(h, hidden, hidden, 3, stride=stride, groups=hidden))
            h = g.conv(h, hidden, width, 1)
            x, channels = (g.add(x, h) if stride == 1 and channels == width else h), width
    x = g.relu6(g.conv(x, channels, 1280, 1))
    return g.model("mobilenet_v2_shape", g.classifier(x, 1280))


def resnet50(seed: int = 0) -> onnx.ModelProto:
    """ResNet-50 v1.5 (25.6 M parameters): bottlenecks, the stride on the 3x3 conv."""
    g = _Graph(seed)
    x = g.unary("MaxPool", g.unary("Relu", g.conv("input", 3, 64, 7, stride=2)), kernel_shape=[3, 3],
                strides=[2, 2], pads=[1, 1, 1, 1])
    channels = 64
    for stage, (blocks, width) in enumerate(RESNET50_STAGES):
        for i in range(blocks):
            stride = 2 if i == 0 and stage > 0 else 1
            h = g.unary("Relu", g.conv(x, channels, width, 1))
            h = g.unary("Relu", g.conv(h, width, width, 3, stride=stride))
            h = g.conv(h, width, width * 4, 1)
            shortcut = g.conv(x, channels, width * 4, 1, stride=stride) if i == 0 else x
            x, channels = g.unary("Relu", g.add(shortcut, h)), width * 4
    return g.model("resnet50_shape", g.classifier(x, channels))


def mobilenet_v2_depthwise() -> dict[tuple[int, int, int], int]:
    """MobileNetV2-224's depthwise layers: ``(input size, channels, stride)`` -> how many there are."""
    layers, size, channels = {}, 112, 32
    for expansion, width, repeats, first_stride in MOBILENET_V2_BLOCKS:
        for i in range(repeats):
            stride, hidden = (first_stride if i == 0 else 1), channels * expansion
            layers[(size, hidden, stride)] = layers.get((size, hidden, stride), 0) + 1
            size, channels = size // stride, width
    return layers


def depthwise_chain(size: int, channels: int, stride: int, kernel: int = 3, seed: int = 0) -> onnx.ModelProto:
    """One depthwise layer as MobileNetV2 has it, 1x1 -> depthwise -> ReLU6 -> 1x1 (the 1x1 convs give
    it int8 neighbours, so its int8 kernel has no quantize / dequantize edge)."""
    g = _Graph(seed)
    x = g.conv("input", 3, channels, 1, stride=224 // size)
    x = g.relu6(g.conv(x, channels, channels, kernel, stride=stride, groups=channels))
    output = g.conv(x, channels, 8, 1)
    graph = helper.make_graph(g.nodes, "depthwise_chain",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
                              [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", 8, size // stride, size // stride])],
                              g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


MODELS = {"mobilenet_v2_224": mobilenet_v2, "resnet50_224": resnet50}
