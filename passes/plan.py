"""QuantPlan: what realize does to every layer and tensor, as plain data keyed by tensor names.

A planner (:func:`plan_quantization`) builds the plan from the calibrated ranges, the layer-wise
refinements (EasyQuant's weight scales, bias corrections), per-layer precision overrides and
the target's constraints (its :class:`Scheme`); :class:`tvmq.passes.realize.RealizePlan` only
carries it out. Per layer (keyed by the tensor its chain ends in) the plan holds its precision,
the reason for it, its weight parameters (range ``[-weight_qmax, weight_qmax]``) and bias shift;
per calibrated tensor, its activation parameters:

    activation: s = (hi - lo) / 255, z = round(-lo / s)  (uint8; int8: s = max|.| / 127, z = 0)
    weight:     s_c = max_k |W[c, k]| / weight_qmax      (absmax, unless a search chose s_c)

Overrides map exact names or glob patterns (of a layer's tensors, their ONNX tensor names or
its ONNX node's name) to a precision; the latency fallback is an override too. A layer's
precision is ``int8`` (static: the calibrated input range), ``dynamic`` (int8 weights, the input's
parameters computed at run time from the tensor itself: :mod:`tvmq.passes.rules.dynamic`) or
``fp32``; ``Scheme.mode = "dynamic"`` makes every dense layer dynamic by default (convs stay static).

Activation x activation matmuls (attention, :class:`~tvmq.passes.layers.BatchMatMul`) are layers of
kind ``batch_matmul`` without a weight: their second operand ``b`` (``operand``) is quantized
symmetric int8 from its calibrated range, ``s_b = max|b| / 127`` (``operand_qparams``), the first
as any activation. They are fp32 unless named (``Config.layers`` "int8" or "dynamic": both operands'
parameters at run time): on MiniLM-L6 int8 attention was no more accurate and slower at trials 0
(docs/quantization.md#attention-matmuls-as-int8); fp32 too when an operand has no calibrated range.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from dataclasses import dataclass, field

import numpy as np

from .layers import Layer, find_batch_matmuls, find_layers
from .qparams import WEIGHT_QMAX, QParams, activation_qparams, quantize, weight_bits, weight_qparams

AUTO_NAME = re.compile(r"^(lv|gv)\d*$")  # the names Relax's BlockBuilder makes up
DYNAMIC = "dynamic"  # int8 weights, the activation's scale / zero point computed at run time (rules.dynamic)
PRECISIONS = ("int8", DYNAMIC, "fp32")
DYNAMIC_KINDS = ("dense",)  # the kinds mode "dynamic" makes dynamic (any layer may be by override)
CALIBRATED = "calibrated"
USER_OVERRIDE = "user override"
DYNAMIC_MODE = "mode dynamic"
LATENCY_FALLBACK = "latency fallback"
UNCALIBRATED = "no calibrated range"
ATTENTION_DEFAULT = "attention default"  # batch matmuls are fp32 unless named (module docstring)


@dataclass(frozen=True)
class Scheme:
    """How to quantize: the activation dtype the target's int8 instructions want, weight granularity,
    the weight range ``[-weight_qmax, weight_qmax]`` its kernels can take without overflow, and the
    default precision of dense layers (``mode``: ``"static"`` int8, or ``"dynamic"``)."""

    activation_dtype: str = "uint8"
    per_channel: bool = True
    weight_qmax: int = WEIGHT_QMAX
    mode: str = "static"  # "dynamic": dense layers quantize their input at run time (reason "mode dynamic")
    dynamic_granularity: str = "tensor"  # a dynamic dense layer's input scale: per "tensor" or per "row" (token)


@dataclass(frozen=True)
class LayerPlan:
    """One layer's plan: ``tensor`` is its output (the chain's last tensor), ``input`` its data."""

    tensor: str
    kind: str
    input: str
    chain: tuple[str, ...]
    precision: str
    reason: str
    weight: QParams | None  # None for a batch matmul (no constant weight)
    bias_shift: np.ndarray | None = None
    weight_q: np.ndarray | None = None  # learned integer weights (AdaRound), in the weight's layout
    operand: str | None = None  # a batch matmul's second operand (``b``)
    operand_qparams: QParams | None = None  # its symmetric int8 parameters (static)
    weight_levels: int | None = None  # non-uniform weights: weight_q takes at most this many int8 levels

    def weight_integers(self, weight: np.ndarray) -> np.ndarray:
        """The int8 weight realize emits: the learned integers, else ``quantize(W)`` (nearest)."""
        return self.weight_q if self.weight_q is not None else quantize(weight, self.weight)

    def to_json(self, activations: dict, rename=str, node: str | None = None) -> dict:
        act = {role: activations[name].to_json() for role, name in (("input", self.input), ("output", self.tensor))
               if name in activations}
        out = {"node": node, "tensor": rename(self.tensor), "kind": self.kind, "precision": self.precision,
               "reason": self.reason, "input_tensor": rename(self.input), "chain": [rename(n) for n in self.chain],
               **act}
        if self.weight is not None:
            out.update({"weight": self.weight.to_json(), "weight_range": [int(self.weight.qmin), int(self.weight.qmax)],
                        "weight_bits": weight_bits(self.weight.qmax),
                        "rounding": "nearest" if self.weight_q is None else "adaround"})
        if self.weight_levels is not None:  # tvmq.passes.nonuniform
            out |= {"rounding": "non-uniform", "weight_levels": int(self.weight_levels)}
        if self.operand is not None:
            out["operand_tensor"] = rename(self.operand)
            if self.operand_qparams is not None:
                out["operand"] = self.operand_qparams.to_json()
        if self.bias_shift is not None:
            out["bias_shift"] = np.asarray(self.bias_shift, np.float64).ravel().tolist()
        return out


@dataclass(frozen=True)
class QuantPlan:
    """Per-layer plans (by output tensor) and per-tensor activation parameters (by tensor)."""

    scheme: Scheme
    layers: dict = field(default_factory=dict)  # tensor -> LayerPlan
    activations: dict = field(default_factory=dict)  # tensor -> QParams
    ranges: dict = field(default_factory=dict)  # tensor -> (lo, hi) they came from

    def with_precision(self, tensors, precision: str, reason: str) -> QuantPlan:
        """A copy with the layers ending in ``tensors`` set to ``precision`` for ``reason``."""
        tensors = set(tensors)
        layers = {name: dataclasses.replace(entry, precision=precision, reason=reason) if name in tensors else entry
                  for name, entry in self.layers.items()}
        return dataclasses.replace(self, layers=layers)

    def dynamic_layers(self) -> list[str]:
        return [name for name, entry in self.layers.items() if entry.precision == DYNAMIC]

    def fp32_layers(self) -> list[str]:
        return [name for name, entry in self.layers.items() if entry.precision == "fp32"]

    def to_json(self, onnx_names: dict | None = None, nodes: dict | None = None) -> dict:
        """The plan keyed by ONNX names (``onnx_names``: variable -> ONNX tensor; ``nodes``:
        variable -> (ONNX node, op type))."""
        onnx_names, nodes = onnx_names or {}, nodes or {}

        def rename(name):
            return onnx_names.get(name, name)

        return {"scheme": dataclasses.asdict(self.scheme),
                "layers": [entry.to_json(self.activations, rename, _node_of(entry.chain, nodes))
                           for entry in self.layers.values()],
                "activations": {rename(name): {**qp.to_json(), "range": [float(v) for v in self.ranges[name]]}
                                for name, qp in sorted(self.activations.items())}}


def plan_quantization(func, stats: dict, scheme: Scheme, weight_scales: dict | None = None,
                      bias_shifts: dict | None = None, overrides: dict | None = None,
                      aliases: dict | None = None, weight_integers: dict | None = None,
                      weight_ranges: dict | None = None) -> QuantPlan:
    """Plan ``func``'s layers and tensors.

    ``stats``: tensor -> calibrated ``(lo, hi)``; ``weight_scales`` / ``bias_shifts`` /
    ``weight_integers``: layer output -> searched weight scales / bias shift / learned int8 weights
    (AdaRound, on those scales); ``overrides``: name or glob -> precision, matched against each
    layer's tensors and their ``aliases`` (tensor -> other names: ONNX tensor and node names). A
    layer matched by several patterns takes the last one's precision. ``weight_ranges``: name or
    glob -> the layer's ``weight_qmax`` (the last match wins; the scheme's for the others).
    """
    weight_scales, bias_shifts, weight_integers = weight_scales or {}, bias_shifts or {}, weight_integers or {}
    activations = {name: activation_qparams(lo, hi, scheme.activation_dtype) for name, (lo, hi) in stats.items()}
    layers = {}
    for layer in find_layers(func).values():
        name = layer.out.name
        precision, reason = _override(layer, overrides or {}, aliases or {}, scheme.mode)
        qmax = layer_weight_qmax(layer, scheme, weight_ranges or {}, aliases or {})
        layers[name] = LayerPlan(name, layer.kind, layer.data.name, tuple(v.name for v in layer.chain), precision,
                                 reason, layer_weight_qparams(layer, scheme, weight_scales.get(name), qmax),
                                 bias_shifts.get(name), weight_integers.get(name))
    layers.update(_plan_batch_matmuls(func, stats, scheme, overrides or {}, aliases or {}))
    return QuantPlan(scheme, layers, activations, {name: tuple(stats[name]) for name in activations})


def _plan_batch_matmuls(func, stats: dict, scheme: Scheme, overrides: dict, aliases: dict) -> dict:
    """tensor -> LayerPlan of each activation x activation matmul (module docstring)."""
    layers = {}
    for matmul in find_batch_matmuls(func).values():
        name, a, b = matmul.out.name, matmul.a.name, matmul.b.name
        precision, reason = _override(matmul, overrides, aliases, scheme.mode)
        if reason != USER_OVERRIDE:
            precision, reason = "fp32", ATTENTION_DEFAULT
        if precision == "int8" and not (a in stats and b in stats):
            precision, reason = "fp32", UNCALIBRATED
        operand_qp = activation_qparams(*stats[b], "int8") if b in stats else None
        layers[name] = LayerPlan(name, matmul.kind, a, (name,), precision, reason, None, operand=b,
                                 operand_qparams=operand_qp)
    return layers


def calibration_names(func, names: list[str]) -> list[str]:
    """``names`` and every layer input that has a name of its own but no ONNX tensor behind it
    (the frontend's LSTM / GRU converters name their gate matmuls' inputs), sorted."""
    inputs = {layer.data.name for layer in find_layers(func).values()}
    inputs |= {v.name for matmul in find_batch_matmuls(func).values() for v in (matmul.a, matmul.b)}
    return sorted(set(names) | {name for name in inputs if not AUTO_NAME.match(name)})


def planned_ops(func) -> list:
    """Every op the plan has an entry for: the layers, then the batch matmuls (attention)."""
    return [*find_layers(func).values(), *find_batch_matmuls(func).values()]


def layer_names(layer: Layer, aliases: dict) -> list[str]:
    """Every name ``layer`` answers to: its tensors and their aliases."""
    names = [v.name for v in layer.chain]
    return names + [alias for name in names for alias in aliases.get(name, ())]


def unmatched(patterns, func, aliases: dict) -> list[str]:
    """The patterns that name no layer of ``func``."""
    names = [layer_names(layer, aliases) for layer in planned_ops(func)]
    return [p for p in patterns if not any(_matches(p, n) for n in names)]


def layer_weight_qparams(layer: Layer, scheme: Scheme, scale: np.ndarray | None = None,
                         qmax: int | None = None) -> QParams:
    """The int8 weight parameters ``layer`` gets: absmax per channel or per tensor (``weight_qparams``),
    or the given ``scale`` (EasyQuant's search) instead, clipped at ``qmax`` (default the scheme's
    ``weight_qmax``) either way."""
    qmax = scheme.weight_qmax if qmax is None else qmax
    w_qp = weight_qparams(layer.weight, layer.channel_axis if scheme.per_channel else None, qmax)
    if scale is None:
        return w_qp
    scale = np.asarray(scale, np.float32)
    return QParams(scale, np.zeros(scale.shape, np.int32), "int8", w_qp.axis if scale.ndim else None, limit=qmax)


def bits_qmax(bits: int) -> int:
    """The symmetric range of ``bits``-bit weights: ``qmax = 2^(bits - 1) - 1`` (127 for 8, 7 for 4)."""
    return 2 ** (int(bits) - 1) - 1


def layer_weight_qmax(layer: Layer, scheme: Scheme, weight_ranges: dict, aliases: dict) -> int:
    """The layer's ``weight_qmax``: the last matching ``weight_ranges`` pattern's, else the scheme's."""
    names = layer_names(layer, aliases)
    chosen = [qmax for pattern, qmax in weight_ranges.items() if _matches(pattern, names)]
    return int(chosen[-1]) if chosen else scheme.weight_qmax


def _override(layer: Layer, overrides: dict, aliases: dict, mode: str = "static") -> tuple[str, str]:
    """The layer's precision and why: the last override matching it, else the scheme's ``mode``."""
    names = layer_names(layer, aliases)
    chosen = [precision for pattern, precision in overrides.items() if _matches(pattern, names)]
    if chosen:
        return chosen[-1], USER_OVERRIDE
    if mode == DYNAMIC and layer.kind in DYNAMIC_KINDS:
        return DYNAMIC, DYNAMIC_MODE
    return "int8", CALIBRATED


def _matches(pattern: str, names: list[str]) -> bool:
    return any(pattern == name or fnmatch.fnmatchcase(name, pattern) for name in names)


def _node_of(chain, nodes: dict) -> str | None:
    """The ONNX node a layer is reported under: the first of its tensors' nodes that is a Conv /
    Gemm / MatMul, else the first one known."""
    named = [nodes[name] for name in chain if name in nodes]
    return next((node for node, op in named if op in ("Conv", "Gemm", "MatMul")), named[0][0] if named else None)


def onnx_aliases(onnx_names: dict, nodes: dict) -> dict:
    """tensor -> its other names: the ONNX node that makes it, then its ONNX tensor name
    (``onnx_names``: variable -> ONNX tensor; ``nodes``: variable -> (node, op type))."""
    names = set(onnx_names) | set(nodes)
    aliases = {name: tuple(dict.fromkeys(n for n in (nodes.get(name, (None,))[0], onnx_names.get(name))
                                         if n and n != name)) for name in names}
    return {name: found for name, found in aliases.items() if found}


def layer_labels(func, aliases: dict) -> list[str]:
    """One name per layer of ``func``, as a user would give it: the ONNX node of its first named
    tensor (or its output tensor's own name)."""
    labels = []
    for layer in planned_ops(func):
        named = [aliases[v.name][0] for v in layer.chain if v.name in aliases]
        labels.append(named[0] if named else layer.out.name)
    return labels


IMPORTED = "imported"


def plan_imported(func, activations: dict, weights: dict, scheme: Scheme, overrides: dict | None = None,
                  aliases: dict | None = None) -> QuantPlan:
    """The plan a QDQ model carries (:mod:`tvmq.frontend.qdq`), keyed by ``func``'s variables.

    ``activations``: tensor -> QParams; ``weights``: a tensor of the layer's chain -> its weight
    QParams. A layer is int8 (reason "imported") when the model quantized both its weight and its
    input, fp32 (reason "imported") otherwise; user overrides still win. An activation in the other
    8-bit dtype than the scheme's is the same quantizer shifted: ``q_u8 = q_s8 + 128``, ``z_u8 = z_s8 + 128``.
    A weight with a zero point, or wider than the target's ``weight_qmax``, is re-quantized by absmax.
    """
    activations = {name: _as_dtype(qp, scheme.activation_dtype) for name, qp in activations.items()}
    scales = {}
    for layer in find_layers(func).values():
        found = next((weights[v.name] for v in layer.chain if v.name in weights), None)
        if found is not None and not np.any(found.zero_point) and _fits(layer, found, scheme):
            scales[layer.out.name] = np.asarray(found.scale, np.float32)
    base = plan_quantization(func, {}, scheme, scales, None, overrides, aliases)
    layers = {}
    for name, entry in base.layers.items():
        has = any(v in weights for v in entry.chain) and entry.input in activations
        if entry.reason == USER_OVERRIDE:
            layers[name] = entry
        else:
            layers[name] = dataclasses.replace(entry, precision="int8" if has else "fp32", reason=IMPORTED)
    ranges = {name: (float(qp.scale) * (qp.qmin - int(qp.zero_point)), float(qp.scale) * (qp.qmax - int(qp.zero_point)))
              for name, qp in activations.items()}
    return QuantPlan(scheme, layers, activations, ranges)


def _as_dtype(qp: QParams, dtype: str) -> QParams:
    shift = {("int8", "uint8"): 128, ("uint8", "int8"): -128}.get((qp.dtype, dtype), 0)
    return QParams(np.float32(qp.scale), np.int32(int(qp.zero_point) + shift), dtype)


def _fits(layer: Layer, qp: QParams, scheme: Scheme) -> bool:
    """Whether re-quantizing ``layer``'s weight with ``qp``'s scale stays within ``weight_qmax``."""
    axis = layer.channel_axis if np.ndim(qp.scale) else None
    shape = [1] * layer.weight.ndim
    if axis is not None:
        shape[axis] = -1
    return bool(np.abs(np.round(layer.weight / np.asarray(qp.scale).reshape(shape))).max(initial=0) <= scheme.weight_qmax)
