"""PaddleOCR's detector, recognizer and line classifier from ``rapidocr-onnxruntime==1.4.4``.

The wheel ships ``rapidocr_onnxruntime/models/``: ``ch_PP-OCRv4_det_infer.onnx`` (DB text
detector, a probability map), ``ch_PP-OCRv4_rec_infer.onnx`` (SVTR-LCNet CTC recognizer,
6,625 classes; its character dictionary is the model's ``character`` metadata) and
``ch_ppocr_mobile_v2.0_cls_infer.onnx`` (0 / 180 degree text-line classifier). Inputs are
BGR, ``(x / 255 - 0.5) / 0.5``, NCHW, as the package's ``text_detect.py`` /
``text_recognize.py`` / ``text_cls.py`` feed them.

Data is rendered with Pillow's default font from :data:`tvmq.zoo.images.WORDS`, so every
sample has its truth: the detector is scored by box hmean (IoU >= 0.5) against the drawn
lines' ink boxes, the recognizer by character accuracy of greedy CTC decoding against the
drawn strings, the classifier by top-1 against the rotation applied. Calibration and
evaluation use different random seeds.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np

from . import images, metrics
from .fetch import cached_member
from .registry import ZooModel, register

PACKAGE = "rapidocr-onnxruntime==1.4.4"
PREFIX = "rapidocr_onnxruntime/models/"
DET, REC, CLS = "ch_PP-OCRv4_det_infer.onnx", "ch_PP-OCRv4_rec_infer.onnx", "ch_ppocr_mobile_v2.0_cls_infer.onnx"
DET_SHAPE, REC_SHAPE, CLS_SHAPE = (1, 3, 320, 640), (1, 3, 48, 320), (1, 3, 48, 192)
SEEDS = {"calib": 0, "eval": 1}
COUNTS = {"det": {"calib": 8, "eval": 8}, "rec": {"calib": 24, "eval": 48}, "cls": {"calib": 24, "eval": 48}}
# text_detect.py / config.yaml: DB post-processing
DET_THRESH, BOX_THRESH, UNCLIP_RATIO = 0.3, 0.5, 1.6


def normalize(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB -> ``(3, H, W)`` float32 BGR scaled to [-1, 1]."""
    return ((rgb[:, :, ::-1].transpose(2, 0, 1).astype(np.float32) / 255.0 - 0.5) / 0.5).astype(np.float32)


def line_input(rgb: np.ndarray, shape: tuple[int, int, int, int]) -> np.ndarray:
    """A text-line crop resized to the input height keeping its aspect ratio, right-padded with 0."""
    _, _, height, width = shape
    h, w = rgb.shape[:2]
    resized_w = min(width, int(math.ceil(height * w / h)))
    out = np.zeros(shape, np.float32)
    out[0, :, :, :resized_w] = normalize(images.resize(rgb, height, resized_w))
    return out


def det_boxes(prob: np.ndarray) -> np.ndarray:
    """DB post-processing of one ``(H, W)`` probability map to ``(N, 4)`` axis-aligned boxes.

    Pixels above ``DET_THRESH`` form 4-connected regions; a region whose mean probability
    reaches ``BOX_THRESH`` gives its bounding box, grown on every side by the DB unclip
    distance ``area * UNCLIP_RATIO / perimeter`` (the shrunk text kernel back to the text).
    """
    mask = prob > DET_THRESH
    labels = metrics.components(mask)
    boxes = []
    for k in range(1, int(labels.max()) + 1):
        ys, xs = np.nonzero(labels == k)
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        if min(x1 - x0, y1 - y0) < 3 or prob[labels == k].mean() < BOX_THRESH:
            continue
        d = (x1 - x0) * (y1 - y0) * UNCLIP_RATIO / (2 * ((x1 - x0) + (y1 - y0)))
        boxes.append([x0 - d, y0 - d, x1 + d, y1 + d])
    return np.array(boxes, float).reshape(-1, 4)


@functools.lru_cache(maxsize=None)
def charset(model: Path) -> tuple[str, ...]:
    """The recognizer's classes: ``blank``, the ``character`` metadata lines, then a space."""
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(model), load_external_data=False).metadata_props}
    return ("blank", *meta["character"].splitlines(), " ")


@functools.lru_cache(maxsize=None)
def _pages(split: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(SEEDS[split])
    pages, boxes = [], []
    for _ in range(COUNTS["det"][split]):
        lines = [images.random_text(rng, (2, 5)) for _ in range(8)]
        image, drawn = images.page(lines, DET_SHAPE[3], DET_SHAPE[2], int(rng.integers(18, 30)), rng)
        pages.append(image)
        boxes.append(drawn)
    return pages, boxes


@functools.lru_cache(maxsize=None)
def _lines(split: str, kind: str) -> tuple[tuple[str, ...], tuple[np.ndarray, ...]]:
    rng = np.random.default_rng(SEEDS[split] + 10)
    texts = tuple(images.random_text(rng, (1, 3)) for _ in range(COUNTS[kind][split]))
    return texts, tuple(images.text_line(t, int(rng.integers(24, 40))) for t in texts)


def _det_samples(root: Path, split: str) -> list[dict]:
    return [{"x": normalize(p)[None]} for p in _pages(split)[0]]


def _det_hmean(root: Path, reference, candidate, split: str) -> float:
    truth = _pages(split)[1]
    found = [det_boxes(c[0][0, 0]) for c in candidate]
    matched = sum(metrics.match_count(f, t) for f, t in zip(found, truth))
    return metrics.hmean(matched, sum(len(f) for f in found), sum(len(t) for t in truth))


def _rec_samples(root: Path, split: str) -> list[dict]:
    return [{"x": line_input(line, REC_SHAPE)} for line in _lines(split, "rec")[1]]


def _rec_accuracy(root: Path, reference, candidate, split: str) -> float:
    chars = charset(cached_member(PACKAGE, PREFIX + REC, root))
    return metrics.char_accuracy([metrics.ctc_greedy(c[0][0], chars) for c in candidate], list(_lines(split, "rec")[0]))


def _cls_samples(root: Path, split: str) -> list[dict]:
    lines = _lines(split, "cls")[1]
    return [{"x": line_input(line[::-1, ::-1] if i % 2 else line, CLS_SHAPE)} for i, line in enumerate(lines)]


def _cls_top1(root: Path, reference, candidate, split: str) -> float:
    labels = np.arange(len(candidate)) % 2  # label_list ['0', '180']: odd lines are upside down
    return metrics.top1([c[0] for c in candidate], labels)


def _entry(name: str, kind: str, member: str, shape, sampler, scorer, metric_name: str, notes: str) -> ZooModel:
    return register(ZooModel(
        name=name, kind=kind, requirement=PACKAGE, member=PREFIX + member, input_shapes={"x": shape},
        fetcher=lambda root: cached_member(PACKAGE, PREFIX + member, root), sampler=sampler, scorer=scorer,
        metric_name=metric_name, licence="Apache-2.0", notes=notes))


_entry("ppocr_det", "text-detector", DET, DET_SHAPE, _det_samples, _det_hmean, "box hmean",
       "rendered pages; DB map > 0.3, regions, unclip 1.6; IoU >= 0.5 vs drawn line boxes")
_entry("ppocr_rec", "recognizer", REC, REC_SHAPE, _rec_samples, _rec_accuracy, "char acc",
       "rendered lines; greedy CTC with the model's own dictionary vs the drawn strings")
_entry("ppocr_cls", "classifier", CLS, CLS_SHAPE, _cls_samples, _cls_top1, "top-1",
       "rendered lines, every other one turned 180 degrees")
