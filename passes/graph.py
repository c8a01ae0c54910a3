"""Small read-only helpers over a Relax ``main`` function: bindings, uses, constants, notes.

Layers (a conv2d / matmul with a constant weight, its bias and clamp) are in
:mod:`tvmq.passes.layers`; :func:`find_layers` is kept here for its callers.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import tvm
from tvm import ir, relax


PASSES_ATTR = "tvmq.passes"
BN_STATS_ATTR = "tvmq.batchnorm_stats"  # {tensor: {"mean": [...], "std": [...]}} of folded BatchNorms


def with_main(mod: tvm.IRModule, main: relax.Function) -> tvm.IRModule:
    """A copy of ``mod`` whose ``main`` is ``main``; every other function (e.g. the TIR
    functions TVM's importer emits for some ops) and the module attributes are kept."""
    functions = {gv: func for gv, func in mod.functions.items() if gv.name_hint != "main"}
    functions[mod.get_global_var("main")] = main
    return tvm.IRModule(functions, attrs=mod.attrs)


def dataflow_bindings(func: relax.Function) -> list:
    """The bindings of the function's dataflow blocks, in order."""
    return [b for block in func.body.blocks for b in block.bindings]


def referenced_vars(expr) -> list:
    """Variables read directly by ``expr`` (call arguments, tuple fields, aliases)."""
    if isinstance(expr, relax.Var):
        return [expr]
    if isinstance(expr, relax.Call):
        return [v for arg in expr.args for v in referenced_vars(arg)]
    if isinstance(expr, relax.Tuple):
        return [v for field in expr.fields for v in referenced_vars(field)]
    if isinstance(expr, relax.TupleGetItem):
        return referenced_vars(expr.tuple_value)
    return []


def use_counts(func: relax.Function) -> Counter:
    counts = Counter(v for b in dataflow_bindings(func) for v in referenced_vars(b.value))
    counts.update(referenced_vars(func.body.body))
    return counts


def constant_value(expr) -> np.ndarray | None:
    """A tensor constant's value (None for anything else: TVM 0.27's scalar immediates, such as a
    PrimValue's FloatImm, are ``Constant`` too, their ``value`` a Python number)."""
    value = expr.value if isinstance(expr, ir.expr.Constant) else None
    return value.numpy() if hasattr(value, "numpy") else None


def op_name(expr) -> str | None:
    """``"relax.nn.conv2d"`` for a call of that operator; None for anything else."""
    return expr.op.name if isinstance(expr, relax.Call) and isinstance(expr.op, ir.Op) else None


OPAQUE = 8  # TIR op pattern kOpaque


def tir_op_pattern(prim_func) -> int:
    """A PrimFunc's TIR op pattern (``AnnotateTIROpPattern``'s ``op_pattern``: 0 elementwise,
    1 broadcast, 2 injective, 3 reduction, 4 a conv's out-elementwise-fusable; opaque if absent)."""
    attrs = prim_func.attrs
    return int(attrs["op_pattern"]) if attrs is not None and "op_pattern" in attrs else OPAQUE


def prim_float(value) -> float:
    """The Python float inside a Relax ``PrimValue`` argument (clip bounds)."""
    return float(value.value)


def find_layers(func: relax.Function) -> dict:
    """Map the first variable of every quantizable chain to its layer (:func:`tvmq.passes.layers.find_layers`)."""
    from .layers import find_layers as find

    return find(func)


def __getattr__(name: str):
    if name == "Layer":  # moved to tvmq.passes.layers; kept importable from here
        from .layers import Layer

        return Layer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def append_note(func: relax.Function, note: dict) -> relax.Function:
    """Record a pass's summary in the function's ``tvmq.passes`` attribute."""
    notes = json.loads(str(func.attrs[PASSES_ATTR])) if func.attrs and PASSES_ATTR in func.attrs else []
    return func.with_attr(PASSES_ATTR, json.dumps(notes + [note]))


def pass_notes(mod) -> list[dict]:
    """The summaries the passes appended to ``main``'s ``tvmq.passes`` attribute."""
    attrs = mod["main"].attrs
    return json.loads(str(attrs[PASSES_ATTR])) if attrs and PASSES_ATTR in attrs else []


def batchnorm_stats(func: relax.Function) -> dict:
    """Per-channel output mean / std of the BatchNorms folded into ``func``'s layers."""
    attrs = func.attrs
    stats = json.loads(str(attrs[BN_STATS_ATTR])) if attrs and BN_STATS_ATTR in attrs else {}
    return {name: {k: np.asarray(v, np.float32) for k, v in entry.items()} for name, entry in stats.items()}


def with_batchnorm_stats(func: relax.Function, stats: dict) -> relax.Function:
    return func.with_attr(BN_STATS_ATTR, json.dumps({n: {k: np.asarray(v).tolist() for k, v in e.items()}
                                                     for n, e in stats.items()}))
