"""Shape buckets: one module per shape in one artifact; data of other shapes calibrates on
analysis modules of its own; run picks the module by the feed's shapes."""

import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

import onnx_models
import tvmq
from tvmq import TvmqError
from tvmq.program import shape_buckets


def _free_size_model(tmp_path):
    """conv_chain with free height and width: x[N, 8, H, W]."""
    model = onnx_models.conv_chain()
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "H", "W"
    return onnx_models.save(model, tmp_path / "free.onnx")


def _images(rng, n, size):
    return rng.standard_normal((n, 8, size, size)).astype(np.float32)


def test_two_buckets_build_two_modules_and_run_picks_by_shape(tmp_path, rng):
    path = _free_size_model(tmp_path)
    calib = [{"x": _images(rng, 4, s)} for s in (12, 16, 10, 12)]  # 10x10 is calibration only
    config = tvmq.Config(input_shapes={"x": [(1, 8, 12, 12), (1, 8, 16, 16)]}, latency_runs=1)
    compiled = tvmq.compile(path, calib, config=config)
    assert compiled.report["accuracy"]["num_samples"] == 16
    assert [b["inputs"][0]["shape"] for b in compiled.report["buckets"]] == [[1, 8, 12, 12], [1, 8, 16, 16]]
    assert all(b["latency_ms"]["int8"] > 0 for b in compiled.report["buckets"])
    session = ort.InferenceSession(path)
    for size in (12, 16):
        x = _images(rng, 1, size)
        want = session.run(None, {"x": x})[0]
        got = compiled.run({"x": x})
        assert got.shape == want.shape
        assert np.linalg.norm(got - want) <= 0.05 * np.linalg.norm(want)
    with pytest.raises(TvmqError, match=r"no module of this artifact takes input shapes x:1,8,10,10; "
                                         r"it has: x:1,8,12,12; x:1,8,16,16"):
        compiled.run({"x": _images(rng, 1, 10)})

    out = tmp_path / "art"
    compiled.save(out)
    assert {"model.so", "params.npz", "model-1.so", "params-1.npz"} <= {p.name for p in out.iterdir()}
    x = _images(rng, 1, 16)
    np.save(tmp_path / "x.npy", x)
    script = (f"import numpy as np, tvmq\nm = tvmq.load({str(out)!r})\n"
              f"np.save({str(tmp_path / 'y.npy')!r}, m.run(np.load({str(tmp_path / 'x.npy')!r})))\n")
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), compiled.run(x))


def test_a_free_dimension_without_a_shape_is_one_clear_error(tmp_path, rng):
    path = _free_size_model(tmp_path)
    with pytest.raises(TvmqError, match=r"--input-shape x:"):
        tvmq.compile(path, _images(rng, 4, 12))


@pytest.mark.parametrize("shapes, buckets", [
    ({}, [{}]),
    ({"x": (1, 3)}, [{"x": (1, 3)}]),
    ({"x": [(1, 3), (1, 5)], "m": (1, 2)}, [{"x": (1, 3), "m": (1, 2)}, {"x": (1, 5), "m": (1, 2)}]),
    ({"x": [(1, 3), (1, 5)], "m": [(1, 4), (1, 6)]}, [{"x": (1, 3), "m": (1, 4)}, {"x": (1, 5), "m": (1, 6)}]),
])
def test_buckets_zip_shapes_by_position(shapes, buckets):
    assert shape_buckets(shapes) == buckets


def test_buckets_that_do_not_line_up_are_refused():
    with pytest.raises(TvmqError, match=r"different numbers of shapes \(x 2x, m 3x\)"):
        tvmq.Config(input_shapes={"x": [(1, 3), (1, 5)], "m": [(1, 1), (1, 2), (1, 3)]})


def test_the_report_gives_latency_per_bucket(tmp_path, rng):
    path = _free_size_model(tmp_path)
    config = tvmq.Config(input_shapes={"x": [(1, 8, 12, 12), (2, 8, 16, 16)]}, latency_runs=1)
    compiled = tvmq.compile(path, [{"x": _images(rng, 2, 12)}, {"x": _images(rng, 2, 16)}], config=config)
    from tvmq.report import to_markdown

    text = to_markdown(compiled.report)
    assert "| x 1x8x12x12 |" in text and "| x 2x8x16x16 |" in text
    assert compiled.run({"x": _images(rng, 2, 16)}).shape == (2, 6, 16, 16)
