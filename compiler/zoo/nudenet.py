"""NudeNet's YOLOv8n detector (320x320, 18 classes) from ``nudenet==3.4.2``, on scikit-image photos.

The wheel ships ``nudenet/320n.onnx``: input ``images`` ``(N, 3, 320, 320)`` RGB in [0, 1]
after padding the photo at the bottom / right to a square with black and a bilinear resize
(``nudenet/nudenet.py``'s ``_read_image``); output ``(N, 22, 2100)``: per anchor a box
``cx, cy, w, h`` then 18 class scores. The package keeps anchors whose best class score is
at least 0.25 and runs class-agnostic NMS at IoU 0.45 (:func:`detections`).

Data: scikit-image's bundled photographs (the same safe-for-work set Open-NSFW uses, which
has faces: the detector's face classes fire), four views of each; views 0 and 2 calibrate,
1 and 3 evaluate. The photos carry no box labels, so the metric is the hmean of the
candidate's detections matched one-to-one to the fp32 reference's (same class, IoU >= 0.5).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import images, metrics
from .fetch import cached_member, cached_members
from .mtcnn import SKIMAGE_PACKAGE
from .open_nsfw import NSFW_IMAGES
from .registry import ZooModel, register

PACKAGE = "nudenet==3.4.2"
MEMBER = "nudenet/320n.onnx"
SIZE = 320
SCORE, NMS_IOU, MATCH_IOU = 0.25, 0.45, 0.5


def preprocess(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB -> ``(1, 3, 320, 320)``: pad bottom / right to a square, resize, / 255."""
    h, w = rgb.shape[:2]
    square = np.zeros((max(h, w), max(h, w), 3), np.uint8)
    square[:h, :w] = rgb
    return (images.resize(square, SIZE, SIZE).astype(np.float32) / 255.0).transpose(2, 0, 1)[None]


def detections(output: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(1, 22, A)`` -> ``(boxes (K, 4) x0 y0 x1 y1, classes (K,))`` after score threshold and NMS."""
    rows = output[0].T
    scores = rows[:, 4:].max(axis=1)
    keep = scores >= SCORE
    rows, scores = rows[keep], scores[keep]
    classes = rows[:, 4:].argmax(axis=1)
    boxes = np.stack([rows[:, 0] - rows[:, 2] / 2, rows[:, 1] - rows[:, 3] / 2,
                      rows[:, 0] + rows[:, 2] / 2, rows[:, 1] + rows[:, 3] / 2], axis=1)
    chosen = nms(boxes, scores, NMS_IOU)
    return boxes[chosen], classes[chosen]


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """Indices kept by greedy non-maximum suppression, best score first."""
    order, kept = list(np.argsort(-scores)), []
    while order:
        best = order.pop(0)
        kept.append(int(best))
        if order:
            overlap = metrics.iou(boxes[[best]], boxes[order])[0]
            order = [i for i, o in zip(order, overlap) if o <= threshold]
    return kept


def _samples(root: Path, split: str) -> list[dict]:
    members = {f"skimage/data/{name}": name for name in NSFW_IMAGES}
    paths = cached_members(SKIMAGE_PACKAGE, members, root)
    first = 0 if split == "calib" else 1
    photos = [images.decode(paths[m].read_bytes()) for m in members]
    return [{"images": preprocess(np.ascontiguousarray(v))} for p in photos for v in images.views(p)[first::2]]


def _hmean(root: Path, reference, candidate, split: str) -> float:
    matched = found = truth = 0
    for r, c in zip(reference, candidate):
        (ref_boxes, ref_classes), (boxes, classes) = detections(r[0]), detections(c[0])
        matched += metrics.match_count(boxes, ref_boxes, MATCH_IOU, classes, ref_classes)
        found, truth = found + len(boxes), truth + len(ref_boxes)
    return metrics.hmean(matched, found, truth)


register(ZooModel(
    name="nudenet_320n", kind="detector", requirement=PACKAGE, member=MEMBER, input_shapes={"images": (1, 3, SIZE, SIZE)},
    fetcher=lambda root: cached_member(PACKAGE, MEMBER, root), sampler=_samples, scorer=_hmean,
    metric_name="box hmean vs fp32", licence="MIT (package); AGPL-3.0 (Ultralytics, model metadata)",
    notes="scikit-image photos; class-aware IoU >= 0.5 matches to the fp32 detections"))
