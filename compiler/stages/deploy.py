"""The ``deploy`` stage: per bucket, which build becomes the artifact. Without tuning, the int8 build;
with it, the latency fallback (layers slower in int8 kept fp32, int8 rebuilt once) and the fastest
build timed end to end (:mod:`tvmq.choose`); with an accuracy budget, the fastest that meets it
(:mod:`tvmq.mixed_precision`)."""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass

from tvmq.passes.graph import find_layers
from tvmq.passes.plan import DYNAMIC_KINDS, LATENCY_FALLBACK, USER_OVERRIDE
from tvmq.passes.realize import quantization_record

from .. import latency, mixed_precision
from ..build import executor_of, virtual_machine
from ..choose import FP32, INT8, REBUILD, Choice, pick_artifact, same_program, time_modules
from ..program import Bucket, Program
from ..report import layer_node
from ..tune import TIME_SPLIT
from . import lower, stage
from .lower import Built, Builds

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fallback:
    """What the latency fallback measured and did: each int8 layer's timing and chain (by output
    name), the layers kept fp32, whether the int8 module was rebuilt."""

    timings: dict
    kept: list
    chains: dict
    rebuilt: bool


@dataclass(frozen=True)
class Deployment:
    """One bucket built for the target: fp32 and int8 modules, kernel timings, fallback, latency."""

    bucket: Bucket
    int8: object  # the realized int8 Relax module deployed (after the fallback)
    keep_fp32: tuple
    fp32_built: Built
    int8_built: Built
    kernels: dict
    tuning: dict
    fallback: Fallback | None
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


@stage
def deploy(builds, refine, config, target, budget) -> tuple[Deployment, ...]:
    return tuple(choose(first, refine, config, target, budget) for first in builds)


def choose(first: Builds, quantized, config, spec, budgeted=None) -> Deployment:
    """Rebuild int8 with the layers slower in int8 kept fp32 (each new kernel tuned with the first
    build's per-task share), time every build whole and deploy the fastest; with an accuracy budget
    (``budgeted``: :class:`~tvmq.stages.prepare.BudgetMetric`), the fastest that meets it."""
    program, inputs = first.bucket.program, first.inputs
    int8, fp32_built, int8_built = first.int8, first.fp32_built, first.int8_built
    kernels, tuning = dict(first.kernels), dict(first.tuning)
    if budgeted is not None:
        share = int8_built.tuning["share"] if int8_built.tuning else None
        return within_budget(Deployment(first.bucket, int8, (), fp32_built, int8_built, kernels, tuning, None, {}, {}),
                             quantized, config, spec, functools.partial(first.deployable, share=share), budgeted)
    if not (config.latency_fallback and config.tunes):
        why = "--no-latency-fallback" if not config.latency_fallback else "no tuning, --trials 0"
        measured = time_modules({INT8: int8_built, FP32: fp32_built}, inputs, config.latency_runs)
        choice = Choice(INT8, f"int8 (not chosen by time: {why})", measured, timed=False)
        return Deployment(first.bucket, int8, (), fp32_built, int8_built, kernels, tuning, None,
                          {**measured, "artifact": measured[INT8]}, choice.to_json())
    rebuild = functools.partial(first.deployable, share=int8_built.tuning["share"], part=TIME_SPLIT["int8_rebuild"])
    rebuilt_int8, keep, rebuilt, fallback = latency_fallback(program, quantized, int8, fp32_built, int8_built, spec,
                                                             kernels, rebuild)
    if fallback.rebuilt:
        kernels[REBUILD] = lower.kernel_profile(rebuilt, inputs)
        tuning[REBUILD] = rebuilt.tuning  # the fallback's new edges and fp32 layers
    choice = pick_artifact(fp32_built, int8_built, rebuilt if fallback.rebuilt else None, len(keep), inputs=inputs,
                           runs=config.latency_runs, timer=time_modules)
    logger.info("deploying %s (%s)", choice.name, choice.reason)
    candidates = {INT8: (int8, (), int8_built), REBUILD: (rebuilt_int8, keep, rebuilt)}
    deployed, keep, built = candidates[choice.name] if choice.name in candidates else \
        all_fp32(program, quantized, int8, fp32_built, rebuild)
    return Deployment(first.bucket, deployed, keep, fp32_built, built, kernels, tuning, fallback,
                      {**choice.latency_ms, "artifact": choice.latency_ms[choice.name]}, choice.to_json())


def latency_fallback(program: Program, quantized, int8, fp32_built: Built, int8_built: Built, spec, kernels: dict,
                     rebuild) -> tuple[object, tuple, Built, Fallback]:
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
        return int8, (), int8_built, Fallback(timings, kept, chains, False)
    logger.info("%d layer(s) slower in int8 than fp32 stay fp32: %s", len(kept), ", ".join(kept))
    int8 = quantized.realize(program, keep_fp32=kept)
    return int8, tuple(kept), rebuild(int8), Fallback(timings, kept, chains, True)


def all_fp32(program: Program, quantized, int8, fp32_built: Built, rebuild) -> tuple:
    """The deployment when fp32 measured fastest: the model realized with every layer kept fp32
    (a tvmq artifact whose record says so), run by the fp32 build when that is its program."""
    record = quantization_record(int8)
    keep = tuple(record["weights"]) + tuple(record.get("batch_matmuls", ()))  # attention matmuls too
    realized = quantized.realize(program, keep_fp32=keep)
    return realized, keep, fp32_built if same_program(realized, program.fp32) else rebuild(realized)


def int8_chains(program: Program, int8) -> dict[str, list[str]]:
    """Each layer realized int8 in ``int8`` (by output name) -> the names of its chain's tensors
    (its op, bias add, activation) in ``program``'s fp32 graph."""
    record = quantization_record(int8)
    return {layer.out.name: [v.name for v in layer.chain] for layer in find_layers(program.fp32["main"]).values()
            if layer.out.name in record["weights"]}


def within_budget(first: Deployment, quantized, config, spec, rebuild, budgeted) -> Deployment:
    """The fastest build whose metric meets the accuracy budget (:func:`tvmq.mixed_precision.search`),
    each candidate built like the first int8 build (``rebuild``) and scored by the real metric."""
    from ..metric import evaluate, module_run
    from ..sensitivity import measure, program_evaluator, program_run

    program, bucket = first.program, first.bucket
    inputs = [(s.static_shape(bucket.batch), s.dtype) for s in program.imported.inputs]
    names = [s.name for s in program.imported.inputs]

    def run(built):
        return module_run(virtual_machine(built.executable), list(built.params.values()),
                          [(n, shape) for n, (shape, _) in zip(names, inputs)],
                          device=executor_of(built.executable).device())

    metric = budgeted.make(program_run(program, program.fp32))  # fp32's reference outputs, batched
    chains = int8_chains(program, first.int8)
    timings = latency.attribute(first.fp32_built.module, first.int8_built.module, chains, spec,
                                first.kernels["fp32"], first.kernels["int8"])
    realized = {((), ()): (first.int8, first.int8_built)}

    def build(keep, dynamic=()):
        if set(keep) == set(chains) and not dynamic:
            realized[keep, ()] = all_fp32(program, quantized, first.int8, first.fp32_built, rebuild)[::2]
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
    report = {"mixed_precision": outcome.to_json(config.budget(), budgeted.name, node_of.get),
              **({"sensitivity": outcome.sensitivity.to_json()} if outcome.sensitivity else {})}
    choice = {"artifact": outcome.chosen.label, "reason": f"fastest build meeting the accuracy budget "
              f"(metric {outcome.chosen.metric:.5g} >= {outcome.threshold:.5g})",
              "timed": isinstance(outcome.chosen.latency_ms, (int, float))}  # else: the fewest fp32 layers
    latency_ms = {p.label: p.latency_ms for p in outcome.points} | {"artifact": outcome.chosen.latency_ms}
    return dataclasses.replace(first, int8=realized[keep, dynamic][0], keep_fp32=keep, dynamic=dynamic,
                               int8_built=outcome.chosen.built,
                               latency_ms=latency_ms, choice=choice, keep_reason=mixed_precision.ACCURACY_BUDGET,
                               budget_report=report)
