"""TVM's ONNX importer, with tvmq's own converters for some operators.

``REGISTRY`` maps an ONNX op type to a converter
``fn(importer, inputs, attrs, opset) -> relax.Expr | None``:

* ``importer`` is the running ``ONNXGraphImporter``; emit with ``importer.bb`` (a
  ``relax.BlockBuilder``);
* ``inputs`` holds one ``relax.Expr`` per ONNX input, ``None`` for an omitted optional
  input, nothing for omitted trailing ones (initializers arrive as
  ``tvm.ir.expr.Constant``, value in ``.value``);
* ``attrs`` is the node's attributes as TVM parses them (ints, floats, bytes, tuples),
  plus ``attrs["tvm_custom"] = {"name": node name, "num_outputs": ONNX outputs}``;
* ``opset`` is the model's ``ai.onnx`` opset version.

It returns the node's value (a ``relax.Tuple`` with a field per declared output for
several outputs, as LSTM's ``Y, Y_h, Y_c``), or ``None`` to let TVM's own converter handle
the node; :func:`tvm_convert` hands a rewritten node to TVM's converter. An op type in the
registry passes TVM's unsupported-operator check.
"""

from __future__ import annotations

import contextlib
import io
from typing import Callable

import numpy as np
import onnx

from ..errors import TvmqError
from .reader import first_line, onnx_opset

Converter = Callable[[object, list, dict, int], object]

FLOAT32_MAX = float(np.finfo(np.float32).max)


def clip(importer, inputs, attrs, opset):
    """Clip with constant bounds as one ``relax.op.clip``.

    TVM imports Clip as opaque TIR calls (``emit_te(topi.maximum)``), which hides a
    ReLU6 from realize; ``relax.op.clip`` can be fused into a layer's output clamp.
    """
    from tvm import relax

    lo, hi = _bound(attrs, inputs, 1, "min", -FLOAT32_MAX), _bound(attrs, inputs, 2, "max", FLOAT32_MAX)
    if lo is None or hi is None:
        return None
    return importer.bb.emit(relax.op.clip(inputs[0], max(lo, -FLOAT32_MAX), min(hi, FLOAT32_MAX)))


def _bound(attrs: dict, inputs: list, index: int, key: str, default: float) -> float | None:
    """A Clip bound: the scalar constant input ``index``, else attribute ``key`` (opset < 11)."""
    from tvm import ir

    if len(inputs) > index and inputs[index] is not None:
        value = inputs[index]
        return float(value.value.numpy()) if isinstance(value, ir.expr.Constant) and value.ty.ndim == 0 else None
    return float(attrs.get(key, default))


def resize(importer, inputs, attrs, opset):
    """Resize whose unused ``roi`` / ``scales`` are empty constants, as those inputs omitted.

    ONNX allows an empty tensor for an unused optional input (detectors exported from
    PaddlePaddle give ``scales=[]`` beside ``sizes``); TVM's converter takes an empty
    ``scales`` for a given one and refuses "Only one of scales and sizes".
    """
    if not any(_is_empty_constant(value) for value in inputs[1:]):
        return None
    given = [inputs[0]] + [None if _is_empty_constant(value) else value for value in inputs[1:]]
    return tvm_convert(importer, "Resize", given, attrs, opset)


def upsample(importer, inputs, attrs, opset):
    """Upsample (deprecated at opset 10) as an asymmetric ``resize2d``, nearest (floor) or linear.

    TVM's converter reads ``scales`` as an attribute only (opset 7), not the input of opset
    9, and builds a ``resize2d`` that the VM cannot lower.
    """
    from tvm import relax

    scales = attrs.get("scales") if len(inputs) < 2 or inputs[1] is None else _constant_value(inputs[1])
    mode = attrs.get("mode", b"nearest").decode()
    if scales is None or len(scales) != 4 or list(scales[:2]) != [1, 1] or mode not in ("nearest", "linear"):
        return None
    shape = [int(d) for d in inputs[0].ty.shape]
    size = [int(dim * scale) for dim, scale in zip(shape[2:], scales[2:])]
    method = "nearest_neighbor" if mode == "nearest" else "linear"
    return importer.bb.emit(relax.op.image.resize2d(
        inputs[0], size, roi=(0.0, 0.0, 0.0, 0.0), layout="NCHW", method=method,
        coordinate_transformation_mode="asymmetric", rounding_method="floor" if mode == "nearest" else ""))


def squeeze(importer, inputs, attrs, opset):
    """Squeeze with constant negative axes (``-1``, as Silero VAD's decoder writes) made non-negative.

    TVM's converter passes them on as ``relax.op.squeeze(x, [-1])``, and ``ConvertLayout`` then
    dies with ``std::bad_alloc`` on such a squeeze after an NHWC conv. (TVM normalizes
    Unsqueeze's axes itself.) Anything else goes to TVM's converter unchanged.
    """
    from tvm import relax

    data = inputs[0]
    if opset < 13:
        axes = attrs.get("axes")
    else:
        axes = _constant_value(inputs[1]) if len(inputs) > 1 and inputs[1] is not None else None
    rank = data.ty.ndim if isinstance(data.ty, relax.TensorType) else -1
    if axes is None or rank < 0 or _constant_value(data) is not None or all(int(a) >= 0 for a in np.ravel(axes)):
        return None
    normalized = [int(a) % rank if -rank <= int(a) < 0 else int(a) for a in np.ravel(axes)]
    if opset < 13:
        return tvm_convert(importer, "Squeeze", inputs, {**attrs, "axes": tuple(normalized)}, opset)
    return tvm_convert(importer, "Squeeze", [data, relax.const(np.array(normalized, np.int64))], attrs, opset)


def tvm_convert(importer, op_type: str, inputs: list, attrs: dict, opset: int):
    """TVM's own converter for ``op_type``: what a registry converter may hand a rewritten node to."""
    from tvm.relax.frontend.onnx.onnx_frontend import ONNXGraphImporter

    return ONNXGraphImporter._convert_operator(importer, op_type, inputs, attrs, opset)


def _is_empty_constant(value) -> bool:
    from tvm import ir

    return isinstance(value, ir.expr.Constant) and 0 in value.value.shape


def _constant_value(value) -> np.ndarray | None:
    from tvm import ir

    return value.value.numpy() if isinstance(value, ir.expr.Constant) else None


def recurrent(op_type: str) -> Converter:
    """LSTM or GRU, unrolled into Relax matmuls and gate ops (:mod:`.recurrent`)."""
    def convert(importer, inputs, attrs, opset):
        from .recurrent import CONVERTERS

        return CONVERTERS[op_type](importer.bb, inputs, attrs, opset)

    return convert


REGISTRY: dict[str, Converter] = {
    "Clip": clip,
    "Resize": resize,
    "Upsample": upsample,
    "Squeeze": squeeze,
    "LSTM": recurrent("LSTM"),
    "GRU": recurrent("GRU"),
}


def import_onnx(model: onnx.ModelProto):
    """The Relax module of ``model`` (weights bound as constants), normalized."""
    from tvm import relax

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # TVM prints "Error converting operator ..." before raising
            mod = _importer_class()(None, "float32", keep_params_in_input=False).from_onnx(model.graph,
                                                                                           onnx_opset(model))
    except TvmqError:
        raise  # a converter of ours refusing a node, in its own words
    except Exception as err:
        raise TvmqError(f"cannot import the model into TVM: {unsupported_operator(model) or first_line(err)}") from None
    return relax.transform.DeadCodeElimination()(relax.transform.Normalize()(mod))


def _importer_class():
    from tvm.relax.frontend.onnx.onnx_frontend import ONNXGraphImporter

    class Importer(ONNXGraphImporter):
        """Looks each op type up in ``REGISTRY`` before TVM's own converters."""

        def _check_for_unsupported_ops(self, graph):
            rest = onnx.GraphProto()
            rest.node.extend(node for node in graph.node if node.op_type not in REGISTRY)
            super()._check_for_unsupported_ops(rest)

        def _convert_operator(self, op_name, inputs, attrs, opset):
            converter = REGISTRY.get(op_name)
            value = converter(self, inputs, attrs, opset) if converter is not None else None
            return value if value is not None else super()._convert_operator(op_name, inputs, attrs, opset)

    return Importer


def unsupported_operator(model: onnx.ModelProto) -> str | None:
    """``unsupported operator OP (node 'NAME')`` for the first node no converter handles, else None."""
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    known = set(_get_convert_map()) | set(REGISTRY)
    missing = [(n.op_type, n.name) for n in model.graph.node if n.op_type not in known]
    if not missing:
        return None
    op, name = missing[0]
    return f"unsupported operator {op} (node {name!r})"
