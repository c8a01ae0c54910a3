"""The ``tvmq`` command line: ``compile``, ``run``, ``demo``, ``export-qdq`` and ``debug``.

Errors caused by input print one line (``tvmq: error: ...``) and exit 1; ``--debug`` shows
the traceback instead. Every command runs in a worker process (``isolate``), so a native
crash inside TVM is reported the same way instead of killing ``tvmq`` with a signal.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path

from . import isolate
from .errors import TvmqError

DEFAULT_TUNING_TIME = "5m"  # tvmq compile's tuning when no flag says otherwise


def main(argv: list[str] | None = None, isolated: bool | None = None) -> int:
    """Run the command line ``argv``; ``isolated`` (default: unless already a worker) runs it in a worker."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    parser = _parser()
    args = parser.parse_args(argv)
    if isolated is None:
        isolated = not isolate.in_worker()
    if isolated:
        return isolate.supervise(argv, getattr(args, "out", None))
    if isolate.in_worker():
        isolate.worker_signals(args.debug)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="tvmq: %(message)s", stream=sys.stderr)
    try:
        return args.handler(args)
    except TvmqError as err:
        if args.debug:
            raise
        print(f"tvmq: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return _interrupted()
    except Exception as err:  # a bug or a TVM failure: still one line unless --debug
        if isolate.interruption() is not None:  # the interrupt surfaced through a TVM call
            return _interrupted()
        if args.debug:
            raise
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        print(f"tvmq: internal error ({type(err).__name__}): {first} (rerun with --debug for details)",
              file=sys.stderr)
        return 1


def _interrupted() -> int:
    sig = isolate.interruption() or signal.SIGINT
    print(f"tvmq: interrupted ({sig.name}); nothing was written", file=sys.stderr)
    return 128 + int(sig)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tvmq", description="int8 quantization compiler on Apache TVM")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True)

    comp = sub.add_parser("compile", help="quantize an ONNX model to int8 and build it for a target")
    comp.add_argument("model", type=Path, help="the float ONNX model")
    comp.add_argument("--calib", type=Path,
                      help="calibration data (not needed for a QDQ model: its scales are the plan): .npy (one input), .npz keyed by input names (or x) with optional "
                           "labels y, or a directory of such .npz feeds")
    comp.add_argument("--eval", type=Path, help="evaluation data, as --calib")
    _add_build_options(comp)
    comp.add_argument("--debug-steps", action="store_true",  # --debug is tracebacks and debug logs
                      help="also run tvmq debug's steps on this compile's data: report.json's debug")
    comp.set_defaults(handler=_compile)

    demo = sub.add_parser("demo", help="compile the bundled pretrained MNIST CNN and print its report")
    _add_build_options(demo)
    demo.set_defaults(handler=_demo)

    run = sub.add_parser("run", help="run a compiled artifact on an input .npy or a .npz feed")
    run.add_argument("artifact", type=Path)
    run.add_argument("--input", type=Path, required=True,
                     help=".npy (a single-input model) or .npz keyed by input names")
    run.add_argument("--output", type=Path, required=True,
                     help=".npy (a single-output model) or .npz (every output, keyed by output name)")
    run.set_defaults(handler=_run)

    qdq = sub.add_parser("export-qdq", help="write a compiled artifact's plan as a QDQ ONNX model "
                                             "(ONNX Runtime runs it; tvmq compile reads it back)")
    qdq.add_argument("artifact", type=Path)
    qdq.add_argument("output", type=Path, help="the QDQ model to write (.onnx)")
    qdq.add_argument("--model", type=Path, help="the source ONNX model (default: the path the artifact "
                                                "records; its sha256 must match)")
    qdq.set_defaults(handler=_export_qdq)
    dbg = sub.add_parser("debug", help="the PTQ debugging flow: fp32 sanity, weights vs activations, per-layer "
                                       "SQNR simulated vs deployed, sensitivity (debug.json, debug.md)")
    dbg.add_argument("model", type=Path, help="the float ONNX model")
    dbg.add_argument("--calib", type=Path, help="calibration data, as for compile (needed)")
    dbg.add_argument("--eval", type=Path, help="evaluation data, as --calib (default: the calibration data)")
    dbg.add_argument("--step", action="append", default=[], metavar="NAME",
                     help="run only this step (repeatable): sanity, sides, per_layer, sensitivity")
    dbg.add_argument("--layer-samples", type=int, default=256,
                     help="samples the per-layer figures are taken over (default 256)")
    _add_build_options(dbg, out_required=False)  # without --out: debug.md printed, nothing written
    dbg.set_defaults(handler=_debug)
    for sub_parser in (comp, demo, run, qdq, dbg):
        sub_parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                help="show tracebacks and debug logs")
    return parser


def _add_build_options(parser: argparse.ArgumentParser, out_required: bool = True) -> None:
    parser.add_argument("--out", type=Path, required=out_required, help="output directory (must not exist)")
    parser.add_argument("--force", action="store_true", help="replace an existing output directory")
    parser.add_argument("--target", default="host",
                        help="target name (default: host, the machine running tvmq, with the best x86 int8 kernel "
                             "its CPU has; x86-vnni, x86-avx512 or x86-avx2 force one; arm (aarch64 + dotprod) or "
                             "arm-neon cross-compile for ARM: make arm-env; cuda: NVIDIA GPUs on dp4a, the "
                             "architecture from TVMQ_CUDA_ARCH, else this machine's GPU, else sm_80)")
    parser.add_argument("--calibrator", default="minmax",
                        help="activation range estimator: minmax, kld, percentile, mse, admm, eq or auto (default: minmax)")
    parser.add_argument("--granularity", choices=["per-channel", "per-tensor"], default="per-channel",
                        help="weight scales (default: per-channel)")
    scheme = parser.add_mutually_exclusive_group()
    scheme.add_argument("--symmetric", dest="symmetric", action="store_true", default=None,
                        help="symmetric int8 activations")
    scheme.add_argument("--asymmetric", dest="symmetric", action="store_false",
                        help="asymmetric uint8 activations (default on x86)")
    parser.add_argument("--cle", action=argparse.BooleanOptionalAction, default=False,
                        help="cross-layer equalization before calibration (default: off)")
    parser.add_argument("--absorb-high-bias", action=argparse.BooleanOptionalAction, default=False,
                        help="move the always-positive part of pre-ReLU biases into the next layer")
    parser.add_argument("--bias-correction", default="none",
                        help="none, empirical (mean int8 error on calibration data folded into the bias) or "
                             "analytic (expected weight error from BatchNorm statistics, data-free)")
    parser.add_argument("--tuning-time", metavar="DURATION",
                        help=f"tune for at most this long (90s, 10m, 1h or seconds; 0: no tuning), the kernels with "
                             f"the most work (FLOPs x calls) first (default: {DEFAULT_TUNING_TIME} unless --trials is given). Tuning "
                             f"is what makes the module fast: untuned kernels run default schedules (a "
                             f"MobileNetV2's untuned kernels summed to 236 ms int8, tuned it runs in about 1 ms "
                             f"on 2 cores); the records are kept (--tuning-db, shared by models), so compiling "
                             f"the same kernels again tunes nothing")
    parser.add_argument("--trials", type=int,
                        help="MetaSchedule trials per module, split evenly over its kernels (0: no tuning); alone it "
                             "replaces the default --tuning-time; with --tuning-time a kernel stops at its share of "
                             "the trials or the deadline, whichever comes first")
    parser.add_argument("--tuning-db", type=Path, help="tuning-record directory to reuse / share")
    parser.add_argument("--latency-fallback", action=argparse.BooleanOptionalAction, default=True,
                        help="after tuning, keep fp32 the layers whose int8 kernel plus quantize / dequantize "
                             "edges measured slower than fp32 (default: on; needs tuning)")
    parser.add_argument("--input-shape", action="append", default=[], metavar="NAME:D0,D1,...",
                        help="static shape for an input with free dimensions (named, unknown or -1); give a name "
                             "several times to build one module per shape (shape buckets)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch for calibration / evaluation runs")
    parser.add_argument("--fp32-layers", default="", metavar="NAME,...",
                        help="keep these layers fp32: ONNX node names or tensor names, exact or glob patterns "
                             "(\"/encoder/*/MatMul\"); recorded in the plan as user overrides")
    parser.add_argument("--weight-bits", type=int, default=8, metavar="{8,7,6,5,4}",
                        help="weight bits: integers in [-(2^(b-1)-1), 2^(b-1)-1] on the int8 kernels (default: 8)")
    parser.add_argument("--layer-weight-bits", default="", metavar="NAME=BITS,...",
                        help="per-layer weight bits (names as --fp32-layers; e.g. \"conv1=8,*fc*=8\")")
    parser.add_argument("--rounding", default="nearest",
                        help="weight rounding: nearest (default) or adaround (learned per layer, Nagel et al. 2020)")
    parser.add_argument("--adaround-iterations", type=int, default=10000, help="AdaRound's steps per layer")
    parser.add_argument("--adaround-samples", type=int, default=64, help="calibration samples AdaRound learns from")
    parser.add_argument("--adaround-reg-weight", type=float, default=0.01, help="AdaRound's regulariser weight")
    parser.add_argument("--non-uniform", metavar="{16,32,64,auto}", type=lambda v: int(v) if v.isdigit() else v,
                        help="k int8 weight levels per conv / dense layer (weighted k-means; a smaller artifact), "
                             "or auto: the smallest k per layer within the accuracy budget (--max-accuracy-drop)")
    parser.add_argument("--rpc-tracker", metavar="HOST:PORT",
                        help="tune, run and time on the devices registered at this TVM RPC tracker (with --rpc-key)")
    parser.add_argument("--rpc-key", metavar="KEY", help="the key the devices registered under (--rpc-tracker)")
    parser.add_argument("--mode", choices=["static", "dynamic"], default="static",
                        help="static: activation ranges from calibration (default); dynamic: every MatMul / Gemm "
                             "with a constant weight quantizes its input at run time from the tensor itself "
                             "(int8 weights; convs stay static)")
    parser.add_argument("--dynamic-granularity", choices=["tensor", "row"], default="tensor",
                        help="a dynamic MatMul's input scale: one per tensor (default) or one per row (token)")
    parser.add_argument("--onnxruntime", dest="onnxruntime_baseline", action="store_true",
                        help="also time ONNX Runtime fp32 and int8 (quantize_static on the same calibration data) "
                             "beside the artifact, each in its own process, for the report (adds seconds)")
    parser.add_argument("--max-accuracy-drop", type=float, metavar="DROP",
                        help="accuracy budget in the metric's units (0.01: one point of top-1): deploy the fastest "
                             "measured build whose metric on --eval is at most this far below fp32's, keeping fp32 "
                             "the layers that recover most metric per microsecond lost")
    parser.add_argument("--max-relative-drop", type=float, metavar="SHARE",
                        help="accuracy budget as a share of fp32's metric (0.01: 1%%); with --max-accuracy-drop "
                             "both must hold")
    parser.add_argument("--metric", metavar="NAME|MODULE:FUNCTION",
                        help="the budget's metric: top1 (needs labels), agreement or cosine with fp32 on --eval "
                             "(default: top1 with labels, else cosine), or MODULE:FUNCTION, a function of run "
                             "(run(feeds) -> outputs) returning a number, higher better")
    parser.add_argument("--dynamic-layers", default="", metavar="NAME,...",
                        help="these layers (MatMul / Gemm / Conv) quantize their input at run time; names as "
                             "--fp32-layers, which wins where both name a layer")


def _config(args):
    from .config import Config

    return Config(target=args.target, calibrator=args.calibrator,
                  per_channel=args.granularity == "per-channel", symmetric=args.symmetric, cle=args.cle, absorb_high_bias=args.absorb_high_bias,
                  bias_correction=args.bias_correction,
                  **_tuning_budget(args.trials, args.tuning_time, _tunes_here(args)), latency_fallback=args.latency_fallback,
                  batch_size=args.batch_size, input_shapes=_input_shapes(args.input_shape),
                  tuning_db=args.tuning_db, mode=args.mode, dynamic_granularity=args.dynamic_granularity,
                  layers=_layers(args.dynamic_layers, args.fp32_layers), weight_bits=args.weight_bits,
                  layer_weight_bits=_layer_weight_bits(args.layer_weight_bits),
                  rounding=args.rounding, adaround_iterations=args.adaround_iterations,
                  adaround_samples=args.adaround_samples, adaround_reg_weight=args.adaround_reg_weight,
                  non_uniform=args.non_uniform,
                  rpc_tracker=args.rpc_tracker, rpc_key=args.rpc_key,
                  onnxruntime_baseline=args.onnxruntime_baseline, max_accuracy_drop=args.max_accuracy_drop,
                  max_relative_drop=args.max_relative_drop, metric=args.metric)


def _tuning_budget(trials: int | None, tuning_time: str | None, tunes_here: bool = True) -> dict:
    """``Config``'s ``trials`` and ``tuning_time`` from the flags: neither given tunes for
    :data:`DEFAULT_TUNING_TIME` where the target's candidates can be timed (``tunes_here``), else not
    at all; ``--trials N`` alone is a trial budget (0: no tuning); with ``--tuning-time`` both bound
    each task, whichever ends first."""
    if trials is None and tuning_time is None and tunes_here:
        tuning_time = DEFAULT_TUNING_TIME
    return {"trials": trials or 0, "tuning_time": tuning_time or 0}


def _tunes_here(args) -> bool:
    """Whether the default tuning applies: the target's devices (or its RPC tracker's) can time
    candidates; an emulated or absent device builds untuned by default, saying so."""
    from tvmq.targets import get_target, target_names

    if args.rpc_tracker or args.target not in target_names():
        return True  # the tracker's devices time candidates; an unknown target fails in Config
    executor = get_target(args.target).executor
    why = executor.unavailable() or (None if executor.timed else executor.why_untimed)
    if why:
        logging.getLogger(__name__).debug("not tuning by default for %s: %s (--trials N asks anyway)", args.target, why)
    return not why


def _layers(dynamic: str, fp32: str) -> dict:
    """``Config.layers`` from ``--dynamic-layers`` then ``--fp32-layers`` (later patterns win: fp32 does)."""
    kept = _fp32_layers(fp32)
    return {**{name: p for name, p in _named(dynamic, "dynamic").items() if name not in kept}, **kept}


def _layer_weight_bits(value: str) -> dict:
    """``{name: bits}`` from ``--layer-weight-bits NAME=BITS,...``."""
    bits = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, _, number = item.rpartition("=")
        if not name or not number.strip().isdigit():
            raise TvmqError(f"--layer-weight-bits: expected NAME=BITS, got {item!r}")
        bits[name.strip()] = int(number)
    return bits


def _fp32_layers(value: str) -> dict:
    """``{name: "fp32"}`` for each comma-separated name or pattern of ``--fp32-layers``."""
    return _named(value, "fp32")


def _named(value: str, precision: str) -> dict:
    """``{name: precision}`` for each comma-separated name or pattern in ``value``."""
    return {name.strip(): precision for name in value.split(",") if name.strip()}


def _input_shapes(values: list[str]) -> dict:
    """``{name: shape}``; a name given several times gets a list of shapes (one module per bucket)."""
    shapes: dict = {}
    for value in values:
        name, _, dims = value.rpartition(":")
        try:
            shape = tuple(int(d) for d in dims.split(","))
        except ValueError:
            raise TvmqError(f"--input-shape {value!r} is not NAME:D0,D1,... with integer dimensions") from None
        if not name:
            raise TvmqError(f"--input-shape {value!r} names no input (use NAME:D0,D1,...)")
        shapes.setdefault(name, []).append(shape)
    return {name: given[0] if len(given) == 1 else given for name, given in shapes.items()}


def _check_output(out: Path, force: bool) -> None:
    """Fail before any work if the output directory cannot be created."""
    if out.exists() and not force:
        raise TvmqError(f"output directory {out} already exists (pass --force to replace it)")
    if out.exists() and not out.is_dir():
        raise TvmqError(f"output {out} exists and is not a directory")
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise TvmqError(f"cannot write output directory {out}: {parent} is not a directory")
    try:  # os.access says yes to root everywhere; only a real directory creation is proof
        os.rmdir(tempfile.mkdtemp(dir=parent, prefix=".tvmq-probe-"))
    except OSError as err:
        raise TvmqError(f"cannot write output directory {out}: {parent} is not writable ({err.strerror})") from None


def _compile(args) -> int:
    from . import api

    config = dataclasses.replace(_config(args), debug=args.debug_steps)
    _check_output(args.out, args.force)
    compiled = api.compile(args.model, args.calib, config=config, eval_data=args.eval)
    compiled.save(args.out, force=args.force)
    _summarize(args.out)
    return 0


def _demo(args) -> int:
    from . import api

    config = _config(args)
    _check_output(args.out, args.force)
    api.demo(args.out, config=config, force=args.force)
    _summarize(args.out)
    return 0


def _debug(args) -> int:
    from .debugging import debug

    from .debugging_markdown import to_markdown

    config = _config(args)
    if args.out is not None:
        _check_output(args.out, args.force)
    report = debug(args.model, args.calib, args.eval, config=config, out=args.out, steps=args.step or None,
                   force=args.force, layer_samples=args.layer_samples)
    if args.out is None:
        print(to_markdown(report))
    else:
        _summarize(args.out, "debug.md")
    return 0


def _summarize(out: Path, name: str = "report.md") -> None:
    print((out / name).read_text())
    print(f"wrote {out}/ ({', '.join(sorted(p.name for p in out.iterdir()))})")


def _run(args) -> int:
    import numpy as np

    from .fileio import atomic_write_bytes
    from .runtime import load

    model = load(args.artifact)
    try:
        feed = np.load(args.input, allow_pickle=False)
        if isinstance(feed, np.lib.npyio.NpzFile):
            with feed:
                feed = dict(feed)
    except (OSError, ValueError) as err:
        raise TvmqError(f"cannot read input {args.input}: {err}") from None
    result = model.run(feed)
    names = model.manifest.get("outputs") or []
    outputs = result if isinstance(result, list) else [result]
    buffer = io.BytesIO()
    if args.output.suffix == ".npz":
        np.savez(buffer, **{_output_key(names, i): y for i, y in enumerate(outputs)})
    elif len(outputs) == 1:
        np.save(buffer, outputs[0])
    else:
        raise TvmqError(f"the model has {len(outputs)} outputs ({', '.join(names)}): write them to an .npz")
    atomic_write_bytes(args.output, buffer.getvalue())
    shapes = ", ".join(f"{y.dtype} {tuple(y.shape)}" for y in outputs)
    print(f"wrote {args.output} ({shapes})")
    return 0


def _export_qdq(args) -> int:
    from .qdq_export import export_artifact

    export_artifact(args.artifact, args.output, args.model)
    print(f"wrote {args.output}")
    return 0


def _output_key(names: list[str], index: int) -> str:
    return names[index] if index < len(names) else f"output_{index}"


if __name__ == "__main__":
    sys.exit(main())
