"""Read an ONNX file and refuse, in one line, anything that is not a checked ONNX model."""

from __future__ import annotations

from pathlib import Path

import onnx

from ..errors import TvmqError


def read_model(path: Path) -> onnx.ModelProto:
    """Load ``path`` with its external data, run the ONNX checker and check the opset."""
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
        raise TvmqError(f"{path} fails the ONNX checker: {first_line(err)}") from None
    _check_opset(model, path)
    return model


def onnx_opset(model: onnx.ModelProto) -> int:
    """The version of the default (``ai.onnx``) operator set the model imports."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def first_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


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
