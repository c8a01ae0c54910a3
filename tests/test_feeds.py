"""Models with several inputs, integer inputs and inputs without a batch axis, end to end:
data in every form a user brings, compile, run with a feed dict, reload in a fresh process."""

import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

import feed_models
import onnx_models
import tvmq
from tvmq import TvmqError
from tvmq.data import Dataset, load_data
from tvmq.frontend import InputSpec


def _ort(path, feed):
    return ort.InferenceSession(str(path)).run(None, feed)


def _int8_close(got, want, tolerance=0.05):
    """int8 against ONNX Runtime's fp32: relative L2 error within ``tolerance``."""
    return np.linalg.norm(got - want) <= tolerance * np.linalg.norm(want)


def _images(rng, n):
    return {"a": rng.standard_normal((n, 4, 8, 8)).astype(np.float32),
            "b": rng.standard_normal((n, 4, 8, 8)).astype(np.float32)}


def _tokens(rng, n):
    ids = rng.integers(0, 50, (n, 7), dtype=np.int64)
    mask = (rng.random((n, 7)) < 0.8).astype(np.int64)
    mask[:, 0] = 1
    return {"ids": ids, "mask": mask}


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol: get_next() -> feed dict, None at the end."""

    def __init__(self, feeds):
        self._feeds = iter(feeds)

    def get_next(self):
        return next(self._feeds, None)


def test_two_float_inputs_compile_and_match_onnxruntime(tmp_path, rng):
    path = onnx_models.save(feed_models.two_images(), tmp_path / "two.onnx")
    compiled = tvmq.compile(path, _images(rng, 32), config=tvmq.Config(latency_runs=1))
    feed = {k: v[:1] for k, v in _images(rng, 1).items()}
    want = _ort(path, feed)[0]
    got = compiled.run(feed)
    assert _int8_close(got, want)
    np.testing.assert_array_equal(compiled.run(feed["a"], feed["b"]), got)  # positional, model order
    assert [i["name"] for i in compiled.manifest["inputs"]] == ["a", "b"]
    assert {r["name"] for r in compiled.report["layers"] if r["precision"] == "int8"} >= {"conv_a", "conv_s"}


def test_integer_inputs_pass_through_and_a_calibration_reader_feeds_them(tmp_path, rng):
    path = onnx_models.save(feed_models.token_classifier(), tmp_path / "tok.onnx")
    feeds = [{k: v[i:i + 1] for k, v in _tokens(rng, 16).items()} for i in range(16)]
    compiled = tvmq.compile(path, _Reader(feeds), config=tvmq.Config(latency_runs=1), eval_data=iter(feeds))
    assert compiled.report["accuracy"]["num_samples"] == 16
    dtypes = {i["name"]: i["dtype"] for i in compiled.manifest["inputs"]}
    assert dtypes == {"ids": "int64", "mask": "int64"}
    assert {r["name"] for r in compiled.report["layers"] if r["precision"] == "int8"} >= {"fc1", "fc2"}
    want = _ort(path, feeds[0])[0]
    assert _int8_close(compiled.run(feeds[0]), want)


def test_inputs_without_a_batch_axis_run_one_feed_at_a_time(tmp_path, rng):
    path = onnx_models.save(feed_models.stateful_dense(), tmp_path / "state.onnx")
    feeds = [{"x": rng.standard_normal((1, 8)).astype(np.float32),
              "h": rng.standard_normal((2, 1, 8)).astype(np.float32)} for _ in range(6)]
    compiled = tvmq.compile(path, feeds, config=tvmq.Config(latency_runs=1))
    assert compiled.report["accuracy"]["num_samples"] == 6
    out, h_next = compiled.run(feeds[0])
    want_out, want_h = _ort(path, feeds[0])
    assert _int8_close(out, want_out)
    np.testing.assert_allclose(h_next, want_h, rtol=1e-6)  # the fp32 part stays exact


def test_saved_multi_input_artifact_runs_in_a_fresh_process_and_from_the_cli(tmp_path, rng):
    path = onnx_models.save(feed_models.two_images(), tmp_path / "two.onnx")
    np.savez(tmp_path / "calib.npz", **_images(rng, 16))
    out = tmp_path / "art"
    done = subprocess.run([sys.executable, "-m", "tvmq", "compile", path, "--calib", tmp_path / "calib.npz",
                           "--out", out, "--trials", "0"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    feed = {k: v[:1] for k, v in _images(rng, 1).items()}
    np.savez(tmp_path / "feed.npz", **feed)
    script = (f"import numpy as np, tvmq\nm = tvmq.load({str(out)!r})\n"
              f"f = dict(np.load({str(tmp_path / 'feed.npz')!r}))\nnp.save({str(tmp_path / 'y.npy')!r}, m.run(f))\n")
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    done = subprocess.run([sys.executable, "-m", "tvmq", "run", out, "--input", tmp_path / "feed.npz",
                           "--output", tmp_path / "y_cli.npy"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), np.load(tmp_path / "y_cli.npy"))
    want = _ort(path, feed)[0]
    assert _int8_close(np.load(tmp_path / "y.npy"), want, tolerance=0.1)  # one sample, 16 to calibrate


SPECS = [InputSpec("ids", (None, None), "int64"), InputSpec("mask", (None, None), "int64")]


def test_feeds_of_different_shapes_group_without_padding(rng):
    feeds = [{k: v for k, v in _tokens(rng, 2).items()} for _ in range(3)]
    feeds.insert(1, {"ids": np.zeros((1, 9), np.int64), "mask": np.ones((1, 9), np.int64)})
    groups = load_data(feeds, SPECS, "calibration")
    assert [len(g) for g in groups] == [2, 1, 4]
    assert [g.signature() for g in groups][1] == (("ids", (9,)), ("mask", (9,)))


def test_a_directory_of_npz_feeds_and_a_dict_load_alike(tmp_path, rng):
    data = _tokens(rng, 5)
    for i in range(5):
        np.savez(tmp_path / f"{i:03d}.npz", **{k: v[i:i + 1] for k, v in data.items()})
    (group,) = load_data(tmp_path, SPECS, "calibration")
    (same,) = load_data(data, SPECS, "calibration")
    for name in ("ids", "mask"):
        np.testing.assert_array_equal(group.feeds()[name], same.feeds()[name])


@pytest.mark.parametrize("value, pattern", [
    ({"ids": np.zeros((2, 7), np.int64)}, r"the model's inputs are \['ids', 'mask'\] \(missing: mask\)"),
    ({"ids": np.zeros((2, 7), np.int64), "mask": np.zeros((2, 7), np.int64), "extra": np.zeros(2)},
     r"\(unknown: extra\)"),
    ({"ids": np.zeros((2, 7), np.int32), "mask": np.zeros((2, 7), np.int64)},
     r"has dtype int32, but input 'ids' takes int64"),
    ({"ids": np.zeros((2, 7), np.int64), "mask": np.zeros((3, 7), np.int64)}, r"different sample counts"),
    (np.zeros((2, 7), np.int64), r"is one array, but the model has 2 inputs \(ids, mask\)"),
    ([], r"is empty"),
    (42, r"must be a path, an array, a dict of arrays"),
])
def test_bad_feeds_get_one_clear_line(value, pattern):
    with pytest.raises(TvmqError, match=pattern):
        load_data(value, SPECS, "calibration")


def test_a_stateful_feed_must_have_the_exact_shape():
    specs = [InputSpec("x", (1, 8), "float32"), InputSpec("h", (2, 1, 8), "float32")]
    bad = {"x": np.zeros((1, 8), np.float32), "h": np.zeros((1, 1, 8), np.float32)}
    with pytest.raises(TvmqError, match=r"feeds of shape \(1, 1, 8\), but input 'h' takes \(2, 1, 8\)"):
        load_data(bad, specs, "calibration", batched=False)
    assert len(load_data([{**bad, "h": np.zeros((2, 1, 8), np.float32)}] * 3, specs, "c", batched=False)[0]) == 3


def test_single_input_dataset_still_reads_as_before(rng):
    spec = [InputSpec("input", (None, 3), "float32")]
    (data,) = load_data(Dataset(rng.standard_normal((4, 3)).astype(np.float32), np.arange(4)), spec, "c")
    assert list(data.feeds()) == ["input"] and data.y.tolist() == [0, 1, 2, 3]
