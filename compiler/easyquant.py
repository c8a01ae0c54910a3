"""The EasyQuant driver: run the layer-wise scale search of ``tvmq.passes.eq`` over a model.

For each conv / dense layer in network order, the fp32 network and the int8 network as
refined so far both run on a calibration subset; the layer's input as the int8 network
feeds it and the fp32 output it should produce go to the search, whose activation range
replaces the calibrated range of the tensor that sets that input's scale, and whose weight
scales override the layer's absmax scales.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from tqdm import tqdm

from tvmq.passes.eq import layer_problem, search
from tvmq.passes.expose import ExposeTensors, exposed_names
from tvmq.passes.graph import find_layers
from tvmq.passes.realize import Realize, Scheme, quantization_record

from .calibrate import run_batches
from .data import Dataset

logger = logging.getLogger(__name__)
NUM_SAMPLES = 64


def refine(fp32, stats: dict, scheme: Scheme, data: Dataset, batch: int | None, vm_factory,
           batch_size: int) -> tuple[dict, dict]:
    """Return ``(refined ranges, weight scales by layer output)`` for :class:`Realize`."""
    start = time.perf_counter()
    subset = Dataset(data.x[:NUM_SAMPLES])
    names = exposed_names(fp32, sorted(stats))
    reference = _values(vm_factory(ExposeTensors(names)(fp32)), names, subset, batch, batch_size)
    stats, weight_scales = dict(stats), {}
    layers = [layer for layer in find_layers(fp32["main"]).values() if layer.out.name in reference]
    for layer in tqdm(layers, desc="easyquant", unit="layer", leave=False):
        int8 = Realize(stats, scheme, expose=True, weight_scales=weight_scales)(fp32)
        record = quantization_record(int8)
        source = record["range_of"].get(layer.data.name)
        if source is None or layer.data.name not in reference:
            continue  # the layer stays fp32 or reads an unnamed tensor: nothing to search
        quantized = _values(vm_factory(int8), record["exposed"], subset, batch, batch_size)
        problem = layer_problem(layer, reference[layer.data.name], quantized[layer.data.name])
        stats[source], weight_scales[layer.out.name] = search(problem, stats[source], scheme.activation_dtype,
                                                              scheme.per_channel)
    logger.info("easyquant searched %d layers in %.1f s", len(layers), time.perf_counter() - start)
    return stats, weight_scales


def _values(vm, names: list[str], data: Dataset, batch: int | None, batch_size: int) -> dict:
    """Every named tensor's values over ``data`` (a small subset: this one does keep them)."""
    chunks = [outputs[1:] for outputs in run_batches(vm, data, batch, batch_size, None)]
    return {name: np.concatenate([c[i] for c in chunks]) for i, name in enumerate(names)}
