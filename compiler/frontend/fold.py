"""Fold the constant subgraphs of an ONNX graph once its input shapes are static.

Exporters compute reshape targets, pad amounts, slice bounds and resize sizes at run time
(``Shape -> Gather -> Concat -> Reshape``); TVM's importer wants them constant. Every node
output that does not depend on the input *values* is evaluated with ONNX's reference
evaluator (``Shape`` of a tensor whose inferred shape is static counts as constant) and
becomes an initializer of the same name; nodes left without readers are dropped. Nothing
else is rewritten, so every float tensor that remains keeps its ONNX name and the graph
computes exactly what it did (``docs/frontend.md`` compares this with onnxsim, onnxslim
and onnxoptimizer).

With a free batch dimension the graph is evaluated with the batch set to 1 and to 2, and
only values equal in both runs are folded, so the batch stays free.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import numpy_helper

from .shapes import BATCH_DIM

logger = logging.getLogger(__name__)

MAX_FOLDED_ELEMENTS = 1 << 24  # never materialize a constant larger than this (64 MiB of float32)
NONDETERMINISTIC = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                              "Multinomial", "Bernoulli"})
SHAPE_READERS = frozenset({"Shape", "Size"})


def fold_constants(model: onnx.ModelProto, free_batch: bool = False) -> onnx.ModelProto:
    """``model`` with every input-independent node output replaced by an initializer.

    Repeated until nothing changes: a folded ``Pad`` amount lets shape inference see the
    static shapes after it, which folds the next ``Shape``.
    """
    while True:
        folded = _fold_once(model, free_batch)
        if len(folded.graph.node) == len(model.graph.node):
            return folded
        model = folded


def _fold_once(model: onnx.ModelProto, free_batch: bool) -> onnx.ModelProto:
    runs = [_constant_values(model, batch) for batch in ((1, 2) if free_batch else (None,))]
    outputs = {o.name for o in model.graph.output}
    folded = {name: value for name, value in runs[0].items() if name not in outputs
              and all(name in run and _same(value, run[name]) for run in runs[1:])}
    return _with_initializers(model, folded)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)


def _constant_values(model: onnx.ModelProto, batch: int | None) -> dict[str, np.ndarray]:
    """Every node output computable without the input values (``batch`` fixes a free batch)."""
    probe = _with_batch(model, batch) if batch is not None else model
    probe = onnx.shape_inference.infer_shapes(probe, data_prop=True)
    shapes = _static_shapes(probe)
    opsets = {o.domain or "": o.version for o in model.opset_import}
    known = _Values(model.graph.initializer)
    for node in probe.graph.node:
        if not _foldable(node, shapes):
            continue
        values = _evaluate(node, known, shapes, opsets)
        if values is not None:
            known.update(values)
    return dict(known)


class _Values(dict):
    """Computed values; an initializer is read (converted to numpy) only when a node needs it."""

    def __init__(self, initializers):
        super().__init__()
        self._initializers = {init.name: init for init in initializers}

    def __contains__(self, name) -> bool:
        return dict.__contains__(self, name) or name in self._initializers

    def __missing__(self, name: str) -> np.ndarray:
        return numpy_helper.to_array(self._initializers[name])


def _with_batch(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for value in probe.graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].dim_param == BATCH_DIM:
            dims[0].Clear()
            dims[0].dim_value = batch
    return probe


def _static_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    shapes = {}
    for value in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        tensor = value.type.tensor_type
        if tensor.HasField("shape") and all(d.HasField("dim_value") for d in tensor.shape.dim):
            shapes[value.name] = [d.dim_value for d in tensor.shape.dim]
    return shapes


def _foldable(node: onnx.NodeProto, shapes: dict) -> bool:
    """Standard-domain, deterministic, without subgraphs, and no output known to be huge."""
    if node.domain not in ("", "ai.onnx") or node.op_type in NONDETERMINISTIC:
        return False
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
        return False
    return all(int(np.prod(shapes.get(out, [0]), dtype=np.float64)) <= MAX_FOLDED_ELEMENTS for out in node.output)


def _evaluate(node: onnx.NodeProto, known: dict, shapes: dict, opsets: dict) -> dict[str, np.ndarray] | None:
    """The node's output values if its inputs are known, else None."""
    inputs = [i for i in node.input if i]
    if node.op_type in SHAPE_READERS:
        return _shape_value(node, shapes.get(inputs[0]))
    if not all(i in known for i in inputs):
        return None
    from onnx.reference import ReferenceEvaluator

    try:
        results = ReferenceEvaluator(node, opsets=opsets).run(None, {i: known[i] for i in inputs})
    except Exception as err:  # an operator the reference evaluator lacks: TVM will compute it
        logger.debug("not folding %s (%s): %s", node.name, node.op_type, err)
        return None
    values = {name: np.asarray(value) for name, value in zip(node.output, results) if name}
    if any(v.size > MAX_FOLDED_ELEMENTS for v in values.values()):
        return None
    return values


def _shape_value(node: onnx.NodeProto, shape: list[int] | None) -> dict[str, np.ndarray] | None:
    if shape is None:
        return None
    if node.op_type == "Size":
        return {node.output[0]: np.array(int(np.prod(shape)), np.int64)}
    attrs = {a.name: a.i for a in node.attribute}
    start, end = attrs.get("start", 0), attrs.get("end", len(shape))
    return {node.output[0]: np.array(shape[start:end], np.int64)}


def _with_initializers(model: onnx.ModelProto, folded: dict[str, np.ndarray]) -> onnx.ModelProto:
    """``model`` with the nodes computing ``folded`` replaced by initializers, dead nodes dropped."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    kept = _live_nodes([n for n in graph.node if not all(o in folded for o in n.output if o)],
                       {o.name for o in graph.output})
    used = set(_read_names(kept)) | {o.name for o in graph.output}
    initializers = [init for init in graph.initializer if init.name in used]
    have = {init.name for init in initializers}
    initializers += [numpy_helper.from_array(folded[name], name) for name in sorted(used - have) if name in folded]
    dropped = {init.name for init in graph.initializer} - {init.name for init in initializers}
    inputs = [value for value in graph.input if value.name not in dropped]
    del graph.node[:], graph.initializer[:], graph.value_info[:], graph.input[:]
    graph.node.extend(kept)
    graph.initializer.extend(initializers)
    graph.input.extend(inputs)
    logger.debug("folded %d tensors; %d nodes left", len(folded), len(kept))
    return out


def _read_names(nodes):
    """Every tensor name the nodes read, in their subgraphs (If / Loop bodies) too."""
    for node in nodes:
        yield from node.input
        for attr in node.attribute:
            for graph in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _read_names(graph.node)


def _live_nodes(nodes: list, outputs: set[str]) -> list:
    """Drop, repeatedly, the nodes none of whose outputs is read (a Shape feeding a folded Gather)."""
    while True:
        used = set(_read_names(nodes)) | outputs
        alive = [node for node in nodes if any(o in used for o in node.output)]
        if len(alive) == len(nodes):
            return alive
        nodes = alive
