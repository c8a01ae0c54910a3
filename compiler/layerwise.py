"""Layer-wise refinement on calibration data: EasyQuant's scale search and bias correction.

For each conv / dense layer in network order, the fp32 network and the int8 network as
refined so far both run on a calibration subset; the layer's input as the int8 network
feeds it and the fp32 output it should produce go to

* EasyQuant's search (``tvmq.passes.eq``), whose activation range replaces the calibrated
  range of the tensor that sets that input's scale, and whose weight scales override the
  layer's absmax scales;
* AdaRound (``tvmq.passes.adaround``): on the layer's weight scales (EasyQuant's when it ran),
  each weight rounded down or up as minimising the layer's output error learns it; the integers
  go into the plan (realize emits them instead of ``round(W / s)``);
* empirical bias correction (``tvmq.passes.bias_correction``): the mean per-channel error of
  the layer's int8 output before its clamp (with AdaRound's weights when it ran) is subtracted
  from its bias, which realize then folds into the int32 bias.

Every layer re-realizes and re-runs the int8 network on the subset (``L`` runs for ``L`` layers);
the weights are lifted to parameters, so the network is rebuilt only where its graph changed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import tvm
import tvm_ffi
from tqdm import tqdm

from tvmq.passes.adaround import AdaRoundOptions, adaround_layer, rounding_problem, with_weight
from tvmq.passes.bias_correction import bias_shift
from tvmq.passes.eq import _fake_act, layer_problem, search
from tvmq.passes.expose import ExposeTensors, exposed_names
from tvmq.passes.graph import find_layers
from tvmq.passes.lift_params import lift_params
from tvmq.passes.plan import QuantPlan, plan_quantization
from tvmq.passes.realize import RECORD_ATTR, Realize, Scheme, quantization_record

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
    weight_integers: dict = field(default_factory=dict)  # layer output -> AdaRound's int8 weights
    weight_ranges: dict = field(default_factory=dict)  # name or glob -> the layer's weight_qmax

    def plan(self, func, scheme: Scheme) -> QuantPlan:
        return plan_quantization(func, self.stats, scheme, self.weight_scales, self.bias_shifts, self.overrides,
                                 self.aliases, self.weight_integers, self.weight_ranges)

    def realize(self, scheme: Scheme, expose: bool = False, keep_fp32=()) -> Realize:
        return Realize(self.stats, scheme, expose=expose, weight_scales=self.weight_scales,
                       bias_shifts=self.bias_shifts, keep_fp32=keep_fp32, overrides=self.overrides,
                       aliases=self.aliases, weight_integers=self.weight_integers, weight_ranges=self.weight_ranges)


def refine(fp32, stats: dict, scheme: Scheme, data: Dataset, batch: int | None, vm_factory, batch_size: int,
           search_scales: bool, correct_bias: bool, overrides: dict | None = None,
           aliases: dict | None = None, weight_scales: dict | None = None,
           adaround: AdaRoundOptions | None = None, adaround_samples: int = NUM_SAMPLES,
           weight_ranges: dict | None = None) -> Refinement:
    """Search scales (EasyQuant), learn roundings (AdaRound, when ``adaround`` gives its options; on
    ``max(64, adaround_samples)`` samples) and / or correct biases, layer by layer (not the layers the
    user's ``overrides`` keep fp32: they stay fp32 while the others are refined, too), from the
    calibrator's ``weight_scales`` (layer output -> scales; absmax for the layers it leaves out);
    ``weight_ranges``: per-layer weight ranges (name or glob -> ``weight_qmax``)."""
    result = Refinement(dict(stats), dict(weight_scales or {}), overrides=dict(overrides or {}),
                        aliases=dict(aliases or {}), weight_ranges=dict(weight_ranges or {}))
    if not (search_scales or correct_bias or adaround):
        return result
    start = time.perf_counter()
    subset = data.head(max(NUM_SAMPLES, adaround_samples) if adaround else NUM_SAMPLES)
    names = exposed_names(fp32, sorted(stats))
    reference = _values(vm_factory(ExposeTensors(names)(fp32)), names, subset, batch, batch_size)
    kept = set(result.plan(fp32["main"], scheme).fp32_layers())
    layers = [layer for layer in find_layers(fp32["main"]).values()
              if layer.out.name in reference and layer.out.name not in kept]
    learning, runner = 0.0, _SharedBuild(vm_factory)
    for layer in tqdm(layers, desc="refine layers", unit="layer", leave=False):
        int8 = result.realize(scheme, expose=True)(fp32)
        record = quantization_record(int8)
        source = record["range_of"].get(layer.data.name)
        if source is None or layer.data.name not in reference:
            continue  # the layer stays fp32 or reads an unnamed tensor: nothing to refine
        quantized = _values(runner.vm(int8), record["exposed"], subset, batch, batch_size)
        x_fp, x_q = reference[layer.data.name], quantized[layer.data.name]
        problem = layer_problem(layer, x_fp, x_q)
        qmax = result.plan(fp32["main"], scheme).layers[layer.out.name].weight.qmax
        if search_scales:
            result.stats[source], result.weight_scales[layer.out.name] = search(
                problem, result.stats[source], scheme.activation_dtype, scheme.per_channel, qmax)
        if adaround:
            began = time.perf_counter()
            result.weight_integers[layer.out.name] = _adaround(fp32, result, scheme, layer, x_fp, x_q,
                                                               result.stats[source], adaround)
            learning += time.perf_counter() - began
        if correct_bias:
            weight_scale = result.weight_scales.get(layer.out.name)
            result.bias_shifts[layer.out.name] = bias_shift(problem, result.stats[source], scheme, weight_scale,
                                                            qmax, _learned_matrix(fp32, result, scheme, layer))
    logger.info("refined %d layers in %.1f s (AdaRound's learning %.1f s; %d builds)", len(layers),
                time.perf_counter() - start, learning, runner.builds)
    return result


def _adaround(fp32, result: Refinement, scheme: Scheme, layer, x_fp, x_q, act_range, options: AdaRoundOptions):
    """The layer's AdaRound integers on its planned weight scales, its input quantized on ``act_range``."""
    weight = result.plan(fp32["main"], scheme).layers[layer.out.name].weight
    problem = rounding_problem(layer, x_fp, x_q, lambda rows: _fake_act(rows, act_range, 1.0, scheme.activation_dtype),
                               weight.scale, weight.qmax, options)
    with tqdm(total=options.iterations, desc=f"adaround {layer.out.name}", unit="it", leave=False) as bar:
        return adaround_layer(layer, problem, options, bar)


def _learned_matrix(fp32, result: Refinement, scheme: Scheme, layer):
    """The layer's dequantized AdaRound weight in its kind's matrix view, or None (nearest rounding)."""
    entry = result.plan(fp32["main"], scheme).layers[layer.out.name]
    if entry.weight_q is None:
        return None
    scale = np.asarray(entry.weight.scale, np.float32)
    if scale.ndim:
        shape = [1] * layer.weight.ndim
        shape[layer.channel_axis] = -1
        scale = scale.reshape(shape)
    return layer.form.matrix(with_weight(layer, entry.weight_q.astype(np.float32) * scale)).astype(np.float32)


class _SharedBuild:
    """VMs for the realized int8 modules, their weights lifted to parameters: consecutive modules
    that differ only in those constants (AdaRound's integers, bias shifts: the same graph) share one
    build, so refinement builds once per change of graph (an activation range EQ moved), not per layer."""

    def __init__(self, vm_factory):
        self.vm_factory, self.module, self.built, self.builds = vm_factory, None, None, 0

    def vm(self, int8):
        lifted, params = lift_params(tvm.IRModule({"main": int8["main"].without_attr(RECORD_ATTR)}))
        if self.module is None or not tvm_ffi.structural_equal(lifted, self.module):
            self.module, self.built, self.builds = lifted, self.vm_factory(lifted), self.builds + 1
        return _WithParams(self.built, [tvm.runtime.tensor(value) for value in params.values()])


class _WithParams:
    """``vm["main"](*inputs)`` that appends the lifted parameters."""

    def __init__(self, vm, params: list):
        self._vm, self._params = vm, params

    def __getitem__(self, name):
        return lambda *inputs: self._vm[name](*inputs, *self._params)


def _values(vm, names: list[str], data: Dataset, batch: int | None, batch_size: int) -> dict:
    """Every named tensor's values over ``data`` (a small subset: this one does keep them)."""
    chunks = [outputs[1:] for outputs in run_batches(vm, data, batch, batch_size, None)]
    return {name: np.concatenate([c[i] for c in chunks]) for i, name in enumerate(names)}
