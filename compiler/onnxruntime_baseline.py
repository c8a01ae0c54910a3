"""ONNX Runtime beside tvmq in the report: fp32 and int8 latency on the user's model, from one run.

ONNX Runtime's int8 model is its own recipe on tvmq's calibration feeds: the opset raised to 13
when lower (a per-channel ``DequantizeLinear`` needs its ``axis``), ``quant_pre_process`` (ONNX shape
inference and graph optimization, the step ORT's documentation puts first; its symbolic shape
inference, which needs sympy, skipped; the step skipped with a note when it fails), then
``quantize_static`` (QDQ, per channel, uint8 activations, int8 weights).

ONNX Runtime fp32, ONNX Runtime int8 and the tvmq artifact are each timed in a fresh process of
their own, 2 threads each (after a run TVM's and ONNX Runtime's thread pools keep spinning, so
engines never share a process), ``rounds`` rounds with the order rotated one engine each round.
A process reports the median of ``runs`` calls after warm-up; the report, the median over rounds.

The timing processes run this file as a script (``python onnxruntime_baseline.py --child ...``),
so they import only ONNX Runtime or TVM's runtime, never tvmq's compiler: nothing here imports
tvmq at module level.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

THREADS = 2
ORT_FP32, ORT_INT8, TVMQ = "ort_fp32", "ort_int8", "tvmq"
WARMUP = 5


@dataclass(frozen=True)
class Timing:
    """How the engines are timed: ``rounds`` fresh processes each, ``runs`` calls per process."""

    rounds: int = 3
    runs: int = 50
    threads: int = THREADS

    def describe(self) -> str:
        return (f"each engine in its own process, {self.threads} threads, {self.rounds} rounds with the order "
                f"rotated, median over rounds of each process's median of {self.runs} runs after {WARMUP} warm-up")


def unavailable() -> str | None:
    """Why ONNX Runtime cannot run here (None: it can)."""
    try:
        import onnxruntime  # noqa: F401
        from onnxruntime.quantization import quantize_static  # noqa: F401
    except ImportError as err:
        return f"onnxruntime is not installed ({err.name or err})"
    return None


def measure(model: Path, calib_feeds, feed: dict, tvmq_module: tuple | None, timing: Timing = Timing()) -> dict:
    """The report's ``onnxruntime``: ``fp32_ms``, ``int8_ms`` and, when ``tvmq_module``
    (``(executable, params)``, run on this CPU) is given, ``tvmq_ms`` from the same rounds.

    ``calib_feeds``: the calibration feeds (dicts by input name) for ``quantize_static``;
    ``feed``: the one input every engine is timed on. A step that cannot run leaves its time
    ``None`` and says why in ``int8_status`` / ``status``; nothing here raises.
    """
    start = time.perf_counter()
    why = unavailable()
    if why:
        return {"status": f"not run: {why}", "fp32_ms": None, "int8_ms": None}
    with tempfile.TemporaryDirectory(prefix="tvmq-ort-") as tmp:
        work = Path(tmp)
        np.savez(work / "feed.npz", **feed)
        engines = {ORT_FP32: Path(model)}
        int8 = quantize(Path(model), calib_feeds, work)
        if int8["path"] is not None:
            engines[ORT_INT8] = int8["path"]
        if tvmq_module is not None:
            engines[TVMQ] = export_module(*tvmq_module, work / "tvmq")
        rounds = time_engines(engines, work / "feed.npz", timing)
    medians = {name: _median(times) for name, times in rounds.items()}
    return {"status": "ran" if all(v is not None for v in medians.values()) else "ran in part",
            "fp32_ms": medians.get(ORT_FP32), "int8_ms": medians.get(ORT_INT8),
            **({"tvmq_ms": medians[TVMQ]} if TVMQ in medians else {}),
            "int8_recipe": int8["recipe"], **({"int8_status": int8["status"]} if int8["status"] else {}),
            "measured": timing.describe(), "rounds_ms": rounds, "seconds": round(time.perf_counter() - start, 1)}


def for_compile(model: Path, calib_sets: list, inputs: list[dict], batch: int, built: tuple | None,
                timing: Timing, qdq: bool = False) -> dict:
    """The report's ``onnxruntime`` for one compile: ``calib_sets`` are tvmq's ``(program, Dataset)``
    calibration sets (fed to ``quantize_static`` batch by batch, as tvmq calibrated), ``inputs`` the
    deployed module's (``{"name", "shape", "dtype"}``), ``built`` its ``(executable, params)`` when it
    runs on this CPU (else ONNX Runtime would not time the same machine: not run)."""
    if qdq:
        return {"status": "not run: the model is already quantized (QDQ); ONNX Runtime would run it as it is",
                "fp32_ms": None, "int8_ms": None}
    if built is None:
        return {"status": "not run: the target does not run on this CPU, where ONNX Runtime would be timed",
                "fp32_ms": None, "int8_ms": None}
    feeds = (feed for program, data in calib_sets for feed, _ in data.batches(program.batch or 64))
    return measure(model, feeds, timing_feed(calib_sets, inputs, batch), built, timing)


def runs_on_this_cpu(executor) -> bool:
    """Whether a target's executor runs and times its modules on this machine's CPU (not under
    emulation, on a GPU or on remote devices), where ONNX Runtime is timed."""
    return executor.timed and executor.measured_on().get("executor") == "local" and \
        str(executor.device()).startswith("cpu")


def timing_feed(calib_sets: list, inputs: list[dict], batch: int) -> dict:
    """The feed every engine is timed on: the first ``batch`` calibration samples when a set has the
    deployed shapes (token ids stay valid ids), else zeros of those shapes; in the model's input order."""
    for _, data in calib_sets:
        feed, _ = next(data.batches(batch))
        if all(name in feed for name in (i["name"] for i in inputs)) and \
                all(tuple(feed[i["name"]].shape) == tuple(i["shape"]) for i in inputs):
            return {i["name"]: np.ascontiguousarray(feed[i["name"]], dtype=i["dtype"]) for i in inputs}
    return {i["name"]: np.zeros(i["shape"], i["dtype"]) for i in inputs}


def quantize(model: Path, calib_feeds, work: Path) -> dict:
    """ONNX Runtime's static int8 QDQ model of ``model`` on ``calib_feeds``: ``{"path", "recipe",
    "status"}`` (``path`` None and ``status`` the one-line reason when quantization fails)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Feeds(CalibrationDataReader):
        def __init__(self):
            self.feeds, self.count = iter(calib_feeds), 0

        def get_next(self):
            feed = next(self.feeds, None)
            self.count += feed is not None
            return feed

    reader, out, notes = Feeds(), work / "ort_int8.onnx", []
    try:
        source, notes = prepared(model, work)
        quantize_static(str(source), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    except Exception as err:  # noqa: BLE001  (ORT's quantizer raises anything; the compile goes on)
        return {"path": None, "recipe": "; ".join(notes), "status": f"quantize_static failed: {one_line(err)}"}
    recipe = [f"quantize_static (QDQ, per channel, uint8 activations, int8 weights) on {reader.count} "
              "calibration feeds", *notes]
    return {"path": out, "recipe": "; ".join(recipe), "status": None}


def prepared(model: Path, work: Path) -> tuple[Path, list[str]]:
    """The model ONNX Runtime quantizes: ``at_least_opset_13``, then ``quant_pre_process``; and notes
    saying what was done."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source = at_least_opset_13(model, work / "opset13.onnx")
    notes = [] if source == model else ["converted to opset 13"]
    out = work / "pre.onnx"
    try:
        quant_pre_process(str(source), str(out), skip_symbolic_shape=True)
    except Exception as err:  # noqa: BLE001
        return source, notes + [f"not pre-processed (quant_pre_process failed: {one_line(err)})"]
    return out, notes + ["after quant_pre_process"]


def at_least_opset_13(path: Path, converted: Path) -> Path:
    """``path``, or its opset-13 conversion written to ``converted``: per-channel DequantizeLinear
    (an ``axis``) needs opset 13, and ``quantize_static`` writes an invalid graph from an older one."""
    import onnx
    from onnx import version_converter

    model = onnx.load(str(path))
    if next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 13:
        return path
    onnx.save(version_converter.convert_version(model, 13), str(converted))
    return converted


def session(path: Path, threads: int = THREADS):
    """An ONNX Runtime CPU session with ``threads`` intra-op threads and one inter-op thread."""
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def export_module(executable, params: dict, directory: Path) -> Path:
    """Save a built tvmq module for a timing process: ``model.so`` and ``params.npz`` (main's order)."""
    directory.mkdir(parents=True)
    executable.export_library(str(directory / "model.so"))
    np.savez(directory / "params.npz", **params)
    (directory / "device").write_text(_device_name(executable))
    return directory


def time_engines(engines: dict, feed: Path, timing: Timing) -> dict[str, list]:
    """Each engine's ms per round (``None`` for a process that failed), each round one fresh process per
    engine, the order rotated by one each round."""
    names, rounds = list(engines), {name: [] for name in engines}
    for round_ in range(timing.rounds):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            rounds[name].append(child_ms(name, engines[name], feed, timing))
    return rounds


def child_ms(engine: str, path: Path, feed: Path, timing: Timing) -> float | None:
    """One fresh process's median ms of ``engine`` on ``feed`` (None when the process fails)."""
    threads = str(timing.threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "TVM_NUM_THREADS": threads}
    done = subprocess.run([sys.executable, __file__, "--child", engine, str(path), str(feed), str(timing.runs),
                           threads], capture_output=True, text=True, env=env)
    if done.returncode != 0 or not done.stdout.strip():
        return None
    return round(json.loads(done.stdout.strip().splitlines()[-1])["ms"], 4)


def _median(times: list) -> float | None:
    measured = [t for t in times if t is not None]
    return round(statistics.median(measured), 4) if measured else None


def one_line(err: BaseException) -> str:
    """An exception as one short line."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text[:200]


# ---- the timing process ----------------------------------------------------------------------

def _ort_call(path: Path, feed: dict, threads: int):
    run = session(path, threads).run
    return lambda: run(None, feed)


def _device_name(executable) -> str:
    """The device the executable's target runs modules on, as ``tvm.device`` reads it (``"cpu:0"``)."""
    from .build import executor_of

    return str(executor_of(executable).device())


def _tvmq_call(directory: Path, feed: dict, threads: int):
    """A call of the saved module's ``main`` on tensors made once (the VM call alone is timed)."""
    import tvm
    from tvm.runtime.vm import VirtualMachine

    device = tvm.device((directory / "device").read_text())  # the target's executor's (a CPU: runs_on_this_cpu)
    vm = VirtualMachine(tvm.runtime.load_module(str(directory / "model.so")), device)
    with np.load(directory / "params.npz") as params:
        args = [tvm.runtime.tensor(np.ascontiguousarray(v)) for v in feed.values()] + \
            [tvm.runtime.tensor(params[name]) for name in params.files]
    main = vm["main"]
    return lambda: main(*args)


CALLS = {ORT_FP32: _ort_call, ORT_INT8: _ort_call, TVMQ: _tvmq_call}


def _time_here(engine: str, path: Path, feed_file: Path, runs: int, threads: int) -> float:
    """Median ms of ``runs`` calls after ``WARMUP`` warm-up calls, in this (fresh) process."""
    with np.load(feed_file) as archive:
        feed = {name: archive[name] for name in archive.files}
    call = CALLS[engine](path, feed, threads)
    for _ in range(WARMUP):
        call()
    times = []
    for _ in range(max(runs, 1)):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _main() -> None:
    parser = argparse.ArgumentParser(description="time one engine in this process (tvmq's ONNX Runtime baseline)")
    parser.add_argument("--child", nargs=5, metavar=("ENGINE", "PATH", "FEED", "RUNS", "THREADS"), required=True)
    engine, path, feed, runs, threads = parser.parse_args().child
    print(json.dumps({"ms": _time_here(engine, Path(path), Path(feed), int(runs), int(threads))}))


if __name__ == "__main__":
    _main()
