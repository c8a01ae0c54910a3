"""SimulateQuantization: fake quantization (quantize-dequantize in fp32) from a plan, for analysis.

AIMET's QuantSim as a Relax pass: the fp32 module with every quantizer of the plan inserted as

    fq(x) = (clip(round(x / s) + z, q_lo, q_hi) - z) * s          # all in fp32

on each weight of a layer planned int8 (folded into the constant at compile time, per channel
or per tensor as planned, bias shift subtracted from the bias) and on each activation that the
realized int8 module quantizes (the tensors its record lists under ``activations``). Per side
switches (``weights`` / ``activations``) and bit widths (``weight_bits`` / ``activation_bits``,
AIMET's ``default_param_bw`` / ``default_output_bw``) ask which side hurts and whether wider
quantizers recover the accuracy. At 8 bits the parameters are the plan's own; at ``b`` bits an
activation's come from its calibrated range onto ``2^b`` levels and a weight's from absmax onto
``[-(2^(b-1) - 1), 2^(b-1) - 1]``.

Dynamic layers keep fp32 inputs here (their scales are the tensor's own at run time). With both
sides off the module is the fp32 one, binding for binding. The function attribute
``tvmq.simulation`` (JSON) lists the fake-quantized tensors. Each reader reads a tensor as the
realized module feeds it (see :class:`SimulateQuantization`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from .graph import constant_value, dataflow_bindings, with_main
from .layers import find_layers
from .plan import QuantPlan
from .rules.common import clamp
from .qparams import TINY_SCALE, QParams, activation_qparams, broadcastable, weight_scale

SIMULATION_ATTR = "tvmq.simulation"


@tvm.transform.module_pass(opt_level=0, name="tvmq.SimulateQuantization")
class SimulateQuantization:
    """Insert the plan's quantizers into ``main`` as fake quantization (see the module docstring).

    ``tensors``: the activations to fake-quantize; default, those the realized module quantizes
    (:class:`~tvmq.passes.realize.RealizePlan`'s record), each read as the realized module reads
    it: a tensor computed in int8 is fake-quantized for every reader, a tensor computed in fp32 and
    quantized after only for the readers computed in int8 (the others read its fp32 value, as a
    LayerNorm output feeds both a int8 matmul and an fp32 residual add). With explicit ``tensors``
    every reader reads the fake-quantized value. ``expose``: tensor names to return after the
    result, as ``(result, *tensors)``, each as an fp32 reader sees it.

    ``forced``: tensor names whose readers read a value given at run time instead of the one the
    simulation computes: ``main`` takes one more parameter per name, after the model's inputs and
    in this order, with that tensor's shape (teacher forcing). Fed the int8 module's own tensors,
    every simulated tensor differs from the module's only by what its own op computes, not by
    differences carried from upstream (which softmax or GELU amplify). Exposed values stay the
    simulation's own.
    """

    def __init__(self, plan: QuantPlan, weights: bool = True, activations: bool = True, weight_bits: int = 8,
                 activation_bits: int = 8, tensors=None, expose=(), forced=()):
        for bits in (weight_bits, activation_bits):
            if not 2 <= int(bits) <= 16:
                raise ValueError(f"simulated bit widths are 2 to 16, not {bits}")
        self.plan, self.weights, self.activations = plan, weights, activations
        self.weight_bits, self.activation_bits = int(weight_bits), int(activation_bits)
        self.tensors, self.expose, self.forced = tensors, list(expose), list(forced)

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        func = mod["main"]
        if self.tensors is None:
            tensors, int8_ops = realized(mod, self.plan)
        else:
            tensors, int8_ops = self.tensors, None
        acts = {name: self._activation(name) for name in tensors if name in self.plan.activations} \
            if self.activations else {}
        weights = self._weight_constants(func) if self.weights else {}
        main = _rewrite(func, acts, weights, self.expose, int8_ops, self.forced)
        record = {"weights": self.weights, "activations": self.activations, "weight_bits": self.weight_bits,
                  "activation_bits": self.activation_bits, "fake_quantized": sorted(acts),
                  "layers": sorted(name for _, _, name in weights.values())}
        return with_main(mod, main.with_attr(SIMULATION_ATTR, json.dumps(record)))

    def _activation(self, name: str) -> Quantizer:
        if self.activation_bits == 8:
            return Quantizer.of(self.plan.activations[name])
        lo, hi = self.plan.ranges[name]
        return activation_quantizer(lo, hi, self.plan.scheme.activation_dtype, self.activation_bits)

    def _weight_constants(self, func) -> dict:
        """First var of each int8 / dynamic layer -> (fake-quantized weight, (bias add var, shift) or None,
        layer name)."""
        out = {}
        for first, layer in find_layers(func).items():
            entry = self.plan.layers.get(layer.out.name)
            if entry is None or entry.precision == "fp32":
                continue
            quantizer = weight_quantizer(layer.weight, entry.weight, self.weight_bits)
            shifted = None if entry.bias_shift is None or layer.bias is None else \
                (layer.chain[1], np.asarray(entry.bias_shift, np.float32).reshape(-1))
            out[first] = (quantizer.apply(layer.weight), shifted, layer.out.name)
        return out


def simulation_record(mod: tvm.IRModule) -> dict:
    return json.loads(str(mod["main"].attrs[SIMULATION_ATTR]))


def realized(mod: tvm.IRModule, plan: QuantPlan) -> tuple[list[str], set]:
    """What the int8 module realized from ``plan`` does: the tensors it quantizes with their own
    parameters, and the tensors it computes in int8."""
    from .realize import RealizePlan, quantization_record

    record = quantization_record(RealizePlan(plan)(mod))
    return sorted(record["activations"]), {name for name, p in record["precision"].items() if p == "int8"}


@dataclass(frozen=True)
class Quantizer:
    """One fake quantizer: ``fq(x) = (clip(round(x / scale) + zero_point, lo, hi) - zero_point) * scale``
    (``scale`` / ``zero_point`` per channel along ``axis`` for a weight)."""

    scale: np.ndarray
    zero_point: np.ndarray
    lo: int
    hi: int
    axis: int | None = None

    @classmethod
    def of(cls, qp: QParams) -> Quantizer:
        return cls(np.asarray(qp.scale, np.float32), np.asarray(qp.zero_point), qp.qmin, qp.qmax, qp.axis)

    def apply(self, x: np.ndarray) -> np.ndarray:
        scale = broadcastable(self.scale, self.axis, x.ndim)
        zero = broadcastable(self.zero_point, self.axis, x.ndim).astype(np.float32)
        return ((np.clip(np.round(x / scale) + zero, self.lo, self.hi) - zero) * scale).astype(np.float32)


def activation_quantizer(lo: float, hi: float, dtype: str, bits: int) -> Quantizer:
    """``activation_qparams`` on ``2^bits`` levels: asymmetric (uint8 schemes) ``s = (hi - lo) / (2^b - 1)``,
    ``z = round(-lo / s)`` on ``[0, 2^b - 1]``; symmetric (int8) ``s = max|.| / (2^(b-1) - 1)``, ``z = 0``
    on ``[-2^(b-1), 2^(b-1) - 1]``. At 8 bits exactly the plan's parameters."""
    if bits == 8:
        return Quantizer.of(activation_qparams(lo, hi, dtype))
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if dtype == "uint8":
        levels = 2 ** bits - 1
        scale = max((hi - lo) / levels, TINY_SCALE)
        return Quantizer(np.float32(scale), np.clip(np.round(-lo / scale), 0, levels), 0, levels)
    scale = max(max(-lo, hi) / (2 ** (bits - 1) - 1), TINY_SCALE)
    return Quantizer(np.float32(scale), np.float32(0), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


def weight_quantizer(weight: np.ndarray, planned: QParams, bits: int) -> Quantizer:
    """The plan's weight parameters at 8 bits; absmax onto ``[-(2^(b-1) - 1), 2^(b-1) - 1]`` at ``b``."""
    if bits == 8:
        return Quantizer.of(planned)
    qmax = 2 ** (bits - 1) - 1
    return Quantizer(weight_scale(weight, planned.axis, qmax), np.zeros(1, np.float32), -qmax, qmax, planned.axis)


def _rewrite(func: relax.Function, acts: dict, weights: dict, expose: list, int8_ops: set | None,
             forced: list = ()) -> relax.Function:
    """Re-emit ``func``'s bindings with fake-quantized weights and activations; ``int8_ops``: the
    tensors computed in int8 (None: every reader reads the fake-quantized values); ``forced``: the
    tensors read from extra parameters (see :class:`SimulateQuantization`)."""
    builder, computed, fq, own, own_fq = relax.BlockBuilder(), {}, {}, {}, {}
    shifts = dict(shifted for _, shifted, _ in weights.values() if shifted is not None)
    given = _forced_params(func, forced)

    def read_by(reader: str | None):
        return _Reads(computed, fq, int8_ops is None or reader in int8_ops, int8_ops or set())

    def bind(var, value):
        """``var``'s value as the simulation computes it, and what its readers read."""
        own[var], computed[var] = value, given.get(var.name, value)
        if var.name in acts:
            fq[var] = _emit_fake_quant(builder, computed[var], acts[var.name])
            own_fq[var] = fq[var] if var.name not in given else _emit_fake_quant(builder, value, acts[var.name])

    attrs = dict(func.attrs) if func.attrs else None
    with builder.function("main", list(func.params) + list(given.values()), attrs=attrs):
        with builder.dataflow():
            for param in func.params:
                bind(param, param)
            for binding in dataflow_bindings(func):
                value = _substitute(binding.value, read_by(binding.var.name))
                if binding.var in weights:
                    value = _with_arg(value, 1, relax.const(weights[binding.var][0]))
                if binding.var in shifts:
                    value = _shift_bias(value, shifts[binding.var])
                bind(binding.var, value if isinstance(value, relax.Var) else builder.emit(value, binding.var.name))
            as_fp32 = read_by(None)
            result = _substitute(func.body.body, as_fp32)
            if expose:
                own_fp32 = _Reads(own, own_fq, False, int8_ops or set()) if given else as_fp32
                named = {var.name: own_fp32.get(var, var) for var in computed}
                result = relax.Tuple([result, *[named[n] for n in expose if n in named]])
            out = builder.emit_output(result)
        builder.emit_func_output(out)
    return builder.get()["main"]


def _forced_params(func: relax.Function, forced: list) -> dict:
    """One new parameter per forced tensor name, typed as the tensor: name -> var."""
    types = {var.name: var.ty for var in func.params}
    types.update({b.var.name: b.var.ty for b in dataflow_bindings(func)})
    missing = [name for name in forced if name not in types]
    if missing:
        raise ValueError(f"cannot force {missing[0]!r}: no such tensor in main")
    return {name: relax.Var(f"{name}_forced", types[name]) for name in forced}


class _Reads:
    """What one reader sees of each variable: its fake-quantized value when the reader is computed in
    int8 (``int8_reader``) or the variable is (``int8_ops``), else its value as computed."""

    def __init__(self, computed: dict, fq: dict, int8_reader: bool, int8_ops: set):
        self.computed, self.fq, self.int8_reader, self.int8_ops = computed, fq, int8_reader, int8_ops

    def get(self, var, default=None):
        if var in self.fq and (self.int8_reader or var.name in self.int8_ops):
            return self.fq[var]
        return self.computed.get(var, default)


def _emit_fake_quant(builder: relax.BlockBuilder, x, quantizer: Quantizer):
    """``(clip(round(x / s) + z, q_lo, q_hi) - z) * s`` in fp32 (a per-tensor activation quantizer)."""
    scale, zero = relax.const(np.float32(quantizer.scale)), relax.const(np.float32(quantizer.zero_point))
    level = relax.op.add(relax.op.round(relax.op.divide(x, scale)), zero)
    clipped = clamp(level, quantizer.lo, quantizer.hi)
    return builder.emit(relax.op.multiply(relax.op.subtract(clipped, zero), scale), f"{x.name}_fq")


def _substitute(expr, remap: dict):
    if isinstance(expr, relax.Var):
        return remap.get(expr, expr)
    if isinstance(expr, relax.Call):
        return relax.Call(expr.op, [_substitute(a, remap) for a in expr.args], expr.attrs, expr.ty_args)
    if isinstance(expr, relax.Tuple):
        return relax.Tuple([_substitute(f, remap) for f in expr.fields])
    if isinstance(expr, relax.TupleGetItem):
        return relax.TupleGetItem(_substitute(expr.tuple_value, remap), expr.index)
    return expr


def _with_arg(call: relax.Call, index: int, arg) -> relax.Call:
    args = list(call.args)
    args[index] = arg
    return relax.Call(call.op, args, call.attrs, call.ty_args)


def _shift_bias(call: relax.Call, shift: np.ndarray) -> relax.Call:
    """The layer's bias add with ``shift`` subtracted from its constant operand."""
    index = 1 if constant_value(call.args[1]) is not None else 0
    bias = constant_value(call.args[index])
    return _with_arg(call, index, relax.const((bias - shift.reshape(bias.shape)).astype(bias.dtype)))
