"""``--non-uniform {16,32,64,auto}``: non-uniform int8 weights in the plan, a fixed k or the smallest k
per layer that keeps the metric within the accuracy budget (AMCT's ``eval_model`` / ``is_satisfied``).

The levels are :mod:`tvmq.passes.nonuniform`'s. With ``auto``, on the budget's metric
(:mod:`tvmq.mixed_precision`'s ``threshold``, from fp32's metric):

1. every eligible layer (int8 convs of one group, int8 dense) at k = 16: if that meets the
   threshold, it is the answer;
2. else each layer's sensitivity, the metric with only it at 16 (:func:`tvmq.sensitivity.measure`,
   its ``evaluate(layers)`` here putting those layers at 16 rather than fp32), and in that order,
   the least sensitive first, each layer takes the smallest k in (16, 32, 64) with which the
   layers chosen so far still meet the threshold (none: it stays plain int8).

Every candidate differs from the int8 plan only in weight constants, so all of them run on one
build of the analysis program (the weights lifted to parameters: :class:`tvmq.layerwise._SharedBuild`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time

from tvmq.passes.layers import find_layers
from tvmq.passes.nonuniform import LEVELS, eligible, non_uniform_entry, with_non_uniform

from . import weight_codecs
from .layerwise import _SharedBuild
from .metric import evaluate as evaluate_metric, module_run
from .sensitivity import measure, program_run

logger = logging.getLogger(__name__)
AUTO = "auto"


def apply(quantized, config, budgeted, program) -> tuple[object, dict]:
    """``(quantized with non-uniform weights in its plan, report.json's non_uniform)``; unchanged and
    ``{}`` without ``config.non_uniform``. ``budgeted``: the budget's metric
    (:class:`tvmq.stages.prepare.BudgetMetric`); ``program``: the one the metric runs on."""
    if config.non_uniform is None:
        return quantized, {}
    func = quantized.program.fp32["main"]
    layers = eligible(func, quantized.plan)
    start = time.perf_counter()
    if config.non_uniform == AUTO:
        levels, search = _search(quantized, config.budget(), budgeted, program, layers)
    else:
        levels, search = {name: int(config.non_uniform) for name in layers}, {}
    plan = with_non_uniform(quantized.plan, func, levels)
    done = dataclasses.replace(quantized, plan=plan)
    done = dataclasses.replace(done, int8=done.realize(done.program))
    names = quantized.program.imported
    report = {"mode": config.non_uniform, **search, **_storage(plan, func, layers, names.onnx_names, names.nodes),
              "seconds": round(time.perf_counter() - start, 2)}
    logger.info("non-uniform weights: %d of %d layer(s), weights %.2fx smaller", len(levels), len(layers),
                report["ratio"])
    return done, report


def _search(quantized, budget, budgeted, program, layers: list[str]) -> tuple[dict, dict]:
    """The smallest k per layer meeting ``budget`` (module docstring), and what was measured."""
    from .report import layer_node

    metric_name, make_metric = budgeted.name, budgeted.make
    fp32_run = program_run(program, program.fp32)
    metric = make_metric(fp32_run)
    shared, func, evaluations = _SharedBuild(program.vm), program.fp32["main"], []
    inputs = [(s.name, None if program.batch is None else s.static_shape(program.batch))
              for s in program.imported.inputs]
    weights = {layer.out.name: layer.weight for layer in find_layers(func).values()}
    entry_of = functools.cache(lambda name, k: non_uniform_entry(quantized.plan.layers[name], weights[name], k))

    def score(levels: dict) -> float:
        plan = with_non_uniform(quantized.plan, func, levels, entry_of)
        module = dataclasses.replace(quantized, plan=plan).realize(program)
        value = evaluate_metric(metric, module_run(shared.vm(module), [], inputs, program.size),
                                f"non-uniform weights on {len(levels)} layer(s)")
        evaluations.append(value)
        return value

    reference = evaluate_metric(metric, fp32_run, "the fp32 model")
    threshold = budget.threshold(reference)
    int8 = score({})
    chosen, sensitivity = {name: LEVELS[0] for name in layers}, None
    final = score(chosen)
    if final < threshold:
        sensitivity = measure(lambda some: score({name: LEVELS[0] for name in some}), layers, fp32=final, int8=int8)
        chosen, final = {}, int8
        for row in sensitivity.ranked():  # the least metric lost at 16 levels first
            for k in LEVELS:
                value = score({**chosen, row.tensor: k})
                if value >= threshold:
                    chosen[row.tensor], final = k, value
                    break
    nodes = program.imported.nodes
    drops = {layer_node(nodes, list(quantized.plan.layers[row.tensor].chain)): round(int8 - row.fp32_kept, 6)
             for row in sensitivity.layers} if sensitivity else {}
    return chosen, {"metric_name": metric_name, "fp32_metric": reference, "int8_metric": int8,
                    "threshold": round(threshold, 6), "metric": final, "evaluations": len(evaluations),
                    "budget": budget.to_json(), "drop_at_16_levels": drops}


def _storage(plan, func, layers: list[str], onnx_names: dict, nodes: dict) -> dict:
    """Per eligible layer its k and its weight's bytes, int8 vs ``lut``-coded (in the weight's own
    layout: the artifact's packed params add their padding to both), and the totals over them."""
    from .report import layer_node

    weights = {layer.out.name: layer.weight for layer in find_layers(func).values()}
    rows = []
    for name in layers:
        entry = plan.layers[name]
        q = entry.weight_integers(weights[name])
        stored = weight_codecs.encode(name, q, weight_codecs.LUT)[1]["stored_bytes"] if entry.weight_levels else q.size
        rows.append({"layer": layer_node(nodes, list(entry.chain)), "tensor": onnx_names.get(name, name),
                     "levels": entry.weight_levels, "int8_bytes": int(q.size), "stored_bytes": int(stored),
                     "ratio": round(q.size / max(stored, 1), 3)})
    int8, stored = sum(r["int8_bytes"] for r in rows), sum(r["stored_bytes"] for r in rows)
    return {"layers": rows, "int8_bytes": int8, "stored_bytes": stored, "ratio": round(int8 / max(stored, 1), 3)}
