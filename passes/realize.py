"""Realize: rewrite the calibrated fp32 module into real integer compute.

Every conv2d / dense chain (see :func:`tvmq.passes.layers.find_layers`) becomes

    acc  = conv2d(x_q, w_q, out_dtype=int32) + bias_q          # int8 x int8 -> int32
    y_q  = clip(round(float(acc) * M) + z_out, lo_q, hi_q)      # fused requantize + ReLU/Clip

with ``w_q`` symmetric int8 in ``[-weight_qmax, weight_qmax]`` (per channel or per tensor),
``bias_q`` int32 at scale ``s_in * s_w`` with the input zero point folded in, and
``M = s_in * s_w / s_out`` in fp32.
A layer whose result leaves the function is dequantized straight from the accumulator.

What each op becomes is a rule of its own (``tvmq.passes.rules``: conv, matmul, elementwise,
pool, layout), looked up by op name; what each layer gets (precision, weight parameters, bias
shift) and each tensor's parameters come from a :class:`~tvmq.passes.plan.QuantPlan`. An op
without a rule, or whose rule declines, runs in fp32 behind dequantize / quantize edges, which
are emitted lazily, only where a consumer needs the other domain.

The pass records, per ONNX tensor, its precision and quantization parameters, and for each
quantized tensor the tensor whose calibrated range set its parameters (``range_of``: a pool
or reshape inherits its input's), as JSON in the function attribute ``tvmq.quantization``.
"""

from __future__ import annotations

import json

import tvm
from tvm import relax

from .graph import dataflow_bindings, op_name, referenced_vars, with_main
from .layers import find_layers
from .plan import LATENCY_FALLBACK, QuantPlan, Scheme, layer_weight_qparams, plan_quantization
from .qparams import QParams
from .rules import rule_for
from .rules.common import const

__all__ = ["RECORD_ATTR", "Realize", "RealizePlan", "Scheme", "layer_weight_qparams", "quantization_record"]

RECORD_ATTR = "tvmq.quantization"


@tvm.transform.module_pass(opt_level=0, name="tvmq.RealizePlan")
class RealizePlan:
    """Rewrite ``main`` into integer compute as ``plan`` says.

    With ``expose`` the function also returns the fp32 value (dequantized where needed) of
    every tensor the plan has parameters for, in sorted name order, for per-layer error analysis.
    Layers the plan keeps fp32 for the latency fallback are listed in the record's ``kept_fp32``
    (each of their variables -> the layer's output name).
    """

    def __init__(self, plan: QuantPlan, expose: bool = False):
        self.plan, self.expose = plan, expose

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        func, record = Context(mod["main"], self.plan).run(self.expose)
        return with_main(mod, func.with_attr(RECORD_ATTR, json.dumps(record)))


@tvm.transform.module_pass(opt_level=0, name="tvmq.Realize")
class Realize:
    """Plan (:func:`~tvmq.passes.plan.plan_quantization`) from per-tensor ranges ``stats``
    (name -> (lo, hi)) and carry the plan out (:class:`RealizePlan`).

    ``weight_scales`` (layer output name -> per-channel scales) overrides the absmax weight
    scales of those layers, as EasyQuant's search chooses them; ``bias_shifts`` (layer output
    name -> per-channel values) is subtracted from their biases, as bias correction finds.
    Layers whose output name is in ``keep_fp32`` stay fp32 (the latency fallback's choice);
    ``overrides`` / ``aliases`` are the user's per-layer precisions and the names they match;
    ``weight_integers`` (layer output -> int8 weights, AdaRound's) replace nearest rounding and
    ``weight_ranges`` (name or glob -> ``weight_qmax``) sets layers' weight ranges.
    """

    def __init__(self, stats: dict, scheme: Scheme, expose: bool = False, weight_scales: dict | None = None,
                 bias_shifts: dict | None = None, keep_fp32=(), overrides: dict | None = None,
                 aliases: dict | None = None, weight_integers: dict | None = None, weight_ranges: dict | None = None):
        self.stats, self.scheme, self.expose = stats, scheme, expose
        self.weight_scales, self.bias_shifts, self.keep_fp32 = weight_scales, bias_shifts, tuple(keep_fp32)
        self.overrides, self.aliases = overrides, aliases
        self.weight_integers, self.weight_ranges = weight_integers, weight_ranges

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        plan = plan_quantization(mod["main"], self.stats, self.scheme, self.weight_scales, self.bias_shifts,
                                 self.overrides, self.aliases, self.weight_integers, self.weight_ranges)
        plan = plan.with_precision(self.keep_fp32, "fp32", LATENCY_FALLBACK)
        return RealizePlan(plan, self.expose)(mod)


def quantization_record(mod: tvm.IRModule) -> dict:
    """The per-tensor precision and parameters that :class:`RealizePlan` stored in ``mod``."""
    return json.loads(str(mod["main"].attrs[RECORD_ATTR]))


class Context:
    """Realize's state, handed to every rule: the fp32 (``fp``) and quantized (``q``: var ->
    (expr, QParams)) twin of each variable so far, the builder, the layers, the plan and the record."""

    def __init__(self, func: relax.Function, plan: QuantPlan):
        self.func, self.plan = func, plan
        self.layers = find_layers(func)
        self.absorbed = {v for layer in self.layers.values() for v in layer.chain[1:]}
        self.inner = {v for layer in self.layers.values() for v in layer.chain[:-1]}  # no value of their own
        self.outputs = _returned_vars(func)
        self.bindings = {b.var: b for b in dataflow_bindings(func)}
        self.readers = {}  # var -> the ops that read it
        for binding in dataflow_bindings(func):
            for read in referenced_vars(binding.value):
                self.readers.setdefault(read, []).append(op_name(binding.value))
        self.fp, self.q = {}, {}
        self.roots = {}  # id(QParams) -> the tensor whose calibrated range made them
        self.record = {"precision": {}, "activations": {}, "weights": {}, "fused_into": {},
                       "kept_fp32": {}}
        self.builder = relax.BlockBuilder()

    # ---- driver -------------------------------------------------------------------------
    def run(self, expose: bool):
        for param in self.func.params:
            self.fp[param] = param
        attrs = dict(self.func.attrs) if self.func.attrs else None
        with self.builder.function("main", list(self.func.params), attrs=attrs):
            with self.builder.dataflow():
                for binding in dataflow_bindings(self.func):
                    self._visit(binding)
                result = self.to_fp(self.func.body.body)
                if expose:
                    result = self._exposed(result)
                out = self.builder.emit_output(result)
            self.builder.emit_func_output(out)
        self.record["range_of"] = {var.name: self.roots[id(qp)] for var, (_, qp) in self.q.items()}
        return self.builder.get()["main"], self.record

    def _exposed(self, result):
        named = {b.var.name: b.var for b in dataflow_bindings(self.func)}
        named.update({p.name: p for p in self.func.params})
        exposed = [n for n in sorted(self.plan.activations) if n in named and named[n] not in self.inner]
        probes = [self.to_fp(named[n]) for n in exposed]
        self.record["exposed"] = exposed
        return relax.Tuple([result, *probes])

    def _visit(self, binding) -> None:
        var, value = binding.var, binding.value
        if var in self.absorbed:
            return
        rule = rule_for(op_name(value))
        if rule is not None and rule(self, var, value):
            self.record["precision"].setdefault(var.name, "int8")  # a rule may have marked it ("dynamic")
            return
        for chained in self.layers[var].chain if var in self.layers else [var]:
            self._emit_fp32(self.bindings[chained])

    def _emit_fp32(self, binding) -> None:
        var, value = binding.var, binding.value
        if isinstance(value, relax.Var):
            self.fp[var] = self.to_fp(value)
            if value in self.q:
                self.q[var] = self.q[value]
            return
        self.fp[var] = self.builder.emit(self._substitute(value), var.name)
        self.mark(var, "fp32")

    def _substitute(self, expr):
        if isinstance(expr, relax.Var):
            return self.to_fp(expr)
        if isinstance(expr, relax.Call):
            return relax.Call(expr.op, [self._substitute(a) for a in expr.args], expr.attrs, expr.ty_args)
        if isinstance(expr, relax.Tuple):
            return relax.Tuple([self._substitute(f) for f in expr.fields])
        if isinstance(expr, relax.TupleGetItem):
            return relax.TupleGetItem(self._substitute(expr.tuple_value), expr.index)
        return expr

    def has_int8_reader(self, var) -> bool:
        """Whether some op reading ``var`` has a rule (could take it quantized)."""
        return any(rule_for(op) is not None for op in self.readers.get(var, ()))

    def mark(self, var, precision: str) -> None:
        self.record["precision"][var.name] = precision

    # ---- domain crossings ---------------------------------------------------------------
    def to_fp(self, var):
        """The fp32 twin of ``var``, dequantizing it if it has only a quantized one."""
        if var not in self.fp:
            expr, qp = self.q[var]
            self.fp[var] = self.builder.emit(
                relax.op.dequantize(expr, const(qp.scale), const(qp.zero_point), out_dtype="float32"),
                f"{var.name}_dq")
        return self.fp[var]

    def to_q(self, var):
        """The quantized twin of ``var``, quantizing it from its planned parameters if needed."""
        if var in self.q:
            return self.q[var]
        qp = self.activation_qparams(var)
        if qp is None:
            return None
        expr = self.builder.emit(
            relax.op.quantize(self.to_fp(var), const(qp.scale), const(qp.zero_point),
                              out_dtype=qp.dtype), f"{var.name}_q")
        self.q[var] = (expr, qp)
        return self.q[var]

    def activation_qparams(self, var) -> QParams | None:
        """The plan's parameters for ``var`` (None: it has no calibrated range)."""
        qp = self.plan.activations.get(var.name)
        if qp is None:
            return None
        self.record["activations"][var.name] = qp.to_json()
        self.roots[id(qp)] = var.name
        return qp


def _returned_vars(func: relax.Function) -> set:
    """Variables whose value leaves the function, following aliases and tuples."""
    values = {b.var: b.value for b in dataflow_bindings(func)}
    pending, returned = referenced_vars(func.body.body), set()
    while pending:
        var = pending.pop()
        if var not in returned:
            returned.add(var)
            if isinstance(values.get(var), (relax.Var, relax.Tuple)):
                pending.extend(referenced_vars(values[var]))
    return returned
