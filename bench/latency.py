"""Latency, side by side in one run: ONNX Runtime fp32 / int8 vs tvmq fp32 / int8 (both tuned).

    .venv/bin/python bench/latency.py                                  # all models, batch 1 and 8
    .venv/bin/python bench/latency.py --models mobilenet_v2_224 --batches 1 --trials 512

For each model and batch: tvmq compiles (MetaSchedule, ``--trials`` per module, a database per
model and batch under ``bench/work/tuning``) and keeps its fp32 and int8 modules; ONNX
Runtime's int8 model is ``quantize_static`` (QDQ, per channel, uint8 activations, int8 weights)
on the same calibration data. Every engine is then timed in a fresh process of its own (2
threads; after run, TVM's and ONNX Runtime's thread pools keep spinning, so engines never share
a process), ``--rounds`` rounds with the engine order rotated each round; each process reports
the median of ``--runs`` runs after warm-up, and the table shows the median over rounds.
Rows of models not measured in this run are kept in the results file (each row is one run).

Writes ``bench/results/<cpu model>-<int8 flags>.json``: a list of ``{"model", "batch",
"cpu_flags", "ort_fp32_ms", "ort_int8_ms", "tvmq_fp32_ms", "tvmq_int8_ms", "trials",
"tuning_s"}`` plus the per-round timings and tuning summaries.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"
ENGINES = ("ort_fp32", "ort_int8", "tvmq_fp32", "tvmq_int8")
THREADS = 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mobilenet_v2_224", "resnet50_224", "mnist_cnn",
                                                         "mnist_mobilenet"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--trials", type=int, default=256, help="MetaSchedule trials per module (fp32, int8)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--child", nargs=3, metavar=("ENGINE", "DIR", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        engine, directory, batch = args.child
        print(json.dumps({"ms": time_engine(engine, Path(directory), int(batch), args.runs)}))
        return
    out = HERE / "results" / f"{cpu_key()}.json"
    out.parent.mkdir(exist_ok=True)
    rows = []
    for name in args.models:
        for batch in [b for b in args.batches if b == 1 or not _static_batch(name)]:
            rows.append(measure(name, batch, args))
            _write(out, rows)
    print_table(rows)
    print(f"\nwrote {out.relative_to(HERE.parent)}")


def _write(out: Path, rows: list[dict]) -> None:
    """Merge ``rows`` into the results file by (model, batch), atomically."""
    measured = {(r["model"], r["batch"]) for r in rows}
    kept = json.loads(out.read_text()) if out.exists() else []
    merged = [r for r in kept if (r["model"], r["batch"]) not in measured] + rows
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(merged, indent=2) + "\n")
    tmp.replace(out)


def measure(name: str, batch: int, args) -> dict:
    """Compile with tvmq and ONNX Runtime, then time the four engines in rotated rounds."""
    directory = WORK / f"{name}-b{batch}"
    model, calib = load_model(name)
    tuning = compile_tvmq(name, model, calib, batch, args.trials, directory)
    quantize_ort(model, calib, directory / "ort_int8.onnx")
    (directory / "ort_fp32.onnx").write_bytes(Path(model).read_bytes())
    rounds = {engine: [] for engine in ENGINES}
    for r in range(args.rounds):
        for engine in ENGINES[r % len(ENGINES):] + ENGINES[:r % len(ENGINES)]:
            time.sleep(0.5)
            rounds[engine].append(child_time(engine, directory, batch, args.runs))
    row = {"model": name, "batch": batch, "cpu_flags": _int8_flags(),
           **{f"{e}_ms": round(statistics.median(v), 4) for e, v in rounds.items()},
           "trials": args.trials, "tuning_s": tuning["seconds"], "rounds_ms": rounds, "tuning": tuning["summary"]}
    print(f"{name} batch {batch}: " + ", ".join(f"{e} {row[e + '_ms']:.3f} ms" for e in ENGINES), flush=True)
    return row


def load_model(name: str) -> tuple[str, np.ndarray]:
    """The ONNX path and 32 calibration samples of a benchmark model."""
    from tvmq import assets

    if name in ("mnist_cnn", "mnist_mobilenet"):
        bundled, calib, _ = assets.bundled_mnist()
        path = bundled if name == "mnist_cnn" else HERE.parent / "models" / "mnist_mobilenet.onnx"
        with np.load(calib) as data:
            return str(path), data["x"][::31][:32]
    import shapes

    path = WORK / f"{name}.onnx"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(shapes.MODELS[name]().SerializeToString())
    rng = np.random.default_rng(0)
    return str(path), rng.standard_normal((32, 3, 224, 224)).astype(np.float32)


def compile_tvmq(name: str, model: str, calib: np.ndarray, batch: int, trials: int, directory: Path) -> dict:
    """Tune and build both modules; save them where the timing processes load them."""
    import tvmq

    config = tvmq.Config(trials=trials, deploy_batch=batch, latency_runs=1,
                         tuning_db=WORK / "tuning" / f"{name}-b{batch}")
    start = time.perf_counter()
    compiled = tvmq.compile(model, calib, config=config)
    seconds = round(time.perf_counter() - start, 1)
    compiled.save(directory / "tvmq_int8", force=True)
    executable, params = compiled.baseline
    (directory / "tvmq_fp32").mkdir(parents=True, exist_ok=True)
    executable.export_library(str(directory / "tvmq_fp32" / "model.so"))
    np.savez(directory / "tvmq_fp32" / "params.npz", **params)
    (directory / "tvmq_fp32" / "params.json").write_text(json.dumps(list(params)))
    return {"seconds": seconds, "summary": compiled.report["tuning"]}


def quantize_ort(model: str, calib: np.ndarray, out: Path) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    import onnxruntime as ort

    input_name = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.samples = iter([{input_name: calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.samples, None)

    quantize_static(model, str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def child_time(engine: str, directory: Path, batch: int, runs: int) -> float:
    env = {**os.environ, "TVM_NUM_THREADS": str(THREADS), "OMP_NUM_THREADS": str(THREADS)}
    out = subprocess.run([sys.executable, __file__, "--runs", str(runs), "--child", engine, str(directory),
                          str(batch)], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["ms"]


def time_engine(engine: str, directory: Path, batch: int, runs: int) -> float:
    """Median milliseconds of ``runs`` calls after 10 warm-up calls, in this (fresh) process."""
    run = _ort_runner(directory / f"{engine}.onnx", batch) if engine.startswith("ort") \
        else _tvm_runner(directory / engine, batch)
    for _ in range(10):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _ort_runner(path: Path, batch: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = THREADS, 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    spec = session.get_inputs()[0]
    shape = [batch if not isinstance(d, int) else d for d in spec.shape]
    feed = {spec.name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    return lambda: session.run(None, feed)


def _tvm_runner(directory: Path, batch: int):
    import tvm
    from tvm.runtime.vm import VirtualMachine

    library, params, shape = load_saved(directory, batch)
    vm = VirtualMachine(library, tvm.cpu())
    params = [tvm.runtime.tensor(v) for v in params.values()]
    x = tvm.runtime.tensor(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    main = vm["main"]
    return lambda: main(x, *params)


def load_saved(directory: Path, batch: int) -> tuple:
    """A module ``compile_tvmq`` saved: its library, its params by name in ``main``'s order, its
    input shape (an fp32 module, saved without a manifest, takes the int8 one's at ``batch``)."""
    import tvm

    if (directory / "manifest.json").exists():
        manifest = json.loads((directory / "manifest.json").read_text())
        names, shape = manifest["params"], manifest["inputs"][0]["shape"]
    else:
        names = json.loads((directory / "params.json").read_text())
        shape = [batch, *_input_shape(directory.parent)[1:]]
    with np.load(directory / "params.npz") as archive:
        params = {n: archive[n] for n in names}
    return tvm.runtime.load_module(str(directory / "model.so")), params, shape


def _input_shape(directory: Path) -> list[int]:
    manifest = json.loads((directory / "tvmq_int8" / "manifest.json").read_text())
    return manifest["inputs"][0]["shape"]


def _static_batch(name: str) -> bool:
    """The bundled models fix their batch at 1 in the ONNX graph."""
    import onnx

    path, _ = load_model(name)
    dim = onnx.load(path, load_external_data=False).graph.input[0].type.tensor_type.shape.dim[0]
    return dim.HasField("dim_value")


def print_table(rows: list[dict]) -> None:
    print("\n| model | batch | ORT fp32 ms | ORT int8 ms | tvmq fp32 ms | tvmq int8 ms | int8 vs ORT fp32 "
          "| int8 vs ORT int8 | tvmq fp32 / ORT fp32 | trials | tuning s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['batch']} | {r['ort_fp32_ms']:.3f} | {r['ort_int8_ms']:.3f} | "
              f"{r['tvmq_fp32_ms']:.3f} | {r['tvmq_int8_ms']:.3f} | {r['ort_fp32_ms'] / r['tvmq_int8_ms']:.2f}x | "
              f"{r['ort_int8_ms'] / r['tvmq_int8_ms']:.2f}x | {r['tvmq_fp32_ms'] / r['ort_fp32_ms']:.2f} | "
              f"{r['trials']} | {r['tuning_s']:.0f} |")


def _int8_flags() -> list[str]:
    from tvmq.targets.x86 import INT8_FEATURES, cpu_flags

    return [f for f in INT8_FEATURES if f in cpu_flags()]


def cpu_key() -> str:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1] for line in text.splitlines() if line.startswith("model name")), "cpu")
    return re.sub(r"[^A-Za-z0-9]+", "-", f"{model.strip()}-{'-'.join(_int8_flags())}").strip("-").lower()


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
