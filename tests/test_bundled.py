"""The bundled pretrained MNIST CNN, end to end: accuracy, report, artifact, fresh-process load."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import tvmq


def test_bundled_splits_cover_every_digit_and_never_overlap(bundled):
    calib, evaluation = np.load(bundled[1]), np.load(bundled[2])
    assert np.bincount(calib["y"]).tolist() == [100] * 10
    assert np.bincount(evaluation["y"]).tolist() == [400] * 10
    calib_rows = {row.tobytes() for row in calib["x"]}
    assert not any(row.tobytes() in calib_rows for row in evaluation["x"])


def test_int8_top1_within_one_point_of_fp32(demo):
    out, _ = demo
    report = json.loads((out / "report.json").read_text())
    acc = report["accuracy"]
    assert acc["num_samples"] == 4000
    assert acc["fp32_top1"] > 0.98, "the pretrained model should be accurate in fp32"
    assert acc["int8_top1"] >= acc["fp32_top1"] - 0.01
    assert acc["top1_agreement"] > 0.99 and acc["output_cosine"] > 0.99


def test_report_lists_every_conv_and_dense_as_int8(demo):
    out, _ = demo
    report = json.loads((out / "report.json").read_text())
    assert isinstance(report["model"], str) and isinstance(report["target"], str)
    assert report["latency_ms"]["fp32"] > 0 and report["latency_ms"]["int8"] > 0
    layers = {row["name"]: row for row in report["layers"]}
    assert {"conv1", "conv2", "fc1", "fc2"} <= set(layers)
    for name in ("conv1", "conv2", "fc1", "fc2"):
        assert layers[name]["precision"] == "int8"
        assert 15.0 < layers[name]["sqnr_db"] < 80.0
    assert "| conv1 | Conv | int8 |" in (out / "report.md").read_text()


def test_manifest_describes_inputs_and_quantization(demo):
    out, _ = demo
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"] == [{"name": "input", "shape": [1, 1, 28, 28], "dtype": "float32"}]
    assert manifest["versions"]["apache-tvm"] == "0.27.0.post1"
    act = manifest["quantization"]["activations"]["input"]
    assert act["dtype"] == "uint8" and 0 <= act["zero_point"][0] <= 255
    assert len(manifest["quantization"]["weights"]["relu1"]["scale"]) == 32  # per output channel
    assert set(manifest["files"]) == {"model.so", "params.npz", "plan.json", "qdq_weights.npz"}


def test_artifact_runs_in_a_fresh_process_without_the_compiler(demo, bundled, tmp_path):
    out, compiled = demo
    x = np.load(bundled[2])["x"][:1]
    np.save(tmp_path / "x.npy", x)
    script = (
        "import sys, numpy as np, tvmq\n"
        f"model = tvmq.load({str(out)!r})\n"
        f"np.save({str(tmp_path / 'y.npy')!r}, model.run(np.load({str(tmp_path / 'x.npy')!r})))\n"
        "loaded = [m for m in sys.modules if m.startswith(('tvmq.api', 'tvmq.passes', 'tvmq.frontend',"
        " 'tvmq.tune', 'tvmq.calibrate', 'onnx'))]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), compiled.run(x))


def test_cli_run_writes_the_output(demo, bundled, tmp_path):
    out, compiled = demo
    x = np.load(bundled[2])["x"][1:2]
    np.save(tmp_path / "x.npy", x)
    subprocess.run([sys.executable, "-m", "tvmq", "run", str(out), "--input", str(tmp_path / "x.npy"),
                    "--output", str(tmp_path / "y.npy")], check=True, timeout=300)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), compiled.run(x))


def test_tampered_artifact_is_refused(demo, tmp_path):
    out, _ = demo
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    data = (copy / "params.npz").read_bytes()
    (copy / "params.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(tvmq.TvmqError, match="sha256"):
        tvmq.load(copy)


def test_wrong_input_shape_is_refused_at_run_time(demo):
    out, _ = demo
    with pytest.raises(tvmq.TvmqError, match=r"input 'input' must be float32 of shape \(1, 1, 28, 28\)"):
        tvmq.load(out).run(np.zeros((2, 1, 28, 28), np.float32))


@pytest.mark.parametrize("calibrator", ["kld", "percentile", "mse", "auto", "eq"])
def test_every_calibrator_keeps_top1_within_one_point(calibrator, bundled):
    from tvmq.data import Dataset

    calib, evaluation = np.load(bundled[1]), np.load(bundled[2])
    compiled = tvmq.compile(bundled[0], Dataset(calib["x"][::3]), config=tvmq.Config(calibrator=calibrator,
                            latency_runs=1), eval_data=Dataset(evaluation["x"][::4], evaluation["y"][::4]))
    acc = compiled.report["accuracy"]
    assert acc["int8_top1"] >= acc["fp32_top1"] - 0.01, acc
    assert compiled.report["calibrator"] == calibrator
    if calibrator == "auto":
        assert set(compiled.report["calibrator_per_tensor"].values()) <= {"minmax", "kld", "percentile", "mse"}


def test_cli_demo_with_symmetric_per_tensor_activations(tmp_path):
    out = tmp_path / "demo"
    done = subprocess.run([sys.executable, "-m", "tvmq", "demo", "--out", str(out), "--calibrator", "percentile",
                           "--symmetric", "--granularity", "per-tensor", "--trials", "0"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["activation_dtype"] == "int8" and report["per_channel"] is False
    assert report["accuracy"]["int8_top1"] >= report["accuracy"]["fp32_top1"] - 0.01
    assert "| conv1 | Conv | int8 |" in done.stdout


@pytest.mark.skipif("avx2" not in __import__("tvmq.targets.x86", fromlist=["cpu_flags"]).cpu_flags(),
                    reason="CPU without AVX2: cannot run x86-avx2 code")
def test_avx2_target_keeps_accuracy_with_7_bit_weights(demo, bundled, tmp_path):
    """x86-avx2's vpmaddubsw kernel needs weights in [-63, 63]; MNIST's agreement with fp32 stays
    close to the host kernel's (VNNI, 8-bit weights, on a VNNI machine)."""
    model, calib, evaluation = bundled
    compiled = tvmq.compile(model, calib, config=tvmq.Config(target="x86-avx2", latency_runs=1), eval_data=evaluation)
    acc, host = compiled.report["accuracy"], demo[1].report["accuracy"]
    assert acc["top1_agreement"] >= host["top1_agreement"] - 0.01 and acc["output_cosine"] > 0.99, (acc, host)
    assert acc["int8_top1"] >= acc["fp32_top1"] - 0.01
    assert compiled.report["weight_bits"] == 7 and compiled.manifest["config"]["weight_qmax"] == 63
    assert {w["qmax"] for w in compiled.manifest["quantization"]["weights"].values()} == {63}
    assert "weights int8 (7-bit, [-63, 63])" in (compiled.save(tmp_path / "avx2") / "report.md").read_text()
