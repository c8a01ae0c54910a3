"""QDQ ONNX in: a pre-quantized (ONNX Runtime ``quantize_static``, QAT, PT2E) model as a float
graph plus the quantization parameters it carries.

A QDQ model spells int8 as ``QuantizeLinear -> DequantizeLinear`` pairs on activations and a
``DequantizeLinear`` on each constant int8 weight (and int32 bias)::

    x -> Q(s_x, z_x) -> DQ -> Conv(., DQ(w_q, s_w, axis=0), DQ(b_q, s_x s_w)) -> y -> Q(s_y, z_y) -> DQ -> ...

:func:`strip_qdq` removes them: a weight or bias becomes the float constant ``(q - z) * s`` under
the DQ output's name, an activation's Q -> DQ pair is bypassed (readers read the Q's input), and
what was removed is returned keyed by the float graph's tensor names: activation parameters per
tensor, weight parameters and int8 values per op output (the Conv / Gemm / MatMul the weight
feeds). Re-quantizing such a weight with its own scale, ``round(fl((q - z) s) / s) + z``, gives
back ``q`` exactly (checked here for every weight), so the int8 values realize uses are the model's.

ONNX Runtime folds a Relu / Clip that follows a Conv into the output quantizer (its zero point is
the dtype's minimum, so the quantizer clamps at 0) and deletes the node; the float graph gets a
``Relu`` back there (the QDQ model computes the same with or without it). A pair whose Q and DQ
disagree, a per-channel activation quantizer, or a DQ on a computed int8 tensor stays in the graph
(TVM runs it in float).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import TvmqError
from tvmq.passes.qparams import DTYPE_RANGE, QParams

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
OPERATOR_FORMAT = ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QLinearAdd", "QGemm")
LAYER_OPS = ("Conv", "Gemm", "MatMul")
IMPLIED_RELU = ("Conv", "Gemm", "MatMul", "Add")  # where ONNX Runtime folds a Relu into the quantizer
RELU_INPUT = "/relu_input"  # suffix of the tensor a restored Relu reads
_NUMPY = {onnx.TensorProto.INT8: "int8", onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.INT32: "int32"}


@dataclass
class ImportedQuantization:
    """What a QDQ model says about quantization, keyed by the stripped float graph's tensor names.

    ``activations``: tensor -> per-tensor parameters; ``weights``: the output of the Conv / Gemm /
    MatMul a weight feeds -> its parameters (per channel along the weight's ``axis`` in ONNX) and
    ``weight_values`` its int8 values; ``kept``: Q / DQ nodes left in the graph, and why.
    """

    activations: dict = field(default_factory=dict)
    weights: dict = field(default_factory=dict)
    weight_values: dict = field(default_factory=dict)
    kept: list = field(default_factory=list)

    def summary(self) -> dict:
        return {"activations": len(self.activations), "weights": len(self.weights),
                "kept_qdq_nodes": [f"{name}: {why}" for name, why in self.kept]}


def has_qdq(model: onnx.ModelProto) -> bool:
    return any(node.op_type in QDQ_OPS for node in model.graph.node)


def strip_qdq(model: onnx.ModelProto) -> tuple[onnx.ModelProto, ImportedQuantization | None]:
    """The float graph of ``model`` and its quantization (None when it has no Q / DQ nodes)."""
    operators = sorted({n.op_type for n in model.graph.node if n.op_type in OPERATOR_FORMAT})
    if operators:
        raise TvmqError(f"the model is in ONNX's quantized operator format ({', '.join(operators)}); tvmq imports "
                        f"the QDQ format (QuantizeLinear / DequantizeLinear around float ops): re-export it with "
                        f"quant_format=QDQ")
    if not has_qdq(model):
        return model, None
    return _Stripper(model).run()


class _Stripper:
    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.graph = model.graph
        self.init = {t.name: t for t in self.graph.initializer}
        self.producer = {out: node for node in self.graph.node for out in node.output}
        self.readers: dict = {}
        for node in self.graph.node:
            for name in node.input:
                self.readers.setdefault(name, []).append(node)
        self.alias: dict = {}  # DQ output -> the float tensor it stands for
        self.constants: dict = {}  # DQ output -> float array (dequantized weight / bias)
        self.dropped: set = set()  # id of removed nodes
        self.result = ImportedQuantization()
        self.weight_of: dict = {}  # DQ output -> (QParams, int values)

    def run(self):
        for node in self.graph.node:
            if node.op_type == "DequantizeLinear":
                self._dequantize(node)
        for node in self.graph.node:
            if node.op_type == "QuantizeLinear" and id(node) not in self.dropped:
                readers = self.readers.get(node.output[0], [])
                if readers and all(id(r) in self.dropped for r in readers) and not self._is_output(node.output[0]):
                    self.dropped.add(id(node))
                elif id(node) not in self.dropped:
                    self.result.kept.append((node.name or node.output[0], "its output is read by other ops"))
        return self._rebuilt(), self.result

    # ---- one DequantizeLinear ------------------------------------------------------------
    def _dequantize(self, node) -> None:
        x, scale, zero = (list(node.input) + ["", ""])[:3]
        if scale not in self.init or (zero and zero not in self.init):
            self.result.kept.append((node.name or node.output[0], "scale / zero point not constant"))
            return
        s = numpy_helper.to_array(self.init[scale]).astype(np.float32)
        if x in self.init:
            self._constant(node, x, s, zero)
            return
        source = self.producer.get(x)
        if source is None or source.op_type != "QuantizeLinear" or not self._same_params(source, node):
            self.result.kept.append((node.name or node.output[0], "no matching QuantizeLinear before it"))
            return
        if s.size != 1:
            self.result.kept.append((node.name or node.output[0], "per-channel activation quantizer"))
            return
        q = self.init[source.input[2]] if len(source.input) > 2 and source.input[2] else None
        dtype = _NUMPY.get(q.data_type, "uint8") if q is not None else "uint8"
        z = numpy_helper.to_array(q).astype(np.int32).reshape(()) if q is not None else np.int32(0)
        self.alias[node.output[0]] = source.input[0]
        self.result.activations[source.input[0]] = QParams(s.reshape(()), z, dtype)
        self.dropped.add(id(node))

    def _constant(self, node, x: str, s: np.ndarray, zero: str) -> None:
        q = numpy_helper.to_array(self.init[x])
        z = numpy_helper.to_array(self.init[zero]).astype(np.int32) if zero else np.zeros(s.shape, np.int32)
        axis = _axis(node, q.ndim) if s.size > 1 else None
        shape = [1] * q.ndim
        if axis is not None:
            shape[axis] = s.size
        value = ((q.astype(np.int32) - z.reshape(shape)) * s.reshape(shape)).astype(np.float32)
        self.constants[node.output[0]] = value
        if q.dtype in (np.int8, np.uint8):
            qp = QParams(s.reshape(-1) if axis is not None else s.reshape(()),
                         z.reshape(-1) if axis is not None else z.reshape(()), str(q.dtype), axis)
            _check_exact(value, q, qp, node.output[0])
            self.weight_of[node.output[0]] = (qp, q)
        self.dropped.add(id(node))

    def _same_params(self, quant, dequant) -> bool:
        def value(node, i):
            name = node.input[i] if len(node.input) > i else ""
            return numpy_helper.to_array(self.init[name]) if name in self.init else None

        a, b = value(quant, 1), value(dequant, 1)
        za, zb = value(quant, 2), value(dequant, 2)
        same_zero = (za is None and zb is None) or (za is not None and zb is not None and np.array_equal(za, zb))
        return a is not None and b is not None and np.array_equal(a, b) and same_zero and \
            _axis(quant, 1) == _axis(dequant, 1)

    def _is_output(self, name: str) -> bool:
        return any(o.name == name for o in self.graph.output)

    # ---- the float graph ----------------------------------------------------------------
    def _rebuilt(self) -> onnx.ModelProto:
        """The graph without the removed nodes; a graph output that was a DQ's keeps its name (the
        tensor behind it is renamed to it); a Relu restored where a quantizer clamps at 0."""
        outputs = {o.name for o in self.graph.output}
        rename = {}  # float tensor -> graph output name it becomes
        for out in outputs:
            if out in self.alias and self.alias[out] not in outputs and self.alias[out] not in rename \
                    and self.alias[out] not in {i.name for i in self.graph.input}:
                rename[self.alias[out]] = out
        resolve = {dq: rename.get(src, src) for dq, src in self.alias.items()}
        self.result.activations = {rename.get(k, k): v for k, v in self.result.activations.items()}
        nodes = []
        for node in self.graph.node:
            if id(node) in self.dropped:
                continue
            new = onnx.NodeProto()
            new.CopyFrom(node)
            new.input[:] = [resolve.get(i, i) for i in node.input]
            new.output[:] = [rename.get(o, o) for o in node.output]
            nodes.append(new)
        for out in outputs & set(self.alias) - set(rename.values()):  # an output that must stay a copy
            nodes.append(helper.make_node("Identity", [resolve[out]], [out], name=f"{out}/copy"))
        nodes = self._restore_relus(nodes)
        self._key_weights(nodes)
        graph = self.graph
        used = {i for n in nodes for i in n.input}
        inits = [t for t in graph.initializer if t.name in used and t.name not in self.constants]
        inits += [numpy_helper.from_array(v, name) for name, v in self.constants.items() if name in used]
        value_info = [v for v in graph.value_info if v.name not in self.alias and v.name not in rename]
        new_graph = helper.make_graph(nodes, graph.name, list(graph.input), list(graph.output), inits,
                                      value_info=value_info)
        model = onnx.ModelProto()
        model.CopyFrom(self.model)
        model.graph.CopyFrom(new_graph)
        return model

    def _restore_relus(self, nodes: list) -> list:
        out = []
        for node in nodes:
            out.append(node)
            name = node.output[0] if node.output else ""
            qp = self.result.activations.get(name)
            if node.op_type in IMPLIED_RELU and qp is not None and int(qp.zero_point) == DTYPE_RANGE[qp.dtype][0]:
                node.output[0] = name + RELU_INPUT
                out.append(helper.make_node("Relu", [name + RELU_INPUT], [name], name=f"{name}/restored_relu"))
        return out

    def _key_weights(self, nodes: list) -> None:
        """Weight parameters by the output of the layer op they feed (input 1), along its output channels."""
        for node in nodes:
            if node.op_type in LAYER_OPS and len(node.input) > 1 and node.input[1] in self.weight_of:
                qp, q = self.weight_of[node.input[1]]
                self.result.weights[node.output[0]] = qp
                self.result.weight_values[node.output[0]] = q


def _axis(node, ndim: int) -> int:
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    return axis + ndim if axis < 0 else axis


def _check_exact(value: np.ndarray, q: np.ndarray, qp: QParams, name: str) -> None:
    """``round(value / s) + z == q``: realize's re-quantization of the float weight gives the model's ints."""
    shape = [1] * q.ndim
    if qp.axis is not None:
        shape[qp.axis] = -1
    back = np.round(value / np.asarray(qp.scale).reshape(shape)) + np.asarray(qp.zero_point).reshape(shape)
    if not np.array_equal(back.astype(np.int64), q.astype(np.int64)):
        raise TvmqError(f"weight {name!r}: its int8 values do not survive dequantize / quantize in float32")
