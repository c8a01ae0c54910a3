"""Real pretrained models through the frontend: PP-OCR's text-line classifier, recognizer and detector.

The three ONNX files ship in the ``rapidocr-onnxruntime`` wheel, fetched once with ``pip
download`` (``tvmq.zoo._fetch_members``) into ``tvmq.assets.cache_dir() / "frontend-real"``;
without the package registry the tests skip. Each one failed in the frontend before it
folded constant subgraphs on the ONNX side:

* the classifier declares ``(-1, 3, ?, ?)``: a ``-1`` dimension could not be overridden;
* the recognizer builds reshape targets with ``Shape -> Gather -> Concat -> Reshape``, which
  TVM's importer refuses as a tensor shape;
* the detector feeds ``Resize`` an empty ``Constant`` as its unused ``roi`` / ``scales``.

Inputs are a synthetic page of glyph rows, normalized as PP-OCR does, so that the
detector finds text (its probabilities reach 1) instead of returning zeros for noise.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import tvm

from tvmq import TvmqError
from tvmq.assets import cache_dir
from tvmq.build import build, virtual_machine
from tvmq.fileio import atomic_write_bytes
from tvmq.frontend import load_model
from tvmq.targets import get_target
from tvmq.zoo import _fetch_members

PACKAGE = "rapidocr-onnxruntime==1.4.4"
PREFIX = "rapidocr_onnxruntime/models/"
SHAPES = {
    "ch_ppocr_mobile_v2.0_cls_infer": (1, 3, 48, 192),
    "ch_PP-OCRv4_rec_infer": (1, 3, 48, 320),
    "ch_PP-OCRv4_det_infer": (1, 3, 160, 160),
}


@pytest.fixture(scope="module")
def ppocr():
    """The folder holding the three PP-OCR models, fetched once."""
    root = cache_dir() / "frontend-real"
    if not all((root / f"{name}.onnx").exists() for name in SHAPES):
        try:
            members = _fetch_members(PACKAGE, [f"{PREFIX}{name}.onnx" for name in SHAPES])
        except TvmqError as err:
            pytest.skip(f"{PACKAGE} cannot be fetched (offline?): {err}")
        for name in SHAPES:
            atomic_write_bytes(root / f"{name}.onnx", members[f"{PREFIX}{name}.onnx"])
    return root


def text_page(shape: tuple) -> np.ndarray:
    """Rows of random dark 10x6 glyphs on a light page, normalized as PP-OCR does to [-1, 1]."""
    rng = np.random.default_rng(0)
    n, c, h, w = shape
    page = np.full((h, w), 240.0)
    for row in range(min(20, h // 2 - 5), h - 10, 40):
        for col in range(16, w - 16, 9):
            glyph = page[row:row + 10, col:col + 6]
            glyph[rng.random(glyph.shape) < 0.5] = 20.0
    return ((np.broadcast_to(page, shape) / 255.0 - 0.5) / 0.5).astype(np.float32)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_pretrained_model_imports_and_matches_onnxruntime(ppocr, name):
    path = ppocr / f"{name}.onnx"
    imported = load_model(path, {"x": SHAPES[name]})
    assert imported.inputs[0].shape == SHAPES[name]
    x = text_page(SHAPES[name])
    vm = virtual_machine(build(imported.mod, get_target("host")))
    ours = vm["main"](tvm.runtime.tensor(x)).numpy()
    reference = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    assert ours.shape == reference.shape
    assert np.abs(ours - reference).max() <= 1e-4 * np.abs(reference).max()
