"""Exact graph rewrites for shipped models TVM 0.27's importer refuses as they are.

:func:`fold_constants` evaluates every subgraph that does not depend on the inputs;
:func:`merge_pads` merges constant ``Pad`` nodes into the ``Conv`` / ``MaxPool`` they feed.
(The frontend is taking folding over; these copies stay until it has.)
"""

from __future__ import annotations

import numpy as np


def fold_constants(model):
    """Replace every node output that does not depend on the input data by an initializer.

    Values are computed with ONNX's reference evaluator, and ``Shape`` of a tensor whose
    inferred shape is static, once with the batch dimension set to 1 and once set to 2;
    only values equal in both runs are folded, so the batch stays free. Nodes left without
    consumers are then removed. Repeated until nothing changes (a folded ``Pad`` amount
    lets shape inference see the shapes after it). The result computes exactly what the
    input did.
    """
    while True:
        folded = _fold_once(model)
        if len(folded.graph.node) == len(model.graph.node):
            return folded
        model = folded


def _fold_once(model):
    import onnx
    from onnx import numpy_helper

    runs = [_constant_values(model, batch) for batch in (1, 2)]
    folded = {name: value for name, value in runs[0].items()
              if name in runs[1] and value.shape == runs[1][name].shape and np.array_equal(value, runs[1][name])}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    kept = [node for node in graph.node if not all(o in folded for o in node.output if o)]
    outputs = {o.name for o in graph.output}
    while True:  # drop nodes whose outputs nobody reads any more (e.g. Shape feeding a folded Gather)
        used = {i for node in kept for i in node.input} | outputs
        alive = [node for node in kept if any(o in used for o in node.output)]
        if len(alive) == len(kept):
            break
        kept = alive
    used = {i for node in kept for i in node.input} | outputs
    initializers = [init for init in graph.initializer if init.name in used]
    have = {init.name for init in initializers}
    initializers += [numpy_helper.from_array(np.asarray(folded[name]), name)
                     for name in sorted(used - have) if name in folded]
    del graph.node[:]
    graph.node.extend(kept)
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    del graph.value_info[:]
    onnx.checker.check_model(out)
    return out


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


def _constant_values(model, batch: int) -> dict[str, np.ndarray]:
    """Every node output computable without the graph inputs, with the batch dimension fixed."""
    import onnx
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    initializer_names = {init.name for init in probe.graph.initializer}
    for value in probe.graph.input:
        if value.name not in initializer_names and value.type.tensor_type.shape.dim:
            dim = value.type.tensor_type.shape.dim[0]
            dim.Clear()
            dim.dim_value = batch
    probe = onnx.shape_inference.infer_shapes(probe, data_prop=True)
    shapes = {}
    for value in list(probe.graph.value_info) + list(probe.graph.input):
        dims = value.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = [d.dim_value for d in dims]
    known = {init.name: numpy_helper.to_array(init) for init in probe.graph.initializer}
    for node in probe.graph.node:
        inputs = [i for i in node.input if i]
        if node.op_type == "Shape" and inputs[0] in shapes and node.domain in ("", "ai.onnx"):
            attrs = {a.name: a.i for a in node.attribute}
            full = shapes[inputs[0]]
            known[node.output[0]] = np.array(full[attrs.get("start", 0):attrs.get("end", len(full))], np.int64)
        elif all(i in known for i in inputs) and node.domain in ("", "ai.onnx") and not any(
                a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            results = ReferenceEvaluator(node).run(None, {i: known[i] for i in inputs})
            known.update((name, np.asarray(v)) for name, v in zip(node.output, results) if name)
    return {name: value for name, value in known.items() if name not in initializer_names}
