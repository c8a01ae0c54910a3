"""Nearest rounding against AdaRound at 8- and 4-bit weights (int8 activations) on real models.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/adaround.py --model mtcnn_onet --bits 4
    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/adaround.py --model mnist_mobilenet --bits 4 --per-tensor
    .venv/bin/python bench/adaround.py --model ppocr_cls --bits 4 --iterations 2000

Each model is compiled with ``tvmq.compile`` (``--trials 0``, per-channel weights unless ``--per-tensor``, MinMax, the
zoo's calibration feeds) once per weight width and rounding, and the deployed module runs the
evaluation feeds (disjoint from calibration); the metric is the zoo's, on ONNX Runtime fp32's
outputs as the reference (``bench/coverage.py``'s), or top-1 on labels for ``mnist_mobilenet``
(the repo's ``models/mnist_mobilenet.onnx`` on the bundled MNIST calibration / evaluation split).
AdaRound's wall time is the difference of the report's ``calibration_seconds`` (calibration plus
layer-wise refinement) to nearest rounding's; ``refine_seconds`` splits it into the whole layer-wise
pass (re-realizing and re-running the int8 network per layer) and AdaRound's learning alone.
``OPENBLAS_NUM_THREADS=1`` helps on a loaded machine: OpenBLAS threads spinning on small matmuls
made AdaRound ~6x slower on a shared 2-core box. ``--per-tensor``: one weight scale per layer.

Writes ``bench/results/adaround.json`` (rows merged by model, bits and rounding) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
RESULTS = HERE / "results" / "adaround.json"
MOBILENET = HERE.parent / "models" / "mnist_mobilenet.onnx"


class _BundledMobileNet:
    """The repo's MobileNet on the bundled MNIST split, shaped like a zoo entry."""

    name, metric_name, input_shapes = "mnist_mobilenet", "top-1", {}

    def __init__(self, calib_samples: int, eval_samples: int):
        import tvmq.assets

        _, calib, evaluation = tvmq.assets.bundled_mnist()
        c, e = np.load(calib), np.load(evaluation)
        self.calib_x, self.eval_x, self.labels = c["x"][:calib_samples], e["x"][:eval_samples], e["y"][:eval_samples]

    def fetch(self):
        return MOBILENET

    def data(self):
        import onnx
        from coverage import ort_outputs
        from tvmq.data import Dataset

        name = onnx.load(str(MOBILENET)).graph.input[0].name
        evaluation = [{name: x[None]} for x in self.eval_x]
        return Dataset(self.calib_x), evaluation, ort_outputs(MOBILENET, evaluation)

    def metric(self, _reference, outputs, _split):
        return float(np.mean(np.argmax(np.concatenate([o[0] for o in outputs]), axis=1) == self.labels))


class _Zoo:
    def __init__(self, name):
        from tvmq import zoo

        self.model = zoo.get(name)
        self.name, self.metric_name, self.input_shapes = name, self.model.metric_name, dict(self.model.input_shapes)

    def fetch(self):
        return self.model.fetch()

    def data(self):
        from coverage import ort_outputs

        calib, evaluation = self.model.samples("calib"), self.model.samples("eval")
        return calib, evaluation, ort_outputs(self.model.fetch(), evaluation)

    def metric(self, reference, outputs, split):
        return self.model.metric(reference, outputs, split)


class _RefineLog(logging.Handler):
    """Keeps the layer-wise driver's last "refined N layers in T s (AdaRound's learning L s)" line."""

    def __init__(self):
        super().__init__()
        self.seconds = None

    def emit(self, record):
        found = re.search(r"refined \d+ layers in ([\d.]+) s \(AdaRound's learning ([\d.]+) s(; (\d+) builds)?",
                          record.getMessage())
        if found:
            self.seconds = {"refine": float(found[1]), "learning": float(found[2]),
                            **({"builds": int(found[4])} if found[4] else {})}


def measure(model, bits: int, rounding: str, iterations: int, calib, evaluation, reference,
            per_channel: bool = True) -> dict:
    import tvmq
    from coverage import _as_list

    log = _RefineLog()
    logging.getLogger("tvmq.layerwise").addHandler(log)
    logging.getLogger("tvmq.layerwise").setLevel(logging.INFO)

    config = tvmq.Config(weight_bits=bits, rounding=rounding, adaround_iterations=iterations, trials=0,
                         per_channel=per_channel,
                         latency_runs=1, latency_fallback=False, input_shapes=model.input_shapes)
    started = time.perf_counter()
    try:
        compiled = tvmq.compile(model.fetch(), calib, config=config)
    finally:
        logging.getLogger("tvmq.layerwise").removeHandler(log)
    outputs = [_as_list(compiled.run(feed)) for feed in evaluation]
    layers = compiled.report["plan"]["layers"]
    return {"model": model.name, "bits": bits, "rounding": rounding,
            "granularity": "per-channel" if per_channel else "per-tensor", "iterations": iterations if rounding != "nearest"
            else None, "metric_name": model.metric_name, "metric": model.metric(reference, outputs, "eval"),
            "cosine": cosine(reference, outputs),
            "int8_layers": sum(entry["precision"] == "int8" for entry in layers), "layers": len(layers),
            "weight_bits": sorted({entry["weight_bits"] for entry in layers}),
            "calibration_seconds": compiled.report["calibration_seconds"], "refine_seconds": log.seconds,
            "seconds": round(time.perf_counter() - started, 1)}


def cosine(reference, outputs) -> float:
    """Cosine similarity of all outputs of all evaluation feeds to fp32's, as one vector."""
    a = np.concatenate([np.ravel(o) for outs in reference for o in outs]).astype(np.float64)
    b = np.concatenate([np.ravel(o) for outs in outputs for o in outs]).astype(np.float64)
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))


def model_data(name: str, mobilenet_samples) -> tuple:
    """``(model, calib, evaluation feeds, ONNX Runtime fp32's outputs on them, fp32's metric)``."""
    model = _BundledMobileNet(*mobilenet_samples) if name == "mnist_mobilenet" else _Zoo(name)
    calib, evaluation, reference = model.data()
    return model, calib, evaluation, reference, model.metric(reference, reference, "eval")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="a zoo model or mnist_mobilenet (repeatable)")
    parser.add_argument("--bits", type=int, action="append", help="weight bits (repeatable; default 8 and 4)")
    parser.add_argument("--iterations", type=int, default=2000, help="AdaRound steps per layer (AIMET: 10000)")
    parser.add_argument("--rounding", action="append", choices=["nearest", "adaround"], help="default: both")
    parser.add_argument("--per-tensor", action="store_true", help="one weight scale per layer (default per channel)")
    parser.add_argument("--mobilenet-samples", type=int, nargs=2, default=(256, 1000), metavar=("CALIB", "EVAL"))
    args = parser.parse_args()
    rows = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    for name in args.model:
        model, calib, evaluation, reference, fp32 = model_data(name, args.mobilenet_samples)
        for bits in args.bits or (8, 4):
            for rounding in args.rounding or ("nearest", "adaround"):
                row = measure(model, bits, rounding, args.iterations, calib, evaluation, reference,
                              not args.per_tensor) | {"fp32": fp32}
                print(json.dumps(row), flush=True)
                rows = [r for r in rows if _key(r) != _key(row)] + [row]
                RESULTS.write_text(json.dumps(rows, indent=1) + "\n")
    print(table(rows))


def _key(row: dict) -> tuple:
    return row["model"], row.get("granularity", "per-channel"), row["bits"], row["rounding"]


def table(rows: list[dict]) -> str:
    """One line per model and width: fp32, nearest, AdaRound, the share of the gap closed, AdaRound's seconds."""
    lines = ["| model | metric | weights | fp32 | nearest | AdaRound | gap closed | output cosine nearest -> AdaRound "
             "| AdaRound s: learning / whole refinement (iterations) |", "|---|---|---|---|---|---|---|---|---|"]
    by_key = {_key(r): r for r in rows}
    for (name, granularity, bits, rounding), near in sorted(by_key.items()):
        ada = by_key.get((name, granularity, bits, "adaround"))
        if rounding != "nearest" or ada is None:
            continue
        fp32 = near["fp32"]
        gap = fp32 - near["metric"]
        closed = f"{(ada['metric'] - near['metric']) / gap:.0%}" if gap > 0 else "no gap"
        lines.append(f"| {name} | {near['metric_name']} | W{bits} {granularity} | {fp32:.4f} | "
                     f"{near['metric']:.4f} | "
                     f"{ada['metric']:.4f} | {closed} | {near.get('cosine', float('nan')):.4f} -> "
                     f"{ada.get('cosine', float('nan')):.4f} | "
                     f"{_seconds(ada)} ({ada['iterations']}) |")
    return "\n".join(lines)


def _seconds(row: dict) -> str:
    spent = row.get("refine_seconds")
    return f"{spent['learning']:.0f} / {spent['refine']:.0f}" if spent else f"{row['calibration_seconds']:.0f} (all)"


if __name__ == "__main__":
    main()
