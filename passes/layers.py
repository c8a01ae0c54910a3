"""Quantizable layers: a conv2d / matmul with a constant weight, its bias add and output clamp.

A *layer* is what realize turns into one integer kernel: the op (a :class:`LayerKind`
registered for it in ``tvmq.passes.rules``) with a constant weight, optionally followed by a
constant per-channel bias add and a clamp (ReLU, ReLU6, Clip), each intermediate used exactly
once. The kind says everything the numeric passes need to know about the op's weight:

* ``channel_axis``: the weight axis that indexes output channels;
* ``input_channel_axis(layer)``: the weight axis of input channels (CLE, absorption), or None;
* ``matrix(layer)``: the weight as a ``(C_out, K)`` matrix, ``y = rows(x) @ matrix.T``;
* ``rows(x, layer)``: the input as ``(M, K)`` rows of that matmul (im2col for a conv);
* ``output_shape(values, layer)``: per-channel values shaped to broadcast over the output;
* ``expected_shift(error, mean, groups)``: ``eps E[x]`` per output channel for a weight error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import relax

from .graph import constant_value, dataflow_bindings, op_name, prim_float, referenced_vars, use_counts

_KINDS: dict = {}


class LayerKind:
    """What a quantizable op's weight looks like to the passes (one subclass per op family)."""

    name: str = ""
    op: str = ""
    channel_axis: int = 0
    row_axis: int | None = None  # the input axis a per-row dynamic scale reduces over (None: per tensor only)

    def weight(self, call: relax.Call) -> np.ndarray | None:
        """The call's constant weight, if the call is a layer of this kind."""
        raise NotImplementedError

    def output_channel_axis(self, out_ndim: int) -> int:
        raise NotImplementedError

    def output_shape(self, values: np.ndarray, layer: Layer) -> np.ndarray:
        raise NotImplementedError

    def input_channel_axis(self, layer: Layer) -> int | None:
        raise NotImplementedError

    def matrix(self, layer: Layer) -> np.ndarray:
        raise NotImplementedError

    def rows(self, x: np.ndarray, layer: Layer) -> np.ndarray:
        raise NotImplementedError

    def groups(self, layer: Layer) -> int:
        return 1

    def expected_shift(self, error: np.ndarray, expected_input: np.ndarray, groups: int = 1) -> np.ndarray:
        raise NotImplementedError

    def padded_input(self, builder: relax.BlockBuilder, layer: Layer, x):
        """fp32 ``x`` with the op's zero padding applied (a dynamic layer pads before quantizing)."""
        raise NotImplementedError

    def integer_op(self, builder: relax.BlockBuilder, layer: Layer, x_q, zero_point: int, w_q: np.ndarray,
                   padded: bool = False):
        """Emit the int8 x int8 -> int32 op on ``x_q`` (zero point ``zero_point``) and ``w_q``;
        ``padded``: ``x_q`` comes from :meth:`padded_input`, so the op pads nothing itself."""
        raise NotImplementedError


def layer_kind(cls):
    """Register a :class:`LayerKind` subclass for its op (and by its name)."""
    kind = cls()
    _KINDS[kind.op] = _KINDS[kind.name] = kind
    return cls


def kind_for(op_or_name: str | None) -> LayerKind | None:
    from . import rules  # noqa: F401  (registers the kinds)

    return _KINDS.get(op_or_name)


@dataclass
class Layer:
    """One quantizable chain; ``out`` is the variable its result ends in."""

    kind: str  # the LayerKind's name: "conv2d" or "dense"
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

    @property
    def form(self) -> LayerKind:
        """The :class:`LayerKind` behind ``kind``."""
        return kind_for(self.kind)

    def bias_or_zeros(self) -> np.ndarray:
        return self.bias if self.bias is not None else np.zeros(self.weight.shape[self.channel_axis], np.float32)


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
    kind = kind_for(op_name(binding.value))
    weight = kind.weight(binding.value) if kind is not None else None
    if weight is None:
        return None
    call = binding.value
    return Layer(kind.name, call, call.args[0], weight, None, (-np.inf, np.inf), [binding.var], kind.channel_axis)


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
    channel_axis = layer.form.output_channel_axis(out_ndim)
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


@dataclass
class BatchMatMul:
    """An activation x activation matmul (attention's ``Q K^T`` and ``softmax(.) V``):
    ``out = matmul(a, b)``, both operands computed by the network, batch axes broadcast."""

    kind = "batch_matmul"
    call: relax.Call
    a: relax.Var  # [..., M, K]
    b: relax.Var  # [..., K, N]
    chain: list  # [out]: one variable, named as a layer's chain is

    @property
    def out(self) -> relax.Var:
        return self.chain[-1]


def find_batch_matmuls(func: relax.Function) -> dict:
    """Map the output variable of every matmul whose two operands are both variables (neither a
    constant weight) to its :class:`BatchMatMul`."""
    found = {}
    for binding in dataflow_bindings(func):
        value = binding.value
        if op_name(value) == "relax.matmul" and all(isinstance(arg, relax.Var) for arg in value.args[:2]):
            found[binding.var] = BatchMatMul(value, value.args[0], value.args[1], [binding.var])
    return found
