"""Schedules without tuning: every fused PrimFunc of a module scheduled by rule (``ScheduleByRule``).

A kernel is scheduled by the first rule that takes it:

1. the target's own sketches (:mod:`tvmq.targets.x86_sketch`: packed int8 / fp32 convs, packed
   int8 dense layers, depthwise convs, the input's quantize + transpose), dispatched by task name as tuning
   dispatches them (:func:`tvmq.targets.x86.packed_space`), their tile sizes chosen by the rules
   of :mod:`tvmq.targets.x86_blocking`;
2. TVM's CPU DLight rules: ``GEMV`` (a dense layer at batch 1) and, for kernels of several
   reductions (softmax, layer norm), ``Reduction``;
3. :func:`schedule_loops` for everything else (elementwise ops, pads, pools, layout transforms,
   other reductions): producers inlined, the outer spatial loops fused and parallel, the
   innermost output loop vectorized under any reduction loops.

Kernels already scheduled (MetaSchedule's records, applied before: tuning wins) and kernels
with symbolic shapes (analysis modules with a free batch) are left as they are. Every rule
only reorders, splits, inlines and annotates loops, so integer results stay bit-identical
(tests/test_zero_trial.py).
"""

from __future__ import annotations

import logging
from typing import Callable

import tvm

from . import x86_blocking, x86_sketch
from .x86_blocking import CpuModel, divisors

logger = logging.getLogger(__name__)

SCHEDULED = "tirx.is_scheduled"
PARALLEL_MIN_ITERATIONS = 4096  # below this many loop iterations a kernel runs on one core
VECTOR_WIDTHS = 4  # the widest vectorized loop: this many vector registers of the output dtype


@tvm.transform.module_pass(opt_level=0, name="tvmq.ScheduleByRule")
class ScheduleByRule:
    """Schedule every unscheduled static-shape PrimFunc of a module by rule (module docstring);
    ``intrinsic``: the target's int8 dot product (``name``, ``lanes``), None without one."""

    def __init__(self, intrinsic=None):
        self.intrinsic = intrinsic

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        cpu = CpuModel.of(tvm.target.Target.current(allow_none=False))
        updates = {}
        for gvar, func in mod.functions_items():
            if isinstance(func, tvm.tirx.PrimFunc) and not _is_scheduled(func) and _static(func):
                scheduled = schedule_kernel(gvar.name_hint, func, cpu, self.intrinsic)
                if scheduled is not None:
                    updates[gvar] = scheduled.with_attr(SCHEDULED, True)
        for gvar, func in updates.items():
            mod[gvar] = func
        return mod


def schedule_kernel(name: str, func, cpu: CpuModel, intrinsic=None):
    """``func`` scheduled by the first rule that takes it, or None (no rule applied without a
    schedule error: left unscheduled)."""
    for rule in _rules(name, cpu, intrinsic):
        try:
            sch = rule(func)
        except (RuntimeError, ValueError) as err:  # ScheduleError and the FFI's errors: the next rule
            logger.debug("rule %s did not apply to %s: %s", rule.__name__, name, str(err).strip().splitlines()[:1])
            continue
        if sch is not None:
            return sch.mod["main"]
    logger.debug("no schedule rule for %s", name)
    return None


Rule = Callable  # PrimFunc -> tvm.s_tir.Schedule, or None where the rule does not apply


def _rules(name: str, cpu: CpuModel, intrinsic) -> list[Rule]:
    """The rules to try on kernel ``name``, in order: its sketch if it has one, then the generic ones."""
    from tvm.s_tir.dlight import cpu as dlight_cpu

    target = tvm.target.Target.current(allow_none=False)
    return [*_sketch_rules(name, cpu, intrinsic), _named(lambda f: dlight_cpu.GEMV().apply(f, target, False), "GEMV"),
            _named(lambda f: _multi_reduction(f, target), "Reduction"),
            _named(lambda f: _scheduled(f, lambda sch: schedule_loops(sch, cpu)), "schedule_loops")]


def _sketch_rules(name: str, cpu: CpuModel, intrinsic) -> list[Rule]:
    from . import x86_depthwise, x86_fp32, x86_int8
    from .x86 import INPUT_QUANTIZE

    if intrinsic is not None and x86_fp32.PREFIX + "conv2d" in name:
        tiles = x86_blocking.packed_conv_tiles(cpu)
        schedule = lambda sch: x86_sketch.schedule_fp32_conv(sch, intrinsic.lanes, tiles)  # noqa: E731
    elif intrinsic is not None and x86_int8.PACKED_PREFIX + "conv2d" in name:
        tiles = x86_blocking.packed_conv_tiles(cpu, spare=1 if intrinsic.instruction == "vpdpbusd" else 3)
        schedule = lambda sch: x86_sketch.schedule_packed_conv(sch, intrinsic.name, intrinsic.lanes, tiles)  # noqa: E731
    elif intrinsic is not None and x86_int8.PACKED_PREFIX + "dense" in name:
        tiles = x86_blocking.packed_dense_tiles(cpu, spare=1 if intrinsic.instruction == "vpdpbusd" else 3)
        schedule = lambda sch: x86_sketch.schedule_packed_dense(sch, intrinsic.name, intrinsic.lanes, tiles)  # noqa: E731
    elif x86_depthwise.PREFIX + "conv2d" in name:
        schedule = lambda sch: x86_sketch.schedule_depthwise(sch, x86_blocking.depthwise_tiles(cpu))  # noqa: E731
    elif name.startswith(INPUT_QUANTIZE) and "transpose" in name:
        schedule = lambda sch: x86_sketch.schedule_input_edge(sch, x86_blocking.input_edge_tiles)  # noqa: E731
    else:
        return []
    return [_named(lambda f: _scheduled(f, schedule), "sketch")]


def _named(rule, name: str) -> Rule:
    rule.__name__ = name
    return rule


def _scheduled(func, schedule) -> "tvm.s_tir.Schedule":
    sch = tvm.s_tir.Schedule(tvm.IRModule({"main": func}))
    schedule(sch)
    return sch


def _multi_reduction(func, target):
    """DLight's ``Reduction`` for kernels of two or more reduction blocks (softmax, layer norm);
    None for others (a pool's one reduction vectorizes better over channels: :func:`schedule_loops`)."""
    from tvm.s_tir.dlight import cpu as dlight_cpu

    sch = tvm.s_tir.Schedule(tvm.IRModule({"main": func}))
    if sum("R" in loop_kinds(sch, b) for b in _blocks(sch)) < 2:
        return None
    return dlight_cpu.Reduction().apply(func, target, False)


def schedule_loops(sch, cpu: CpuModel) -> None:
    """Inline every block that can be, then give each remaining block :func:`parallel_vectorize`."""
    for block in _blocks(sch)[:-1]:
        try:
            sch.compute_inline(block)
        except tvm.s_tir.schedule.ScheduleError:
            pass
    for block in _blocks(sch):
        parallel_vectorize(sch, block, cpu)


def parallel_vectorize(sch, block, cpu: CpuModel) -> None:
    """``S_1 .. S_k, R_1 .. R_m`` (spatial, then reduction loops) ->
    ``parallel(S_1 .. S_k0), R_1 .. R_m, vectorized S_k1``, where ``S_k = S_k0 x S_k1`` and
    ``S_k1`` is the largest power-of-two divisor of its extent up to :data:`VECTOR_WIDTHS` registers
    of the output dtype; a block of fewer than :data:`PARALLEL_MIN_ITERATIONS` iterations stays on one core."""
    loops = sch.get_loops(block)
    kinds = loop_kinds(sch, block)
    spatial = [loop for loop, kind in zip(loops, kinds) if kind == "S"]
    reduction = [loop for loop, kind in zip(loops, kinds) if kind == "R"]
    if not spatial:
        return
    extents = [int(sch.get(loop).extent) for loop in loops]
    bits = tvm.DataType(str(sch.get(block).writes[0].source.dtype)).bits
    lanes = max(1, VECTOR_WIDTHS * cpu.vector_bits // bits)
    last = int(sch.get(spatial[-1]).extent)
    vector = max(d for d in divisors(last, lanes) if d & (d - 1) == 0)  # LLVM: 48- or 50-wide ran 50x slower
    outer, inner = sch.split(spatial[-1], [None, vector])
    sch.reorder(*spatial[:-1], outer, *reduction, inner)
    total = 1
    for extent in extents:
        total *= extent
    if total >= PARALLEL_MIN_ITERATIONS:
        sch.parallel(sch.fuse(*spatial[:-1], outer))
    if vector > 1:
        sch.vectorize(inner)
        if reduction:
            sch.decompose_reduction(block, reduction[0])


def loop_kinds(sch, block) -> str:
    """One letter per loop of ``block``: ``R`` if a reduction iterator's binding uses its variable, else ``S``."""
    from tvm.s_tir.dlight.analysis.common_analysis import collect_vars_used_in_prim_expr, get_sblockrealize

    realize = get_sblockrealize(sch, block)
    reduce_vars = [v for var, value in zip(realize.block.iter_vars, realize.iter_values)
                   if var.iter_type != tvm.tirx.IterVar.DataPar for v in collect_vars_used_in_prim_expr(value)]
    loop_vars = [sch.get(loop).loop_var for loop in sch.get_loops(block)]
    return "".join("R" if any(var.same_as(r) for r in reduce_vars) else "S" for var in loop_vars)


def _blocks(sch) -> list:
    return list(sch.get_child_blocks(sch.get_sblock("root")))


def _is_scheduled(func) -> bool:
    return bool(func.attrs and SCHEDULED in func.attrs and int(func.attrs[SCHEDULED]) == 1)


def _static(func) -> bool:
    """Whether every parameter of ``func`` is a buffer of constant shape (no symbolic dims or scalars)."""
    shapes = [getattr(param, "shape", None) for param in func.params]
    return all(shape is not None and all(isinstance(d, (int, tvm.tirx.IntImm)) for d in shape) for shape in shapes)
