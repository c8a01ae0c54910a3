"""``tvmq.compile``: the stages of :mod:`tvmq.stages` (import -> calibrate -> refine -> build per
shape bucket -> deploy (latency fallback, accuracy budget, end-to-end choice) -> evaluate ->
baseline -> debug), rendered by :mod:`tvmq.report`, written by :mod:`tvmq.artifact`."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from tvmq.passes.plan import CALIBRATED

from . import artifact, assets, qdq_export, report as reports
from .build import virtual_machine
from .config import Config
from .report import LAYER_OPS
from .runtime import input_arrays, outputs, pick_bucket
from .stages import Pipeline
from .stages.deploy import int8_chains  # noqa: F401  (tvmq.api.int8_chains, for tools)
from .stages.prepare import prepare_fp32, target_of  # noqa: F401  (tvmq.api.prepare_fp32 / target_of)
from .stages.quantize import Quantized

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
    started = time.perf_counter()
    results = Pipeline(model=model, calib=calib, eval_data=eval_data, config=config or Config(target=target),
                       metric=metric)
    results.run("budget")  # a bad budget fails before calibration
    report = reports.render(results) | {"compile_seconds": round(time.perf_counter() - started, 1)}
    return compiled_model(results, report)


def compiled_model(results: Pipeline, report: dict) -> CompiledModel:
    """The :class:`CompiledModel` of a compile's stage results and its rendered report."""
    deployments, deployed = results["deploy"], results["deployed_plan"]
    main, spec = deployments[0], results["target"]
    _warn_fp32_layers(report["layers"], {entry["node"] for entry in deployed.json["layers"]
                                         if entry["reason"] != CALIBRATED})
    imported = main.program.imported
    manifest = artifact.manifest(imported.name, imported.outputs, spec, results["config"], results["refine"].scheme,
                                 deployed.record, imported.onnx_names) | {
        "measured_on": spec.executor.measured_on(), "source": qdq_export.source_record(results["model"])}
    modules = [artifact.Module(d.int8_built.executable, d.int8_built.params, d.inputs()) for d in deployments]
    return CompiledModel(main.int8_built.executable, main.int8_built.params, {**manifest, "inputs": main.inputs(),
                         "params": list(main.int8_built.params)}, report,
                         baseline=(main.fp32_built.executable, main.fp32_built.params),
                         buckets=modules if len(modules) > 1 else [], plan=deployed.json, qdq_weights=deployed.integers)


def quantize(model: str | Path, calib, config: Config | None = None) -> Quantized:
    """Calibrate and realize ``model`` without building it for deployment: the first bucket's
    program (``.program``) and its int8 module (``.int8``), for tests and tools."""
    return Pipeline(model=model, calib=calib, config=config or Config())["refine"]


def _bucket_for(modules: list[artifact.Module], inputs: tuple) -> artifact.Module:
    """The module whose input shapes equal the feed's (:func:`tvmq.runtime.pick_bucket`)."""
    return modules[pick_bucket([m.inputs for m in modules], inputs)]


def _warn_fp32_layers(rows: list[dict], planned: set = frozenset()) -> None:
    """Say loudly when a conv / dense layer could not be realized in int8 (not when kept fp32 on
    purpose: the fallback's and the user's ``planned`` nodes)."""
    missed = [row["name"] for row in rows if row["op"] in LAYER_OPS and row["precision"] == "fp32"
              and row["name"] not in planned]
    if missed:
        logger.warning("%d conv/dense layer(s) stayed fp32: %s", len(missed), ", ".join(missed[:10]))


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
