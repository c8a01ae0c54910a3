"""Input shapes: read each input's declared shape, fix its free dimensions, infer the rest.

A dimension is *free* when the model names it (``dim_param``), leaves it unknown, or
declares it ``-1`` or ``0`` (exporters write both for "dynamic"). The user fixes free
dimensions with ``input_shapes``; a named dimension fixed on one input is fixed on every
input that shares the name (``ids`` and ``attention_mask`` both ``(batch, sequence)``).
Only a leading free dimension may stay free, as the batch size, shared by every input
that has one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import onnx
from onnx import helper

from ..errors import TvmqError
from .reader import first_line

BATCH_DIM = "batch"
MAX_ELEMENTS = 1 << 31  # refuse absurd input shapes before anything allocates them
EXAMPLE_DIM = 32  # what the error's example flag suggests for a free non-batch dimension
ANONYMOUS_DIMS = frozenset({"", "?"})  # dim_params that name no dimension (PaddlePaddle writes "?")


@dataclass(frozen=True)
class InputSpec:
    """One model input; ``shape[0]`` is ``None`` when the batch size is left free."""

    name: str
    shape: tuple
    dtype: str

    @property
    def is_float(self) -> bool:
        """Whether the input takes floating-point values (float16/32/64, bfloat16)."""
        return self.dtype.startswith(("float", "bfloat"))

    @property
    def free_batch(self) -> bool:
        """Whether the leading (batch) dimension is left free."""
        return bool(self.shape) and self.shape[0] is None

    def static_shape(self, batch: int) -> tuple[int, ...]:
        return tuple(batch if d is None else d for d in self.shape)


def input_specs(model: onnx.ModelProto, overrides: dict[str, tuple]) -> list[InputSpec]:
    """The spec of every graph input (initializers excluded), ``overrides`` applied and checked."""
    initializers = {init.name for init in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in initializers]
    unknown = set(overrides) - {i.name for i in graph_inputs}
    if unknown:
        names = ", ".join(i.name for i in graph_inputs)
        raise TvmqError(f"--input-shape names unknown input(s) {sorted(unknown)}; the model's inputs are: {names}")
    declared = declared_specs(model)
    specs = [_fixed(spec, overrides.get(spec.name)) for spec in declared]
    sizes = _named_sizes(graph_inputs, specs, overrides)
    specs = [_with_named(spec, value, sizes) for spec, value in zip(specs, graph_inputs)]
    for spec in specs:
        if any(d is None for d in spec.shape[1:]):
            raise TvmqError(_free_dims_message(spec, declared))
        if int(np.prod([d or 1 for d in spec.shape], dtype=np.float64)) > MAX_ELEMENTS:
            raise TvmqError(f"input {spec.name!r} shape {fmt(spec.shape)} is absurdly large (> 2^31 elements)")
    return specs


def pin_batch(specs: list[InputSpec], batch: int = 1) -> list[InputSpec]:
    """The specs with a free batch dimension fixed to ``batch``."""
    return [replace(s, shape=s.static_shape(batch)) if s.free_batch else s for s in specs]


def set_input_shapes(model: onnx.ModelProto, specs: list[InputSpec]) -> onnx.ModelProto:
    """A copy of ``model`` whose inputs declare the specs' shapes (a free batch as ``batch``).

    Declared ``-1`` / ``0`` sizes of outputs and intermediate tensors are cleared first, so
    that shape inference computes them instead of refusing the static size it finds.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for value in list(out.graph.output) + list(out.graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_value") and dim.dim_value <= 0:
                dim.Clear()
    by_name = {spec.name: spec for spec in specs}
    for value in out.graph.input:
        spec = by_name.get(value.name)
        if spec is None:
            continue
        for dim, size in zip(value.type.tensor_type.shape.dim, spec.shape):
            dim.Clear()
            if size is None:
                dim.dim_param = BATCH_DIM
            else:
                dim.dim_value = size
    return out


def infer_shapes(model: onnx.ModelProto, strict: bool = True) -> onnx.ModelProto:
    """``model`` with inferred shapes; ``strict``: an inference error anywhere is a TvmqError (not strict,
    nodes that fail are left without shapes: a graph whose ``If`` holds a branch invalid on the fixed
    shapes is still inferred everywhere else)."""
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=strict, data_prop=True)
    except Exception as err:
        raise TvmqError(f"ONNX shape inference failed: {first_line(err)}") from None


def check_inferred_shapes(model: onnx.ModelProto) -> None:
    """Refuse the negative or zero sizes that shape inference computes from bad attributes.

    (A dilation of 2^20 on a 12-pixel image; TVM would fail on them deep inside a pass.)
    An empty rank-1 ``Constant`` that only feeds optional inputs (``Resize``'s unused
    ``roi`` or ``scales``) is legal ONNX and allowed.
    """
    producer = {out: node for node in model.graph.node for out in node.output}
    for value in list(model.graph.value_info) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if not any(d.HasField("dim_value") and d.dim_value <= 0 for d in dims):
            continue
        node = producer.get(value.name)
        if _empty_optional_constant(model, value.name, node, dims):
            continue
        where = f" by node {node.name or node.op_type!r} ({node.op_type})" if node is not None else ""
        raise TvmqError(f"tensor {value.name!r} is given the empty or negative shape {fmt(_dims(dims))}{where}: "
                        f"check its attributes (kernel, strides, pads, dilations) against its input")


def fmt(dims) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in dims) + ")"


def _empty_optional_constant(model: onnx.ModelProto, name: str, node, dims) -> bool:
    """An empty rank-1 Constant read only as a non-first (optional) input."""
    if node is None or node.op_type != "Constant" or len(dims) != 1 or dims[0].dim_value != 0:
        return False
    reads = [index for n in model.graph.node for index, i in enumerate(n.input) if i == name]
    return all(index > 0 for index in reads)


def declared_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """Every graph input (initializers excluded) as declared: free dimensions are None."""
    initializers = {init.name for init in model.graph.initializer}
    return [_declared(value) for value in model.graph.input if value.name not in initializers]


def _declared(value: onnx.ValueInfoProto) -> InputSpec:
    tensor = value.type.tensor_type
    try:
        dtype = helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
    except (KeyError, ValueError, TypeError):
        raise TvmqError(f"input {value.name!r} has an unknown element type ({tensor.elem_type})") from None
    dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor.shape.dim)
    return InputSpec(value.name, dims, dtype)


def _fixed(spec: InputSpec, override: tuple | None) -> InputSpec:
    """``spec`` with ``override`` as its shape, which must keep every static dimension."""
    if override is None:
        return spec
    override = tuple(override)
    if len(override) != len(spec.shape) or any(d is not None and d != o for d, o in zip(spec.shape, override)):
        raise TvmqError(f"input {spec.name!r} has shape {fmt(spec.shape)}; cannot set it to {override}")
    kept_free = [i for i, o in enumerate(override) if o is None]  # None: leave the batch free
    if kept_free not in ([], [0]) or any(o is not None and (not isinstance(o, (int, np.integer)) or o <= 0)
                                         for o in override):
        raise TvmqError(f"input {spec.name!r} cannot take the invalid shape {override}")
    return replace(spec, shape=tuple(None if o is None else int(o) for o in override))


def _named_sizes(values: list, specs: list[InputSpec], overrides: dict) -> dict[str, int]:
    """``{dim_param: size}`` as the inputs given in ``overrides`` fix them."""
    sizes: dict[str, int] = {}
    for value, spec in zip(values, specs):
        if value.name not in overrides:
            continue
        for dim, size in zip(value.type.tensor_type.shape.dim, spec.shape):
            if dim.dim_param not in ANONYMOUS_DIMS and sizes.setdefault(dim.dim_param, size) != size:
                raise TvmqError(f"dimension {dim.dim_param!r} is set to {sizes[dim.dim_param]} and to {size}; "
                                f"inputs that share a dimension name must agree")
    return sizes


def _with_named(spec: InputSpec, value: onnx.ValueInfoProto, sizes: dict[str, int]) -> InputSpec:
    """``spec`` with its free dimensions that ``sizes`` names fixed."""
    dims = value.type.tensor_type.shape.dim
    shape = tuple(sizes.get(dim.dim_param, d) if d is None else d for d, dim in zip(spec.shape, dims))
    return replace(spec, shape=shape)


def _free_dims_message(spec: InputSpec, declared: list[InputSpec]) -> str:
    listing = ", ".join(f"{s.name} {fmt(s.shape)} {s.dtype}" for s in declared)
    example = ",".join(str(d if d is not None else 1 if i == 0 else EXAMPLE_DIM) for i, d in enumerate(spec.shape))
    return (f"input {spec.name!r} has free dimensions {fmt(spec.shape)}; give static shapes with "
            f"--input-shape NAME:D0,D1,... (inputs: {listing}); e.g. --input-shape {spec.name}:{example}")


def _dims(dims) -> list:
    return [d.dim_value if d.HasField("dim_value") else None for d in dims]
