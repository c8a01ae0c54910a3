"""Calibration's stages: ``calibrate`` (one streaming statistics run over every calibration set),
``refine_layers`` (layer by layer: EQ, AdaRound, bias correction) and ``refine`` (non-uniform
weights where asked), whose plan every variant realizes."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass

import numpy as np

from tvmq.passes.adaround import AdaRoundOptions
from tvmq.passes.analytic_bias_correction import analytic_bias_shifts
from tvmq.passes.calibrators import make_observer, weight_scale_of
from tvmq.passes.graph import find_layers
from tvmq.passes.plan import (DYNAMIC, LATENCY_FALLBACK, QuantPlan, bits_qmax, calibration_names,
                              layer_labels, layer_weight_qmax, onnx_aliases, plan_imported, unmatched)
from tvmq.passes.qparams import WEIGHT_QMAX
from tvmq.passes.realize import RealizePlan, Scheme

from .. import layerwise
from ..calibrate import observe, ranges_of
from ..config import Config
from ..errors import TvmqError
from ..program import Program
from . import stage

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Statistics:
    """One statistics run: each float tensor's range (``stats``), the calibrator each tensor chose
    (``auto``), the scheme, the names layers answer to (``aliases``), per-layer weight ranges."""

    stats: dict
    chosen: dict
    scheme: Scheme
    aliases: dict
    weight_ranges: dict
    seconds: float


@dataclass(frozen=True)
class Quantized:
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
    non_uniform: dict = dataclasses.field(default_factory=dict)  # report.json's non_uniform (--non-uniform)

    def planned(self, keep_fp32=(), reason: str = LATENCY_FALLBACK, dynamic=()) -> QuantPlan:
        """The plan with the ``keep_fp32`` layers fp32 (kept by the latency fallback, or ``reason``)
        and the ``dynamic`` layers dynamic (for ``reason``)."""
        plan = self.plan.with_precision(dynamic, DYNAMIC, reason) if dynamic else self.plan
        return plan.with_precision(keep_fp32, "fp32", reason)

    def realize(self, program: Program, keep_fp32=(), expose: bool = False, dynamic=()):
        return RealizePlan(self.planned(keep_fp32, dynamic=dynamic), expose)(program.fp32)


@stage
def calibrate(calibration, config, target, programs) -> Statistics | None:
    """Every float tensor observed over every calibration set (each on its shape's program), in one
    streaming run; None for a QDQ model (its own scales are the plan)."""
    if programs.qdq is not None:
        return None
    sets = calibration.sets
    activation_dtype = config.activation_dtype(target.activation_dtype)
    # the target's narrower weight range is for its kernels, which take only its activation dtype
    kernel_qmax = target.weight_qmax if activation_dtype == target.activation_dtype else WEIGHT_QMAX
    weight_qmax = min(kernel_qmax, bits_qmax(config.weight_bits))  # the narrower of target and --weight-bits
    weight_ranges = {name: min(kernel_qmax, bits_qmax(bits)) for name, bits in config.layer_weight_bits.items()}
    scheme = Scheme(activation_dtype, config.per_channel, weight_qmax, config.mode, config.dynamic_granularity)
    aliases = check_layer_names(sets[0][0], {**config.layers, **config.layer_weight_bits})
    total = sum(len(data) for _, data in sets)
    logger.info("calibrating %d tensors on %d samples (%s)", len(sets[0][0].names), total, config.calibrator)
    start = time.perf_counter()
    observers: dict = {}
    for program, data in sets:
        names = calibration_names(program.fp32["main"], program.names)
        observe(program.fp32, names, data, program.batch, program.vm, program.size, observers,
                lambda: make_observer(config.calibrator, scheme.activation_dtype))
    stats, chosen = ranges_of(observers)
    return Statistics(stats, chosen, scheme, aliases, weight_ranges, time.perf_counter() - start)


@stage
def refine_layers(calibrate, calibration, config, target, programs) -> Quantized:
    """Refine layer by layer (EQ, empirical bias correction) on the largest calibration set, or
    correct biases analytically; a QDQ model's plan is the one it carries."""
    if calibrate is None:
        return imported_plan(programs.buckets[0].program, config, target)
    start = time.perf_counter()
    program, data = max(calibration.sets, key=lambda s: len(s[1]))
    scheme, aliases = calibrate.scheme, calibrate.aliases
    refined = layerwise.refine(program.fp32, calibrate.stats, scheme, data, program.batch, program.vm, program.size,
                               search_scales=getattr(make_observer(config.calibrator), "layerwise_search", False),
                               correct_bias=config.bias_correction == "empirical", overrides=config.layers,
                               aliases=aliases,
                               weight_scales=calibrated_weight_scales(program, config, scheme, calibrate.weight_ranges,
                                                                      aliases),
                               adaround=adaround_options(config), adaround_samples=config.adaround_samples,
                               weight_ranges=calibrate.weight_ranges)
    notes = bias_note(refined.bias_shifts)
    if config.bias_correction == "analytic":
        correction = analytic_bias_shifts(program.fp32["main"], scheme, refined.weight_scales)
        refined.bias_shifts.update(correction.bias_shifts)
        notes = [correction.note()]
        logger.info(notes[0]["note"])
    seconds = round(calibrate.seconds + time.perf_counter() - start, 2)
    plan = refined.plan(program.fp32["main"], scheme)
    quantized = Quantized(refined, scheme, calibrate.chosen, seconds, notes, program, plan)
    return dataclasses.replace(quantized, int8=quantized.realize(program))


@stage
def refine(refine_layers, config, budget, programs) -> Quantized:
    """The refined plan with non-uniform weights where ``config.non_uniform`` asks for them
    (:mod:`tvmq.nonuniform_search`; ``auto`` searches under the budget's metric), else
    ``refine_layers``' result itself (so a new metric re-runs nothing downstream of it)."""
    if config.non_uniform is None:
        return refine_layers
    from .. import nonuniform_search

    quantized, report = nonuniform_search.apply(refine_layers, config, budget, programs.buckets[0].program)
    return dataclasses.replace(quantized, non_uniform=report)


def adaround_options(config: Config) -> AdaRoundOptions | None:
    """AdaRound's options from ``config`` (None: nearest rounding)."""
    if config.rounding != "adaround":
        return None
    return AdaRoundOptions(iterations=config.adaround_iterations, reg_weight=config.adaround_reg_weight)


def calibrated_weight_scales(program: Program, config: Config, scheme: Scheme, weight_ranges: dict,
                             aliases: dict) -> dict:
    """Layer output -> weight scales, for a calibrator that sets weight ranges too (``admm``), each on
    its layer's range (``weight_ranges``: name or glob -> ``weight_qmax``)."""
    weight_scale = weight_scale_of(config.calibrator)
    if weight_scale is None:
        return {}
    layers = find_layers(program.fp32["main"]).values()
    return {layer.out.name: weight_scale(layer.weight, layer.channel_axis if scheme.per_channel else None,
                                         layer_weight_qmax(layer, scheme, weight_ranges, aliases)) for layer in layers}


def imported_plan(program: Program, config: Config, spec) -> Quantized:
    """The plan a QDQ model carries (:func:`tvmq.passes.plan.plan_imported`): no calibration."""
    qdq = program.imported.qdq
    if config.mode != "static":
        raise TvmqError(f"--mode {config.mode} is for float models: this is a QDQ model, whose own scales are the plan")
    scheme = Scheme(config.activation_dtype(spec.activation_dtype), config.per_channel, spec.weight_qmax)
    aliases = check_layer_names(program, config.layers)
    variable = {onnx: var for var, onnx in program.imported.onnx_names.items()}
    acts = {variable[name]: qp for name, qp in qdq.activations.items() if name in variable}
    weights = {variable[name]: qp for name, qp in qdq.weights.items() if name in variable}
    plan = plan_imported(program.fp32["main"], acts, weights, scheme, config.layers, aliases)
    logger.info("QDQ model: %d tensors and %d weights quantized by the model; %d of %d layers int8",
                len(acts), len(weights), len(plan.layers) - len(plan.fp32_layers()), len(plan.layers))
    refined = layerwise.Refinement({}, overrides=dict(config.layers), aliases=aliases)
    quantized = Quantized(refined, scheme, {}, 0.0, [], program, plan)
    return dataclasses.replace(quantized, int8=quantized.realize(program))


def check_layer_names(program: Program, layers: dict) -> dict:
    """The names a layer answers to; a ``Config.layers`` pattern that names no layer is an error."""
    aliases = onnx_aliases(program.imported.onnx_names, program.imported.nodes)
    missing = unmatched(layers, program.fp32["main"], aliases)
    if missing:
        labels = layer_labels(program.fp32["main"], aliases)
        few = ", ".join(labels[:5]) + (f", ... ({len(labels)} in all)" if len(labels) > 5 else "")
        raise TvmqError(f"no layer is named {missing[0]!r} (--fp32-layers / Config.layers); layers: {few or 'none'}")
    return aliases


def bias_note(shifts: dict) -> list[dict]:
    if not shifts:
        return []
    largest = max(float(np.abs(v).max(initial=0.0)) for v in shifts.values())
    return [{"pass": "CorrectBias", "method": "empirical", "layers": sorted(shifts), "max_abs_bias_shift": largest}]
