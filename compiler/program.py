"""The model imported once per set of static input shapes: each a :class:`Program`.

Tuned TVM code is static-shape; text lines and sentences are not. A compile deploys one
module per *shape bucket* (``--input-shape x:1,3,48,320 --input-shape x:1,3,48,640``), and
calibration / evaluation data of other shapes runs on an analysis program of its own shape.
Every program's Relax variables are named after the same ONNX tensors, so statistics
gathered on one program realize on any other.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from tvmq.passes.expose import named_vars

from .build import build, virtual_machine
from .calibrate import bounded_batch
from .data import Dataset, load_data
from .errors import TvmqError
from .frontend import ImportedModel, InputSpec, load_model
from .frontend.reader import read_model
from .frontend.shapes import declared_specs, input_specs

logger = logging.getLogger(__name__)


@dataclass
class Program:
    """The fp32 module for one set of input shapes and how its analysis runs go.

    ``batch`` is the batch the module's inputs share (None: left free, then runs take
    ``size`` samples); ``stacked`` data runs one whole feed at a time (inputs without a
    shared batch axis).
    """

    imported: ImportedModel
    fp32: object  # tvm.IRModule after the fp32 passes
    names: list[str]  # float32 tensors: what calibration observes
    batch: int | None
    size: int
    spec: object  # TargetSpec

    def vm(self, mod):
        return virtual_machine(build(mod, self.spec))


@dataclass
class Bucket:
    """A deployed module's program and the batch baked into it."""

    program: Program
    batch: int


class Programs:
    """Imports ``model`` once per set of shapes asked for (``get``), with the fp32 passes applied."""

    def __init__(self, model: str | Path, config, spec, prepare):
        self.model, self.config, self.spec, self._prepare = model, config, spec, prepare
        onnx_model = read_model(Path(model))
        self.declared = declared_specs(onnx_model)
        self.batched = shares_batch_axis(self.declared)
        for shapes in shape_buckets(config.input_shapes):
            input_specs(onnx_model, shapes)  # a shape that contradicts the model: one line, in the user's words
        self._cache: dict[tuple, Program] = {}

    def get(self, shapes: dict[str, tuple]) -> Program:
        """The program for ``shapes`` (inputs not named keep their declared shape; None: free)."""
        shapes = {**{spec.name: spec.shape for spec in self.declared}, **shapes}
        key = tuple((name, tuple(shape)) for name, shape in shapes.items())
        if key not in self._cache:
            if self._cache:
                logger.info("importing the model for input shapes %s", _describe(shapes))
            self._cache[key] = self._load(shapes)
        return self._cache[key]

    def buckets(self) -> list[Bucket]:
        """One program per deployed shape set (``config.input_shapes``), each with its batch."""
        return [self._bucket(shapes) for shapes in shape_buckets(self.config.input_shapes)]

    def data(self, value, role: str) -> list[tuple[Program, Dataset]]:
        """``value``'s samples, grouped by shape, each with the program that runs that shape."""
        groups = load_data(value, self.declared, role, batched=self.batched)
        return [(self.get(self._analysis_shapes(group)), group) for group in groups]

    def _bucket(self, shapes: dict[str, tuple]) -> Bucket:
        analysis = self.get(self._free_batch(shapes))
        if analysis.batch is None:
            given = {shape[0] for shape in shapes.values() if shape}
            return Bucket(analysis, given.pop() if len(given) == 1 else self.config.deploy_batch)
        if all(not s or s[0] == analysis.batch for s in shapes.values()):
            return Bucket(analysis, analysis.batch)
        exact = self.get(shapes)  # the analysis module fixed another batch: deploy this one's
        return Bucket(exact, exact.batch)

    def _free_batch(self, shapes: dict[str, tuple]) -> dict[str, tuple]:
        """``shapes`` with the batch left free where the model declares it free (calibration runs
        many samples at once; the deployed module binds the bucket's batch)."""
        if not self.batched or any(spec.shape[0] is not None for spec in self.declared):
            return shapes
        return {name: (None, *shape[1:]) for name, shape in shapes.items()}

    def _analysis_shapes(self, group: Dataset) -> dict[str, tuple]:
        signature = dict(group.signature())
        if group.stacked:
            return signature
        batch = {spec.name: spec.shape[0] or 1 for spec in self.declared}
        return self._free_batch({name: (batch.get(name, 1), *dims) for name, dims in signature.items()})

    def _load(self, shapes: dict[str, tuple]) -> Program:
        imported = load_model(self.model, shapes, self.config.batch_size)
        fp32 = self._prepare(imported.mod, qdq=True) if imported.qdq is not None else self._prepare(imported.mod)
        names = float_tensor_names(fp32, imported)
        batch = model_batch(imported)
        return Program(imported, fp32, names, 1 if batch == 0 else batch,
                       bounded_batch(fp32, names, self.config.batch_size), self.spec)


def shape_buckets(input_shapes: dict) -> list[dict[str, tuple]]:
    """The shape sets to deploy: ``{name: shape or [shapes]}`` zipped by position.

    A name given once applies to every bucket; names given several times must all be given
    the same number of times. No shapes at all is one bucket of the model's own shapes.
    """
    many = {name: list(v) for name, v in input_shapes.items() if v and not isinstance(v[0], int)}
    counts = {len(v) for v in many.values()}
    if len(counts) > 1:
        given = ", ".join(f"{name} {len(v)}x" for name, v in many.items())
        raise TvmqError(f"--input-shape gives inputs different numbers of shapes ({given}); "
                        f"each bucket takes one shape of every input given more than once")
    count = counts.pop() if counts else 1
    return [{name: tuple(many[name][i]) if name in many else tuple(shape) for name, shape in input_shapes.items()}
            for i in range(count)]


def shares_batch_axis(specs: list[InputSpec]) -> bool:
    """Whether every input's leading axis is one batch axis: all free, or all the same size."""
    leading = {spec.shape[0] if spec.shape else "scalar" for spec in specs}
    return len(leading) == 1 and "scalar" not in leading


def model_batch(imported: ImportedModel) -> int | None:
    """The batch every input takes as its leading dimension: None when it is left free, 0 when
    the inputs share none (a scalar, an LSTM state): then each feed is one run of the model."""
    leading = {spec.shape[0] if spec.shape else 0 for spec in imported.inputs}
    return leading.pop() if len(leading) == 1 else 0


def float_tensor_names(fp32, imported: ImportedModel) -> list[str]:
    """The variables of ``fp32`` that hold float32 ONNX tensors (node outputs and inputs): what is
    calibrated; integer and bool tensors (token ids, masks) are never quantized."""
    named = named_vars(fp32["main"])
    return sorted(n for n in imported.onnx_names
                  if n in named and getattr(named[n].ty, "dtype", None) == "float32")


def _describe(shapes: dict[str, tuple]) -> str:
    return ", ".join(f"{name}:{','.join('?' if d is None else str(d) for d in shape)}"
                     for name, shape in shapes.items())
