"""The repo's own trained MobileNetV2-style model (torch-exported ONNX names, BatchNorm, ReLU6)."""

from pathlib import Path

import numpy as np

import tvmq
from tvmq.data import Dataset

MODEL = Path(__file__).resolve().parents[1] / "models" / "mnist_mobilenet.onnx"


def test_every_layer_of_a_torch_exported_model_is_int8(bundled):
    calib, evaluation = np.load(bundled[1]), np.load(bundled[2])
    config = tvmq.Config(per_channel=False, cle=True, absorb_high_bias=True, latency_runs=1)
    report = tvmq.compile(MODEL, Dataset(calib["x"][::10]), config=config,
                          eval_data=Dataset(evaluation["x"][::20], evaluation["y"][::20])).report
    convs = [row for row in report["layers"] if row["op"] in ("Conv", "Gemm")]
    assert len(convs) == 15 and all(row["precision"] == "int8" for row in convs)
    assert any("." in row["name"] or "/" in row["name"] for row in convs)  # ONNX names, not Relax's
    cle = next(p for p in report["passes"] if p["pass"] == "EqualizeCrossLayer")
    assert len(cle["pairs"]) >= 8 and cle["relu6_replaced_by_relu"]
    assert report["accuracy"]["int8_top1"] >= report["accuracy"]["fp32_top1"] - 0.02
