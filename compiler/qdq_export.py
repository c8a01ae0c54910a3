"""QDQ ONNX out: the plan tvmq carried out, written as a QDQ model ONNX Runtime runs.

The source ONNX model (its QDQ pairs stripped first, when it was a QDQ model) gets, for every
int8 layer of the deployed int8 module, the integers tvmq computes with::

    x -> Q(s_x, z_x) -> DQ -> Conv(., DQ(w_q, s_w, axis), DQ(b_q, s_x s_w, axis)) [-> Relu | Clip] -> y -> Q(s_y, z_y) -> DQ

* ``w_q`` (int8) and ``b_q = round((b - shift) / (s_x s_w))`` (int32) are the ones realize used:
  after BatchNorm folding (the BatchNorm node is dropped; the conv takes its output's name),
  cross-layer equalization (a ReLU6 it turned into a ReLU is written as a Relu), high-bias
  absorption and bias correction. The artifact carries them in ``qdq_weights.npz``
  (:func:`integer_layers`, written at compile time), next to ``plan.json`` and the manifest's
  realize record.
* A tensor gets ``Q -> DQ`` with the parameters its quantized value has in tvmq's module (the
  record's ``range_of``: a max pool or reshape keeps its input's). When tvmq computed it in
  int8, every reader reads the dequantized value; when tvmq computed it in fp32 and quantized
  it for int8 readers, only those readers do (fp32 readers read the float tensor).
* A layer whose result leaves the model (dequantized straight from its accumulator) has no
  output quantizer; fp32 layers keep their float weights.

A Gemm / MatMul weight is written in the node's own layout (``transB``); per-channel weights
need opset 13, so older models are converted first (``onnx.version_converter``). Layers and
tensors that only tvmq's frontend has (1-D convs run as 2-D ones, LSTM / GRU gate matmuls,
inlined ``If`` branches) are refused in one line.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from tvmq.passes.layers import find_layers
from tvmq.passes.plan import AUTO_NAME, QuantPlan
from tvmq.passes.rules.linear import layer_integers

from .errors import TvmqError
from .fileio import atomic_write_bytes
from .frontend.qdq import strip_qdq
from .runtime import _read_manifest as read_manifest
from .runtime import sha256

logger = logging.getLogger(__name__)

QDQ_WEIGHTS = "qdq_weights.npz"
PLAN = "plan.json"
OPSET = 13  # DequantizeLinear's axis (per-channel weights)
LAYER_OPS = ("Conv", "Gemm", "MatMul")


# ---- at compile time: what the artifact carries ------------------------------------------------
def source_record(model: str | Path) -> dict:
    """The manifest's ``source``: the model's absolute path and sha256 (export checks it)."""
    path = Path(model).absolute()
    return {"path": str(path), "sha256": sha256(path)}


def integer_layers(func, plan: QuantPlan, record: dict, onnx_names: dict) -> dict:
    """``qdq_weights.npz``'s arrays: per int8 layer of ``record`` (realize's, by Relax names) its
    output's ONNX name (``tensors``), int8 weight ``weight_i`` (Relax layout: OIHW, or ``(K, N)``),
    int32 bias ``bias_i = round((b - shift) / (s_x s_w))`` and output clamp ``clamp_i``."""
    arrays, names = {}, []
    for layer in find_layers(func).values():
        if layer.out.name not in record["weights"] or record["precision"].get(layer.out.name) != "int8":
            continue  # fp32, or dynamic (its input's scale is computed at run time)
        x = record["activations"][record["range_of"][layer.data.name]]
        w_q, bias_q, _ = layer_integers(layer, plan.layers[layer.out.name], np.float32(x["scale"][0]))
        index = len(names)
        names.append(onnx_names.get(layer.out.name, layer.out.name))
        arrays.update({f"weight_{index}": w_q, f"bias_{index}": bias_q,
                       f"clamp_{index}": np.array(layer.clamp, np.float64)})
    return {"tensors": np.array(names, dtype=str), **arrays}


# ---- at export time ----------------------------------------------------------------------------
def export_artifact(directory: str | Path, out: str | Path, model: str | Path | None = None) -> Path:
    """Write artifact ``directory``'s plan as a QDQ model at ``out`` (``model``: the source ONNX
    model, default the path the manifest records; its sha256 must match)."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    missing = [name for name in (PLAN, QDQ_WEIGHTS) if name not in manifest.get("files", {})]
    if missing or "source" not in manifest:
        raise TvmqError(f"{directory} was written by an older tvmq without what export-qdq needs "
                        f"({', '.join(missing) or 'the source model record'}): compile the model again")
    for name in (PLAN, QDQ_WEIGHTS):
        if not (directory / name).is_file() or sha256(directory / name) != manifest["files"][name]:
            raise TvmqError(f"artifact file {name} is missing or does not match its sha256 in the manifest")
    plan = json.loads((directory / PLAN).read_text())
    with np.load(directory / QDQ_WEIGHTS, allow_pickle=False) as archive:
        arrays = dict(archive)
    return export(manifest, plan, arrays, out, model)


def export(manifest: dict, plan: dict, arrays: dict, out: str | Path, model: str | Path | None = None) -> Path:
    """Write the QDQ model (see the module docstring) to ``out`` atomically; checked by
    ``onnx.checker`` (full check) before anything is written."""
    if arrays is None or plan is None:
        raise TvmqError("this compiled model carries no plan / qdq weights to export (compile it again)")
    dynamic = [entry["node"] or entry["tensor"] for entry in plan["layers"] if entry["precision"] == "dynamic"]
    if dynamic:
        raise TvmqError(f"cannot export: layer {dynamic[0]!r} is dynamic (its input's scale is computed at run "
                        f"time, which a QDQ model cannot say); compile with --mode static to export")
    source = _source_model(manifest, model)
    qdq = _Exporter(strip_qdq(_opset(onnx.load(str(source))))[0], manifest["quantization"], plan, arrays).run()
    try:
        onnx.checker.check_model(qdq, full_check=True)
    except onnx.checker.ValidationError as err:
        first = (str(err).strip().splitlines() or ["invalid"])[0]
        raise TvmqError(f"the exported QDQ model does not pass onnx.checker: {first}") from None
    atomic_write_bytes(Path(out), qdq.SerializeToString())
    logger.debug("wrote %s (%d int8 layers)", out, len(arrays.get("tensors", ())))
    return Path(out)


def _source_model(manifest: dict, model) -> Path:
    recorded = manifest.get("source")
    if recorded is None:
        raise TvmqError("the artifact records no source model (written by an older tvmq): compile the model again")
    path = Path(model) if model is not None else Path(recorded["path"])
    if not path.is_file():
        raise TvmqError(f"source model {path} not found" +
                        ("" if model is not None else " (the path the artifact records): pass --model MODEL.onnx"))
    if sha256(path) != recorded["sha256"]:
        raise TvmqError(f"{path} is not the model this artifact was compiled from (its sha256 differs)")
    return path


def _opset(model: onnx.ModelProto) -> onnx.ModelProto:
    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), OPSET)
    return onnx.version_converter.convert_model(model, OPSET) if version < OPSET else model


class _Exporter:
    """The source graph rewritten: int8 layers (:meth:`_layer`), then activation Q / DQ (:meth:`_quantizers`)."""

    def __init__(self, model: onnx.ModelProto, record: dict, plan: dict, arrays: dict):
        self.model, self.record = model, record
        self.plan = {entry["tensor"]: entry for entry in plan["layers"]}
        self.arrays = arrays
        self.nodes = list(model.graph.node)
        self.new_inits: list = []
        self.graph_inputs = {i.name for i in model.graph.input}
        self.taken = {t for n in self.nodes for t in (*n.input, *n.output)} | \
            {t.name for t in model.graph.initializer} | self.graph_inputs

    def run(self) -> onnx.ModelProto:
        for index, tensor in enumerate(self.arrays.get("tensors", ())):
            self._layer(str(tensor), *(self.arrays[f"{key}_{index}"] for key in ("weight", "bias", "clamp")))
        self._quantizers()
        return self._model()

    # ---- one int8 layer ---------------------------------------------------------------------
    def _layer(self, tensor: str, w_q: np.ndarray, bias_q: np.ndarray, clamp: np.ndarray) -> None:
        """Replace the layer's ONNX nodes (its op, bias Add, folded BatchNorm, clamps) by the op on
        the dequantized int8 weight and int32 bias, then its clamp, ending in the layer's tensor."""
        entry = self.plan.get(tensor)
        if entry is None:
            raise TvmqError(f"layer {tensor!r} of qdq_weights.npz is not in plan.json")
        produced = _producers(self.nodes)
        named = [name for name in entry["chain"] if name in produced]
        chain = [produced[name] for name in named]
        while chain and chain[0].op_type == "BatchNormalization" and chain[0].input[0] in produced:
            chain.insert(0, produced[chain[0].input[0]])  # the conv a folded BatchNorm follows
        ops = [node for node in chain if node.op_type in LAYER_OPS]
        if len(ops) != 1 or not named or named[-1] != tensor:
            raise TvmqError(f"cannot export layer {entry['node'] or tensor!r}: the source graph has no single "
                            f"Conv / Gemm / MatMul behind its tensors {named} (a layer tvmq's frontend made)")
        op = ops[0]
        if entry["input_tensor"] not in produced and entry["input_tensor"] not in self.graph_inputs:
            raise TvmqError(f"cannot export layer {entry['node'] or tensor!r}: its input {entry['input_tensor']!r} "
                            f"is not a tensor of the source graph (tvmq's frontend made it)")
        weight, axis = self._onnx_weight(op, w_q, entry)
        w_scale = np.asarray(entry["weight"]["scale"], np.float32)
        x_scale = np.float32(self._input_qparams(entry)["scale"][0])
        prefix = self._name(op.name or op.output[0])
        w_name = self._dequantize_constant(f"{prefix}/weight", weight, w_scale, axis)
        b_name = self._dequantize_constant(f"{prefix}/bias", bias_q.astype(np.int32), x_scale * w_scale,
                                           0 if w_scale.size > 1 else None)
        stages = [self._op_node(op, w_name, b_name)]
        if op.op_type == "MatMul":
            stages.append(helper.make_node("Add", ["", b_name], [""], name=self._name(f"{prefix}/bias_add")))
        clamp_node = self._clamp(float(clamp[0]), float(clamp[1]), prefix)
        if clamp_node is not None:
            stages.append(clamp_node)
        self._chain_outputs(stages, named)
        position = min(self.nodes.index(node) for node in chain)
        removed = {id(node) for node in chain}
        self.nodes = [n for n in self.nodes[:position] if id(n) not in removed] + stages + \
            [n for n in self.nodes[position:] if id(n) not in removed]

    def _onnx_weight(self, op, w_q: np.ndarray, entry: dict) -> tuple[np.ndarray, int | None]:
        """``w_q`` in ``op``'s layout and the DequantizeLinear axis of its output channels."""
        per_channel = entry["weight"]["axis"] is not None
        if op.op_type == "Conv":
            return w_q, 0 if per_channel else None
        attrs = {a.name: helper.get_attribute_value(a) for a in op.attribute}
        if op.op_type == "Gemm" and (attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0):
            raise TvmqError(f"cannot export Gemm {op.name!r} with transA or alpha != 1")
        if op.op_type == "Gemm" and attrs.get("transB", 0):
            return np.ascontiguousarray(w_q.T), 0 if per_channel else None
        return w_q, 1 if per_channel else None

    def _op_node(self, op, weight: str, bias: str):
        node = onnx.NodeProto()
        node.CopyFrom(op)
        inputs = list(op.input)
        inputs[1] = weight
        if op.op_type in ("Conv", "Gemm"):
            inputs = inputs[:2] + [bias]
        node.input[:] = inputs
        if op.op_type == "Gemm":  # beta is in the bias already
            kept = [a for a in node.attribute if a.name != "beta"]
            del node.attribute[:]
            node.attribute.extend(kept)
        return node

    def _clamp(self, lo: float, hi: float, prefix: str):
        """Relu for ``[0, inf)``, Clip for other finite bounds, None for none."""
        if lo == 0.0 and hi == np.inf:
            return helper.make_node("Relu", [""], [""], name=self._name(f"{prefix}/relu"))
        if not (np.isfinite(lo) or np.isfinite(hi)):
            return None
        bounds = [self._constant(f"{prefix}/clip_{side}", np.float32(v)) if np.isfinite(v) else ""
                  for side, v in (("min", lo), ("max", hi))]
        return helper.make_node("Clip", ["", *bounds], [""], name=self._name(f"{prefix}/clip"))

    def _chain_outputs(self, stages: list, named: list[str]) -> None:
        """Wire ``stages`` in a row: the last ends in the layer's tensor, earlier ones take the
        chain's earlier names (the conv a BatchNorm was folded into takes the BatchNorm's output)."""
        for i, node in enumerate(stages):
            if i == len(stages) - 1:
                node.output[0] = named[-1]
            else:
                node.output[0] = named[i] if i < len(named) - 1 else self._name(f"{named[-1]}/stage{i}")
            if i > 0:
                node.input[0] = stages[i - 1].output[0]

    def _input_qparams(self, entry: dict) -> dict:
        root = self.record["range_of"][entry["input_tensor"]]
        return self.record["activations"][root]

    # ---- activation quantizers --------------------------------------------------------------
    def _quantizers(self) -> None:
        """``Q -> DQ`` on every tensor that has a quantized value in tvmq's module (``range_of``),
        read through by every reader when tvmq computed it in int8, by its int8 readers otherwise."""
        produced = _producers(self.nodes)
        inputs, outputs = self.graph_inputs, {o.name for o in self.model.graph.output}
        precision = self.record["precision"]
        self.readers: dict = {}
        for node in self.nodes:
            for name in dict.fromkeys(node.input):
                self.readers.setdefault(name, []).append(node)
        after: dict = {}  # tensor -> the Q / DQ nodes emitted after its producer
        for tensor, root in sorted(self.record["range_of"].items()):
            if tensor not in produced and tensor not in inputs:
                if AUTO_NAME.match(tensor):
                    continue  # a value inside one ONNX node's Relax expansion
                raise TvmqError(f"cannot export: tvmq quantizes tensor {tensor!r}, which the source graph does "
                                f"not have (made by tvmq's frontend)")
            int8 = precision.get(tensor) == "int8"
            readers = [n for n in self.readers.get(tensor, ()) if int8 or self._reads_int8(n)]
            if not readers and not (int8 and tensor in outputs):
                continue
            qp = self.record["activations"][root]
            source = tensor
            if int8 and tensor in outputs:  # the graph output is the dequantized value, under its name
                source = self._name(f"{tensor}/float")
                produced[tensor].output[list(produced[tensor].output).index(tensor)] = source
                target = tensor  # its readers read the dequantized value under the same name
            else:
                target = self._name(f"{tensor}/dequantized")
                for node in readers:
                    node.input[:] = [target if i == tensor else i for i in node.input]
            after[source] = self._pair(source, target, qp)
        order = [node for name in sorted(inputs) if name in after for node in after[name]]
        for node in self.nodes:
            order.append(node)
            for out in node.output:
                order.extend(after.get(out, ()))
        self.nodes = order

    def _reads_int8(self, node) -> bool:
        """Whether tvmq's module computes ``node`` in int8: its output's precision, else (a Pad tvmq
        merged, a BatchNorm it folded) its only reader's; unknown counts as int8."""
        precision = self.record["precision"]
        seen = set()
        while id(node) not in seen:
            seen.add(id(node))
            known = [precision[o] for o in node.output if o in precision]
            if known:
                return known[0] == "int8"
            readers = self.readers.get(node.output[0], []) if node.output else []
            if len(readers) != 1:
                return True
            node = readers[0]
        return True

    def _pair(self, source: str, target: str, qp: dict) -> list:
        dtype = np.dtype(qp["dtype"])
        scale = self._constant(f"{source}/scale", np.float32(qp["scale"][0]))
        zero = self._constant(f"{source}/zero_point", np.array(qp["zero_point"][0], dtype))
        quantized = self._name(f"{source}/quantized")
        return [helper.make_node("QuantizeLinear", [source, scale, zero], [quantized], name=self._name(f"{source}/Q")),
                helper.make_node("DequantizeLinear", [quantized, scale, zero], [target],
                                 name=self._name(f"{source}/DQ"))]

    # ---- constants, names, the model -------------------------------------------------------
    def _dequantize_constant(self, base: str, q: np.ndarray, scale: np.ndarray, axis: int | None) -> str:
        """``DQ(q, scale, 0)`` of a constant (per channel along ``axis`` when given); its output's name."""
        scale = np.asarray(scale, np.float32)
        scale = scale.reshape(-1) if axis is not None else scale.reshape(-1)[0]
        q_name = self._constant(f"{base}_quantized", q)
        s_name = self._constant(f"{base}_scale", scale)
        z_name = self._constant(f"{base}_zero_point", np.zeros(np.shape(scale), q.dtype))
        out = self._name(f"{base}_dequantized")
        node = helper.make_node("DequantizeLinear", [q_name, s_name, z_name], [out], name=self._name(f"{base}/DQ"))
        if axis is not None:
            node.attribute.append(helper.make_attribute("axis", axis))
        self.nodes.insert(0, node)
        return out

    def _constant(self, base: str, value) -> str:
        name = self._name(base)
        self.new_inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def _name(self, base: str) -> str:
        name, n = base, 1
        while name in self.taken:
            n += 1
            name = f"{base}_{n}"
        self.taken.add(name)
        return name

    def _model(self) -> onnx.ModelProto:
        """The rewritten graph without nodes and initializers nothing reads any more."""
        graph = self.model.graph
        outputs = {o.name for o in graph.output}
        nodes = self.nodes
        while True:
            read = {i for n in nodes for i in n.input} | outputs
            kept = [n for n in nodes if any(o in read for o in n.output)]
            if len(kept) == len(nodes):
                break
            nodes = kept
        read = {i for n in nodes for i in n.input}
        produced = {o for n in nodes for o in n.output}
        inits = [t for t in list(graph.initializer) + self.new_inits if t.name in read]
        value_info = [v for v in graph.value_info if v.name in produced]
        new = helper.make_graph(nodes, graph.name, list(graph.input), list(graph.output), inits,
                                value_info=value_info)
        model = onnx.ModelProto()
        model.CopyFrom(self.model)
        model.graph.CopyFrom(new)
        model.producer_name, model.producer_version = "tvmq", _version()
        return model


def _producers(nodes: list) -> dict:
    return {out: node for node in nodes for out in node.output if out}


def _version() -> str:
    from importlib.metadata import version

    return version("tvmq")


__all__ = ["QDQ_WEIGHTS", "export", "export_artifact", "integer_layers", "source_record"]
