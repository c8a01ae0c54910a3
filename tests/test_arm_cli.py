"""``tvmq compile --target arm`` on the bundled MNIST CNN: an aarch64 artifact, its accuracy measured
by running the aarch64 modules under qemu, its latency not measured (emulated)."""

import json

import numpy as np
import pytest

from tvmq.cli import main
from tvmq.targets.qemu import default_sysroot, toolchain_missing

MISSING = toolchain_missing(default_sysroot())
EM_AARCH64 = 183  # ELF e_machine of aarch64
SAMPLES = 256  # of each split: every sample runs twice under qemu (fp32 and int8), ~10x slower than natively


def _first(path, directory, n: int = SAMPLES):
    with np.load(path) as data:
        np.savez(directory / path.name, **{key: data[key][:n] for key in data.files})
    return directory / path.name


@pytest.mark.skipif(MISSING is not None, reason=f"aarch64 toolchain: {MISSING}")
def test_compile_for_arm_writes_an_aarch64_artifact_whose_accuracy_ran_under_emulation(tmp_path, bundled):
    model, calib, evaluation = bundled
    calib, evaluation = _first(calib, tmp_path), _first(evaluation, tmp_path)
    out = tmp_path / "arm"
    assert main(["compile", str(model), "--calib", str(calib), "--eval", str(evaluation), "--out", str(out),
                 "--target", "arm", "--trials", "0"], isolated=False) == 0
    library = (out / "model.so").read_bytes()
    assert library[:4] == b"\x7fELF" and int.from_bytes(library[18:20], "little") == EM_AARCH64
    report = json.loads((out / "report.json").read_text())
    assert json.loads(report["target"])["mtriple"] == "aarch64-linux-gnu"
    assert report["activation_dtype"] == "int8"
    assert report["latency_ms"] == {m: "not measured (emulated)" for m in ("fp32", "int8", "artifact")}
    assert report["artifact_choice"] == {"artifact": "int8", "timed": False,
                                         "reason": "int8 (not chosen by time: no tuning, --trials 0)"}
    assert "not measured (emulated)" in (out / "report.md").read_text()
    accuracy = report["accuracy"]
    assert accuracy["num_samples"] == SAMPLES and accuracy["int8_top1"] > 0.9
    assert accuracy["top1_agreement"] > 0.97
