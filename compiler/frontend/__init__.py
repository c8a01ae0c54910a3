"""ONNX in, Relax out: a checked, shape-inferred fp32 module whose tensors carry ONNX names.

``load_model`` reads and checks the file (:mod:`.reader`), strips a QDQ model's quantize /
dequantize pairs into plain float plus the parameters they held (:mod:`.qdq`), fixes the input shapes
(:mod:`.shapes`), folds the constant subgraphs that static shapes make constant
(:mod:`.fold`), imports the graph with TVM's importer and tvmq's converter registry
(:mod:`.importer`), and names every Relax variable that holds the output of an ONNX node
after that ONNX tensor (:mod:`.names`), so calibration statistics, passes and reports
all speak the user's names.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from ..errors import TvmqError
from ..resources import check_model_fits
from .branches import has_branches, inline_branches
from .conv1d import conv1d_as_2d
from .importer import import_onnx, unsupported_operator
from .merge_pads import merge_pads
from .names import float_tensors, name_tensors, with_probes
from .qdq import ImportedQuantization, strip_qdq
from .reader import read_model
from .shapes import (BATCH_DIM, MAX_ELEMENTS, InputSpec, check_inferred_shapes, infer_shapes, input_specs,
                     pin_batch, set_input_shapes)

__all__ = ["BATCH_DIM", "MAX_ELEMENTS", "ImportedModel", "InputSpec", "load_model"]

logger = logging.getLogger(__name__)


@dataclass
class ImportedModel:
    """The fp32 Relax module with ONNX-named tensors and what the reports need to know."""

    mod: object  # tvm.IRModule
    inputs: list[InputSpec]
    outputs: list[str]
    nodes: dict[str, tuple[str, str]] = field(default_factory=dict)  # variable -> (node name, op type)
    name: str = "model"
    onnx_names: dict[str, str] = field(default_factory=dict)  # variable name -> ONNX tensor name
    qdq: ImportedQuantization | None = None  # a QDQ model's quantization, by the float graph's tensors


class _BatchMustBeFixed(Exception):
    """TVM does not import the graph with its batch dimension free."""


def load_model(path: str | Path, input_shapes: dict[str, tuple] | None = None, batch_size: int = 64) -> ImportedModel:
    """Read, check, fold and import an ONNX model.

    ``input_shapes`` (``{"input": (1, 3, 224, 224)}``) fixes free dimensions: named,
    unknown, ``-1`` or ``0``; a name fixed on one input is fixed on every input that uses
    it. Every input gets an :class:`InputSpec`, whatever its dtype. A free leading dimension that is not fixed stays free as the batch
    size if TVM imports the folded graph with it free (TVM's own shape expressions handle
    the batch arithmetic it knows), and is fixed to 1 otherwise (logged).
    A model whose quantization would not fit in memory (``resources``, with calibration
    batches of ``batch_size``) is refused before TVM sees it.
    """
    path = Path(path)
    model, qdq = strip_qdq(read_model(path))
    specs = input_specs(model, input_shapes or {})
    try:
        graph, probes, mod = _convert(model, specs, path.name, batch_size)
    except _BatchMustBeFixed as why:
        logger.info("%s: fixing the free batch dimension to 1: %s", path.name, why)
        specs = pin_batch(specs)
        try:
            graph, probes, mod = _convert(model, specs, path.name, batch_size)
        except TvmqError:
            raise TvmqError(str(why)) from None  # the free dimension was the trouble: say what it broke
    outputs = [o.name for o in graph.graph.output]
    mod, onnx_names = name_tensors(mod, outputs + probes, len(outputs))
    onnx_names.update({param.name: spec.name for param, spec in zip(mod["main"].params, specs)})
    variable = {onnx: var for var, onnx in onnx_names.items()}
    nodes = {variable[out]: (node.name or out, node.op_type)
             for node in graph.graph.node for out in node.output if out in variable}
    return ImportedModel(mod, specs, outputs, nodes, name=path.stem, onnx_names=onnx_names, qdq=qdq)


def _convert(model: onnx.ModelProto, specs: list[InputSpec], name: str, batch_size: int):
    """``(folded graph, probed tensor names, Relax module with the probes as outputs)``."""
    free = any(spec.free_batch for spec in specs)
    graph = _static_graph(model, specs, name, batch_size, free)
    missing = unsupported_operator(graph)
    if missing:
        raise TvmqError(f"cannot import the model into TVM: {missing}")
    outputs = {o.name for o in graph.graph.output}
    probes = float_tensors(graph, exclude=outputs)
    try:
        return graph, probes, import_onnx(with_probes(graph, probes))
    except TvmqError as err:
        if free:
            raise _BatchMustBeFixed(str(err)) from None
        raise


def _static_graph(model: onnx.ModelProto, specs: list[InputSpec], name: str, batch_size: int,
                  free_batch: bool) -> onnx.ModelProto:
    """The model with the specs' input shapes, checked, folded and shape-inferred again."""
    shaped = infer_shapes(set_input_shapes(model, specs), strict=not has_branches(model))
    check_inferred_shapes(shaped)
    check_model_fits(shaped, name, batch_size)
    start = time.perf_counter()
    folded = infer_shapes(conv1d_as_2d(infer_shapes(merge_pads(inline_branches(shaped, free_batch)))))
    check_inferred_shapes(folded)
    logger.debug("%s: %d nodes, %d after folding constant subgraphs (%.2f s)", name, len(shaped.graph.node),
                 len(folded.graph.node), time.perf_counter() - start)
    return folded
