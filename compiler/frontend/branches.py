"""Inline ONNX ``If`` nodes before TVM's importer sees them (TVM 0.27's Relax importer has no If).

Exporters branch on what is fixed once the input shapes are (``if x.shape[1] == 1:
squeeze``) and on input *values* (Silero VAD's ``if sr == 16000``). Each top-level ``If``
is resolved in one of three ways:

* its condition folds to a constant (:mod:`.fold`, the input shapes fixed): the branch it
  selects is spliced into the graph in its place;
* its condition depends on an input and both branches run on the fixed shapes: both are
  spliced and every output is ``Where(cond, then, else)`` (the outputs must agree in shape
  and dtype);
* its condition depends on an input and only one branch runs on the fixed shapes (the
  other fails shape inference once its own constant conditions are resolved): that
  branch is spliced alone and a warning says why.

A spliced branch keeps its tensor names where they are unique in the model (so reports
speak the exporter's names) and gets a suffix where they clash; its references to the
outer scope stay as they are; its nested ``If``\\ s come to the top level and are resolved
in the next round, after folding, which may have made their conditions constant.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import TvmqError
from .fold import fold_constants
from .shapes import check_inferred_shapes, infer_shapes

logger = logging.getLogger(__name__)

MAX_ROUNDS = 256  # more rounds than any real model has nested Ifs: a cycle would be a bug
BRANCHES = ("then_branch", "else_branch")


class BranchError(TvmqError):
    """No branch of an If runs on the fixed shapes; ``cause`` is the innermost error (a nested If's
    reason, not the whole chain of Ifs above it)."""

    def __init__(self, message: str, cause: str):
        super().__init__(message)
        self.cause = cause


def has_branches(model: onnx.ModelProto) -> bool:
    """Whether the graph holds an ``If`` (whose branches strict shape inference may refuse)."""
    return any(node.op_type == "If" for node in model.graph.node)


def inline_branches(model: onnx.ModelProto, free_batch: bool = False) -> onnx.ModelProto:
    """``model`` folded, with every ``If`` inlined.

    While an ``If`` is left, shapes are inferred leniently (a branch that cannot run on the fixed
    shapes must not stop the rest); the caller infers the If-free result strictly.
    """
    model = fold_constants(model, free_batch)
    for _ in range(MAX_ROUNDS):
        branches = [node for node in model.graph.node if node.op_type == "If"]
        if not branches:
            return model
        constants = {init.name: init for init in model.graph.initializer}
        chosen = {node.output[0]: _constant_condition(node, constants) for node in branches}
        if any(value is not None for value in chosen.values()):
            model = _splice_constant(model, chosen)
        else:
            model = _resolve_input_dependent(model, branches[0], free_batch)
        model = fold_constants(infer_shapes(model, strict=False), free_batch)
    raise TvmqError(f"inlining If nodes did not finish after {MAX_ROUNDS} rounds")


def _constant_condition(node: onnx.NodeProto, constants: dict) -> bool | None:
    if node.input[0] not in constants:
        return None
    value = numpy_helper.to_array(constants[node.input[0]])
    if value.size != 1:
        raise TvmqError(f"If node {node.name!r} has a condition of {value.size} elements; ONNX takes one")
    return bool(value.reshape(-1)[0])


def _splice_constant(model: onnx.ModelProto, chosen: dict[str, bool | None]) -> onnx.ModelProto:
    """Every If whose condition is constant replaced by the branch it selects."""
    out = _copy(model)
    taken = _names_outside(out.graph, lambda n: n.op_type == "If" and chosen.get(n.output[0]) is not None)
    nodes, inits = [], []
    for node in out.graph.node:
        value = chosen.get(node.output[0]) if node.op_type == "If" else None
        if value is None:
            nodes.append(node)
            continue
        branch = _branch(node, "then_branch" if value else "else_branch")
        logger.debug("If %r: condition is constant (%s); inlining its %s", node.name, value,
                     "then_branch" if value else "else_branch")
        spliced, new_inits, _ = _splice(branch, taken, list(node.output))
        nodes += spliced
        inits += new_inits
    return _with_nodes(out, nodes, inits)


def _resolve_input_dependent(model: onnx.ModelProto, node: onnx.NodeProto, free_batch: bool) -> onnx.ModelProto:
    """``node`` (its condition computed from the inputs) as both branches and ``Where``, or as the one
    branch that runs on the fixed shapes."""
    name = node.name or node.output[0]
    resolved, shapes, failures = {}, {}, {}
    for which in BRANCHES:
        try:
            resolved[which] = _resolved(_only(model, node, which), free_batch)
            shapes[which] = _output_types(resolved[which], node)
        except TvmqError as err:
            failures[which] = getattr(err, "cause", str(err))
    if not shapes:
        then, other = failures["then_branch"], failures["else_branch"]
        why = then if then == other else f"then: {then}; else: {other}"
        raise BranchError(f"If node {name!r}: neither branch runs on the fixed input shapes ({why})", then)
    if len(shapes) == 1:
        (which,), (other,) = shapes, failures
        logger.warning("If node %r: its condition depends on the inputs, but only its %s runs on the fixed "
                       "input shapes (the %s fails: %s); compiling the %s alone", name, which, other,
                       failures[other], which)
        return resolved[which]
    if shapes["then_branch"] != shapes["else_branch"]:
        raise TvmqError(f"If node {name!r}: its condition depends on the inputs and its branches give outputs "
                        f"of different shapes or types ({_describe(shapes['then_branch'])} vs "
                        f"{_describe(shapes['else_branch'])}); fix the inputs that decide it")
    logger.info("If node %r: its condition depends on the inputs; computing both branches and selecting "
                "with Where", name)
    return _both(model, node)


def _only(model: onnx.ModelProto, node: onnx.NodeProto, which: str) -> onnx.ModelProto:
    """``model`` with ``node`` replaced by its branch ``which``."""
    out = _copy(model)
    taken = _names_outside(out.graph, lambda n: _same_node(n, node))
    nodes, inits = [], []
    for n in out.graph.node:
        if _same_node(n, node):
            branch = _branch(n, which)
            spliced, new_inits, _ = _splice(branch, taken, list(n.output))
            nodes += spliced
            inits += new_inits
        else:
            nodes.append(n)
    return _with_nodes(out, nodes, inits)


def _both(model: onnx.ModelProto, node: onnx.NodeProto) -> onnx.ModelProto:
    """``model`` with ``node`` replaced by both branches and one ``Where`` per output."""
    out = _copy(model)
    taken = _names_outside(out.graph, lambda n: _same_node(n, node))
    nodes, inits = [], []
    for n in out.graph.node:
        if not _same_node(n, node):
            nodes.append(n)
            continue
        results = {}
        for which in BRANCHES:
            spliced, new_inits, results[which] = _splice(_branch(n, which), taken, None)
            nodes += spliced
            inits += new_inits
        cond = _scalar_condition(n, taken, nodes, inits)
        base = n.name or n.output[0]
        nodes += [helper.make_node("Where", [cond, then, other], [y], name=f"{base}/select_{k}")
                  for k, (then, other, y) in enumerate(zip(results["then_branch"], results["else_branch"], n.output))]
    return _with_nodes(out, nodes, inits)


def _scalar_condition(node: onnx.NodeProto, taken: set, nodes: list, inits: list) -> str:
    """The If's condition as a 0-d bool (it may be ``[1]``), so ``Where`` keeps the outputs' shapes."""
    cond = node.input[0]
    shape = _unique(f"{node.name or node.output[0]}/scalar_shape", taken)
    scalar = _unique(f"{cond}/scalar", taken)
    inits.append(numpy_helper.from_array(np.zeros(0, np.int64), shape))
    nodes.append(helper.make_node("Reshape", [cond, shape], [scalar], name=f"{node.name or cond}/scalar_condition"))
    return scalar


def _resolved(model: onnx.ModelProto, free_batch: bool) -> onnx.ModelProto:
    """``model`` (one branch of an If spliced) with its other Ifs inlined, strictly shape-inferred;
    TvmqError if it does not run on the fixed shapes."""
    resolved = infer_shapes(inline_branches(infer_shapes(model, strict=False), free_batch))
    check_inferred_shapes(resolved)
    return resolved


def _output_types(model: onnx.ModelProto, node: onnx.NodeProto) -> list[tuple]:
    """``(elem type, dims)`` of the If's outputs in the resolved ``model`` (folded ones included)."""
    values = {v.name: (v.type.tensor_type.elem_type, tuple(d.dim_value if d.HasField("dim_value") else d.dim_param
                                                          for d in v.type.tensor_type.shape.dim))
              for v in list(model.graph.value_info) + list(model.graph.output)}
    values.update({init.name: (init.data_type, tuple(init.dims)) for init in model.graph.initializer})
    missing = [name for name in node.output if name not in values]
    if missing:
        raise TvmqError(f"shape inference gives no type for {missing[0]!r}")
    return [values[name] for name in node.output]


def _describe(types: list[tuple]) -> str:
    return ", ".join(f"{helper.tensor_dtype_to_np_dtype(t).name} {tuple(s)}" for t, s in types)


def _splice(branch: onnx.GraphProto, taken: set, targets: list[str] | None):
    """The branch's nodes and initializers renamed apart from ``taken`` (which grows), and the names of
    its outputs in the new graph.

    ``targets``: the names its outputs must have (the If's outputs), or None. An output that the
    branch's own nodes compute, listed once, is renamed to its target; anything else (an
    initializer, a tensor listed as two outputs) is copied to it with ``Identity``.
    """
    produced = _produced(branch)
    listed = [value.name for value in branch.output]
    top = {o for n in branch.node for o in n.output if o}
    rename = {}
    for name, target in zip(listed, targets or []):
        if name in top and listed.count(name) == 1:
            rename[name] = target
            taken.add(target)
    for name in sorted(produced - set(rename)):
        rename[name] = name if name not in taken else _unique(name, taken)
        taken.add(rename[name])
    nodes = [_renamed_node(n, rename) for n in branch.node]
    inits = []
    for init in branch.initializer:
        copy = onnx.TensorProto()
        copy.CopyFrom(init)
        copy.name = rename[init.name]
        inits.append(copy)
    results = [rename.get(name, name) for name in listed]
    for result, target in zip(results, targets or []):
        if result != target:
            nodes.append(helper.make_node("Identity", [result], [target], name=f"{target}/branch_output"))
    return nodes, inits, results


def _renamed_node(node: onnx.NodeProto, rename: dict[str, str]) -> onnx.NodeProto:
    out = onnx.NodeProto()
    out.CopyFrom(node)
    _rename_node(out, rename)
    return out


def _rename_node(node: onnx.NodeProto, rename: dict[str, str]) -> None:
    """Rename ``node``'s inputs and outputs, and every name in its subgraphs, in place."""
    for i, name in enumerate(node.input):
        node.input[i] = rename.get(name, name)
    for i, name in enumerate(node.output):
        node.output[i] = rename.get(name, name)
    for attr in node.attribute:
        for graph in _subgraphs(attr):
            _rename_graph(graph, rename)


def _rename_graph(graph: onnx.GraphProto, rename: dict[str, str]) -> None:
    for node in graph.node:
        _rename_node(node, rename)
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        value.name = rename.get(value.name, value.name)
    for init in graph.initializer:
        init.name = rename.get(init.name, init.name)


def _produced(graph: onnx.GraphProto) -> set[str]:
    """Every name a graph defines, its nested subgraphs included: node outputs, initializers, inputs."""
    names = {init.name for init in graph.initializer} | {value.name for value in graph.input}
    for node in graph.node:
        names.update(o for o in node.output if o)
        for attr in node.attribute:
            for sub in _subgraphs(attr):
                names |= _produced(sub)
    return names


def _all_names(graph: onnx.GraphProto) -> set[str]:
    """Every tensor name used anywhere in ``graph`` (read or defined, subgraphs included)."""
    names = _produced(graph) | {value.name for value in graph.output}
    for node in graph.node:
        names.update(i for i in node.input if i)
        for attr in node.attribute:
            for sub in _subgraphs(attr):
                names |= _all_names(sub)
    return names


def _names_outside(graph: onnx.GraphProto, removed) -> set[str]:
    """Every name used in ``graph`` but inside the subgraphs of the nodes ``removed(node)`` picks
    (their own inputs and outputs count)."""
    names = {init.name for init in graph.initializer} | {v.name for v in list(graph.input) + list(graph.output)}
    for node in graph.node:
        names.update(n for n in list(node.input) + list(node.output) if n)
        if not removed(node):
            for attr in node.attribute:
                for sub in _subgraphs(attr):
                    names |= _all_names(sub)
    return names


def _subgraphs(attr: onnx.AttributeProto) -> list[onnx.GraphProto]:
    return ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)


def _branch(node: onnx.NodeProto, which: str) -> onnx.GraphProto:
    for attr in node.attribute:
        if attr.name == which:
            if attr.g.sparse_initializer:
                raise TvmqError(f"If node {node.name!r}: sparse initializers in its {which} are not supported")
            return attr.g
    raise TvmqError(f"If node {node.name!r} has no {which}")


def _same_node(a: onnx.NodeProto, b: onnx.NodeProto) -> bool:
    return a.op_type == b.op_type and list(a.output) == list(b.output)


def _unique(name: str, taken: set) -> str:
    n = 1
    while f"{name}__{n}" in taken:
        n += 1
    return f"{name}__{n}"


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _with_nodes(model: onnx.ModelProto, nodes: list, inits: list) -> onnx.ModelProto:
    """``model`` (a copy, changed in place) with ``nodes`` and its initializers plus ``inits``."""
    graph = model.graph
    del graph.node[:], graph.value_info[:]
    graph.node.extend(nodes)
    graph.initializer.extend(inits)
    return model
