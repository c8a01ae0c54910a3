"""ONNX in, Relax out: a checked, shape-inferred fp32 module whose tensors carry ONNX names.

Every Relax variable that holds the output of an ONNX node is named after that ONNX
tensor, so calibration statistics, passes and reports all speak the user's names.
To learn which variable is which tensor, the model is imported once with every node
output added as a graph output (a *probe*); the probes are dropped again afterwards.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from ..errors import TvmqError
from ..resources import check_model_fits

logger = logging.getLogger(__name__)

BATCH_DIM = "batch"
MAX_ELEMENTS = 1 << 31  # refuse absurd input shapes before anything allocates them


@dataclass(frozen=True)
class InputSpec:
    """One model input; ``shape[0]`` is ``None`` when the batch size is left free."""

    name: str
    shape: tuple
    dtype: str

    def static_shape(self, batch: int) -> tuple[int, ...]:
        return tuple(batch if d is None else d for d in self.shape)


@dataclass
class ImportedModel:
    """The fp32 Relax module with ONNX-named tensors and what the reports need to know."""

    mod: object  # tvm.IRModule
    inputs: list[InputSpec]
    outputs: list[str]
    nodes: dict[str, tuple[str, str]] = field(default_factory=dict)  # variable -> (node name, op type)
    name: str = "model"
    onnx_names: dict[str, str] = field(default_factory=dict)  # variable name -> ONNX tensor name


def load_model(path: str | Path, input_shapes: dict[str, tuple] | None = None, batch_size: int = 64) -> ImportedModel:
    """Read, check and import an ONNX model.

    ``input_shapes`` fixes symbolic dimensions (``{"input": (1, 3, 224, 224)}``); a symbolic
    leading dimension that is not fixed stays free as the batch size. A model whose
    quantization would not fit in memory (``resources``, with calibration batches of
    ``batch_size``) is refused before TVM sees it.
    """
    model = _read(Path(path))
    specs = _input_specs(model, input_shapes or {})
    _set_input_shapes(model, specs)
    model = _infer_shapes(model)
    _check_inferred_shapes(model)
    check_model_fits(model, Path(path).name, batch_size)
    outputs = [o.name for o in model.graph.output]
    probes = _float_tensors(model, exclude=set(outputs))
    mod = _import(_with_probes(model, probes))
    mod, onnx_names = _name_tensors(mod, outputs + probes, len(outputs))
    onnx_names.update({param.name: spec.name for param, spec in zip(mod["main"].params, specs)})
    variable = {onnx: var for var, onnx in onnx_names.items()}
    nodes = {variable[out]: (node.name or out, node.op_type)
             for node in model.graph.node for out in node.output if out in variable}
    return ImportedModel(mod, specs, outputs, nodes, name=Path(path).stem, onnx_names=onnx_names)


def _read(path: Path) -> onnx.ModelProto:
    if not path.is_file():
        raise TvmqError(f"model file not found: {path}")
    data = path.read_bytes()
    if not data:
        raise TvmqError(f"{path} is empty, not an ONNX model")
    try:
        model = onnx.load_model_from_string(data)
    except Exception as err:  # protobuf's DecodeError and friends
        raise TvmqError(f"{path} is not a valid ONNX model (truncated or corrupt protobuf: {err})") from None
    if not model.graph.node:
        raise TvmqError(f"{path} is not an ONNX model with a graph (no nodes found)")
    _load_external_data(model, path.parent)
    try:
        onnx.checker.check_model(model)
    except Exception as err:
        raise TvmqError(f"{path} fails the ONNX checker: {_first_line(err)}") from None
    _check_opset(model, path)
    return model


def _check_opset(model: onnx.ModelProto, path: Path) -> None:
    """The checker accepts any opset version; an operator set newer than onnx knows has no schemas."""
    latest = onnx.defs.onnx_opset_version()
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and not 1 <= opset.version <= latest:
            raise TvmqError(f"{path} imports opset {opset.version} of the ONNX domain; this onnx "
                            f"{onnx.__version__} knows opsets 1 to {latest}")


def _load_external_data(model: onnx.ModelProto, folder: Path) -> None:
    """Read tensors stored beside the model, refusing any location outside its folder.

    Never let the importer resolve ``location`` itself: it would read it relative to the
    working directory, so ``../../etc/passwd`` or an absolute path would be read as weights.
    """
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    external = [t for t in _all_tensors(model.graph) if uses_external_data(t)]
    root = folder.resolve()
    for tensor in external:
        location = ExternalDataInfo(tensor).location
        target = (root / location).resolve()
        if Path(location).is_absolute() or root not in target.parents or not target.is_file():
            raise TvmqError(f"tensor {tensor.name!r} stores its data at {location!r}, outside the model's "
                            f"folder or missing; refusing to read it")
    if external:
        onnx.load_external_data_for_model(model, str(root))


def _all_tensors(graph: onnx.GraphProto):
    """Every TensorProto of ``graph``: initializers and node attributes, subgraphs included."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _all_tensors(attr.g)
            for sub in attr.graphs:
                yield from _all_tensors(sub)


def _first_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def _input_specs(model: onnx.ModelProto, overrides: dict[str, tuple]) -> list[InputSpec]:
    initializers = {init.name for init in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in initializers]
    unknown = set(overrides) - {i.name for i in graph_inputs}
    if unknown:
        names = ", ".join(i.name for i in graph_inputs)
        raise TvmqError(f"--input-shape names unknown input(s) {sorted(unknown)}; the model's inputs are: {names}")
    return [_input_spec(value, overrides.get(value.name)) for value in graph_inputs]


def _input_spec(value: onnx.ValueInfoProto, override: tuple | None) -> InputSpec:
    tensor = value.type.tensor_type
    try:
        dtype = helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
    except (KeyError, ValueError, TypeError):
        raise TvmqError(f"input {value.name!r} has an unknown element type ({tensor.elem_type})") from None
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    if override is not None:
        if len(override) != len(dims) or any(d is not None and d != o for d, o in zip(dims, override)):
            raise TvmqError(f"input {value.name!r} has shape {_fmt(dims)}; cannot set it to {tuple(override)}")
        dims = list(override)
    if any(d is None for d in dims[1:]):
        raise TvmqError(f"input {value.name!r} has symbolic dimensions {_fmt(dims)}: give a static shape "
                        f"with --input-shape {value.name}:{','.join(str(d or 1) for d in dims)}")
    if any(d is not None and d <= 0 for d in dims):
        raise TvmqError(f"input {value.name!r} has an invalid shape {_fmt(dims)}")
    if int(np.prod([d or 1 for d in dims], dtype=np.float64)) > MAX_ELEMENTS:
        raise TvmqError(f"input {value.name!r} shape {_fmt(dims)} is absurdly large (> 2^31 elements)")
    return InputSpec(value.name, tuple(dims), dtype)


def _fmt(dims) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in dims) + ")"


def _set_input_shapes(model: onnx.ModelProto, specs: list[InputSpec]) -> None:
    by_name = {spec.name: spec for spec in specs}
    for value in model.graph.input:
        spec = by_name.get(value.name)
        if spec is None:
            continue
        for dim, size in zip(value.type.tensor_type.shape.dim, spec.shape):
            if size is None:
                dim.Clear()
                dim.dim_param = BATCH_DIM
            else:
                dim.Clear()
                dim.dim_value = size


def _infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as err:
        raise TvmqError(f"ONNX shape inference failed: {_first_line(err)}") from None


def _check_inferred_shapes(model: onnx.ModelProto) -> None:
    """Shape inference happily computes negative or zero sizes from bad attributes (a dilation
    of 2^20 on a 12-pixel image); TVM would fail on them deep inside a pass."""
    producer = {out: node for node in model.graph.node for out in node.output}
    for value in list(model.graph.value_info) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if any(d.HasField("dim_value") and d.dim_value <= 0 for d in dims):
            node = producer.get(value.name)
            where = f" by node {node.name or node.op_type!r} ({node.op_type})" if node is not None else ""
            raise TvmqError(f"tensor {value.name!r} is given the empty or negative shape {_fmt(_dims(dims))}{where}: "
                            f"check its attributes (kernel, strides, pads, dilations) against its input")


def _dims(dims) -> list:
    return [d.dim_value if d.HasField("dim_value") else None for d in dims]


def _float_tensors(model: onnx.ModelProto, exclude: set[str]) -> list[str]:
    """Names of node outputs that shape inference says are float32 tensors."""
    types = {v.name: v.type.tensor_type.elem_type for v in model.graph.value_info}
    return [out for node in model.graph.node for out in node.output
            if out and out not in exclude and types.get(out) == TensorProto.FLOAT]


def _with_probes(model: onnx.ModelProto, probes: list[str]) -> onnx.ModelProto:
    probed = onnx.ModelProto()
    probed.CopyFrom(model)
    infos = {v.name: v for v in model.graph.value_info}
    probed.graph.output.extend(infos[name] for name in probes)
    return probed


def _import(model: onnx.ModelProto):
    from tvm import relax

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    try:
        mod = _importer_class()(None, "float32", keep_params_in_input=False).from_onnx(model.graph, opset)
    except TvmqError:
        raise
    except Exception as err:
        raise TvmqError(f"cannot import the model into TVM: {_unsupported(model) or _first_line(err)}") from None
    return relax.transform.DeadCodeElimination()(relax.transform.Normalize()(mod))


def _importer_class():
    """TVM's ONNX importer, except that Clip with constant bounds becomes one ``relax.op.clip``.

    TVM imports Clip as opaque TIR calls (``emit_te(topi.maximum)``), which hides a
    ReLU6 from realize; ``relax.op.clip`` can be fused into a layer's output clamp.
    """
    from tvm import relax
    from tvm.relax.frontend.onnx.onnx_frontend import ONNXGraphImporter

    from .recurrent import CONVERTERS as RECURRENT

    def bound(attrs, inputs, index, key, default):
        if len(inputs) > index and inputs[index] is not None:
            value = inputs[index]
            return float(value.value.numpy()) if isinstance(value, tvm_constant()) and value.ty.ndim == 0 else None
        return float(attrs.get(key, default))

    class Importer(ONNXGraphImporter):
        def _check_for_unsupported_ops(self, graph):  # tvmq converts LSTM and GRU itself
            kept = [node for node in graph.node if node.op_type not in RECURRENT]
            super()._check_for_unsupported_ops(helper.make_graph(kept, graph.name, [], []))

        def _convert_operator(self, op_name, inputs, attrs, opset):
            if op_name in RECURRENT:
                return RECURRENT[op_name](self.bb, inputs, attrs, opset)
            if op_name == "Clip":
                finite = float(np.finfo(np.float32).max)
                lo, hi = bound(attrs, inputs, 1, "min", -finite), bound(attrs, inputs, 2, "max", finite)
                if lo is not None and hi is not None:
                    return self.bb.emit(relax.op.clip(inputs[0], max(lo, -finite), min(hi, finite)))
            return super()._convert_operator(op_name, inputs, attrs, opset)

    return Importer


def tvm_constant():
    from tvm import ir

    return ir.expr.Constant


def _unsupported(model: onnx.ModelProto) -> str | None:
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    from .recurrent import CONVERTERS as RECURRENT

    known = {**_get_convert_map(), **RECURRENT}
    missing = [(n.op_type, n.name) for n in model.graph.node if n.op_type not in known]
    if not missing:
        return None
    op, name = missing[0]
    return f"unsupported operator {op} (node {name!r})"


def _name_tensors(mod, names: list[str], num_outputs: int):
    """Rename the variables behind the probed outputs after their ONNX tensors; drop the probes.

    Returns the module and ``{variable name: ONNX tensor name}``: Relax turns ``.`` into ``_``
    in names (``features.2/Clip`` becomes ``features_2/Clip``), and a clash gets a suffix.
    """
    from tvm import relax

    from ..passes.graph import with_main

    func = mod["main"]
    returned = func.body.blocks[-1].bindings[-1]
    fields = list(returned.value.fields) if isinstance(returned.value, relax.Tuple) else [returned.value]
    rename = {f: n for f, n in zip(fields, names) if isinstance(f, relax.Var)}
    onnx_names = {}

    @relax.expr_functor.mutator
    class Renamer(relax.PyExprMutator):
        def visit_var_binding_(self, binding):
            value = self.visit_expr(binding.value)
            onnx_name = rename.get(binding.var)
            name = binding.var.name if onnx_name is None else _unique(onnx_name.replace(".", "_"), onnx_names)
            new_var = self.builder_.emit(value, name) if isinstance(binding.var, relax.DataflowVar) \
                else self.builder_.emit_output(value, name)
            if onnx_name is not None:
                onnx_names[new_var.name] = onnx_name
            self.set_var_remap(binding.var, new_var)

    named = Renamer(mod).visit_expr(func)
    bindings = named.body.blocks[-1].bindings
    fields = bindings[-1].value.fields if isinstance(bindings[-1].value, relax.Tuple) else [bindings[-1].value]
    builder = relax.BlockBuilder()
    with builder.function("main", named.params, attrs=dict(named.attrs) if named.attrs else None):
        with builder.dataflow():
            for binding in bindings[:-1]:
                builder.emit_normalized(binding)
            kept = list(fields[:num_outputs])
            out = builder.emit_output(relax.Tuple(kept) if num_outputs > 1 else kept[0])
        builder.emit_func_output(out)
    return relax.transform.DeadCodeElimination()(with_main(mod, builder.get()["main"])), onnx_names


def _unique(name: str, taken: dict) -> str:
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}__{n}"
    return candidate
