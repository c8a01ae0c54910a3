"""ONNX LSTM and GRU, unrolled into Relax matmuls and gate ops for a static sequence length.

TVM's Relax ONNX importer has no recurrent operators. Here, for a sequence of ``T`` steps
and directions ``d``, the input projection of every step and direction is one matmul,

    G_x = X W^T + b        X: [T * batch, input], W^T: [input, dirs * gates * hidden]

and each step of each direction adds one recurrent matmul ``H_{t-1} R_d^T`` (two for a GRU
with ``linear_before_reset=0``, whose candidate gate needs the reset gate first) and the
gate element-wise ops. All matmuls are ``relax.matmul`` on 2-D tensors with constant
weights, so tvmq's passes see them as dense layers; their inputs are named after the node
(``<node>/X_rows``, ``<node>/d<d>/initial<k>``, ``<node>/d<d>/t<t>/h``, GRU's ``.../rh``) so
that calibration and the quantization plan can key them. Peepholes (LSTM's ``P``) and both
layouts are imported; other activations than the defaults, ``clip``, ``input_forget``, a
symbolic sequence length, ``sequence_lens`` shorter than the sequence and weights that are
not constants are refused with a :class:`TvmqError`. The batch may stay symbolic.

The converters take the importer's block builder, the node's inputs (``None`` where
absent), its attributes and the opset; the semantics are those of opsets 7 to 22
(``layout`` arrives as an attribute from opset 14), so ``opset`` is not consulted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from tvm import relax, tirx

from ..errors import TvmqError
from ..passes.graph import constant_value

DIRECTIONS = {"forward": (False,), "reverse": (True,), "bidirectional": (False, True)}


@dataclass(frozen=True)
class _Node:
    """What the unrolling needs to know about one LSTM / GRU node."""

    op: str
    name: str
    hidden: int
    reverse: tuple[bool, ...]
    layout: int
    seq: int
    batch: object  # int or tirx.PrimExpr
    dtype: str
    linear_before_reset: bool = False


@dataclass(frozen=True)
class _Weights:
    """One direction's recurrent constants.

    ``r_t`` is ``R_d^T`` ([hidden, gates * hidden]); ``r_bias`` is ``Rb_d``, added to
    ``H R_d^T`` inside the step (GRU with ``linear_before_reset=1`` only; otherwise it is
    folded into ``G_x``); ``peephole`` is LSTM's ``P_d`` ([3 * hidden], gates i, o, f).
    """

    r_t: np.ndarray
    r_bias: np.ndarray | None = None
    peephole: np.ndarray | None = None


def lstm(bb: relax.BlockBuilder, inputs, attrs: dict, opset: int) -> relax.Tuple:
    """ONNX LSTM (opsets 7, 14, 22) as ``(Y, Y_h, Y_c)``, with gates ``i, o, f, c`` stacked in W, R, B.

    i = σ(x W_i^T + h R_i^T + P_i ⊙ c + b_i),   f = σ(x W_f^T + h R_f^T + P_f ⊙ c + b_f),
    c' = f ⊙ c + i ⊙ tanh(x W_c^T + h R_c^T + b_c),
    o = σ(x W_o^T + h R_o^T + P_o ⊙ c' + b_o),   h' = o ⊙ tanh(c').
    Inputs: X, W, R, B, sequence_lens, initial_h, initial_c, P.
    """
    return _convert(bb, _CELLS["LSTM"], inputs, attrs, opset)


def gru(bb: relax.BlockBuilder, inputs, attrs: dict, opset: int) -> relax.Tuple:
    """ONNX GRU (opsets 7, 14, 22) as ``(Y, Y_h)``, with gates ``z, r, h`` stacked in W, R, B.

    z = σ(x W_z^T + h R_z^T + b_z),   r = σ(x W_r^T + h R_r^T + b_r),
    n = tanh(x W_h^T + (r ⊙ h) R_h^T + b_h)              (linear_before_reset = 0)
    n = tanh(x W_h^T + Wb_h + r ⊙ (h R_h^T + Rb_h))      (linear_before_reset = 1)
    h' = (1 - z) ⊙ n + z ⊙ h.
    Inputs: X, W, R, B, sequence_lens, initial_h.
    """
    return _convert(bb, _CELLS["GRU"], inputs, attrs, opset)


@dataclass(frozen=True)
class _Cell:
    """An RNN kind: its gate count, default activations, state count and one step's Relax."""

    op: str
    gates: int
    activations: tuple[str, ...]
    states: int
    initial_inputs: tuple[int, ...]  # input indices of initial_h (and initial_c)
    step: Callable


def _convert(bb, cell: _Cell, inputs, attrs: dict, opset: int) -> relax.Tuple:
    node = _node(cell, inputs, attrs)
    w, r, b = (_constant(node, inputs, i, key) for i, key in ((1, "W"), (2, "R"), (3, "B")))
    _check_sequence_lens(node, inputs[4])
    dirs, width = len(node.reverse), cell.gates * node.hidden
    _expect_shape(node, "W", w, (dirs, width, w.shape[-1]))
    _expect_shape(node, "R", r, (dirs, width, node.hidden))
    b = np.zeros((dirs, 2 * width), node.dtype) if b is None else b
    _expect_shape(node, "B", b, (dirs, 2 * width))
    in_bias, weights = _split_weights(node, cell, r, b, _peepholes(node, inputs, dirs))
    x_gates = _input_projection(bb, node, inputs[0], w, in_bias)
    finals, ys = [], []
    for d, reverse in enumerate(node.reverse):
        state = tuple(_initial_state(bb, node, inputs[i], d, f"{node.name}/d{d}/initial{k}")
                      for k, i in enumerate(cell.initial_inputs))
        hs = {}
        for t in (reversed(range(node.seq)) if reverse else range(node.seq)):
            state = cell.step(bb, node, weights[d], _step_input(bb, x_gates, t, d, width), state,
                              f"{node.name}/d{d}/t{t}")
            hs[t] = state[0]
        ys.append(_stack(bb, [hs[t] for t in range(node.seq)], axis=0))
        finals.append(state)
    return _outputs(bb, node, ys, finals, cell.states)


def _node(cell: _Cell, inputs, attrs: dict) -> _Node:
    op, name = cell.op, attrs["tvm_custom"]["name"]
    direction = _text(attrs.get("direction", b"forward"))
    if direction not in DIRECTIONS:
        raise TvmqError(f"{op} node {name!r}: direction={direction!r} is not one of {sorted(DIRECTIONS)}")
    reverse = DIRECTIONS[direction]
    _check_attributes(op, name, attrs, cell.activations * len(reverse))
    layout = int(attrs.get("layout", 0))
    x = inputs[0]
    seq, batch = (x.ty.shape[1], x.ty.shape[0]) if layout else (x.ty.shape[0], x.ty.shape[1])
    if not isinstance(seq, tirx.IntImm):
        raise TvmqError(f"{op} node {name!r}: the sequence length of X {tuple(x.ty.shape)} is symbolic; "
                        f"give X a static shape (input_shapes / --input-shape)")
    r = inputs[2]
    hidden = int(attrs.get("hidden_size", int(r.ty.shape[-1])))
    return _Node(op, name, hidden, reverse, layout, int(seq), batch, str(x.ty.dtype),
                 bool(attrs.get("linear_before_reset", 0)))


def _check_attributes(op: str, name: str, attrs: dict, defaults: tuple[str, ...]) -> None:
    """Refuse what the unrolling does not implement: other activations, clip, input_forget."""
    activations = tuple(_text(a) for a in attrs.get("activations", defaults))
    if tuple(a.lower() for a in activations) != tuple(a.lower() for a in defaults):
        raise TvmqError(f"{op} node {name!r}: activations={list(activations)} is not supported "
                        f"(only the default {list(defaults)})")
    if "clip" in attrs:
        raise TvmqError(f"{op} node {name!r}: clip={attrs['clip']} is not supported (only unclipped gates)")
    if int(attrs.get("input_forget", 0)):
        raise TvmqError(f"{op} node {name!r}: input_forget=1 is not supported (only uncoupled gates)")
    layout = int(attrs.get("layout", 0))
    if layout not in (0, 1):
        raise TvmqError(f"{op} node {name!r}: layout={layout} is not 0 or 1")


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _constant(node: _Node, inputs, index: int, key: str) -> np.ndarray | None:
    if inputs[index] is None:
        return None
    value = constant_value(inputs[index])
    if value is None:
        raise TvmqError(f"{node.op} node {node.name!r}: input {key} must be a constant (an initializer), "
                        f"not a computed or graph-input tensor")
    return value.astype(node.dtype)


def _expect_shape(node: _Node, key: str, value: np.ndarray, shape: tuple) -> None:
    if value.shape != tuple(shape):
        raise TvmqError(f"{node.op} node {node.name!r}: input {key} has shape {value.shape}, "
                        f"expected {tuple(shape)} for hidden_size={node.hidden}")


def _check_sequence_lens(node: _Node, lens) -> None:
    """``sequence_lens`` may be absent, or a constant that gives every batch entry the full length."""
    if lens is None:
        return
    values = constant_value(lens)
    if values is None:
        raise TvmqError(f"{node.op} node {node.name!r}: input sequence_lens must be absent or a constant "
                        f"equal to the sequence length {node.seq}")
    values = values.reshape(-1)
    if values.size == 0 or np.any(values != node.seq):
        raise TvmqError(f"{node.op} node {node.name!r}: sequence_lens={values.tolist()} is not supported "
                        f"(only the full length {node.seq} for every batch entry)")


def _peepholes(node: _Node, inputs, dirs: int) -> np.ndarray | None:
    if node.op != "LSTM":
        return None
    p = _constant(node, inputs, 7, "P")
    if p is not None:
        _expect_shape(node, "P", p, (dirs, 3 * node.hidden))
    return p


def _split_weights(node: _Node, cell: _Cell, r, b, p) -> tuple[np.ndarray, list[_Weights]]:
    """The bias added to ``G_x`` and each direction's :class:`_Weights`.

    ``G_x`` gets ``Wb + Rb``, except for a GRU with ``linear_before_reset=1``, where
    ``Rb`` belongs inside the reset product and stays with the step.
    """
    width = cell.gates * node.hidden
    w_bias, r_bias = b[:, :width], b[:, width:]
    in_bias = w_bias if node.linear_before_reset else w_bias + r_bias
    weights = [_Weights(np.ascontiguousarray(r[d].T), r_bias[d] if node.linear_before_reset else None,
                        None if p is None else p[d]) for d in range(len(node.reverse))]
    return in_bias.reshape(-1), weights


def _input_projection(bb, node: _Node, x, w: np.ndarray, bias: np.ndarray):
    """``G_x = X W^T + b`` for all steps and directions, as ``[T, batch, dirs * gates * hidden]``."""
    if node.layout:
        x = bb.emit(relax.op.permute_dims(x, [1, 0, 2]))
    flat = bb.emit(relax.op.reshape(x, (-1, w.shape[-1])), f"{node.name}/X_rows")
    w_t = np.ascontiguousarray(w.reshape(-1, w.shape[-1]).T)
    projected = bb.emit(relax.op.add(bb.emit(relax.op.matmul(flat, relax.const(w_t))), relax.const(bias)))
    return bb.emit(relax.op.reshape(projected, (node.seq, node.batch, w_t.shape[1])))


def _step_input(bb, x_gates, t: int, d: int, width: int):
    """Step ``t`` of direction ``d`` of ``G_x``: ``[batch, gates * hidden]``."""
    part = bb.emit(relax.op.strided_slice(x_gates, axes=[0, 2], begin=[t, d * width], end=[t + 1, (d + 1) * width]))
    return bb.emit(relax.op.squeeze(part, axis=[0]))


def _initial_state(bb, node: _Node, value, d: int, name: str):
    """Direction ``d`` of ``initial_h`` / ``initial_c`` (``[dirs, batch, hidden]``, or batch first
    when ``layout=1``) as ``[batch, hidden]``; zeros when the input is absent."""
    if value is None:
        return bb.emit(relax.op.zeros(relax.ShapeExpr([node.batch, node.hidden]), node.dtype))
    axis = 1 if node.layout else 0
    part = bb.emit(relax.op.strided_slice(value, axes=[axis], begin=[d], end=[d + 1]))
    return bb.emit(relax.op.squeeze(part, axis=[axis]), name)


def _outputs(bb, node: _Node, ys: list, finals: list, states: int) -> relax.Tuple:
    """``Y`` [T, dirs, batch, hidden] and the final states [dirs, batch, hidden] (batch first if ``layout=1``)."""
    y = _stack(bb, ys, axis=1)
    last = [_stack(bb, [state[k] for state in finals], axis=0) for k in range(states)]
    if node.layout:
        y = bb.emit(relax.op.permute_dims(y, [2, 0, 1, 3]))
        last = [bb.emit(relax.op.permute_dims(s, [1, 0, 2])) for s in last]
    return relax.Tuple([y, *last])


def _stack(bb, tensors: list, axis: int):
    """``stack`` as ``concat`` of ``expand_dims``: TVM 0.27's ConvertLayout fails on ``relax.stack``."""
    return bb.emit(relax.op.concat([bb.emit(relax.op.expand_dims(t, axis)) for t in tensors], axis=axis))


def _split(bb, x, parts: int) -> list:
    pieces = bb.emit(relax.op.split(x, parts, axis=1))
    return [bb.emit(relax.TupleGetItem(pieces, i)) for i in range(parts)]


def _recurrent(bb, h, r_t: np.ndarray, bias: np.ndarray | None = None):
    """``h R^T (+ Rb)``: one 2-D matmul with a constant weight, then its bias."""
    out = bb.emit(relax.op.matmul(h, relax.const(np.ascontiguousarray(r_t))))
    return out if bias is None else bb.emit(relax.op.add(out, relax.const(bias)))


def _lstm_step(bb, node: _Node, w: _Weights, x_gates, state: tuple, tag: str) -> tuple:
    """One LSTM step: ``(h, c) -> (h', c')`` (formulas in :func:`lstm`)."""
    h, c = state
    emit, op = bb.emit, relax.op
    gates = emit(op.add(x_gates, _recurrent(bb, h, w.r_t)))
    i, o, f, g = _split(bb, gates, 4)
    if w.peephole is not None:
        p_i, p_o, p_f = (relax.const(p) for p in np.split(w.peephole, 3))
        i, f = emit(op.add(i, emit(op.multiply(p_i, c)))), emit(op.add(f, emit(op.multiply(p_f, c))))
    i, f, g = emit(op.sigmoid(i)), emit(op.sigmoid(f)), emit(op.tanh(g))
    c = emit(op.add(emit(op.multiply(f, c)), emit(op.multiply(i, g))))
    if w.peephole is not None:
        o = emit(op.add(o, emit(op.multiply(p_o, c))))
    h = emit(op.multiply(emit(op.sigmoid(o)), emit(op.tanh(c))), f"{tag}/h")
    return h, c


def _gru_step(bb, node: _Node, w: _Weights, x_gates, state: tuple, tag: str) -> tuple:
    """One GRU step: ``(h,) -> (h',)`` (formulas in :func:`gru`)."""
    (h,) = state
    emit, op, hidden = bb.emit, relax.op, node.hidden
    x_z, x_r, x_n = _split(bb, x_gates, 3)
    if node.linear_before_reset:
        h_z, h_r, h_n = _split(bb, _recurrent(bb, h, w.r_t, w.r_bias), 3)
    else:
        h_z, h_r = _split(bb, _recurrent(bb, h, w.r_t[:, :2 * hidden]), 2)
    z, r = emit(op.sigmoid(emit(op.add(x_z, h_z)))), emit(op.sigmoid(emit(op.add(x_r, h_r))))
    if node.linear_before_reset:
        n = emit(op.tanh(emit(op.add(x_n, emit(op.multiply(r, h_n))))))
    else:
        n = emit(op.tanh(emit(op.add(x_n, _recurrent(bb, emit(op.multiply(r, h), f"{tag}/rh"),
                                                      w.r_t[:, 2 * hidden:])))))
    one = relax.const(1.0, node.dtype)
    return (emit(op.add(emit(op.multiply(emit(op.subtract(one, z)), n)), emit(op.multiply(z, h))), f"{tag}/h"),)


_CELLS = {
    "LSTM": _Cell("LSTM", 4, ("Sigmoid", "Tanh", "Tanh"), 2, (5, 6), _lstm_step),
    "GRU": _Cell("GRU", 3, ("Sigmoid", "Tanh"), 1, (5,), _gru_step),
}

CONVERTERS = {"LSTM": lstm, "GRU": gru}
"""The ONNX op types this module imports, for the importer's ``_convert_operator``."""
