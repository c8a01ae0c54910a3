"""The stages after deployment: the plan as deployed, the evaluation of fp32 against int8, the
ONNX Runtime baseline and (``Config.debug``) the debugging steps on the compile's own data."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from tvmq.passes.expose import ExposeTensors
from tvmq.passes.plan import QuantPlan
from tvmq.passes.realize import quantization_record

from .. import histograms, onnxruntime_baseline, qdq_export
from ..errors import TvmqError
from ..evaluate import Comparison
from . import stage

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeployedPlan:
    """The first bucket's plan as deployed: realize's record, the plan (and its plan.json), each
    int8 layer's integers (qdq_weights.npz)."""

    record: dict
    plan: QuantPlan
    json: dict
    integers: dict


@stage
def deployed_plan(deploy, refine) -> DeployedPlan:
    main = deploy[0]
    imported = main.program.imported
    record = quantization_record(main.int8)
    planned = refine.planned(main.keep_fp32, main.keep_reason, main.dynamic)
    integers = qdq_export.integer_layers(main.program.fp32["main"], planned, record, imported.onnx_names)
    return DeployedPlan(record, planned, planned.to_json(imported.onnx_names, imported.nodes), integers)


@dataclass(frozen=True)
class Evaluation:
    """fp32 against int8 as deployed (:class:`tvmq.evaluate.Comparison`'s result) and the fp32
    activations' histograms seen on the way."""

    accuracy: dict
    sqnr_db: dict
    activations: histograms.ActivationHistograms


@stage
def evaluate(evaluation, calibration, refine, deploy) -> Evaluation:
    """On the evaluation data, else the calibration data; nothing when neither was given."""
    sets = evaluation.sets if evaluation.given else calibration.sets
    activations = histograms.ActivationHistograms(refine.plan.ranges)
    main = deploy[0]
    result = compare(sets, refine, main.keep_fp32, main.dynamic, activations.add) if sets else not_evaluated()
    return Evaluation(result["accuracy"], result["sqnr_db"], activations)


def compare(sets: list, quantized, keep_fp32: tuple, dynamic=(), observe=None) -> dict:
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


def not_evaluated() -> dict:
    return {"accuracy": {"fp32_top1": None, "int8_top1": None, "top1_agreement": None, "output_cosine": None,
                         "num_samples": 0}, "sqnr_db": {}}


@dataclass(frozen=True)
class Baseline:
    """The report's ``onnxruntime`` section (None: not asked for)."""

    onnxruntime: dict | None


@stage
def baseline(config, target, model, programs, calibration, deploy) -> Baseline:
    """With ``config.onnxruntime_baseline`` (:mod:`tvmq.onnxruntime_baseline`): ONNX Runtime fp32 / int8
    and the deployed module, each timed in processes of their own."""
    if not config.onnxruntime_baseline:
        return Baseline(None)
    main = deploy[0]
    here = onnxruntime_baseline.runs_on_this_cpu(target.executor)
    built = (main.int8_built.executable, main.int8_built.params) if here else None
    timing = onnxruntime_baseline.Timing(runs=max(config.latency_runs, 1))
    logger.info("timing ONNX Runtime fp32 / int8 beside the artifact (%s)", timing.describe())
    return Baseline(onnxruntime_baseline.for_compile(Path(model), list(calibration.sets), main.inputs(),
                                                     main.bucket.batch, built, timing,
                                                     qdq=programs.qdq is not None))


@dataclass(frozen=True)
class Debugging:
    """The debugging steps' sections (report.json ``debug``; None: ``Config.debug`` off)."""

    steps: list | None


@stage
def debug(config, target, programs, calibration, evaluation, refine) -> Debugging:
    """With ``config.debug``: :mod:`tvmq.debugging`'s steps on this compile's calibration (``refine``)
    and evaluation data (else its calibration data), the first bucket deployed."""
    if not config.debug:
        return Debugging(None)
    from .. import debugging

    if programs.qdq is not None:
        raise TvmqError("--debug-steps calibrates a float model: this is a QDQ model")
    sets = evaluation.sets if evaluation.given else calibration.sets
    session = debugging.Session(config, target, refine, list(sets), programs.buckets[0])
    return Debugging(debugging.run_steps(session))
