"""``tvmq.compile``: import -> fold -> calibrate -> realize -> build per shape bucket (tune, latency
fallback) -> measure -> evaluate -> report."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tvmq.passes.absorb_high_bias import AbsorbHighBias
from tvmq.passes.analytic_bias_correction import analytic_bias_shifts
from tvmq.passes.calibrators import make_observer, weight_scale_of
from tvmq.passes.equalize_cross_layer import EqualizeCrossLayer
from tvmq.passes.expose import ExposeTensors
from tvmq.passes.fold_batchnorm import FoldBatchNorm
from tvmq.passes.graph import find_layers, pass_notes
from tvmq.passes.lift_params import lift_params
from tvmq.passes.plan import (CALIBRATED, DYNAMIC, DYNAMIC_KINDS, LATENCY_FALLBACK, USER_OVERRIDE, QuantPlan,
                              bits_qmax, calibration_names, layer_labels, layer_weight_qmax, onnx_aliases,
                              plan_imported, unmatched)
from tvmq.passes.adaround import AdaRoundOptions
from tvmq.passes.qparams import WEIGHT_QMAX, weight_bits
from tvmq.passes.realize import RealizePlan, Scheme, quantization_record
from tvmq.targets import TargetSpec, get_target
from tvmq.targets.rpc import with_tracker

from . import (artifact, assets, histograms, latency, layerwise, mixed_precision, nonuniform_search,
               onnxruntime_baseline, profile, qdq_export)
from .build import bind_batch, build, executor_of, virtual_machine
from .calibrate import observe, ranges_of
from .choose import FP32, INT8, REBUILD, Choice, pick_artifact, same_program, time_modules
from .config import Config
from .data import Dataset
from .errors import TvmqError
from .evaluate import Comparison
from .program import Bucket, Program, Programs
from .report import LAYER_OPS, layer_node, layer_rows
from .runtime import input_arrays, outputs, pick_bucket
from .tune import TIME_SPLIT, TuningClock, tune

logger = logging.getLogger(__name__)


@dataclass
class CompiledModel:
    """The int8 module built for a target, its params, manifest and report; ``baseline`` is the
    fp32 module built the same way (tuned alike) as ``(executable, params)``, for comparisons;
    ``buckets`` holds every deployed module (the first is ``executable`` / ``params``)."""

    executable: object
    params: dict
    manifest: dict
    report: dict
    baseline: tuple | None = None
    buckets: list = dataclasses.field(default_factory=list)
    plan: dict | None = None  # the quantization plan as deployed (plan.json)
    qdq_weights: dict | None = None  # each int8 layer's integers as realized (qdq_weights.npz)
    _vms: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)  # executable -> its VM

    def run(self, *inputs):
        """Run on a feed dict keyed by input name, or on the input arrays in the model's order;
        returns the output (a list of them in the model's order when it has several). The bucket
        whose input shapes equal the feed's runs it."""
        import tvm

        module = _bucket_for(self.modules(), inputs)
        arrays = input_arrays(inputs, module.inputs)
        args = [tvm.runtime.tensor(a) for a in arrays] + [tvm.runtime.tensor(v) for v in module.params.values()]
        if module.executable not in self._vms:  # an emulated or remote VM exports and uploads its module
            self._vms[module.executable] = virtual_machine(module.executable)
        return outputs(self._vms[module.executable]["main"](*args))

    def modules(self) -> list[artifact.Module]:
        return self.buckets or [artifact.Module(self.executable, self.params, self.manifest["inputs"])]

    def save(self, directory: str | Path, force: bool = False) -> Path:
        """Write the artifact atomically: all of it appears at ``directory``, or nothing does."""
        return artifact.write(Path(directory), self.modules(), self.manifest, self.report, force, plan=self.plan,
                              qdq_weights=self.qdq_weights)

    def export_qdq(self, path: str | Path, model: str | Path | None = None) -> Path:
        """Write the plan as a QDQ ONNX model (:mod:`tvmq.qdq_export`); ``model``: the source ONNX
        model, default the path compiled from (its sha256 must match)."""
        return qdq_export.export(self.manifest, self.plan, self.qdq_weights, path, model)


def compile(model: str | Path, calib=None, target: str = "host", config: Config | None = None,
            eval_data=None, metric=None) -> CompiledModel:
    """Quantize an ONNX model to int8 and build it for ``target``.

    ``calib`` / ``eval_data``: anything :func:`tvmq.data.load_data` reads: a ``.npy`` / ``.npz``
    path or a directory of ``.npz`` feeds, an array, a dict of arrays keyed by input name, an
    iterable of such feed dicts, a ``CalibrationDataReader``, or a :class:`Dataset`. Integer and
    bool inputs pass through unquantized; samples may differ in shape. Without ``eval_data`` the
    report evaluates on the calibration data and says so. ``config.input_shapes`` may give an
    input several shapes: one module is built per shape bucket. ``target`` applies when
    ``config`` is not given (``config.target`` wins otherwise).

    With an accuracy budget (``config.max_accuracy_drop`` / ``max_relative_drop``) the deployed
    build is the fastest measured one whose metric meets it (:mod:`tvmq.mixed_precision`);
    ``metric(run) -> float`` (higher is better; ``run(feeds) -> outputs`` runs a candidate
    build) is the user's, else ``config.metric`` on ``eval_data`` (:mod:`tvmq.metric`).

    Parameters
    ----------
    model : path of the float (or QDQ) ONNX model.
    calib : calibration data (not needed for a QDQ model).
    target : a registered target name (``tvmq.targets.target_names()``), when ``config`` is None.
    config : how to quantize, build, tune and measure (:class:`tvmq.Config`).
    eval_data : evaluation data, disjoint from ``calib`` for honest figures.
    metric : ``fn(run) -> float`` for the accuracy budget.

    Returns
    -------
    CompiledModel
        The deployed module, its params, manifest, plan and report; ``save(directory)`` writes the
        artifact that :func:`tvmq.load` reads with TVM's runtime alone.

    Raises
    ------
    TvmqError
        Bad input, in one line naming the problem.
    """
    config = config or Config(target=target)
    spec = target_of(config)
    _check_tunable(spec, config)
    started = time.perf_counter()
    programs = _programs(model, config, spec)
    buckets = programs.buckets()
    qdq = buckets[0].program.imported.qdq
    evaluation = programs.data(eval_data, "evaluation") if eval_data is not None else None
    budgeted = _budgeted(config, metric, evaluation or [], len(buckets))  # a bad budget fails before calibration
    if qdq is not None:  # a pre-quantized model: its parameters are the plan, calibration data is not needed
        calib_sets = []
        quantized = _imported(buckets[0].program, config, spec)
    else:
        if calib is None:
            raise TvmqError("calibration data is needed (--calib): the model is float, not a QDQ model")
        calib_sets = programs.data(calib, "calibration")
        quantized = _quantize(calib_sets, config, spec)
    quantized, non_uniform = nonuniform_search.apply(quantized, config, budgeted, buckets[0].program)
    seconds = config.tuning_time / len(buckets)  # the tuning time, split evenly over the buckets
    eval_sets = evaluation if evaluation is not None else calib_sets
    deployments = [_deploy(bucket, quantized, config, spec, seconds, budgeted) for bucket in buckets]
    activations = histograms.ActivationHistograms(quantized.plan.ranges)
    comparison = _evaluate(eval_sets, quantized, deployments[0].keep_fp32, deployments[0].dynamic,
                           activations.add) if eval_sets \
        else _not_evaluated()

    main = deployments[0]
    imported = main.program.imported
    record = quantization_record(main.int8)
    planned = quantized.planned(main.keep_fp32, main.keep_reason, main.dynamic)
    plan = planned.to_json(imported.onnx_names, imported.nodes)
    measured_on = spec.executor.measured_on()
    manifest = artifact.manifest(imported.name, imported.outputs, spec, config, quantized.scheme, record,
                                 imported.onnx_names) | {"measured_on": measured_on,
                                                        "source": qdq_export.source_record(model)}
    integers = qdq_export.integer_layers(main.program.fp32["main"], planned, record, imported.onnx_names)
    report = {
        "model": imported.name, "target": str(spec.target), "target_description": spec.description,
        "measured_on": measured_on,
        "calibrator": config.calibrator if qdq is None else "imported (QDQ model)", "per_channel": config.per_channel,
        "activation_dtype": quantized.scheme.activation_dtype, "calibration_seconds": quantized.seconds,
        "weight_bits": weight_bits(quantized.scheme.weight_qmax),
        "weight_range": [-quantized.scheme.weight_qmax, quantized.scheme.weight_qmax],
        **({"calibrator_per_tensor": quantized.chosen} if quantized.chosen else {}),
        **_dynamic_summary(planned),
        "eval_data": "evaluation split" if eval_data is not None else
        "calibration data (no --eval given)" if calib_sets else "none given: not evaluated",
        **({"qdq_import": qdq.summary()} if qdq is not None else {}),
        "accuracy": comparison["accuracy"], **_analysis_note(spec), **main.summary(),
        "buckets": [d.summary() | {"inputs": d.inputs()} for d in deployments] if len(deployments) > 1 else [],
        "latency_runs": config.latency_runs,
        "latency_fallback": _fallback_report(config, main.fallback, imported.nodes),
        **_onnxruntime(config, spec, model, qdq, calib_sets, main),
        **main.budget_report,
        **({"non_uniform": non_uniform} if non_uniform else {}),
        "layers": layer_rows(imported.nodes, record, comparison["sqnr_db"]),
        "histograms": histograms.worst_layers(planned, comparison["sqnr_db"], activations, main.program.fp32["main"],
                                              imported.nodes, imported.onnx_names),
        "passes": pass_notes(main.program.fp32) + quantized.notes,
        "plan": plan,
        "compile_seconds": round(time.perf_counter() - started, 1),
    }
    _warn_fp32_layers(report["layers"], {entry["node"] for entry in plan["layers"] if entry["reason"] != CALIBRATED})
    modules = [artifact.Module(d.int8_built.executable, d.int8_built.params, d.inputs()) for d in deployments]
    return CompiledModel(main.int8_built.executable, main.int8_built.params, {**manifest, "inputs": main.inputs(),
                         "params": list(main.int8_built.params)}, report,
                         baseline=(main.fp32_built.executable, main.fp32_built.params),
                         buckets=modules if len(modules) > 1 else [], plan=plan, qdq_weights=integers)


def quantize(model: str | Path, calib, config: Config | None = None) -> _Quantized:
    """Calibrate and realize ``model`` without building it for deployment: the first bucket's
    program (``.program``) and its int8 module (``.int8``), for tests and tools."""
    config = config or Config()
    spec = target_of(config)
    programs = _programs(model, config, spec)
    programs.buckets()
    return _quantize(programs.data(calib, "calibration"), config, spec)


def target_of(config: Config) -> TargetSpec:
    """The target ``config`` names, measured on the devices of its RPC tracker when it gives one."""
    spec = get_target(config.target)
    return with_tracker(spec, config.rpc_tracker, config.rpc_key) if config.rpc_tracker else spec


def _programs(model, config: Config, spec: TargetSpec) -> Programs:
    prepare = functools.partial(prepare_fp32, cle=config.cle, absorb_high_bias=config.absorb_high_bias)
    return Programs(model, config, spec.analysis_spec(), prepare)  # calibration and evaluation run there


@dataclass
class _Quantized:
    """Calibration's result, realizable on any program: ranges, refinements, scheme and the plan
    made of them; ``program`` and ``int8`` are the program refinement ran on and its int8 module."""

    refined: layerwise.Refinement
    scheme: Scheme
    chosen: dict
    seconds: float
    notes: list
    program: Program
    plan: QuantPlan = None
    int8: object = None

    def planned(self, keep_fp32=(), reason: str = LATENCY_FALLBACK, dynamic=()) -> QuantPlan:
        """The plan with the ``keep_fp32`` layers fp32 (kept by the latency fallback, or ``reason``)
        and the ``dynamic`` layers dynamic (for ``reason``)."""
        plan = self.plan.with_precision(dynamic, DYNAMIC, reason) if dynamic else self.plan
        return plan.with_precision(keep_fp32, "fp32", reason)

    def realize(self, program: Program, keep_fp32=(), expose: bool = False, dynamic=()):
        return RealizePlan(self.planned(keep_fp32, dynamic=dynamic), expose)(program.fp32)


def _quantize(sets: list[tuple[Program, Dataset]], config: Config, spec: TargetSpec) -> _Quantized:
    """Calibrate every float tensor over every data set (each on its shape's program), refine layer
    by layer (EQ, empirical bias correction) on the largest set or correct biases analytically."""
    activation_dtype = config.activation_dtype(spec.activation_dtype)
    # the target's narrower weight range is for its kernels, which take only its activation dtype
    kernel_qmax = spec.weight_qmax if activation_dtype == spec.activation_dtype else WEIGHT_QMAX
    weight_qmax = min(kernel_qmax, bits_qmax(config.weight_bits))  # the narrower of target and --weight-bits
    weight_ranges = {name: min(kernel_qmax, bits_qmax(bits)) for name, bits in config.layer_weight_bits.items()}
    scheme = Scheme(activation_dtype, config.per_channel, weight_qmax, config.mode, config.dynamic_granularity)
    aliases = _check_layer_names(sets[0][0], {**config.layers, **config.layer_weight_bits})
    total = sum(len(data) for _, data in sets)
    logger.info("calibrating %d tensors on %d samples (%s)", len(sets[0][0].names), total, config.calibrator)
    start = time.perf_counter()
    observers: dict = {}
    for program, data in sets:
        names = calibration_names(program.fp32["main"], program.names)
        observe(program.fp32, names, data, program.batch, program.vm, program.size, observers,
                lambda: make_observer(config.calibrator, scheme.activation_dtype))
    stats, chosen = ranges_of(observers)
    program, data = max(sets, key=lambda s: len(s[1]))
    refined = layerwise.refine(program.fp32, stats, scheme, data, program.batch, program.vm, program.size,
                               search_scales=getattr(make_observer(config.calibrator), "layerwise_search", False),
                               correct_bias=config.bias_correction == "empirical", overrides=config.layers,
                               aliases=aliases,
                               weight_scales=_calibrated_weight_scales(program, config, scheme, weight_ranges, aliases),
                               adaround=_adaround_options(config), adaround_samples=config.adaround_samples,
                               weight_ranges=weight_ranges)
    notes = _bias_note(refined.bias_shifts)
    if config.bias_correction == "analytic":
        correction = analytic_bias_shifts(program.fp32["main"], scheme, refined.weight_scales)
        refined.bias_shifts.update(correction.bias_shifts)
        notes = [correction.note()]
        logger.info(notes[0]["note"])
    seconds = round(time.perf_counter() - start, 2)
    quantized = _Quantized(refined, scheme, chosen, seconds, notes, program, refined.plan(program.fp32["main"], scheme))
    quantized.int8 = quantized.realize(program)
    return quantized


def _adaround_options(config: Config) -> AdaRoundOptions | None:
    """AdaRound's options from ``config`` (None: nearest rounding)."""
    if config.rounding != "adaround":
        return None
    return AdaRoundOptions(iterations=config.adaround_iterations, reg_weight=config.adaround_reg_weight)


def _calibrated_weight_scales(program: Program, config: Config, scheme: Scheme, weight_ranges: dict,
                              aliases: dict) -> dict:
    """Layer output -> weight scales, for a calibrator that sets weight ranges too (``admm``), each on
    its layer's range (``weight_ranges``: name or glob -> ``weight_qmax``)."""
    weight_scale = weight_scale_of(config.calibrator)
    if weight_scale is None:
        return {}
    layers = find_layers(program.fp32["main"]).values()
    return {layer.out.name: weight_scale(layer.weight, layer.channel_axis if scheme.per_channel else None,
                                         layer_weight_qmax(layer, scheme, weight_ranges, aliases)) for layer in layers}


def _imported(program: Program, config: Config, spec: TargetSpec) -> _Quantized:
    """The plan a QDQ model carries (:func:`tvmq.passes.plan.plan_imported`): no calibration."""
    qdq = program.imported.qdq
    if config.mode != "static":
        raise TvmqError(f"--mode {config.mode} is for float models: this is a QDQ model, whose own scales are the plan")
    scheme = Scheme(config.activation_dtype(spec.activation_dtype), config.per_channel, spec.weight_qmax)
    aliases = _check_layer_names(program, config.layers)
    variable = {onnx: var for var, onnx in program.imported.onnx_names.items()}
    acts = {variable[name]: qp for name, qp in qdq.activations.items() if name in variable}
    weights = {variable[name]: qp for name, qp in qdq.weights.items() if name in variable}
    plan = plan_imported(program.fp32["main"], acts, weights, scheme, config.layers, aliases)
    logger.info("QDQ model: %d tensors and %d weights quantized by the model; %d of %d layers int8",
                len(acts), len(weights), len(plan.layers) - len(plan.fp32_layers()), len(plan.layers))
    refined = layerwise.Refinement({}, overrides=dict(config.layers), aliases=aliases)
    quantized = _Quantized(refined, scheme, {}, 0.0, [], program, plan)
    quantized.int8 = quantized.realize(program)
    return quantized


def _check_tunable(spec: TargetSpec, config: Config) -> None:
    """Tuning times candidates on the target's executor: one that cannot run here fails before
    calibration, not after it."""
    executor = spec.executor
    why = (executor.unavailable() or (None if executor.timed else f"its modules are {executor.why_untimed}")) \
        if config.tunes else None
    if why:
        flag = f"--trials {config.trials}" if config.trials else f"--tuning-time {config.tuning_time:g}s"
        raise TvmqError(f"{flag}: tuning times candidates on the {spec.name} device, and {why}: "
                        f"build with --trials 0")


def _analysis_note(spec: TargetSpec) -> dict:
    """Where accuracy was measured, when not on the deployed target's own code."""
    analysis = spec.analysis_spec()
    if analysis is spec:
        return {}
    return {"accuracy_measured_on": f"{analysis.description}: the host's integer simulation of the int8 model"}


def _dynamic_summary(plan: QuantPlan) -> dict:
    """The report's ``dynamic``: how many layers quantize their input at run time, and per what."""
    count = len(plan.dynamic_layers())
    return {"dynamic": {"layers": count, "granularity": plan.scheme.dynamic_granularity}} if count else {}


def _not_evaluated() -> dict:
    return {"accuracy": {"fp32_top1": None, "int8_top1": None, "top1_agreement": None, "output_cosine": None,
                         "num_samples": 0}, "sqnr_db": {}}


def _check_layer_names(program: Program, layers: dict) -> dict:
    """The names a layer answers to; a ``Config.layers`` pattern that names no layer is an error."""
    aliases = onnx_aliases(program.imported.onnx_names, program.imported.nodes)
    missing = unmatched(layers, program.fp32["main"], aliases)
    if missing:
        labels = layer_labels(program.fp32["main"], aliases)
        few = ", ".join(labels[:5]) + (f", ... ({len(labels)} in all)" if len(labels) > 5 else "")
        raise TvmqError(f"no layer is named {missing[0]!r} (--fp32-layers / Config.layers); layers: {few or 'none'}")
    return aliases


@dataclass
class _Deployment:
    """One bucket built for the target: fp32 and int8 modules, kernel timings, fallback, latency."""

    bucket: Bucket
    int8: object  # the realized int8 Relax module deployed (after the fallback)
    keep_fp32: tuple
    fp32_built: _Built
    int8_built: _Built
    kernels: dict
    tuning: dict
    fallback: _Fallback | None
    latency_ms: dict
    choice: dict  # which build is deployed and why (tvmq.choose)
    keep_reason: str = LATENCY_FALLBACK  # why the keep_fp32 (and dynamic) layers are so, in the plan
    dynamic: tuple = ()  # layers made dynamic by the accuracy budget's search
    budget_report: dict = dataclasses.field(default_factory=dict)  # mixed_precision, sensitivity

    @property
    def program(self) -> Program:
        return self.bucket.program

    def inputs(self) -> list[dict]:
        return [{"name": s.name, "shape": list(s.static_shape(self.bucket.batch)), "dtype": s.dtype}
                for s in self.program.imported.inputs]

    def summary(self) -> dict:
        return {"latency_ms": self.latency_ms, "batch": self.bucket.batch, "kernel_profile": self.kernels,
                "tuning": self.tuning, "artifact_choice": self.choice}


def _deploy(bucket: Bucket, quantized: _Quantized, config: Config, spec: TargetSpec,
            seconds: float = 0.0, budgeted=None) -> _Deployment:
    """Build the bucket's fp32 and int8 modules (tuned alike), rebuild int8 with the layers slower
    in int8 kept fp32 (each new kernel tuned with the first build's per-task share), time every
    build whole and deploy the fastest (:mod:`tvmq.choose`); with an accuracy budget
    (``budgeted``: the metric's name and factory), the fastest that meets it. ``seconds`` of tuning
    time are split over the modules by :data:`tvmq.tune.TIME_SPLIT` (int8 takes the rebuild's part
    without a fallback)."""
    program = bucket.program
    db = Path(config.tuning_db or _default_tuning_db(spec))
    inputs = [(s.static_shape(bucket.batch), s.dtype) for s in program.imported.inputs]
    clock = TuningClock(seconds) if seconds else None
    deployable = functools.partial(_build_deployable, model_batch=program.batch, deploy_batch=bucket.batch,
                                   spec=spec, trials=config.trials, db=db, clock=clock)
    int8 = quantized.realize(program)
    int8_part = TIME_SPLIT["int8"] + (0.0 if config.latency_fallback else TIME_SPLIT["int8_rebuild"])
    fp32_built, int8_built = deployable(program.fp32, part=TIME_SPLIT["fp32"]), deployable(int8, part=int8_part)
    kernels = {"fp32": _kernel_profile(fp32_built, inputs), "int8": _kernel_profile(int8_built, inputs)}
    tuning = {"trials": config.trials, "tuning_time_s": seconds, "database": str(db), "fp32": fp32_built.tuning,
              "int8": int8_built.tuning,
              **({"time_split": {"fp32": TIME_SPLIT["fp32"], "int8": int8_part, "int8_rebuild": 1 - TIME_SPLIT["fp32"]
                                 - int8_part}} if clock else {})}
    if budgeted is not None:
        share = int8_built.tuning["share"] if int8_built.tuning else None
        return _within_budget(_Deployment(bucket, int8, (), fp32_built, int8_built, kernels, tuning, None, {}, {}),
                              quantized, config, spec, functools.partial(deployable, share=share), budgeted)
    if not (config.latency_fallback and config.tunes):
        why = "--no-latency-fallback" if not config.latency_fallback else "no tuning, --trials 0"
        measured = time_modules({INT8: int8_built, FP32: fp32_built}, inputs, config.latency_runs)
        choice = Choice(INT8, f"int8 (not chosen by time: {why})", measured, timed=False)
        return _Deployment(bucket, int8, (), fp32_built, int8_built, kernels, tuning, None,
                           {**measured, "artifact": measured[INT8]}, choice.to_json())
    rebuild = functools.partial(deployable, share=int8_built.tuning["share"], part=TIME_SPLIT["int8_rebuild"])
    rebuilt_int8, keep, rebuilt, fallback = _latency_fallback(program, quantized, int8, fp32_built, int8_built, spec,
                                                              kernels, rebuild)
    if fallback.rebuilt:
        kernels[REBUILD] = _kernel_profile(rebuilt, inputs)
        tuning[REBUILD] = rebuilt.tuning  # the fallback's new edges and fp32 layers
    choice = pick_artifact(fp32_built, int8_built, rebuilt if fallback.rebuilt else None, len(keep), inputs=inputs,
                           runs=config.latency_runs, timer=time_modules)
    logger.info("deploying %s (%s)", choice.name, choice.reason)
    builds = {INT8: (int8, (), int8_built), REBUILD: (rebuilt_int8, keep, rebuilt)}
    deployed, keep, built = builds[choice.name] if choice.name in builds else \
        _all_fp32(program, quantized, int8, fp32_built, rebuild)
    return _Deployment(bucket, deployed, keep, fp32_built, built, kernels, tuning, fallback,
                       {**choice.latency_ms, "artifact": choice.latency_ms[choice.name]}, choice.to_json())


def _budgeted(config: Config, metric, eval_sets: list, buckets: int):
    """``(metric name, factory(fp32 run) -> metric)`` when ``config`` has an accuracy budget, else None."""
    from . import metric as metrics

    if config.budget() is None:
        if metric is not None:
            logger.warning("a metric was given without an accuracy budget (--max-accuracy-drop): it is not used")
        return None
    if buckets > 1:
        raise TvmqError("an accuracy budget (--max-accuracy-drop) builds one shape bucket, not several")
    if len(eval_sets) > 1:
        raise TvmqError("an accuracy budget's metric runs on evaluation data of one shape; it has several")
    data = eval_sets[0][1] if eval_sets else None
    if metric is not None:
        if not callable(metric):
            raise TvmqError(f"metric must be a function of run, got {type(metric).__name__}")
        return getattr(metric, "__name__", "user metric"), lambda reference: metric
    name, _ = metrics.resolve(config.metric, data, None, check_only=True)  # bad names and data fail now
    return name, lambda reference: metrics.resolve(config.metric, data, reference)[1]


def _within_budget(first: _Deployment, quantized: _Quantized, config: Config, spec: TargetSpec, rebuild,
                   budgeted) -> _Deployment:
    """The fastest build whose metric meets the accuracy budget (:func:`tvmq.mixed_precision.search`),
    each candidate built like the first int8 build (``rebuild``) and scored by the real metric."""
    from .metric import evaluate, module_run
    from .sensitivity import measure, program_evaluator, program_run

    program, bucket = first.program, first.bucket
    inputs = [(s.static_shape(bucket.batch), s.dtype) for s in program.imported.inputs]
    names = [s.name for s in program.imported.inputs]

    def run(built):
        return module_run(virtual_machine(built.executable), list(built.params.values()),
                          [(n, shape) for n, (shape, _) in zip(names, inputs)],
                          device=executor_of(built.executable).device())

    metric_name, make_metric = budgeted
    metric = make_metric(program_run(program, program.fp32))  # fp32's reference outputs, batched
    chains = int8_chains(program, first.int8)
    timings = latency.attribute(first.fp32_built.module, first.int8_built.module, chains, spec,
                                first.kernels["fp32"], first.kernels["int8"])
    realized = {((), ()): (first.int8, first.int8_built)}

    def build(keep, dynamic=()):
        if set(keep) == set(chains) and not dynamic:
            realized[keep, ()] = _all_fp32(program, quantized, first.int8, first.fp32_built, rebuild)[::2]
        if (keep, dynamic) not in realized:
            module = quantized.realize(program, keep_fp32=keep, dynamic=dynamic)
            realized[keep, dynamic] = (module, rebuild(module))
        return realized[keep, dynamic][1]

    node_of = {name: layer_node(program.imported.nodes, chain) for name, chain in chains.items()}
    searched = [name for name in chains if quantized.plan.layers[name].reason != USER_OVERRIDE]  # --*-layers stay
    outcome = mixed_precision.search(
        searched, timings, config.budget(), build,
        lambda built: evaluate(metric, run(built), "a candidate build"),
        lambda builds: time_modules(builds, inputs, config.latency_runs),
        lambda: measure(program_evaluator(quantized, program, metric), searched, node_of),
        fallback=config.latency_fallback,
        dynamic=[name for name, entry in quantized.plan.layers.items() if entry.kind in DYNAMIC_KINDS
                 and entry.precision == "int8" and name in searched])
    keep, dynamic = outcome.chosen.fp32_layers, outcome.chosen.dynamic_layers
    report = {"mixed_precision": outcome.to_json(config.budget(), metric_name, node_of.get),
              **({"sensitivity": outcome.sensitivity.to_json()} if outcome.sensitivity else {})}
    choice = {"artifact": outcome.chosen.label, "reason": f"fastest build meeting the accuracy budget "
              f"(metric {outcome.chosen.metric:.5g} >= {outcome.threshold:.5g})",
              "timed": isinstance(outcome.chosen.latency_ms, (int, float))}  # else: the fewest fp32 layers
    latency_ms = {p.label: p.latency_ms for p in outcome.points} | {"artifact": outcome.chosen.latency_ms}
    return dataclasses.replace(first, int8=realized[keep, dynamic][0], keep_fp32=keep, dynamic=dynamic,
                               int8_built=outcome.chosen.built,
                               latency_ms=latency_ms, choice=choice, keep_reason=mixed_precision.ACCURACY_BUDGET,
                               budget_report=report)


def _all_fp32(program: Program, quantized: _Quantized, int8, fp32_built: _Built, rebuild) -> tuple:
    """The deployment when fp32 measured fastest: the model realized with every layer kept fp32
    (a tvmq artifact whose record says so), run by the fp32 build when that is its program."""
    keep = tuple(quantization_record(int8)["weights"])
    realized = quantized.realize(program, keep_fp32=keep)
    return realized, keep, fp32_built if same_program(realized, program.fp32) else rebuild(realized)


def _evaluate(sets: list[tuple[Program, Dataset]], quantized: _Quantized, keep_fp32: tuple, dynamic=(),
              observe=None) -> dict:
    """fp32 against int8 (with the first bucket's fp32 layers, ``dynamic`` layers dynamic) over every
    evaluation set; ``observe`` sees every exposed tensor's fp32 values (:class:`tvmq.evaluate.Comparison`)."""
    comparison = Comparison(observe)
    logger.info("evaluating fp32 vs int8 on %d samples", sum(len(data) for _, data in sets))
    for program, data in sets:
        int8_exposed = quantized.realize(program, keep_fp32, expose=True, dynamic=dynamic)
        probes = quantization_record(int8_exposed)["exposed"]
        comparison.add(program.vm(ExposeTensors(probes)(program.fp32)), program.vm(int8_exposed), probes, data,
                       program.batch, program.size)
    return comparison.result()


def _onnxruntime(config: Config, spec: TargetSpec, model, qdq, calib_sets: list, main: _Deployment) -> dict:
    """The report's ``onnxruntime`` when ``config.onnxruntime_baseline`` (:mod:`tvmq.onnxruntime_baseline`):
    ONNX Runtime fp32 / int8 and the deployed module, each timed in processes of their own."""
    if not config.onnxruntime_baseline:
        return {}
    here = onnxruntime_baseline.runs_on_this_cpu(spec.executor)
    built = (main.int8_built.executable, main.int8_built.params) if here else None
    timing = onnxruntime_baseline.Timing(runs=max(config.latency_runs, 1))
    logger.info("timing ONNX Runtime fp32 / int8 beside the artifact (%s)", timing.describe())
    return {"onnxruntime": onnxruntime_baseline.for_compile(Path(model), calib_sets, main.inputs(), main.bucket.batch,
                                                            built, timing, qdq=qdq is not None)}


def _bucket_for(modules: list[artifact.Module], inputs: tuple) -> artifact.Module:
    """The module whose input shapes equal the feed's (:func:`tvmq.runtime.pick_bucket`)."""
    return modules[pick_bucket([m.inputs for m in modules], inputs)]


def _fallback_report(config: Config, fallback: _Fallback | None, nodes: dict) -> dict:
    """The report's ``latency_fallback``: whether it ran, each int8 layer's tuned µs, the layers kept fp32."""
    if fallback is None:
        why = "off (--no-latency-fallback)" if not config.latency_fallback else "not run: no tuning (--trials 0)"
        return {"status": why, "layers": [], "kept_fp32": []}
    layers = [{"layer": layer_node(nodes, fallback.chains[name]), "tensor": name, **dataclasses.asdict(timing),
               "kept_fp32": name in fallback.kept} for name, timing in fallback.timings.items()]
    return {"status": "ran", "layers": layers, "kept_fp32": [row["layer"] for row in layers if row["kept_fp32"]],
            "rebuilt": fallback.rebuilt}


def _warn_fp32_layers(rows: list[dict], planned: set = frozenset()) -> None:
    """Say loudly when a conv / dense layer could not be realized in int8 (not when kept fp32 on
    purpose: the fallback's and the user's ``planned`` nodes)."""
    missed = [row["name"] for row in rows if row["op"] in LAYER_OPS and row["precision"] == "fp32"
              and row["name"] not in planned]
    if missed:
        logger.warning("%d conv/dense layer(s) stayed fp32: %s", len(missed), ", ".join(missed[:10]))


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


def _latency_fallback(program: Program, quantized: _Quantized, int8, fp32_built: _Built, int8_built: _Built,
                      spec: TargetSpec, kernels: dict, rebuild) -> tuple[object, tuple, _Built, _Fallback]:
    """Keep fp32 every layer whose int8 kernel plus its quantize / dequantize edges measured slower
    (``kernels``: each module's kernels timed in the built module) than its tuned fp32 kernel,
    and rebuild the int8 module (``rebuild``). Returns the int8 module, the layers kept fp32,
    the build and what was measured.

    Once, not to a fixed point: a layer kept fp32 gives its neighbours new edges, which are
    tuned with the rebuilt module but not weighed again.
    """
    chains = int8_chains(program, int8)
    timings = latency.attribute(fp32_built.module, int8_built.module, chains, spec,
                                kernels["fp32"], kernels["int8"])
    kept = latency.slower_in_int8(timings)
    if not kept:
        return int8, (), int8_built, _Fallback(timings, kept, chains, False)
    logger.info("%d layer(s) slower in int8 than fp32 stay fp32: %s", len(kept), ", ".join(kept))
    int8 = quantized.realize(program, keep_fp32=kept)
    return int8, tuple(kept), rebuild(int8), _Fallback(timings, kept, chains, True)


def int8_chains(program: Program, int8) -> dict[str, list[str]]:
    """Each layer realized int8 in ``int8`` (by output name) -> the names of its chain's tensors
    (its op, bias add, activation) in ``program``'s fp32 graph."""
    record = quantization_record(int8)
    return {layer.out.name: [v.name for v in layer.chain] for layer in find_layers(program.fp32["main"]).values()
            if layer.out.name in record["weights"]}


def _kernel_profile(built: _Built, inputs) -> list[dict]:
    """Each kernel's µs in ``built``, timed inside the module (:mod:`tvmq.profile`); on a device whose
    VM cannot call an instrument back (RPC), the tuning records', measured there."""
    executor = executor_of(built.executable)
    if executor.timed and not executor.instrumented:
        return list((built.tuning or {}).get("kernels", []))
    return profile.profile(built.executable, built.params, inputs)


def demo(out: str | Path, config: Config | None = None, force: bool = False) -> CompiledModel:
    """Compile the bundled pretrained MNIST CNN with its real calibration / evaluation splits.

    Parameters
    ----------
    out : artifact directory to write.
    config : as :func:`compile`'s (default: ``Config()``, untuned).
    force : replace an existing ``out``.
    """
    model, calib, evaluation = assets.bundled_mnist()
    compiled = compile(model, calib, config=config, eval_data=evaluation)
    compiled.save(out, force=force)
    return compiled


def prepare_fp32(mod, cle: bool = False, absorb_high_bias: bool = False, qdq: bool = False):
    """The fp32 -> fp32 passes: constant and BatchNorm folding, optionally CLE and high-bias absorption;
    a QDQ model's float graph (``qdq``) only folds constants: its weights are the model's int8 values."""
    import tvm
    from tvm import relax

    if qdq:
        return relax.transform.FoldConstant()(mod)
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


def _build_deployable(mod, model_batch: int | None, deploy_batch: int, spec: TargetSpec, trials: int,
                      db: Path, share: int | None = None, clock: TuningClock | None = None,
                      part: float = 0.0) -> _Built:
    """Bind a free batch dimension, put it in the target's kernels, lift the weights into params,
    tune (``share`` trials per task when given, ``part`` of ``clock``'s time: see
    :func:`tvmq.tune.tune`) and build."""
    mod = mod if model_batch else bind_batch(mod, deploy_batch)
    lifted, params = lift_params(spec.legalize(mod) if spec.legalize else mod)
    tuned, summary = lifted, None
    if clock is not None:  # tasks ranked by FLOPs: an untuned build to profile took minutes (docs/tuning.md)
        tuned, summary = tune(lifted, spec, trials, db, share=share, budget=clock.phase(part))
    elif trials > 0:
        tuned, summary = tune(lifted, spec, trials, db, share=share)
    return _Built(build(tuned, spec), params, summary, lifted)


def _default_tuning_db(spec: TargetSpec) -> Path:
    """``<cache>/tuning/<target key>``: one database per target for every model and batch size."""
    return assets.cache_dir() / "tuning" / _target_key(spec)


def _target_key(spec: TargetSpec) -> str:
    """The default tuning database's name for ``spec``: per target and tvmq version, since a
    record replays only on the kernels it was tuned for (a block renamed between versions made
    a shared database unreadable). Not per model: MetaSchedule keys records by the kernel's
    structure, so every model and batch size with an identical kernel reuses its records."""
    from importlib.metadata import version

    return f"{spec.name}-" + hashlib.sha256(f"{spec.target} tvmq {version('tvmq')}".encode()).hexdigest()[:10]
