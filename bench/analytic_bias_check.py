"""Per layer: how well BatchNorm statistics predict a layer's input mean, and what analytic bias
correction does to the layer's mean output error, on the trained MobileNet.

    .venv/bin/python bench/analytic_bias_check.py [--cle] [--per-channel] [--samples 1000]

Calibrates (MinMax) on 500 of the 1,000 calibration digits; measures on held-out digits. For each
layer analytic bias correction corrects, prints

* the relative error of the predicted input mean: ``|E[x]_BN - mean(x)|_1 / |mean(x)|_1``, with
  ``mean(x)`` the per-channel mean of the layer's fp32 input on the calibration digits;
* the mean per-channel output error ``mean_c |mean_{n,h,w}(y_int8 - y_fp32)|`` on held-out
  digits with no correction, analytic correction, and the same formula fed the measured
  input mean instead of the BatchNorm one (which separates the statistics from the formula).
"""

from __future__ import annotations

import argparse

import numpy as np

from tvmq.api import prepare_fp32
from tvmq.assets import bundled_mnist
from tvmq.build import build, virtual_machine
from tvmq.calibrate import collect_ranges, run_batches
from tvmq.data import Dataset
from tvmq.frontend import load_model
from tvmq.passes.analytic_bias_correction import (analytic_bias_shifts, expected_output_shift,
                                                  predicted_input_mean, weight_error)
from tvmq.passes.expose import ExposeTensors
from tvmq.passes.graph import batchnorm_stats, find_layers
from tvmq.passes.realize import Realize, Scheme, quantization_record
from tvmq.targets import get_target

from passes_table import MODELS


def _vm(mod):
    return virtual_machine(build(mod, get_target("host")))


def channel_means(mod, names: list[str], data: Dataset) -> dict:
    """Per-channel mean over batch and space of each named tensor (streamed)."""
    return _stream_means(_vm(ExposeTensors(names)(mod)), names, names, data)


def _stream_means(vm, exposed: list[str], names: list[str], data: Dataset) -> dict:
    sums, counts = {}, {}
    for outputs in run_batches(vm, data, None, 100, None):
        for name, value in zip(exposed, outputs[1:]):
            if name in names:
                sums[name] = sums.get(name, 0.0) + value.sum(axis=(0, 2, 3) if value.ndim == 4 else 0)
                counts[name] = counts.get(name, 0) + value.size // value.shape[1]
    return {name: sums[name] / counts[name] for name in names}


def mean_errors(fp32, int8_modules: dict, names: list[str], data: Dataset) -> dict:
    """``mean_c |mean(y_q) - mean(y)|`` per setting and tensor, streamed over ``data``."""
    reference = channel_means(fp32, names, data)
    errors = {}
    for label, module in int8_modules.items():
        means = _stream_means(_vm(module), quantization_record(module)["exposed"], names, data)
        errors[label] = {n: float(np.abs(means[n] - reference[n]).mean()) for n in names}
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cle", action="store_true", help="CLE + high-bias absorption first")
    parser.add_argument("--per-channel", action="store_true")
    parser.add_argument("--samples", type=int, default=1000, help="held-out digits to measure on")
    args = parser.parse_args()
    _, calib_path, eval_path = bundled_mnist()
    calib = Dataset(np.load(calib_path)["x"][::2])
    held_out = Dataset(np.load(eval_path)["x"][:args.samples])
    imported = load_model(MODELS["mobilenet"])
    fp32 = prepare_fp32(imported.mod, cle=args.cle, absorb_high_bias=args.cle)
    stats, _ = collect_ranges(fp32, sorted(imported.onnx_names), calib, None, _vm, "minmax", "uint8", 100)
    scheme = Scheme("uint8", args.per_channel)
    correction = analytic_bias_shifts(fp32["main"], scheme)
    layers = {l.out.name: l for l in find_layers(fp32["main"]).values() if l.out.name in correction.bias_shifts}
    producer = {l.out: l for l in find_layers(fp32["main"]).values()}
    measured_x = channel_means(fp32, sorted({l.data.name for l in layers.values()}), calib)
    measured = {}
    for name, layer in layers.items():
        groups = int(layer.call.attrs.groups) if layer.kind == "conv2d" else 1
        measured[name] = expected_output_shift(weight_error(layer, scheme), measured_x[layer.data.name],
                                               layer.kind, groups)
    modules = {label: Realize(stats, scheme, expose=True, bias_shifts=shifts)(fp32)
               for label, shifts in (("none", {}), ("analytic", correction.bias_shifts), ("measured E[x]", measured))}
    errors = mean_errors(fp32, modules, sorted(layers), held_out)
    print(f"cle+absorption={args.cle} per_channel={args.per_channel}; {correction.note()['note']}")
    print("| layer | E[x] rel. error | error, none | error, analytic | error, measured E[x] |")
    print("|---|---|---|---|---|")
    bn = batchnorm_stats(fp32["main"])
    for name, layer in layers.items():
        predicted = predicted_input_mean(producer[layer.data], bn)
        truth = measured_x[layer.data.name]
        rel = np.abs(predicted - truth).sum() / max(np.abs(truth).sum(), 1e-12)
        row = [errors[label][name] for label in ("none", "analytic", "measured E[x]")]
        print(f"| {name.replace('/features/', '')} | {rel:.2f} | " + " | ".join(f"{e:.5f}" for e in row) + " |")
    totals = [np.mean([errors[label][n] for n in layers]) for label in ("none", "analytic", "measured E[x]")]
    print("| mean | | " + " | ".join(f"{t:.5f}" for t in totals) + " |")


if __name__ == "__main__":
    main()
