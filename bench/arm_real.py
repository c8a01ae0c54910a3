"""Real CNNs of the coverage table compiled for ARM and run as aarch64 code under qemu-user.

    .venv/bin/python bench/arm_real.py                          # mtcnn_rnet mtcnn_onet ppocr_cls doc_orientation
    .venv/bin/python bench/arm_real.py --model doc_orientation --target arm-neon

For each model: ``tvmq.compile(..., Config(target=ARM))`` on the zoo's calibration feeds, no
tuning; the report's accuracy is the aarch64 modules' run under ``qemu-aarch64 -cpu MCPU``, and
the task metric is computed from ``CompiledModel.run`` (aarch64, emulated) against ONNX
Runtime fp32. Then the integer check: one plan with int8 activations (``symmetric=True``),
realized once, built for ARM and for this x86 host, every evaluation feed run on both; the
count of output values that differ (0: the two targets compute the same integers).

Writes ``bench/results/arm_real.json`` and prints a markdown table (``docs/arm.md`` quotes it).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "arm_real.json"
MODELS = ("mtcnn_rnet", "mtcnn_onet", "ppocr_cls", "doc_orientation")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help=f"a zoo model (repeatable); default: {' '.join(MODELS)}")
    parser.add_argument("--target", default="arm", help="an ARM target (arm, arm-neon)")
    parser.add_argument("--calib", type=int, default=8, help="calibration feeds")
    args = parser.parse_args()
    rows = [measure(name, args.target, args.calib) for name in args.model or MODELS]
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(rows, indent=2))
    print(table(rows))


def measure(name: str, target: str, n_calib: int) -> dict:
    import onnxruntime as ort

    import tvmq
    from tvmq import zoo

    entry = zoo.get(name)
    path = entry.fetch()
    calib, evaluation = entry.samples("calib")[:n_calib], entry.samples("eval")
    shapes = {n: list(s) for n, s in entry.input_shapes.items()}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    reference = [session.run(None, feed) for feed in evaluation]

    start = time.perf_counter()
    compiled = tvmq.compile(path, calib, config=tvmq.Config(target=target, input_shapes=shapes, trials=0),
                            eval_data=evaluation)
    ours = [_as_list(compiled.run(feed)) for feed in evaluation]
    compile_s = time.perf_counter() - start
    differ, total = integers_differ(path, calib, evaluation, shapes, target)
    return {"model": name, "target": target, "eval_feeds": len(evaluation),
            "fp32_metric": entry.metric(reference, reference, "eval"), "int8_metric": entry.metric(reference, ours, "eval"),
            "report_accuracy": compiled.report["accuracy"], "latency_ms": compiled.report["latency_ms"],
            "compile_and_run_s": round(compile_s, 1), "outputs_differing_from_x86": differ, "outputs": total}


def integers_differ(path, calib, evaluation, shapes, target: str) -> tuple[int, int]:
    """Output values of one int8-activation plan that differ between ``target`` and this host."""
    import tvm

    import tvmq
    from tvmq import api
    from tvmq.build import build, virtual_machine
    from tvmq.targets import get_target

    quantized = api.quantize(path, calib, tvmq.Config(symmetric=True, input_shapes=shapes))
    arm = get_target(target)
    on_arm = virtual_machine(build(arm.legalize(quantized.int8), arm))
    on_host = virtual_machine(build(quantized.int8, get_target("host")))
    names = [spec.name for spec in quantized.program.imported.inputs]
    differ = total = 0
    for feed in evaluation:
        args = [tvm.runtime.tensor(np.ascontiguousarray(feed[n])) for n in names]
        for got, want in zip(_as_list(tvmq.runtime.outputs(on_arm["main"](*args))),
                             _as_list(tvmq.runtime.outputs(on_host["main"](*args)))):
            differ, total = differ + int(np.count_nonzero(got != want)), total + got.size
    return differ, total


def table(rows: list[dict]) -> str:
    lines = ["| model | target | eval feeds | metric fp32 | int8 (aarch64, emulated) | report: top-1 agreement / cosine "
             "| outputs differing from x86 int8 | compile + run (s) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        acc = r["report_accuracy"]
        lines.append(f"| {r['model']} | {r['target']} | {r['eval_feeds']} | {r['fp32_metric']:.4f} | {r['int8_metric']:.4f} "
                     f"| {acc.get('top1_agreement', 0):.4f} / {acc.get('output_cosine', 0):.4f} "
                     f"| {r['outputs_differing_from_x86']} of {r['outputs']} | {r['compile_and_run_s']} |")
    return "\n".join(lines)


def _as_list(result) -> list:
    return result if isinstance(result, list) else [result]


if __name__ == "__main__":
    main()
