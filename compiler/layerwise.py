"""Layer-wise refinement on calibration data: EasyQuant's scale search and bias correction.

For each conv / dense layer in network order, the fp32 network and the int8 network as
refined so far both run on a calibration subset; the layer's input as the int8 network
feeds it and the fp32 output it should produce go to

* EasyQuant's search (``tvmq.passes.eq``), whose activation range replaces the calibrated
  range of the tensor that sets that input's scale, and whose weight scales override the
  layer's absmax scales;
* empirical bias correction (``tvmq.passes.bias_correction``): the mean per-channel error of
  the layer's int8 output before its clamp is subtracted from its bias, which realize then
  folds into the int32 bias.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from tvmq.passes.bias_correction import bias_shift
from tvmq.passes.eq import layer_problem, search
from tvmq.passes.expose import ExposeTensors, exposed_names
from tvmq.passes.graph import find_layers
from tvmq.passes.plan import QuantPlan, plan_quantization
from tvmq.passes.realize import Realize, Scheme, quantization_record

from .calibrate import run_batches
from .data import Dataset

logger = logging.getLogger(__name__)
NUM_SAMPLES = 64


@dataclass
class Refinement:
    """What the plan takes on top of the calibrated ranges; ``overrides`` / ``aliases`` are the
    user's per-layer precisions and the names they may use (:func:`tvmq.passes.plan.plan_quantization`)."""

    stats: dict
    weight_scales: dict = field(default_factory=dict)
    bias_shifts: dict = field(default_factory=dict)
    overrides: dict = field(default_factory=dict)
    aliases: dict = field(default_factory=dict)

    def plan(self, func, scheme: Scheme) -> QuantPlan:
        return plan_quantization(func, self.stats, scheme, self.weight_scales, self.bias_shifts, self.overrides,
                                 self.aliases)

    def realize(self, scheme: Scheme, expose: bool = False, keep_fp32=()) -> Realize:
        return Realize(self.stats, scheme, expose=expose, weight_scales=self.weight_scales,
                       bias_shifts=self.bias_shifts, keep_fp32=keep_fp32, overrides=self.overrides,
                       aliases=self.aliases)


def refine(fp32, stats: dict, scheme: Scheme, data: Dataset, batch: int | None, vm_factory, batch_size: int,
           search_scales: bool, correct_bias: bool, overrides: dict | None = None,
           aliases: dict | None = None, weight_scales: dict | None = None) -> Refinement:
    """Search scales (EasyQuant) and / or correct biases, layer by layer (not the layers the
    user's ``overrides`` keep fp32: they stay fp32 while the others are refined, too), from the
    calibrator's ``weight_scales`` (layer output -> scales; absmax for the layers it leaves out)."""
    result = Refinement(dict(stats), dict(weight_scales or {}), overrides=dict(overrides or {}),
                        aliases=dict(aliases or {}))
    if not (search_scales or correct_bias):
        return result
    start = time.perf_counter()
    subset = data.head(NUM_SAMPLES)
    names = exposed_names(fp32, sorted(stats))
    reference = _values(vm_factory(ExposeTensors(names)(fp32)), names, subset, batch, batch_size)
    kept = set(result.plan(fp32["main"], scheme).fp32_layers())
    layers = [layer for layer in find_layers(fp32["main"]).values()
              if layer.out.name in reference and layer.out.name not in kept]
    for layer in tqdm(layers, desc="refine layers", unit="layer", leave=False):
        int8 = result.realize(scheme, expose=True)(fp32)
        record = quantization_record(int8)
        source = record["range_of"].get(layer.data.name)
        if source is None or layer.data.name not in reference:
            continue  # the layer stays fp32 or reads an unnamed tensor: nothing to refine
        quantized = _values(vm_factory(int8), record["exposed"], subset, batch, batch_size)
        problem = layer_problem(layer, reference[layer.data.name], quantized[layer.data.name])
        if search_scales:
            result.stats[source], result.weight_scales[layer.out.name] = search(
                problem, result.stats[source], scheme.activation_dtype, scheme.per_channel, scheme.weight_qmax)
        if correct_bias:
            weight_scale = result.weight_scales.get(layer.out.name)
            result.bias_shifts[layer.out.name] = bias_shift(problem, result.stats[source], scheme, weight_scale)
    logger.info("refined %d layers in %.1f s", len(layers), time.perf_counter() - start)
    return result


def _values(vm, names: list[str], data: Dataset, batch: int | None, batch_size: int) -> dict:
    """Every named tensor's values over ``data`` (a small subset: this one does keep them)."""
    chunks = [outputs[1:] for outputs in run_batches(vm, data, batch, batch_size, None)]
    return {name: np.concatenate([c[i] for c in chunks]) for i, name in enumerate(names)}
