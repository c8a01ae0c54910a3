"""Latency, side by side in one run: ONNX Runtime fp32 / int8 vs tvmq fp32 / int8 (both tuned).

    .venv/bin/python bench/latency.py                                  # the shape models, batch 1 and 8
    .venv/bin/python bench/latency.py --models mobilenet_v2_224 --batches 1 --trials 512
    .venv/bin/python bench/latency.py --models zoo:orientation --trials 600     # a real zoo model
    .venv/bin/python bench/latency.py --models zoo:mtcnn_onet --tuning-time 5m   # the CLI's default tuning
    .venv/bin/python bench/latency.py --models path/to/model.onnx --calib feeds/ --trials 600
    .venv/bin/python bench/latency.py --trials 0 --zero-trial --batches 1 --out bench/results/zero_trial.json

``--zero-trial`` adds two engines, ``tvmq_fp32_loops`` / ``tvmq_int8_loops``: the same models
compiled for the host target without its rule schedules (``TargetSpec.schedule`` None, the
target registered here as ``host-loops``): TVM's unscheduled loop nests, what ``--trials 0``
built before the rules.

A model is a shape model of ``bench/shapes.py`` (random calibration images), ``zoo:NAME`` (a
:data:`tvmq.zoo.MODELS` entry with its real calibration feeds; batch 1) or an ONNX path with
``--calib`` (anything ``tvmq.data.load_data`` reads, up to 32 samples; batch 1). Every engine
runs on the same feed: the first calibration sample (integer inputs such as token ids stay
valid).

For each model and batch: tvmq compiles (MetaSchedule, ``--trials`` per module, a database per
model and batch under ``bench/work/tuning``) and keeps its fp32 and int8 modules; ONNX
Runtime's int8 model is ``quantize_static`` (QDQ, per channel, uint8 activations, int8 weights)
on the same calibration feeds. Every engine is then timed in a fresh process of its own (2
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
import dataclasses
import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"
ENGINES = ("ort_fp32", "ort_int8", "tvmq_fp32", "tvmq_int8")
LOOPS_ENGINES = ("tvmq_fp32_loops", "tvmq_int8_loops")
LOOPS_TARGET = "host-loops"
THREADS = 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mobilenet_v2_224", "resnet50_224", "mnist_cnn",
                                                         "mnist_mobilenet"],
                        help="shape models, zoo:NAME, or ONNX paths (with --calib)")
    parser.add_argument("--calib", help="calibration data for ONNX paths (.npy / .npz / directory of .npz feeds)")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--trials", type=int, default=256, help="MetaSchedule trials per module (fp32, int8)")
    parser.add_argument("--tuning-time", default="0",
                        help="tuning time budget, as tvmq compile's --tuning-time (with --trials 0: the budget alone)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--zero-trial", action="store_true",
                        help="also time the modules built without the target's rule schedules")
    parser.add_argument("--calib-samples", type=int, default=32, help="calibration samples (at most 32)")
    parser.add_argument("--threads", type=int, default=THREADS, help="threads of every engine")
    parser.add_argument("--reuse", action="store_true",
                        help="time the modules a previous run saved under bench/work (no compiling)")
    parser.add_argument("--out", type=Path, help="results file (default bench/results/<cpu>.json)")
    parser.add_argument("--table", action="store_true", help="print the results file's table, measure nothing")
    parser.add_argument("--child", nargs=2, metavar=("ENGINE", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        engine, directory = args.child
        print(json.dumps({"ms": time_engine(engine, Path(directory), args.runs, args.threads)}))
        return
    out = args.out or HERE / "results" / f"{cpu_key()}.json"
    if args.table:
        print_table(json.loads(out.read_text()))
        return
    out.parent.mkdir(exist_ok=True)
    rows = []
    for name in args.models:
        model = load_model(name, args.calib)
        for batch in [b for b in args.batches if b == 1 or model.free_batch]:
            rows.append(measure(model, batch, args))
            _write(out, rows)
    print_table(rows)
    print(f"\nwrote {out}")


def _write(out: Path, rows: list[dict]) -> None:
    """Merge ``rows`` into the results file by (model, batch), atomically."""
    measured = {(r["model"], r["batch"]) for r in rows}
    kept = json.loads(out.read_text()) if out.exists() else []
    merged = [r for r in kept if (r["model"], r["batch"]) not in measured] + rows
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(merged, indent=2) + "\n")
    tmp.replace(out)


@dataclass
class Model:
    """A benchmark model: its name in the results, ONNX path, calibration feeds (one sample each,
    keyed by input name) and whether its batch dimension is free (only then is batch 8 run)."""

    name: str
    path: str
    calib: list[dict]
    free_batch: bool

    def feed(self, batch: int) -> dict:
        """The first ``batch`` calibration samples stacked: the one input every engine runs on."""
        return {n: np.concatenate([f[n] for f in self.calib[:batch]]) if batch > 1 else self.calib[0][n]
                for n in self.calib[0]}


def measure(model: Model, batch: int, args) -> dict:
    """Compile with tvmq and ONNX Runtime, then time the four engines in rotated rounds."""
    directory = WORK / f"{_slug(model.name)}-b{batch}"
    directory.mkdir(parents=True, exist_ok=True)
    np.savez(directory / "feed.npz", **model.feed(batch))
    model = dataclasses.replace(model, calib=model.calib[:args.calib_samples])
    engines = ENGINES + (LOOPS_ENGINES if args.zero_trial else ())
    load_before = _load()
    if args.reuse:
        tuning = json.loads((directory / "compiled.json").read_text())
    else:
        tuning = compile_tvmq(model, batch, args.trials, directory, tuning_time=args.tuning_time)
        if args.zero_trial:
            tuning["loops_seconds"] = compile_tvmq(model, batch, 0, directory, target=_loops_target(),
                                                   suffix="_loops")["seconds"]
        (directory / "compiled.json").write_text(json.dumps(tuning, default=str))
        quantize_ort(model, directory / "ort_int8.onnx")
    (directory / "ort_fp32.onnx").write_bytes(Path(model.path).read_bytes())
    rounds = {engine: [] for engine in engines}
    for r in range(args.rounds):
        for engine in engines[r % len(engines):] + engines[:r % len(engines)]:
            time.sleep(0.5)
            rounds[engine].append(child_time(engine, directory, args.runs, args.threads))
    row = {"model": model.name, "batch": batch, "cpu_flags": _int8_flags(),
           **{f"{e}_ms": round(statistics.median(v), 4) for e, v in rounds.items()},
           "threads": args.threads, "trials": args.trials, "tuning_time": args.tuning_time, "tuning_s": tuning["seconds"], "rounds_ms": rounds, "tuning": tuning["summary"],
           "load_avg": {"start": load_before, "end": _load()},
           **({"compile_loops_s": tuning["loops_seconds"]} if args.zero_trial else {}),
           **({"artifact_choice": tuning["choice"]} if tuning["choice"] else {})}
    print(f"{model.name} batch {batch}: " + ", ".join(f"{e} {row[e + '_ms']:.3f} ms" for e in engines), flush=True)
    return row


def load_model(name: str, calib: str | None = None) -> Model:
    """A benchmark model by name (a shape model, ``zoo:NAME``) or ONNX path, with up to 32 calibration samples."""
    if name.startswith("zoo:"):
        from tvmq import zoo

        entry = zoo.get(name.removeprefix("zoo:"))
        return Model(name, str(entry.fetch()), entry.samples("calib")[:32], False)
    if name.endswith(".onnx"):
        if calib is None:
            raise SystemExit(f"{name}: an ONNX path needs --calib")
        return Model(Path(name).stem, name, _feeds(name, calib), False)
    if name in ("mnist_cnn", "mnist_mobilenet"):
        from tvmq import assets

        bundled, data, _ = assets.bundled_mnist()
        path = bundled if name == "mnist_cnn" else HERE.parent / "models" / "mnist_mobilenet.onnx"
        with np.load(data) as archive:
            return Model(name, str(path), _split(str(path), archive["x"][::31][:32]), False)
    import shapes

    path = WORK / f"{name}.onnx"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(shapes.MODELS[name]().SerializeToString())
    images = np.random.default_rng(0).standard_normal((32, 3, 224, 224)).astype(np.float32)
    return Model(name, str(path), _split(str(path), images), True)


def _split(path: str, images: np.ndarray) -> list[dict]:
    """One feed per image, for a single-input model."""
    import onnx

    (name,) = [i.name for i in onnx.load(path, load_external_data=False).graph.input]
    return [{name: images[i:i + 1]} for i in range(len(images))]


def _feeds(path: str, calib: str) -> list[dict]:
    """Up to 32 single-sample feeds of ``calib``, read as ``tvmq compile --calib`` reads it."""
    import onnx

    from tvmq.data import load_data
    from tvmq.frontend.shapes import declared_specs

    specs = declared_specs(onnx.load(path, load_external_data=False))
    feeds = []
    for data in load_data(calib, specs, "calibration"):
        take = (lambda v, i: v[i]) if data.stacked else (lambda v, i: v[i:i + 1])
        feeds += [{n: take(v, i) for n, v in data.feeds().items()} for i in range(len(data))]
    return feeds[:32]


def compile_tvmq(model: Model, batch: int, trials: int, directory: Path, target: str = "host",
                 suffix: str = "", tuning_time: str = "0") -> dict:
    """Tune (``trials`` per module and / or ``tuning_time``) and build both modules; save them where
    the timing processes load them (``tvmq_int8<suffix>``, ``tvmq_fp32<suffix>``)."""
    import tvmq

    shapes = {n: list(a.shape) for n, a in model.feed(batch).items()}
    config = tvmq.Config(target=target, trials=trials, tuning_time=tuning_time, deploy_batch=batch, latency_runs=1, input_shapes=shapes,
                         tuning_db=WORK / "tuning" / f"{_slug(model.name)}-b{batch}")
    start = time.perf_counter()
    compiled = tvmq.compile(model.path, model.calib, config=config)
    seconds = round(time.perf_counter() - start, 1)
    compiled.save(directory / f"tvmq_int8{suffix}", force=True)
    executable, params = compiled.baseline
    fp32 = directory / f"tvmq_fp32{suffix}"
    fp32.mkdir(parents=True, exist_ok=True)
    executable.export_library(str(fp32 / "model.so"))
    np.savez(fp32 / "params.npz", **params)
    (fp32 / "params.json").write_text(json.dumps(list(params)))
    return {"seconds": seconds, "summary": compiled.report["tuning"],
            "choice": compiled.report.get("artifact_choice")}


def _loops_target() -> str:
    """Register :data:`LOOPS_TARGET`: the host target without its rule schedules."""
    from tvmq.targets import get_target, register_target

    register_target(LOOPS_TARGET)(lambda: dataclasses.replace(get_target("host"), schedule=None))
    return LOOPS_TARGET


def quantize_ort(model: Model, out: Path) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.samples = iter(model.calib)

        def get_next(self):
            return next(self.samples, None)

    from coverage import at_least_opset_13  # an opset-12 model (MTCNN) got an invalid QDQ graph

    source = at_least_opset_13(Path(model.path), out.with_name("opset13.onnx"))
    quantize_static(str(source), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def child_time(engine: str, directory: Path, runs: int, threads: int = THREADS) -> float:
    env = {**os.environ, "TVM_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, __file__, "--runs", str(runs), "--threads", str(threads), "--child", engine,
                          str(directory)],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["ms"]


def time_engine(engine: str, directory: Path, runs: int, threads: int = THREADS) -> float:
    """Median milliseconds of ``runs`` calls after 10 warm-up calls, in this (fresh) process."""
    with np.load(directory / "feed.npz") as archive:
        feed = dict(archive)
    run = _ort_runner(directory / f"{engine}.onnx", feed, threads) if engine.startswith("ort") \
        else _tvm_runner(directory / engine, feed)
    for _ in range(10):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _ort_runner(path: Path, feed: dict, threads: int = THREADS):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda: session.run(None, feed)


def _tvm_runner(directory: Path, feed: dict):
    """A call of the saved module's ``main`` on tensors made once (the VM call alone is timed)."""
    import tvm
    from tvm.runtime.vm import VirtualMachine

    library, params, inputs = load_saved(directory)
    vm = VirtualMachine(library, tvm.cpu())
    # np.array, not np.ascontiguousarray, which makes a 0-d input (Silero's sample rate) 1-d
    args = [tvm.runtime.tensor(np.array(feed[i["name"]], dtype=i["dtype"], order="C")) for i in inputs] + \
        [tvm.runtime.tensor(v) for v in params.values()]
    main = vm["main"]
    return lambda: main(*args)


def load_saved(directory: Path) -> tuple:
    """A module ``compile_tvmq`` saved: its library, its params by name in ``main``'s order, its
    inputs (``{"name", "shape", "dtype"}``; an fp32 module, saved without a manifest, takes the
    int8 one's)."""
    import tvm

    int8 = directory.name.replace("fp32", "int8")
    manifest = json.loads((directory.parent / int8 / "manifest.json").read_text())
    names = manifest["params"] if directory.name.startswith("tvmq_int8") \
        else json.loads((directory / "params.json").read_text())
    with np.load(directory / "params.npz") as archive:
        params = {n: archive[n] for n in names}
    return tvm.runtime.load_module(str(directory / "model.so")), params, manifest["inputs"]


def _load() -> list[float]:
    """The 1, 5 and 15 minute load averages (what ``uptime`` prints): the machine is shared."""
    return [round(x, 2) for x in os.getloadavg()]


def _load_cell(load: dict | None) -> str:
    """The 1-minute load average at a row's start and end, ``"9.3-13.9"``."""
    return f"{load['start'][0]:.1f}-{load['end'][0]:.1f}" if load else "-"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", name)


def print_table(rows: list[dict]) -> None:
    print("\n| model | batch | ORT fp32 ms | ORT int8 ms | tvmq fp32 ms | tvmq int8 ms | int8 vs ORT fp32 "
          "| int8 vs ORT int8 | tvmq fp32 / ORT fp32 | trials | tuning s | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['batch']} | {r['ort_fp32_ms']:.3f} | {r['ort_int8_ms']:.3f} | "
              f"{r['tvmq_fp32_ms']:.3f} | {r['tvmq_int8_ms']:.3f} | {r['ort_fp32_ms'] / r['tvmq_int8_ms']:.2f}x | "
              f"{r['ort_int8_ms'] / r['tvmq_int8_ms']:.2f}x | {r['tvmq_fp32_ms'] / r['ort_fp32_ms']:.2f} | "
              f"{r['trials']} | {r['tuning_s']:.0f} | {_load_cell(r.get('load_avg'))} |")


    loops = [r for r in rows if "tvmq_int8_loops_ms" in r]
    if loops:
        print("\n| model | tvmq fp32 loops ms | tvmq fp32 ms | speed-up | tvmq int8 loops ms | tvmq int8 ms | speed-up "
              "| int8 vs ORT fp32 | compile s (rules / loops) |")
        print("|---|---|---|---|---|---|---|---|---|")
    for r in loops:
        print(f"| {r['model']} | {r['tvmq_fp32_loops_ms']:.3f} | {r['tvmq_fp32_ms']:.3f} | "
              f"{r['tvmq_fp32_loops_ms'] / r['tvmq_fp32_ms']:.1f}x | {r['tvmq_int8_loops_ms']:.3f} | "
              f"{r['tvmq_int8_ms']:.3f} | {r['tvmq_int8_loops_ms'] / r['tvmq_int8_ms']:.1f}x | "
              f"{r['ort_fp32_ms'] / r['tvmq_int8_ms']:.2f}x | {r['tuning_s']:.0f} / {r['compile_loops_s']:.0f} |")


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
