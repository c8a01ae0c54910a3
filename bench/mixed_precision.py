"""Mixed precision under an accuracy budget on real zoo models: the curve and the choice.

    .venv/bin/python bench/mixed_precision.py                       # minilm_l6, ppocr_cls, mtcnn_rnet
    .venv/bin/python bench/mixed_precision.py --model minilm_l6 --drop 0.005 --trials 0

For each model: ``tvmq.compile(model, calib, config=Config(max_accuracy_drop=DROP, trials=N),
eval_data=eval, metric=task)`` where ``task(run)`` is the zoo model's own scorer
(:func:`tvmq.metric.zoo_metric`) on its evaluation split, fp32 reference outputs from ONNX
Runtime; the calibration and evaluation splits are disjoint samples. The report's
``mixed_precision`` section has every configuration tried (all fp32, all int8, all int8 with
the latency fallback's layers fp32, and the prefixes of the gain ranking the bisection tried),
each build's metric and its end-to-end ms from one interleaved timing run. "Best single" is
the fastest of all int8 / int8 + latency fallback / all fp32 that meets the budget; the
artifact is then saved, loaded in this process with ``tvmq.load`` and its metric computed
again from the saved files.

With ``--trials 0`` every latency (kernels and whole modules) is of untuned modules.
Writes ``bench/results/mixed_precision.json`` (merged by model) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "mixed_precision.json"
DEFAULT_MODELS = ("minilm_l6", "ppocr_cls", "mtcnn_rnet")
SINGLE = ("int8", "int8 + latency fallback", "fp32")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="a zoo model (repeatable); default: " + ", ".join(DEFAULT_MODELS))
    parser.add_argument("--drop", type=float, default=0.005, help="--max-accuracy-drop, in the metric's units")
    parser.add_argument("--trials", type=int, default=0)
    parser.add_argument("--runs", type=int, default=20, help="timed runs per build (interleaved rounds)")
    parser.add_argument("--markdown", action="store_true", help="print the stored results' tables and stop")
    args = parser.parse_args()
    if args.markdown:
        print("\n".join(table(row) for row in load_rows().values()))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    rows = load_rows()
    for name in args.model or DEFAULT_MODELS:
        rows[name] = measure(name, args)
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(rows, indent=1) + "\n")
        print(table(rows[name]), flush=True)


def measure(name: str, args) -> dict:
    import onnxruntime

    import tvmq
    from tvmq import zoo
    from tvmq.metric import zoo_metric

    model = zoo.get(name)
    path = model.fetch()
    calib, evaluation = model.samples("calib"), model.samples("eval")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    task = zoo_metric(model, "eval", lambda feed: session.run(None, feed))
    task.__name__ = model.metric_name
    config = tvmq.Config(max_accuracy_drop=args.drop, trials=args.trials, latency_runs=args.runs,
                         input_shapes=dict(model.input_shapes))
    started = time.perf_counter()
    compiled = tvmq.compile(path, calib, config=config, eval_data=evaluation, metric=task)
    seconds = round(time.perf_counter() - started, 1)
    section = compiled.report["mixed_precision"]
    with tempfile.TemporaryDirectory() as tmp:
        compiled.save(Path(tmp) / "artifact")
        deployed = tvmq.load(Path(tmp) / "artifact")
        saved_metric = task(lambda feed: _as_list(deployed.run(feed)))
    curve = section["curve"]
    meeting = [p for p in curve if p["meets_budget"] and p["configuration"] in SINGLE]
    best_single = min(meeting, key=lambda p: p["latency_ms"])
    return {"model": name, "metric_name": model.metric_name, "calib_samples": len(calib),
            "eval_samples": len(evaluation), "drop": args.drop, "trials": args.trials, "runs": args.runs,
            "fp32_metric": section["fp32_metric"], "threshold": section["budget"]["threshold"],
            "chosen": section["configuration"], "fp32_layers": section["fp32_layers"],
            "metric": section["metric"], "saved_artifact_metric": saved_metric,
            "latency_ms": section["latency_ms"], "best_single": best_single,
            "int8_layers": len(section["order"]) or None, "curve": curve, "order": section["order"][:10],
            "sensitivity_seconds": section["sensitivity_seconds"],
            "search_seconds": section["search_seconds"], "compile_seconds": seconds,
            "command": "bench/mixed_precision.py " + " ".join(sys.argv[1:])}


def _as_list(result) -> list:
    return result if isinstance(result, list) else [result]


def table(row: dict) -> str:
    lines = [f"### {row['model']} ({row['metric_name']}, budget {row['drop']}, fp32 {row['fp32_metric']:.4f}, "
             f"threshold {row['threshold']:.4f}, {row['calib_samples']} calibration / {row['eval_samples']} "
             f"evaluation samples, trials {row['trials']})", "",
             "| configuration | fp32 layers | dynamic layers | metric | ms | meets |", "|---|---|---|---|---|---|"]
    for p in row["curve"]:
        lines.append(f"| {p['configuration']} | {p['fp32_layers']} | {p.get('dynamic_layers', 0)} | {p['metric']:.4f} | "
                     f"{p['latency_ms']:.3f} | {'yes' if p['meets_budget'] else 'no'} |")
    lines += ["", f"chosen: {row['chosen']} ({len(row['fp32_layers'])} fp32 layers), {row['latency_ms']:.3f} ms, "
              f"metric {row['metric']:.4f} (saved artifact: {row['saved_artifact_metric']:.4f}); best single "
              f"configuration meeting the budget: {row['best_single']['configuration']} "
              f"{row['best_single']['latency_ms']:.3f} ms; search {row['search_seconds']} s, "
              f"compile {row['compile_seconds']} s", ""]
    return "\n".join(lines)


def load_rows() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else {}


if __name__ == "__main__":
    main()
