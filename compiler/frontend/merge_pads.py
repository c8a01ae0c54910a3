"""MergePads: a ``Pad`` with constant amounts folds into the ``Conv`` / ``MaxPool`` it feeds (exact).

TVM imports a standalone ``Pad`` as a kernel of its own; as the conv's own ``pads`` it costs
nothing. Open-NSFW's export pads every strided conv this way (its Pad amounts come from
``Shape`` arithmetic, which :mod:`.fold` makes constant first).
"""

from __future__ import annotations

import numpy as np


def merge_pads(model):
    """Merge each ``Pad`` with constant amounts into the ``Conv`` / ``MaxPool`` it feeds.

    Between the two only float->float ``Cast`` and ``Transpose`` nodes with a single
    consumer may stand (they commute with padding). A zero ``constant`` pad becomes the
    ``Conv``'s ``pads``; an ``edge`` pad of less than the kernel size becomes the
    ``MaxPool``'s ``pads`` (every window still holds the real edge value it replicates, so
    the maximum is unchanged). Anything else is left alone.
    """
    import onnx
    from onnx import helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    removed = []
    for pad in list(graph.node):
        if pad.op_type != "Pad" or len(pad.input) < 2 or pad.input[1] not in inits:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in pad.attribute}
        mode = attrs.get("mode", b"constant").decode()
        if len(pad.input) > 3 and pad.input[3]:
            continue  # explicit axes
        if len(pad.input) > 2 and pad.input[2] and (pad.input[2] not in inits or np.any(inits[pad.input[2]])):
            continue  # non-zero constant value
        amounts = inits[pad.input[1]].astype(np.int64)
        rank = len(amounts) // 2
        begin, end = list(amounts[:rank]), list(amounts[rank:])
        node, chain = pad, []
        while True:
            users = consumers.get(node.output[0], [])
            if len(users) != 1 or node.output[0] in outputs:
                node = None
                break
            node = users[0]
            if node.op_type == "Cast" and helper.get_attribute_value(node.attribute[0]) == onnx.TensorProto.FLOAT:
                chain.append(node)
            elif node.op_type == "Transpose":
                perm = list(helper.get_attribute_value(node.attribute[0]))
                begin, end = [begin[p] for p in perm], [end[p] for p in perm]
                chain.append(node)
            else:
                break
        if node is None or rank != 4 or any(begin[:2]) or any(end[:2]) or min(begin + end) < 0:
            continue
        node_attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node_attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            continue
        if any(node_attrs.get("pads", [0] * 4)):
            continue
        if mode == "constant" and node.op_type == "Conv":
            pass
        elif mode == "edge" and node.op_type == "MaxPool" and all(d == 1 for d in node_attrs.get("dilations", [1, 1])):
            kernel = node_attrs["kernel_shape"]
            if any(b >= k or e >= k for b, e, k in zip(begin[2:], end[2:], kernel)):
                continue
        else:
            continue
        for attr in [a for a in node.attribute if a.name == "pads"]:
            node.attribute.remove(attr)
        node.attribute.append(helper.make_attribute("pads", [int(v) for v in begin[2:] + end[2:]]))
        first = chain[0] if chain else node
        first.input[0] = pad.input[0]
        removed.append(pad)
    for pad in removed:
        graph.node.remove(pad)
    used = {i for node in graph.node for i in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.checker.check_model(out)
    return out
