"""Schedules for CUDA: DLight's GPU rules behind one of ours for the dp4a kernels.

:class:`Dp4aRule` schedules a fused function built around a packed int8 kernel of
:mod:`tvmq.targets.cuda_int8` (untuned builds; a tuning record replaces it): each thread computes up to 4 output
channels of one output pixel (conv) or row (dense), accumulating in registers over the
reduction with one ``__dp4a`` per 4 input channels; threads are laid out over pixels x
channel groups, 128 a block. The fused requantize epilogue runs in the same thread on its
accumulators; the activation-word stage before the kernel is a kernel of its own in the same
function (each word is packed once, not once per output channel), with any elementwise ops
FuseOps put before the kernel (the previous dense layer's requantize) inlined into it. Every
other function gets DLight's stock GPU rules (``Matmul``, ``GEMV``, ``Reduction``,
``GeneralReduction``, ``Fallback``).
"""

from __future__ import annotations

import logging

from .cuda_int8 import CONV_BLOCK, DENSE_BLOCK, WORDS_BLOCK

logger = logging.getLogger(__name__)

THREADS = 128  # threads per block of the untuned dp4a kernels
FLAT_THREADS = 256  # threads per block of an elementwise prologue (the pad)


def default_rules() -> list:
    """Our dp4a rule, then DLight's GPU rules in TVM's CUDA pipeline's order."""
    from tvm.s_tir import dlight as dl

    return [Dp4aRule(), dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(),
            dl.gpu.Fallback()]


def pipeline(target):
    """TVM's Relax CUDA pipeline (``tvm.relax.backend.cuda.pipeline``) with :func:`default_rules`
    as its DLight schedules."""
    import tvm
    from tvm import relax
    from tvm.relax.backend.cuda import pipeline as cuda
    from tvm.s_tir import dlight as dl

    legalize = [relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
                relax.transform.FoldConstant(), relax.transform.FuseOps(), relax.transform.FuseTIR(),
                dl.ApplyDefaultSchedule(*default_rules())]

    @tvm.transform.module_pass(opt_level=0, name="tvmq.CudaPipeline")
    def _pipeline(mod, _ctx):
        with target:
            passes = (cuda.library_dispatch_passes(target) + legalize + cuda.dataflow_lower_passes(target)
                      + cuda.finalize_passes(target))
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline


def _rule_base():
    from tvm.s_tir.dlight.gpu.base import GPUScheduleRule

    return GPUScheduleRule


class Dp4aRule(_rule_base()):
    """DLight rule: a function holding a ``conv2d_dp4a`` / ``dense_dp4a`` block, scheduled by
    :func:`schedule_dp4a`; None (the next rule's turn) for any other function."""

    def apply(self, func, target, _tunable):
        from tvm import s_tir, tirx

        if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
            return None
        sch = s_tir.Schedule(func)
        block = _find_block(sch, (CONV_BLOCK, DENSE_BLOCK))
        if block is None:
            return None
        try:
            schedule_dp4a(sch, block)
        except Exception as err:  # noqa: BLE001  (TVM raises ScheduleError or its internal errors: either way
            # a fused variant the rule does not know gets DLight's schedule, correct if slower)
            logger.warning("the dp4a schedule failed (%s); the kernel gets DLight's generic GPU schedule",
                           str(err).splitlines()[0])
            return None
        return sch


def schedule_dp4a(sch, block) -> None:
    """Schedule the dp4a kernel ``block`` of ``sch`` and the blocks around it (see the module)."""
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    names = [sch.get(b).name_hint for b in blocks]
    at = names.index(sch.get(block).name_hint)
    for prologue in blocks[:at]:  # elementwise ops FuseOps put before the kernel go into its word stage
        if sch.get(prologue).name_hint == WORDS_BLOCK:
            words = prologue
        else:
            sch.compute_inline(prologue)
    _bind_flat(sch, words)
    epilogue = blocks[at + 1:]
    for middle in epilogue[:-1]:
        sch.compute_inline(middle)
    loops = sch.get_loops(block)
    reduce = loops[-(3 if sch.get(block).name_hint == CONV_BLOCK else 1):]
    spatial = loops[:len(loops) - len(reduce)]
    per_thread = next(f for f in (4, 2, 1) if _extent(sch, spatial[-1]) % f == 0)
    channel_groups, channels = sch.split(spatial[-1], [None, per_thread])
    bx, tx = sch.split(sch.fuse(*spatial[:-1], channel_groups), [None, THREADS])
    sch.reorder(bx, tx, *reduce, channels)
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
    if epilogue:
        sch.reverse_compute_at(epilogue[-1], tx)
        sch.set_scope(block, 0, "local")
    else:
        sch.reverse_compute_at(sch.cache_write(block, 0, "local"), tx)
    sch.decompose_reduction(block, reduce[0])
    sch.unroll(channels)


def _bind_flat(sch, block) -> None:
    bx, tx = sch.split(sch.fuse(*sch.get_loops(block)), [None, FLAT_THREADS])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")


def _find_block(sch, names):
    for name in names:
        try:
            return sch.get_sblock(name)
        except Exception:  # noqa: BLE001  (get_sblock raises when there is no such block)
            continue
    return None


def _extent(sch, loop) -> int:
    return int(sch.get(loop).extent)
