"""Small read-only helpers over a Relax ``main`` function: bindings, uses, constants, layers.

A *layer* is what realize turns into one integer kernel: a conv2d or matmul with a constant
weight, optionally followed by a constant bias add and a clamp (ReLU, ReLU6, Clip), each
intermediate used exactly once.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import ir, relax


PASSES_ATTR = "tvmq.passes"
BN_STATS_ATTR = "tvmq.batchnorm_stats"  # {tensor: {"mean": [...], "std": [...]}} of folded BatchNorms


@dataclass
class Layer:
    """One quantizable conv2d/dense chain; ``out`` is the variable its result ends in."""

    kind: str  # "conv2d" or "dense"
    call: relax.Call
    data: relax.Var
    weight: np.ndarray  # OIHW for conv2d, (K, N) for dense
    bias: np.ndarray | None
    clamp: tuple[float, float]
    chain: list  # the variables of the chain, first to last
    channel_axis: int  # axis of ``weight`` that indexes output channels

    @property
    def out(self) -> relax.Var:
        return self.chain[-1]


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
    """Map the first variable of every quantizable chain to its :class:`Layer`."""
    bindings = dataflow_bindings(func)
    uses = use_counts(func)
    consumer = {}
    for binding in bindings:
        for var in referenced_vars(binding.value):
            consumer.setdefault(var, binding)
    layers = {}
    for binding in bindings:
        layer = _start_layer(binding)
        if layer is None:
            continue
        _extend_with_bias(layer, consumer, uses)
        _extend_with_clamp(layer, consumer, uses)
        layers[layer.chain[0]] = layer
    return layers


def _start_layer(binding) -> Layer | None:
    call = binding.value
    name = op_name(call)
    if name == "relax.nn.conv2d":
        weight = constant_value(call.args[1])
        attrs = call.attrs
        if weight is None or attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW":
            return None
        return Layer("conv2d", call, call.args[0], weight, None, (-np.inf, np.inf), [binding.var], 0)
    if name == "relax.matmul":
        weight = constant_value(call.args[1])
        if weight is None or weight.ndim != 2 or len(call.args[0].ty.shape) != 2:
            return None
        return Layer("dense", call, call.args[0], weight, None, (-np.inf, np.inf), [binding.var], 1)
    return None


def _single_consumer(var, consumer, uses):
    return consumer.get(var) if uses[var] == 1 else None


def _extend_with_bias(layer: Layer, consumer, uses) -> None:
    binding = _single_consumer(layer.out, consumer, uses)
    if binding is None or op_name(binding.value) != "relax.add":
        return
    args = binding.value.args
    other = args[1] if args[0].same_as(layer.out) else args[0]
    bias = constant_value(other)
    channels = layer.weight.shape[layer.channel_axis]
    if bias is None or bias.size != channels or _channel_axis_of(bias, layer) is None:
        return
    layer.bias = bias.reshape(-1).astype(np.float32)
    layer.chain.append(binding.var)


def _channel_axis_of(bias: np.ndarray, layer: Layer) -> int | None:
    """The axis along which ``bias`` varies, if it broadcasts per output channel."""
    out_ndim = len(layer.out.ty.shape)
    channel_axis = 1 if layer.kind == "conv2d" else out_ndim - 1
    padded = (1,) * (out_ndim - bias.ndim) + bias.shape
    non_unit = [i for i, d in enumerate(padded) if d != 1]
    return channel_axis if non_unit in ([channel_axis], []) else None


def _extend_with_clamp(layer: Layer, consumer, uses) -> None:
    """Absorb relu / maximum(x, c) / minimum(x, c) into the layer's output clamp."""
    lo, hi = layer.clamp
    while (binding := _single_consumer(layer.out, consumer, uses)) is not None:
        name = op_name(binding.value)
        args = binding.value.args if name else []
        if name == "relax.nn.relu":
            lo = max(lo, 0.0)
        elif name == "relax.clip":
            lo, hi = max(lo, prim_float(args[1])), min(hi, prim_float(args[2]))
        elif name in ("relax.maximum", "relax.minimum") and args[0].same_as(layer.out):
            bound = constant_value(args[1])
            if bound is None or bound.size != 1:
                break
            lo, hi = (max(lo, float(bound)), hi) if name == "relax.maximum" else (lo, min(hi, float(bound)))
        else:
            break
        layer.chain.append(binding.var)
    layer.clamp = (lo, hi)


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
