"""Real pretrained models from package wheels through the public API, end to end.

For a few small :data:`tvmq.zoo.MODELS` entries (each a front-door case: an NHWC face
classifier with PRelu, a sentence encoder with three int64 inputs): ``tvmq.compile`` on
the model's own calibration feeds (no tuning), then the saved artifact is loaded in a
fresh process with ``tvmq.load`` and run on the evaluation feeds. Its outputs must equal
``CompiledModel.run``'s bit for bit, the fp32 module must match ONNX Runtime, and the task
metric of the int8 outputs must stay near fp32's. The models are fetched once with ``pip
download``; without the package registry the tests skip.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

import tvmq
from tvmq import TvmqError, zoo

# name -> (calibration feeds used, how far below fp32's the int8 metric may fall); every
# evaluation feed is used (the metrics with labels score the whole split)
# (PP-OCR's classifier, the MobileNetV3-style case, takes ~2 min to build untuned: its import
# is tested in test_frontend_real, its compile in bench/coverage.py)
CASES = {"mtcnn_rnet": (8, 0.05), "minilm_l6": (4, 0.05)}

RUN_SAVED = """
import sys, numpy as np, tvmq
model = tvmq.load(sys.argv[1])
feeds = np.load(sys.argv[2], allow_pickle=False)
count = len({k.split(":")[0] for k in feeds.files})
out = {}
for i in range(count):
    result = model.run({k.split(":")[1]: feeds[k] for k in feeds.files if k.startswith(f"{i}:")})
    for j, y in enumerate(result if isinstance(result, list) else [result]):
        out[f"{i}:{j}"] = y
np.savez(sys.argv[3], **out)
"""


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    entry = zoo.get(request.param)
    try:
        path = entry.fetch()
    except TvmqError as err:
        pytest.skip(f"{entry.requirement} cannot be fetched (offline?): {err}")
    n_calib, slack = CASES[request.param]
    calib, evaluation = entry.samples("calib")[:n_calib], entry.samples("eval")
    config = tvmq.Config(input_shapes={n: list(s) for n, s in entry.input_shapes.items()}, trials=0)
    compiled = tvmq.compile(path, calib, config=config, eval_data=evaluation)
    return entry, path, compiled, evaluation, slack


def _as_list(result) -> list[np.ndarray]:
    return result if isinstance(result, list) else [result]


def test_real_model_compiles_runs_saved_and_keeps_its_metric(case, tmp_path):
    entry, path, compiled, evaluation, slack = case
    compiled.save(tmp_path / "artifact")

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    reference = [session.run(None, feed) for feed in evaluation]
    ours = [_as_list(compiled.run(feed)) for feed in evaluation]
    assert [len(o) for o in ours] == [len(r) for r in reference]

    np.savez(tmp_path / "feeds.npz", **{f"{i}:{n}": v for i, feed in enumerate(evaluation) for n, v in feed.items()})
    subprocess.run([sys.executable, "-c", RUN_SAVED, str(tmp_path / "artifact"), str(tmp_path / "feeds.npz"),
                    str(tmp_path / "saved.npz")], check=True, capture_output=True, text=True)
    with np.load(tmp_path / "saved.npz") as saved:
        for i, outputs in enumerate(ours):
            for j, y in enumerate(outputs):
                np.testing.assert_array_equal(saved[f"{i}:{j}"], y)

    fp32 = entry.metric(reference, reference, "eval")
    assert entry.metric(reference, ours, "eval") >= fp32 - slack
    assert compiled.report["accuracy"], "the report evaluates the int8 module"


def test_real_model_fp32_module_matches_onnxruntime(case):
    """The fp32 baseline tvmq builds (and compares int8 against) computes what ONNX Runtime does."""
    import tvm

    from tvmq.build import virtual_machine

    entry, path, compiled, evaluation, _ = case
    executable, params = compiled.baseline
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = evaluation[0]
    inputs = [tvm.runtime.tensor(np.ascontiguousarray(feed[i["name"]])) for i in compiled.manifest["inputs"]]
    result = virtual_machine(executable)["main"](*inputs, *[tvm.runtime.tensor(v) for v in params.values()])
    ours = _as_list(tvmq.runtime.outputs(result))
    for got, want in zip(ours, session.run(None, feed)):
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-4 * max(np.abs(want).max(), 1e-6)
