#!/usr/bin/env python3
"""The cuda target on a machine with an NVIDIA GPU, in one run of a few minutes; exits non-zero on failure.

1. int8 convs (requantize fused; 3x3 / 1x1, stride 1 / 2, 3 / 6 / 32 channels) and dense layers
   built for ``cuda`` untuned: ``dp4a`` in their PTX, their GPU results equal to numpy's integer
   reference bit for bit;
2. the same module tuned with MetaSchedule's CUDA rules (``--trials``, default 8 per task; 0 skips):
   equal to the reference too;
3. the bundled MNIST CNN compiled with ``--target cuda``: the saved artifact loads on the GPU and
   its outputs on evaluation samples equal the host's integer simulation of the same int8 model
   (the module the report's accuracy was measured with) bit for bit;
4. latency of the bundled model's int8 and fp32 modules (the report's) and, where onnxruntime has
   its CUDA provider, ONNX Runtime's; ``--results FILE`` writes them as JSON with the GPU's name.

Usage: ``.venv/bin/python scripts/gpu_check.py [--trials N] [--results bench/results/cuda.json]``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CONVS = [  # (channels, out_channels, size, kernel, stride, padding)
    (3, 16, 12, 3, 1, 1), (6, 20, 9, 3, 2, 1), (32, 32, 8, 1, 1, 0), (32, 32, 14, 3, 1, 1)]
DENSES = [(3, 38, 24), (1, 256, 10)]  # (rows, K, N)
SAMPLES = 32  # evaluation samples of the bundled model compared with the host


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, help="tuning trials per kernel task (0: no tuning check)")
    parser.add_argument("--results", type=Path, help="write the latencies and checks as JSON here")
    args = parser.parse_args()

    import tvm

    from tvmq.targets.cuda import gpu_name

    if not tvm.cuda(0).exist:
        print("gpu_check: no CUDA GPU here (tvm.cuda(0).exist is False)")
        return 2
    started = time.perf_counter()
    summary = {"gpu": gpu_name(), "compute_version": tvm.cuda(0).compute_version, "checks": {}}
    print(f"gpu_check on {summary['gpu']} (compute {summary['compute_version']})")
    failures = []
    for name, check in [("kernels untuned", lambda: check_kernels(0)),
                        *([(f"kernels tuned ({args.trials} trials a task)", lambda: check_kernels(args.trials))]
                          if args.trials else []),
                        ("bundled model", lambda: check_model(summary))]:
        start = time.perf_counter()
        try:
            detail = check()
            summary["checks"][name] = "ok"
            print(f"  ok    {name}: {detail} ({time.perf_counter() - start:.0f} s)")
        except Exception as err:  # noqa: BLE001  (a check that fails is reported, the others still run)
            summary["checks"][name] = f"FAILED: {type(err).__name__}: {err}"
            failures.append(name)
            print(f"  FAIL  {name}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
    summary["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps({k: v for k, v in summary.items() if k != "checks"}, indent=1))
    if args.results:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"wrote {args.results}")
    print("gpu_check: " + ("all checks passed" if not failures else f"{len(failures)} failed: {', '.join(failures)}"))
    return 1 if failures else 0


def layers_module(rng):
    """Every case of :data:`CONVS` (with a requantize epilogue) and :data:`DENSES` in one Relax
    module, its inputs and numpy's integer results."""
    import tvm
    from tvm import relax

    params, inputs, expected, outputs = [], [], [], []
    for i, (c, o, size, k, stride, pad) in enumerate(CONVS):
        x = rng.integers(-128, 128, (1, c, size, size)).astype(np.int8)
        w = rng.integers(-127, 128, (o, c, k, k)).astype(np.int8)
        bias = rng.integers(-2000, 2000, o).astype(np.int32)
        multiplier = rng.uniform(0.001, 0.01, (1, o, 1, 1)).astype(np.float32)
        params.append(relax.Var(f"x{i}", relax.TensorType(x.shape, "int8")))
        inputs.append(x)
        expected.append(_requantize(_conv(x, w, stride, pad) + bias.reshape(1, o, 1, 1), multiplier))
        outputs.append((w, bias, multiplier, stride, pad))
    for i, (m, k, n) in enumerate(DENSES):
        x = rng.integers(-128, 128, (m, k)).astype(np.int8)
        w = rng.integers(-127, 128, (k, n)).astype(np.int8)
        params.append(relax.Var(f"d{i}", relax.TensorType(x.shape, "int8")))
        inputs.append(x)
        expected.append(x.astype(np.int64) @ w.astype(np.int64))
        outputs.append(w)
    bb = relax.BlockBuilder()
    with bb.function("main", params):
        with bb.dataflow():
            results = []
            for var, spec in zip(params, outputs):
                if isinstance(spec, tuple):
                    w, bias, multiplier, stride, pad = spec
                    acc = bb.emit(relax.op.nn.conv2d(var, relax.const(w), strides=[stride] * 2, padding=[pad] * 2,
                                                     out_dtype="int32"))
                    acc = bb.emit(relax.op.add(acc, relax.const(bias.reshape(1, -1, 1, 1))))
                    scaled = bb.emit(relax.op.multiply(relax.op.astype(acc, "float32"), relax.const(multiplier)))
                    results.append(bb.emit(relax.op.astype(relax.op.clip(relax.op.round(scaled), -128, 127), "int8")))
                else:
                    results.append(bb.emit(relax.op.matmul(var, relax.const(spec), out_dtype="int32")))
            out = bb.emit_output(relax.Tuple(results))
        bb.emit_func_output(out)
    return tvm.ir.IRModule(bb.get().functions), inputs, expected


def _conv(x, w, stride, pad):
    n, c, h, _ = x.shape
    o, _, k, _ = w.shape
    xp = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out_size = (h + 2 * pad - k) // stride + 1
    out = np.zeros((n, o, out_size, out_size), np.int64)
    for i in range(k):
        for j in range(k):
            patch = xp[:, :, i:i + stride * out_size:stride, j:j + stride * out_size:stride]
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j].astype(np.int64))
    return out


def _requantize(acc, multiplier):
    return np.clip(np.round(acc.astype(np.float32) * multiplier), -128, 127).astype(np.int8)


def check_kernels(trials: int) -> str:
    """Build the layers module (tuned with ``trials`` per task when > 0), check PTX and results."""
    import tvm

    from tvmq.build import build, virtual_machine
    from tvmq.targets import get_target
    from tvmq.targets.cuda import ptx

    spec = get_target("cuda")
    mod, inputs, expected = layers_module(np.random.default_rng(0))
    legalized = spec.legalize(mod)
    if trials:
        from tvmq.tune import tune

        legalized, tuning = tune(legalized, spec, trials * 8, Path(tempfile.mkdtemp(prefix="tvmq-gpu-check-")),
                                 share=trials)
    executable = build(legalized, spec)
    count = len(re.findall(r"\bdp4a\.s32\.s32\b", ptx(executable, spec.target)))
    if not count:
        raise AssertionError("no dp4a instruction in the PTX")
    got = virtual_machine(executable)["main"](*[tvm.runtime.tensor(x) for x in inputs])
    for index, (value, want) in enumerate(zip(got, expected)):
        value = value.numpy()
        if not np.array_equal(value, want):
            diff = np.count_nonzero(value != want)
            raise AssertionError(f"output {index}: {diff} of {value.size} values differ from numpy")
    tuned = f", {tuning['measured']} candidates measured" if trials else ""
    return f"{len(CONVS)} convs + {len(DENSES)} dense bit-exact, {count} dp4a in the PTX{tuned}"


def check_model(summary: dict) -> str:
    """The bundled MNIST CNN: GPU artifact vs the host's integer simulation; latencies."""
    import tvm

    import tvmq
    from tvmq import api, runtime
    from tvmq.assets import bundled_mnist
    from tvmq.build import bind_batch, build, virtual_machine
    from tvmq.config import Config
    from tvmq.targets import get_target
    from tvmq.targets.cuda import jit_settings

    model, calib, evaluation = bundled_mnist()
    scratch = Path(tempfile.mkdtemp(prefix="tvmq-gpu-check-"))
    calib_data = scratch / "calib.npz"  # the first 256 samples, as a file: its labels are no input
    with np.load(calib) as data:
        np.savez(calib_data, **{key: data[key][:256] for key in data.files})
    with np.load(evaluation) as data:
        samples = data["x"][:SAMPLES]
    compiled = tvmq.compile(model, calib_data, target="cuda")
    out = scratch / "mnist"
    compiled.save(out)
    jit_settings()  # how a process that only loads the artifact should compile its CUDA source
    deployed = runtime.load(out)
    host = virtual_machine(build(bind_batch(api.quantize(model, calib_data, Config(target="cuda")).int8, 1),
                                 get_target("host")))
    differ = 0
    for sample in samples:
        gpu = deployed.run(sample[None])
        want = host["main"](tvm.runtime.tensor(sample[None])).numpy()
        differ += int(not np.array_equal(np.asarray(gpu), want))
    if differ:
        raise AssertionError(f"{differ} of {len(samples)} samples' outputs differ from the host's integer simulation")
    latency = compiled.report["latency_ms"]
    summary["mnist_b1_ms"] = {"tvmq_int8": latency.get("int8"), "tvmq_fp32": latency.get("fp32"),
                              "tvmq_artifact_from_disk": round(deployed.benchmark(runs=100), 4),
                              "onnxruntime_cuda": _onnxruntime_ms(model, samples[:1])}
    return f"{len(samples)} samples bit-exact; ms at batch 1: {summary['mnist_b1_ms']}"


def _onnxruntime_ms(model, feed, runs: int = 100):
    """ONNX Runtime's CUDA provider, median ms of ``runs`` (None: not installed / no CUDA provider)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return None
    session = ort.InferenceSession(str(model), providers=["CUDAExecutionProvider"])
    name = session.get_inputs()[0].name
    for _ in range(10):
        session.run(None, {name: feed})
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, {name: feed})
        times.append(time.perf_counter() - start)
    return round(float(np.median(times)) * 1e3, 4)


if __name__ == "__main__":
    sys.exit(main())
