"""``tvmq.compile``: load -> fold -> calibrate -> realize -> build (tune, latency fallback) -> measure -> evaluate."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tvmq.passes.absorb_high_bias import AbsorbHighBias
from tvmq.passes.analytic_bias_correction import analytic_bias_shifts
from tvmq.passes.calibrators import make_observer
from tvmq.passes.equalize_cross_layer import EqualizeCrossLayer
from tvmq.passes.expose import ExposeTensors
from tvmq.passes.fold_batchnorm import FoldBatchNorm
from tvmq.passes.graph import find_layers, pass_notes
from tvmq.passes.lift_params import lift_params
from tvmq.passes.qparams import WEIGHT_QMAX, weight_bits
from tvmq.passes.realize import Scheme, quantization_record
from tvmq.targets import TargetSpec, get_target

from . import assets, latency, layerwise, profile
from .build import bind_batch, build, virtual_machine
from .calibrate import bounded_batch, collect_ranges
from .config import Config
from .data import Dataset, load_data
from .errors import TvmqError
from .evaluate import compare
from .fileio import staged_directory
from .frontend import ImportedModel, InputSpec, load_model
from .report import LAYER_OPS, layer_node, layer_rows, to_markdown
from .tune import tune
from .runtime import LIBRARY, MANIFEST, PARAMS, input_arrays, outputs, sha256

logger = logging.getLogger(__name__)
FORMAT_VERSION = 1


@dataclass
class CompiledModel:
    """The int8 module built for a target, its params, manifest and report; ``baseline`` is the
    fp32 module built the same way (tuned alike) as ``(executable, params)``, for comparisons."""

    executable: object
    params: dict
    manifest: dict
    report: dict
    baseline: tuple | None = None

    def run(self, *inputs):
        """Run on a feed dict keyed by input name, or on the input arrays in the model's order;
        returns the output (a list of them in the model's order when it has several)."""
        import tvm

        vm = virtual_machine(self.executable)
        arrays = input_arrays(inputs, self.manifest["inputs"])
        args = [tvm.runtime.tensor(a) for a in arrays] + [tvm.runtime.tensor(self.params[n])
                                                          for n in self.manifest["params"]]
        return outputs(vm["main"](*args))

    def save(self, directory: str | Path, force: bool = False) -> Path:
        """Write the artifact atomically: all of it appears at ``directory``, or nothing does."""
        with staged_directory(Path(directory), force=force) as stage:
            self.executable.export_library(str(stage / LIBRARY))
            np.savez(stage / PARAMS, **self.params)
            files = {name: sha256(stage / name) for name in (LIBRARY, PARAMS)}
            (stage / MANIFEST).write_text(json.dumps({**self.manifest, "files": files}, indent=2))
            (stage / "report.json").write_text(json.dumps(self.report, indent=2))
            (stage / "report.md").write_text(to_markdown(self.report))
        return Path(directory)


def compile(model: str | Path, calib, target: str = "host", config: Config | None = None,
            eval_data=None) -> CompiledModel:
    """Quantize an ONNX model to int8 and build it for ``target``.

    ``calib`` / ``eval_data``: anything :func:`tvmq.data.load_data` reads: a ``.npy`` / ``.npz``
    path or a directory of ``.npz`` feeds, an array, a dict of arrays keyed by input name, an
    iterable of such feed dicts, a ``CalibrationDataReader``, or a :class:`Dataset`. Integer and
    bool inputs pass through unquantized. Without ``eval_data`` the report evaluates on the
    calibration data and says so.
    ``target`` applies when ``config`` is not given (``config.target`` wins otherwise).
    """
    config = config or Config(target=target)
    spec = get_target(config.target)
    started = time.perf_counter()
    imported = load_model(model, config.input_shapes, config.batch_size)
    batch = _model_batch(imported)
    calib_data = _dataset(calib, imported, "calibration", batch)
    eval_set = _dataset(eval_data, imported, "evaluation", batch) if eval_data is not None else calib_data
    fp32 = prepare_fp32(imported.mod, cle=config.cle, absorb_high_bias=config.absorb_high_bias)
    names = _float_tensor_names(fp32, imported)
    run = _Runs(spec, 1 if batch == 0 else batch, bounded_batch(fp32, names, config.batch_size))

    quantized = _quantize(fp32, names, calib_data, config, spec, run)

    deploy_batch = run.batch or config.deploy_batch
    db = Path(config.tuning_db or assets.cache_dir() / "tuning" / f"{imported.name}-{_target_key(spec)}")
    deployable = functools.partial(_build_deployable, model_batch=run.batch, deploy_batch=deploy_batch, spec=spec,
                                   trials=config.trials, db=db)
    shape = [(s.static_shape(deploy_batch), s.dtype) for s in imported.inputs]
    fp32_built = deployable(fp32)
    int8_built = deployable(quantized.int8)
    kernels = {"fp32": _kernel_profile(fp32_built, shape), "int8": _kernel_profile(int8_built, shape)}
    fallback, tuning = None, {"trials": config.trials, "database": str(db), "fp32": fp32_built.tuning,
                              "int8": int8_built.tuning}
    if config.latency_fallback and config.trials > 0:
        quantized, int8_built, fallback = _latency_fallback(fp32, quantized, fp32_built, int8_built, spec, kernels,
                                                            deployable)
        if fallback.rebuilt:
            kernels["int8"] = _kernel_profile(int8_built, shape)
            tuning["int8_rebuild"] = int8_built.tuning  # the fallback's new edges and fp32 layers
    latency_ms = {"fp32": _median_ms(fp32_built.executable, fp32_built.params, shape, config.latency_runs),
                  "int8": _median_ms(int8_built.executable, int8_built.params, shape, config.latency_runs)}

    logger.info("evaluating fp32 vs int8 on %d samples", len(eval_set))
    int8_exposed = quantized.refined.realize(quantized.scheme, expose=True, keep_fp32=quantized.keep_fp32)(fp32)
    probes = quantization_record(int8_exposed)["exposed"]
    comparison = compare(run.vm(ExposeTensors(probes)(fp32)), run.vm(int8_exposed), probes, eval_set,
                         run.batch, run.size)

    record = quantization_record(quantized.int8)
    int8_params = int8_built.params
    manifest = _manifest(imported, deploy_batch, spec, config, quantized.scheme, record, list(int8_params))
    report = {
        "model": imported.name, "target": str(spec.target), "target_description": spec.description,
        "calibrator": config.calibrator, "per_channel": config.per_channel,
        "activation_dtype": quantized.scheme.activation_dtype, "calibration_seconds": quantized.seconds,
        "weight_bits": weight_bits(quantized.scheme.weight_qmax),
        "weight_range": [-quantized.scheme.weight_qmax, quantized.scheme.weight_qmax],
        **({"calibrator_per_tensor": quantized.chosen} if quantized.chosen else {}),
        "eval_data": "evaluation split" if eval_data is not None else "calibration data (no --eval given)",
        "accuracy": comparison["accuracy"], "latency_ms": latency_ms, "batch": deploy_batch,
        "latency_runs": config.latency_runs, "kernel_profile": kernels,
        "tuning": tuning,
        "latency_fallback": _fallback_report(config, fallback, imported.nodes),
        "layers": layer_rows(imported.nodes, record, comparison["sqnr_db"]),
        "passes": pass_notes(fp32) + quantized.notes,
        "compile_seconds": round(time.perf_counter() - started, 1),
    }
    _warn_fp32_layers(report["layers"])
    return CompiledModel(int8_built.executable, int8_params, manifest, report,
                         baseline=(fp32_built.executable, fp32_built.params))


def _fallback_report(config: Config, fallback: _Fallback | None, nodes: dict) -> dict:
    """The report's ``latency_fallback``: whether it ran, each int8 layer's tuned µs, the layers kept fp32."""
    if fallback is None:
        why = "off (--no-latency-fallback)" if not config.latency_fallback else "not run: no tuning (--trials 0)"
        return {"status": why, "layers": [], "kept_fp32": []}
    layers = [{"layer": layer_node(nodes, fallback.chains[name]), "tensor": name, **dataclasses.asdict(timing),
               "kept_fp32": name in fallback.kept} for name, timing in fallback.timings.items()]
    return {"status": "ran", "layers": layers, "kept_fp32": [row["layer"] for row in layers if row["kept_fp32"]],
            "rebuilt": fallback.rebuilt}


def _warn_fp32_layers(rows: list[dict]) -> None:
    """Say loudly when a conv / dense layer could not be realized in int8 (not when kept fp32 on purpose)."""
    missed = [row["name"] for row in rows if row["op"] in LAYER_OPS and row["precision"] == "fp32"]
    if missed:
        logger.warning("%d conv/dense layer(s) stayed fp32: %s", len(missed), ", ".join(missed[:10]))


@dataclass
class _Runs:
    """How the analysis modules run: on ``spec``, the model's fixed ``batch`` (or None), ``size`` per run."""

    spec: TargetSpec
    batch: int | None
    size: int

    def vm(self, mod):
        return virtual_machine(build(mod, self.spec))


@dataclass
class _Quantized:
    int8: object
    refined: layerwise.Refinement
    scheme: Scheme
    chosen: dict
    seconds: float
    notes: list
    keep_fp32: tuple = ()  # layers the latency fallback keeps fp32 (output names)


@dataclass
class _Built:
    """A deployable module built for the target: what tuning received (``module``), its tuning summary."""

    executable: object
    params: dict
    tuning: dict | None
    module: object


@dataclass
class _Fallback:
    """What the latency fallback measured and did: each int8 layer's timing and chain (by output
    name), the layers kept fp32, whether the int8 module was rebuilt."""

    timings: dict
    kept: list
    chains: dict
    rebuilt: bool


def _latency_fallback(fp32, quantized: _Quantized, fp32_built: _Built, int8_built: _Built, spec: TargetSpec,
                      kernels: dict, rebuild) -> tuple[_Quantized, _Built, _Fallback]:
    """Keep fp32 every layer whose int8 kernel plus its quantize / dequantize edges measured slower
    (``kernels``: each module's kernels timed in the built module) than its tuned fp32 kernel,
    and rebuild the int8 module (``rebuild``).

    Once, not to a fixed point: a layer kept fp32 gives its neighbours new edges, which are
    tuned with the rebuilt module but not weighed again.
    """
    record = quantization_record(quantized.int8)
    chains = {layer.out.name: [v.name for v in layer.chain] for layer in find_layers(fp32["main"]).values()
              if layer.out.name in record["weights"]}
    timings = latency.attribute(fp32_built.module, int8_built.module, chains, spec,
                                kernels["fp32"], kernels["int8"])
    kept = latency.slower_in_int8(timings)
    if not kept:
        return quantized, int8_built, _Fallback(timings, kept, chains, False)
    logger.info("%d layer(s) slower in int8 than fp32 stay fp32: %s", len(kept), ", ".join(kept))
    quantized = dataclasses.replace(quantized, keep_fp32=tuple(kept), int8=quantized.refined.realize(
        quantized.scheme, keep_fp32=kept)(fp32))
    int8_built = rebuild(quantized.int8)
    return quantized, int8_built, _Fallback(timings, kept, chains, True)


def _kernel_profile(built: _Built, shape) -> list[dict]:
    """Each kernel's µs in ``built``, timed inside the module (:mod:`tvmq.profile`)."""
    return profile.profile(built.executable, built.params, shape)


def _quantize(fp32, names: list[str], data: Dataset, config: Config, spec: TargetSpec,
              run: _Runs) -> _Quantized:
    """Calibrate every float tensor ``names``, refine layer by layer (EQ, empirical bias correction) or
    correct biases analytically, realize int8."""
    activation_dtype = config.activation_dtype(spec.activation_dtype)
    # the target's narrower weight range is for its kernels, which take only its activation dtype
    weight_qmax = spec.weight_qmax if activation_dtype == spec.activation_dtype else WEIGHT_QMAX
    scheme = Scheme(activation_dtype, config.per_channel, weight_qmax)
    logger.info("calibrating %d tensors on %d samples (%s)", len(names), len(data), config.calibrator)
    start = time.perf_counter()
    stats, chosen = collect_ranges(fp32, names, data, run.batch, run.vm, config.calibrator,
                                   scheme.activation_dtype, run.size)
    refined = layerwise.refine(fp32, stats, scheme, data, run.batch, run.vm, run.size,
                               search_scales=getattr(make_observer(config.calibrator), "layerwise_search", False),
                               correct_bias=config.bias_correction == "empirical")
    notes = _bias_note(refined.bias_shifts)
    if config.bias_correction == "analytic":
        correction = analytic_bias_shifts(fp32["main"], scheme, refined.weight_scales)
        refined.bias_shifts.update(correction.bias_shifts)
        notes = [correction.note()]
        logger.info(notes[0]["note"])
    seconds = round(time.perf_counter() - start, 2)
    return _Quantized(refined.realize(scheme)(fp32), refined, scheme, chosen, seconds, notes)


def _float_tensor_names(fp32, imported: ImportedModel) -> list[str]:
    """The variables of ``fp32`` that hold float32 ONNX tensors (node outputs and inputs): what is
    calibrated; integer and bool tensors (token ids, masks) are never quantized."""
    from tvmq.passes.expose import named_vars

    named = named_vars(fp32["main"])
    return sorted(n for n in imported.onnx_names
                  if n in named and getattr(named[n].ty, "dtype", None) == "float32")


def _model_batch(imported: ImportedModel) -> int | None:
    """The batch every input takes as its leading dimension: None when it is left free, 0 when
    the inputs share none (a scalar, an LSTM state): then each feed is one run of the model."""
    leading = {spec.shape[0] if spec.shape else 0 for spec in imported.inputs}
    return leading.pop() if len(leading) == 1 else 0


def demo(out: str | Path, config: Config | None = None, force: bool = False) -> CompiledModel:
    """Compile the bundled pretrained MNIST CNN with its real calibration / evaluation splits."""
    model, calib, evaluation = assets.bundled_mnist()
    compiled = compile(model, calib, config=config, eval_data=evaluation)
    compiled.save(out, force=force)
    return compiled


def prepare_fp32(mod, cle: bool = False, absorb_high_bias: bool = False):
    """The fp32 -> fp32 passes: constant and BatchNorm folding, optionally CLE and high-bias absorption."""
    import tvm
    from tvm import relax

    passes = [relax.transform.FoldConstant(), FoldBatchNorm(), relax.transform.FoldConstant()]
    if cle:
        passes.append(EqualizeCrossLayer())
    if absorb_high_bias:
        passes.append(AbsorbHighBias())
    return tvm.transform.Sequential(passes)(mod)


def _bias_note(shifts: dict) -> list[dict]:
    if not shifts:
        return []
    largest = max(float(np.abs(v).max(initial=0.0)) for v in shifts.values())
    return [{"pass": "CorrectBias", "method": "empirical", "layers": sorted(shifts), "max_abs_bias_shift": largest}]


def _dataset(value, imported: ImportedModel, role: str, batch: int | None) -> Dataset:
    """The samples for the model's static input shapes (one module takes one shape); ``batch`` as
    :func:`_model_batch` gives it."""
    groups = load_data(value, imported.inputs, role, batched=batch != 0)
    if len(groups) > 1:
        raise TvmqError(f"{role} data has samples of {len(groups)} different shapes; the model takes one")
    return groups[0]


def _build_deployable(mod, model_batch: int | None, deploy_batch: int, spec: TargetSpec, trials: int,
                      db: Path) -> _Built:
    """Bind a free batch dimension, put it in the target's kernels, lift the weights into params,
    tune and build."""
    mod = mod if model_batch else bind_batch(mod, deploy_batch)
    lifted, params = lift_params(spec.legalize(mod) if spec.legalize else mod)
    tuned, summary = lifted, None
    if trials > 0:
        tuned, summary = tune(lifted, spec, trials, db)
    return _Built(build(tuned, spec), params, summary, lifted)


def _median_ms(executable, params: dict, shape, runs: int) -> float:
    import tvm

    vm = virtual_machine(executable)
    timer = vm.time_evaluator("main", tvm.cpu(), number=1, repeat=max(runs, 1))
    return float(np.median(timer(*profile.zero_input_args(params, shape)).results) * 1e3)


def _target_key(spec: TargetSpec) -> str:
    """The default tuning database's name for ``spec``: per target and tvmq version, since a
    record replays only on the kernels it was tuned for (a block renamed between versions made
    a shared database unreadable)."""
    from importlib.metadata import version

    return f"{spec.name}-" + hashlib.sha256(f"{spec.target} tvmq {version('tvmq')}".encode()).hexdigest()[:10]


def _manifest(imported: ImportedModel, batch: int, spec: TargetSpec, config: Config,
              scheme: Scheme, record: dict, params: list[str]) -> dict:
    from importlib.metadata import version

    return {
        "format_version": FORMAT_VERSION,
        "model": imported.name,
        "inputs": [{"name": s.name, "shape": list(s.static_shape(batch)), "dtype": s.dtype} for s in imported.inputs],
        "outputs": imported.outputs,
        "params": params,
        "target": str(spec.target),
        "target_features": list(spec.features),
        "config": {"calibrator": config.calibrator, "per_channel": config.per_channel, "trials": config.trials,
                   "activation_dtype": scheme.activation_dtype, "latency_fallback": config.latency_fallback,
                   "weight_qmax": scheme.weight_qmax},
        "versions": {pkg: version(pkg) for pkg in ("tvmq", "apache-tvm", "apache-tvm-ffi", "onnx", "numpy")}
        | {"python": platform.python_version()},
        "quantization": _with_onnx_names(record, imported.onnx_names),
    }


def _with_onnx_names(record: dict, onnx_names: dict) -> dict:
    """The realize record keyed (and valued) by ONNX tensor names rather than Relax variables."""
    def name(key):
        return onnx_names.get(key, key)

    out = {}
    for section, value in record.items():
        if isinstance(value, dict):
            renamed = section in ("fused_into", "range_of", "kept_fp32")
            out[section] = {name(k): (name(v) if isinstance(v, str) and renamed else v) for k, v in value.items()}
        else:
            out[section] = [name(v) for v in value]
    return out
