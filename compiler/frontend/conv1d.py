"""1-D ``Conv`` / ``ConvTranspose`` as 2-D ones of height 1 (exact), so the int8 conv2d kernels apply.

TVM imports a 1-D conv as ``relax.nn.conv1d``, which tvmq's int8 rules and x86 kernels do not
take; audio models (Silero VAD's STFT and encoder) are all 1-D convs. Each one becomes::

    x[N,C,L] --Unsqueeze(2)--> [N,C,1,L] --Conv(kernel [1,k])--> [N,K,1,L'] --Squeeze(2)--> y[N,K,L']

with the weight ``[K,C/g,k]`` stored as ``[K,C/g,1,k]`` (a new initializer, or an ``Unsqueeze``
when the weight is computed), pads ``[a,b]`` as ``[0,a,0,b]``, strides / dilations ``[s]`` as
``[1,s]`` (``ConvTranspose``'s ``output_shape`` ``[L]`` as ``[1,L]``, its ``output_padding`` ``[p]`` as
``[0,p]``). Every output
of height 1 computes the same sums in the same order, and the squeezed output keeps the
conv's ONNX name (the 2-D conv's output is ``NAME/2d``, its node keeps the conv's name).
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import helper, numpy_helper

logger = logging.getLogger(__name__)

CONVS = ("Conv", "ConvTranspose")
LEADING_ONE = ("kernel_shape", "strides", "dilations", "output_shape")  # [s] -> [1, s]
LEADING_ZERO = ("output_padding",)  # [p] -> [0, p]


def conv1d_as_2d(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` (shape-inferred) with every 1-D Conv / ConvTranspose rewritten as a 2-D one."""
    ranks = _ranks(model)
    convs = {i for i, n in enumerate(model.graph.node) if n.op_type in CONVS and n.domain in ("", "ai.onnx")
             and ranks.get(n.input[0]) == 3 and ranks.get(n.input[1]) == 3}
    if not convs:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {init.name: init for init in graph.initializer}
    axes = _axes_input(out, graph, inits)
    weights: dict[str, str] = {}
    nodes = []
    for index, node in enumerate(graph.node):
        if index not in convs:
            nodes.append(node)
            continue
        nodes += _as_2d(node, axes, inits, weights, graph)
    del graph.node[:], graph.value_info[:]
    graph.node.extend(nodes)
    _drop_unread(graph)
    logger.debug("rewrote %d 1-D convolutions as 2-D", len(convs))
    return out


def _as_2d(node: onnx.NodeProto, axes, inits: dict, weights: dict, graph: onnx.GraphProto) -> list:
    """``Unsqueeze -> Conv 2-D -> Squeeze`` for one 1-D conv node."""
    label = node.name or node.output[0]
    x2d = f"{node.output[0]}/x_2d"
    nodes = [_unsqueeze(node.input[0], x2d, f"{label}/unsqueeze", axes)]
    weight = node.input[1]
    if weight in inits:
        if weight not in weights:
            weights[weight] = f"{weight}/2d"
            array = numpy_helper.to_array(inits[weight])
            graph.initializer.append(numpy_helper.from_array(array[:, :, None, :], weights[weight]))
        w2d = weights[weight]
    else:
        w2d = f"{weight}/2d_{node.output[0]}"
        nodes.append(_unsqueeze(weight, w2d, f"{label}/weight_unsqueeze", axes))
    conv = helper.make_node(node.op_type, [x2d, w2d, *node.input[2:]], [f"{node.output[0]}/2d"], name=node.name,
                            domain=node.domain)
    conv.attribute.extend(_attributes_2d(node))
    nodes.append(conv)
    nodes.append(_squeeze(conv.output[0], node.output[0], f"{label}/squeeze", axes))
    return nodes


def _attributes_2d(node: onnx.NodeProto) -> list:
    out = []
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        if attr.name in LEADING_ONE:
            value = [1, *value]
        elif attr.name in LEADING_ZERO:
            value = [0, *value]
        elif attr.name == "pads":
            value = [0, value[0], 0, value[1]]
        out.append(helper.make_attribute(attr.name, value))
    return out


def _axes_input(model: onnx.ModelProto, graph: onnx.GraphProto, inits: dict):
    """``axes`` as opset 13+ takes it (an initializer name), or None for the attribute of older opsets."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    if opset < 13:
        return None
    name = "conv1d_as_2d/axis_2"
    if name not in inits:
        graph.initializer.append(numpy_helper.from_array(np.array([2], np.int64), name))
    return name


def _unsqueeze(x: str, y: str, name: str, axes) -> onnx.NodeProto:
    if axes is None:
        return helper.make_node("Unsqueeze", [x], [y], name=name, axes=[2])
    return helper.make_node("Unsqueeze", [x, axes], [y], name=name)


def _squeeze(x: str, y: str, name: str, axes) -> onnx.NodeProto:
    if axes is None:
        return helper.make_node("Squeeze", [x], [y], name=name, axes=[2])
    return helper.make_node("Squeeze", [x, axes], [y], name=name)


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    ranks = {init.name: len(init.dims) for init in model.graph.initializer}
    for value in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        tensor = value.type.tensor_type
        if tensor.HasField("shape"):
            ranks[value.name] = len(tensor.shape.dim)
    return ranks


def _drop_unread(graph: onnx.GraphProto) -> None:
    """Remove the 3-D weights no node (nor subgraph) reads any more."""
    from .fold import _read_names

    used = set(_read_names(graph.node)) | {o.name for o in graph.output}
    kept = [init for init in graph.initializer if init.name in used]
    if len(kept) != len(graph.initializer):
        dropped = {init.name for init in graph.initializer} - {init.name for init in kept}
        inputs = [v for v in graph.input if v.name not in dropped]
        del graph.initializer[:], graph.input[:]
        graph.initializer.extend(kept)
        graph.input.extend(inputs)
