"""Realize: rewrite the calibrated fp32 module into real integer compute.

Every conv2d / dense chain (see :func:`tvmq.passes.graph.find_layers`) becomes

    acc  = conv2d(x_q, w_q, out_dtype=int32) + bias_q          # int8 x int8 -> int32
    y_q  = clip(round(float(acc) * M) + z_out, lo_q, hi_q)      # fused requantize + ReLU/Clip

with ``w_q`` symmetric int8 in ``[-weight_qmax, weight_qmax]`` (per channel or per tensor),
``bias_q`` int32 at scale ``s_in * s_w`` with the input zero point folded in, and
``M = s_in * s_w / s_out`` in fp32.
A layer whose result leaves the function is dequantized straight from the accumulator.

Max pooling, reshapes and ReLU run on the quantized values unchanged (they commute with
an affine quantizer); average pools round the mean of the quantized values; residual adds
and concatenations requantize their inputs onto the output's scale. Every
other op runs in fp32 behind dequantize / quantize edges, which are emitted lazily, only
where a consumer needs the other domain.

The pass records, per ONNX tensor, its precision and quantization parameters, and for each
quantized tensor the tensor whose calibrated range set its parameters (``range_of``: a pool
or reshape inherits its input's), as JSON in the function attribute ``tvmq.quantization``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from .graph import Layer, dataflow_bindings, find_layers, op_name, referenced_vars, with_main
from .qparams import (WEIGHT_QMAX, QParams, activation_qparams, fold_zero_point, quantize, quantize_bias,
                      requantize_multiplier, weight_qparams)

RECORD_ATTR = "tvmq.quantization"
LAYOUT_OPS = {"relax.nn.max_pool2d", "relax.reshape", "relax.permute_dims", "relax.squeeze",
              "relax.expand_dims", "relax.flatten"}


@dataclass(frozen=True)
class Scheme:
    """How to quantize: the activation dtype the target's int8 instructions want, weight granularity,
    and the weight range ``[-weight_qmax, weight_qmax]`` its kernels can take without overflow."""

    activation_dtype: str = "uint8"
    per_channel: bool = True
    weight_qmax: int = WEIGHT_QMAX


@tvm.transform.module_pass(opt_level=0, name="tvmq.Realize")
class Realize:
    """Rewrite ``main`` into integer compute from per-tensor ranges ``stats`` (name -> (lo, hi)).

    With ``expose`` the function also returns the fp32 value (dequantized where needed) of
    every tensor in ``stats``, in sorted name order, for per-layer error analysis.
    ``weight_scales`` (layer output name -> per-channel scales) overrides the absmax weight
    scales of those layers, as EasyQuant's search chooses them; ``bias_shifts`` (layer output
    name -> per-channel values) is subtracted from their biases, as bias correction finds.
    Layers whose output name is in ``keep_fp32`` stay fp32 (the latency fallback's choice);
    the record's ``kept_fp32`` maps each of their variables to the layer's output name.
    """

    def __init__(self, stats: dict, scheme: Scheme, expose: bool = False, weight_scales: dict | None = None,
                 bias_shifts: dict | None = None, keep_fp32=()):
        self.stats, self.scheme, self.expose = stats, scheme, expose
        self.weight_scales, self.bias_shifts = weight_scales or {}, bias_shifts or {}
        self.keep_fp32 = frozenset(keep_fp32)

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        realizer = _Realizer(mod["main"], self.stats, self.scheme, self.weight_scales, self.bias_shifts,
                             self.keep_fp32)
        func, record = realizer.run(self.expose)
        func = func.with_attr(RECORD_ATTR, json.dumps(record))
        return with_main(mod, func)


def quantization_record(mod: tvm.IRModule) -> dict:
    """The per-tensor precision and parameters that :class:`Realize` stored in ``mod``."""
    return json.loads(str(mod["main"].attrs[RECORD_ATTR]))


class _Realizer:
    def __init__(self, func: relax.Function, stats: dict, scheme: Scheme, weight_scales: dict, bias_shifts: dict,
                 keep_fp32: frozenset = frozenset()):
        self.func, self.stats, self.scheme = func, stats, scheme
        self.weight_scales, self.bias_shifts, self.keep_fp32 = weight_scales, bias_shifts, keep_fp32
        self.layers = find_layers(func)
        self.absorbed = {v for layer in self.layers.values() for v in layer.chain[1:]}
        self.inner = {v for layer in self.layers.values() for v in layer.chain[:-1]}  # no value of their own
        self.outputs = _returned_vars(func)
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
                result = self._to_fp(self.func.body.body)
                if expose:
                    named = {b.var.name: b.var for b in dataflow_bindings(self.func)}
                    named.update({p.name: p for p in self.func.params})
                    exposed = [n for n in sorted(self.stats) if n in named and named[n] not in self.inner]
                    probes = [self._to_fp(named[n]) for n in exposed]
                    self.record["exposed"] = exposed
                    result = relax.Tuple([result, *probes])
                out = self.builder.emit_output(result)
            self.builder.emit_func_output(out)
        self.record["range_of"] = {var.name: self.roots[id(qp)] for var, (_, qp) in self.q.items()}
        return self.builder.get()["main"], self.record

    def _visit(self, binding) -> None:
        var, value = binding.var, binding.value
        if var in self.absorbed:
            return
        if var in self.layers and self._realize_layer(self.layers[var]):
            return
        handler = {"relax.nn.relu": self._relu, "relax.add": self._add, "relax.concat": self._concat,
                   "relax.mean": self._average, "relax.nn.avg_pool2d": self._average}.get(op_name(value))
        if op_name(value) in LAYOUT_OPS:
            handler = self._layout
        if handler is not None and handler(var, value):
            self._mark(var, "int8")
            return
        if var in self.layers:
            for chained in self.layers[var].chain:
                self._emit_fp32(next(b for b in dataflow_bindings(self.func) if b.var.same_as(chained)))
            return
        self._emit_fp32(binding)

    def _emit_fp32(self, binding) -> None:
        var, value = binding.var, binding.value
        if isinstance(value, relax.Var):
            self.fp[var] = self._to_fp(value)
            if value in self.q:
                self.q[var] = self.q[value]
            return
        self.fp[var] = self.builder.emit(self._substitute(value), var.name)
        self._mark(var, "fp32")

    def _substitute(self, expr):
        if isinstance(expr, relax.Var):
            return self._to_fp(expr)
        if isinstance(expr, relax.Call):
            return relax.Call(expr.op, [self._substitute(a) for a in expr.args], expr.attrs, expr.ty_args)
        if isinstance(expr, relax.Tuple):
            return relax.Tuple([self._substitute(f) for f in expr.fields])
        if isinstance(expr, relax.TupleGetItem):
            return relax.TupleGetItem(self._substitute(expr.tuple_value), expr.index)
        return expr

    def _mark(self, var, precision: str) -> None:
        self.record["precision"][var.name] = precision

    # ---- domain crossings ---------------------------------------------------------------
    def _to_fp(self, var):
        if var not in self.fp:
            expr, qp = self.q[var]
            self.fp[var] = self.builder.emit(
                relax.op.dequantize(expr, _const(qp.scale), _const(qp.zero_point), out_dtype="float32"),
                f"{var.name}_dq")
        return self.fp[var]

    def _to_q(self, var):
        """The quantized twin of ``var``, quantizing it from its calibrated range if needed."""
        if var in self.q:
            return self.q[var]
        qp = self._activation_qparams(var)
        if qp is None:
            return None
        expr = self.builder.emit(
            relax.op.quantize(self._to_fp(var), _const(qp.scale), _const(qp.zero_point),
                              out_dtype=qp.dtype), f"{var.name}_q")
        self.q[var] = (expr, qp)
        return self.q[var]

    def _activation_qparams(self, var) -> QParams | None:
        if var.name not in self.stats:
            return None
        qp = activation_qparams(*self.stats[var.name], self.scheme.activation_dtype)
        self.record["activations"][var.name] = qp.to_json()
        self.roots[id(qp)] = var.name
        return qp

    # ---- integer layers -----------------------------------------------------------------
    def _realize_layer(self, layer: Layer) -> bool:
        if layer.out.name in self.keep_fp32:
            self.record["kept_fp32"].update({var.name: layer.out.name for var in layer.chain})
            return False
        out_qp = None if layer.out in self.outputs else self._activation_qparams(layer.out)
        if (layer.out not in self.outputs and out_qp is None) or self._to_q(layer.data) is None:
            return False
        x_q, x_qp = self._to_q(layer.data)
        w_qp = layer_weight_qparams(layer, self.scheme, self.weight_scales.get(layer.out.name))
        w_q = quantize(layer.weight, w_qp)
        channels = layer.weight.shape[layer.channel_axis]
        w_scale = np.broadcast_to(w_qp.scale, (channels,)).astype(np.float32)
        bias = layer.bias if layer.bias is not None else np.zeros(channels, np.float32)
        bias = bias - self.bias_shifts.get(layer.out.name, 0.0)
        bias_q = fold_zero_point(quantize_bias(bias, x_qp.scale, w_scale), w_q, int(x_qp.zero_point),
                                 layer.channel_axis)
        acc = self._integer_op(layer, x_q, x_qp, w_q)
        acc = self.builder.emit(relax.op.add(acc, _const(_per_channel(bias_q, layer))), f"{layer.out.name}_acc")
        self.record["weights"][layer.out.name] = w_qp.to_json()
        for var in layer.chain:
            self._mark(var, "int8")
            self.record["fused_into"][var.name] = layer.out.name
        if out_qp is None:
            self.fp[layer.out] = self._dequantize_accumulator(acc, layer, x_qp.scale * w_scale)
        else:
            self.q[layer.out] = (self._requantize(acc, layer, x_qp.scale, w_scale, out_qp), out_qp)
        return True

    def _integer_op(self, layer: Layer, x_q, x_qp: QParams, w_q: np.ndarray):
        name = f"{layer.out.name}_int"
        if layer.kind == "dense":
            return self.builder.emit(relax.op.matmul(x_q, _const(w_q), out_dtype="int32"), name)
        attrs = layer.call.attrs
        padding = [int(p) for p in attrs.padding]
        if int(x_qp.zero_point) != 0 and any(padding):
            top, left, bottom, right = padding
            x_q = self.builder.emit(relax.op.nn.pad(x_q, [0, 0, 0, 0, top, bottom, left, right],
                                                    pad_value=float(x_qp.zero_point)), f"{layer.out.name}_pad")
            padding = [0, 0, 0, 0]
        conv = relax.op.nn.conv2d(x_q, _const(w_q), strides=attrs.strides, padding=padding,
                                  dilation=attrs.dilation, groups=attrs.groups, out_dtype="int32")
        return self.builder.emit(conv, name)

    def _requantize(self, acc, layer: Layer, x_scale, w_scale: np.ndarray, out_qp: QParams):
        multiplier = requantize_multiplier(x_scale, w_scale, out_qp.scale)
        lo, hi = _clamp_range(layer.clamp, out_qp)
        scaled = relax.op.multiply(relax.op.astype(acc, "float32"), _const(_per_channel(multiplier, layer)))
        shifted = relax.op.add(relax.op.round(scaled), _const(np.float32(out_qp.zero_point)))
        clipped = _clamp(shifted, lo, hi)
        return self.builder.emit(relax.op.astype(clipped, out_qp.dtype), f"{layer.out.name}_q")

    def _dequantize_accumulator(self, acc, layer: Layer, acc_scale: np.ndarray):
        scaled = relax.op.multiply(relax.op.astype(acc, "float32"),
                                   _const(_per_channel(acc_scale.astype(np.float32), layer)))
        lo, hi = layer.clamp
        if np.isfinite(lo) or np.isfinite(hi):
            scaled = _clamp(scaled, max(lo, -3.4e38), min(hi, 3.4e38))
        return self.builder.emit(scaled, layer.out.name)

    # ---- ops that stay in the integer domain ----------------------------------------------
    def _layout(self, var, value) -> bool:
        source = value.args[0]
        if source not in self.q:
            return False
        expr, qp = self.q[source]
        self.q[var] = (self.builder.emit(relax.Call(value.op, [expr, *value.args[1:]], value.attrs,
                                                    value.ty_args), f"{var.name}_q"), qp)
        return True

    def _relu(self, var, value) -> bool:
        source = value.args[0]
        if source not in self.q:
            return False
        expr, qp = self.q[source]
        zero = relax.const(np.array(qp.zero_point).astype(qp.dtype))
        self.q[var] = (self.builder.emit(relax.op.maximum(expr, zero), f"{var.name}_q"), qp)
        return True

    def _add(self, var, value) -> bool:
        """Residual add of two quantized tensors: requantize both onto the output's scale."""
        a, b = value.args
        if not (isinstance(a, relax.Var) and isinstance(b, relax.Var)) or not (a in self.q or b in self.q):
            return False
        out_qp = self._activation_qparams(var) if var not in self.outputs else None
        if out_qp is None or self._to_q(a) is None or self._to_q(b) is None:
            return False
        total = relax.op.add(_rescaled(*self.q[a], out_qp), _rescaled(*self.q[b], out_qp))
        self.q[var] = (self._round_to(total, out_qp, var.name), out_qp)
        return True

    def _concat(self, var, value) -> bool:
        """Concatenate quantized tensors after requantizing each onto the output's scale."""
        fields = value.args[0].fields if isinstance(value.args[0], relax.Tuple) else []
        if not fields or not all(isinstance(f, relax.Var) for f in fields) or not any(f in self.q for f in fields):
            return False
        out_qp = self._activation_qparams(var) if var not in self.outputs else None
        if out_qp is None or any(self._to_q(f) is None for f in fields):
            return False
        parts = [self.q[f][0] if _same(self.q[f][1], out_qp) else
                 self._round_to(_rescaled(*self.q[f], out_qp), out_qp, f"{f.name}_rq") for f in fields]
        self.q[var] = (self.builder.emit(relax.op.concat(parts, axis=value.attrs.axis), f"{var.name}_q"), out_qp)
        return True

    def _average(self, var, value) -> bool:
        """Average pooling and mean over H, W keep the input's scale and zero point: round(mean(q))."""
        source = value.args[0]
        if source not in self.q:
            return False
        expr, qp = self.q[source]
        if op_name(value) == "relax.mean" and [int(a) for a in value.attrs.axis] != [2, 3]:
            return False
        if op_name(value) == "relax.nn.avg_pool2d" and int(qp.zero_point) != 0 and \
                value.attrs.count_include_pad and any(int(p) for p in value.attrs.padding):
            return False  # padded zeros would be averaged in as real values -zp * scale
        average = relax.Call(value.op, [relax.op.astype(expr, "float32"), *value.args[1:]], value.attrs,
                             value.ty_args)
        self.q[var] = (self._round_to(average, qp, var.name, centred=False), qp)
        return True

    def _round_to(self, value, qp: QParams, name: str, centred: bool = True):
        if centred:
            value = relax.op.add(value, _const(np.float32(qp.zero_point)))
        clipped = _clamp(relax.op.round(value), qp.qmin, qp.qmax)
        return self.builder.emit(relax.op.astype(clipped, qp.dtype), f"{name}_q")


def layer_weight_qparams(layer: Layer, scheme: Scheme, scale: np.ndarray | None = None) -> QParams:
    """The int8 weight parameters realize gives ``layer``: absmax per channel or per tensor,
    or the given ``scale`` (EasyQuant's search) instead."""
    w_qp = weight_qparams(layer.weight, layer.channel_axis if scheme.per_channel else None, scheme.weight_qmax)
    if scale is None:
        return w_qp
    scale = np.asarray(scale, np.float32)
    return QParams(scale, np.zeros(scale.shape, np.int32), "int8", w_qp.axis if scale.ndim else None,
                   limit=scheme.weight_qmax)


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


def _rescaled(expr, qp: QParams, out_qp: QParams):
    """``(q - z) * s / s_out`` in fp32: a quantized value expressed in steps of ``out_qp``."""
    centred = relax.op.subtract(relax.op.astype(expr, "float32"), _const(np.float32(qp.zero_point)))
    return relax.op.multiply(centred, _const(np.float32(qp.scale / out_qp.scale)))


def _same(a: QParams, b: QParams) -> bool:
    return a.dtype == b.dtype and float(a.scale) == float(b.scale) and int(a.zero_point) == int(b.zero_point)


def _clamp(expr, lo: float, hi: float):
    """``min(max(expr, lo), hi)`` on fp32: unlike ``relax.clip`` these ops carry layout
    inference, so a target's layout conversion passes straight through the requantize."""
    lower = relax.op.maximum(expr, _const(np.float32(lo)))
    return relax.op.minimum(lower, _const(np.float32(hi)))


def _const(value):
    return relax.const(np.asarray(value))


def _per_channel(values: np.ndarray, layer: Layer) -> np.ndarray:
    """Shape per-output-channel values to broadcast over the layer's output (NCHW or NC)."""
    return values.reshape(1, -1, 1, 1) if layer.kind == "conv2d" else values.reshape(-1)


def _clamp_range(clamp: tuple[float, float], qp: QParams) -> tuple[int, int]:
    """The quantized output range: the dtype's range narrowed by a fused ReLU / Clip."""
    lo, hi = clamp
    scale, zero_point = float(qp.scale), int(qp.zero_point)
    qlo = qp.qmin if not np.isfinite(lo) else max(qp.qmin, zero_point + int(np.round(lo / scale)))
    qhi = qp.qmax if not np.isfinite(hi) else min(qp.qmax, zero_point + int(np.round(hi / scale)))
    return qlo, qhi
