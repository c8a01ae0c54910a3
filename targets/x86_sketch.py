"""Hand-written design spaces (MetaSchedule ``ScheduleFn``) for the x86 conv kernels.

Packed conv (``conv2d_packed``, :mod:`tvmq.targets.x86_int8`).

MetaSchedule's generic multi-level tiling finds good int8 conv schedules only after many
trials. This sketch is the loop nest that x86 int8 convolutions are known to want (TVM's
TOPI ``conv2d_NCHWc_int8`` schedule, oneDNN's direct convolution), with its tile sizes left
to the search:

    parallel  n, h0, ob0                         # output rows x blocks of output channels
      w0, h1                                     # epilogue (requantize, ReLU, residual) here
        rc0, rh, rw, rc1                         # reduction: input channel groups x taps
          w1, ob1 (unrolled)                     # register tile: w1 x ob1 accumulators
            [lanes x 4] -> one dot-product instruction

The w1 x ob1 accumulators stay in registers across the whole reduction; the fused epilogue
runs on each finished tile while it is in cache; a spatial pad is computed per parallel
task. Tile sizes are ``sample_perfect_tile`` decisions, so the evolutionary search mutates
them as usual. At 32 trials it beat MetaSchedule's generic tensorizing space by 1.7x on a
MobileNetV2 stem and 1.6x on a 1x1 conv (56x56, 24 -> 144), and matched it on a 3x3 conv
(``bench/spaces.py``).

Packed fp32 conv (``conv2d_packed_fp32``, :mod:`tvmq.targets.x86_fp32`): the same nest with
the dot product replaced by a vector FMA of ``lanes`` output channels by one broadcast input:

    parallel  n, h0, ob0
      w0, h1                                     # epilogue (bias, ReLU, residual) here
        rc0, rh, rw, rc1
          w1, ob1 (unrolled)                     # register tile: w1 x ob1 vector accumulators
            lanes (vectorized)

Depthwise conv (``depthwise_nhwc``, :mod:`tvmq.targets.x86_depthwise`): the same nest
without the dot product, vectorized over channels (int8 and fp32 alike):

    parallel  n, h0, c0
      w0, h1                                     # epilogue here
        rh, rw
          w1 (unrolled), c1 x gcd(C, 16) (vectorized)  # int32 accumulators

An image's quantize + pad + NCHW -> NHWC kernel (the module's input edge) gets a small
space: all inlined, parallel over rows, the 4 (padded) channels and 1-4 pixels unrolled.

Loops that a decision makes of extent 1 are kept (``preserve_unit_loops``): the search
replays traces with other decisions, and a trace must find the same loops each time.

Every schedule function takes ``tiles``: None samples each tile size (a design space for the
search); a function of the kernel's loop extents returning each inner tile size
(:mod:`tvmq.targets.x86_blocking`) makes the same nest with sizes chosen by rule, untuned.
"""

from __future__ import annotations

import math
from typing import Callable

Tiles = Callable[[dict], dict] | None  # loop extents -> inner tile sizes; None: sampled by the search

CONV_BLOCK = "conv2d_packed"
DENSE_BLOCK = "dense_packed"
FP32_CONV_BLOCK = "conv2d_packed_fp32"
DEPTHWISE_BLOCK = "depthwise_nhwc"
VECTOR_LANES = 16  # int32 lanes of the widest vector (AVX-512)


def conv_space(intrinsic: str, lanes: int):
    """The design space of a packed conv task."""
    return _space(lambda sch: schedule_packed_conv(sch, intrinsic, lanes))


def fp32_conv_space(lanes: int):
    """The design space of a packed fp32 conv task."""
    return _space(lambda sch: schedule_fp32_conv(sch, lanes))


def depthwise_space():
    """The design space of a depthwise conv task."""
    return _space(schedule_depthwise)


def input_edge_space():
    """The design space of an input's quantize + NCHW -> NHWC kernel."""
    return _space(schedule_input_edge)


def _space(schedule):
    from tvm.s_tir import meta_schedule as ms

    post = ms.postproc
    return ms.space_generator.ScheduleFn(
        schedule, sch_rules=[], postprocs=[post.DisallowDynamicLoop(), post.RewriteParallelVectorizeUnroll()],
        mutator_probs="llvm")


def schedule_packed_conv(sch, intrinsic: str, lanes: int, tiles: Tiles = None) -> None:
    """Schedule the fused PrimFunc of ``sch`` around its ``conv2d_packed`` block (in place)."""
    conv = sch.get_sblock(CONV_BLOCK)
    w1, ob1, rc0, lane = _register_tiled(sch, conv, lanes, tiles)
    init = sch.decompose_reduction(conv, rc0)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.unroll(w1)
    sch.unroll(ob1)
    sch.tensorize(lane, intrinsic)


def schedule_fp32_conv(sch, lanes: int, tiles: Tiles = None) -> None:
    """Schedule the fused PrimFunc of ``sch`` around its ``conv2d_packed_fp32`` block (in place):
    the packed conv's nest with a vectorized FMA of ``lanes`` output channels innermost."""
    conv = sch.get_sblock(FP32_CONV_BLOCK)
    w1, ob1, rc0, lane = _register_tiled(sch, conv, lanes, tiles)
    sch.unroll(w1)
    sch.unroll(ob1)
    sch.vectorize(lane)  # before the reduction is split into init and update
    sch.decompose_reduction(conv, rc0)  # the init keeps the vectorized loop


def _register_tiled(sch, conv, lanes: int, tiles: Tiles):
    """The packed convs' common nest (module docstring) around ``conv``, whose loops are
    ``n, h, w, o, rh, rw, rc`` and, for int8, the dot product's ``ri``: tiles sampled,
    reordered, parallelized, the epilogue and pad placed. Returns the loops each kernel
    finishes differently: the register tile ``w1, ob1``, the outer reduction ``rc0`` and
    the ``lane`` loop of ``lanes`` output channels."""
    epilogue = _inline_epilogue(sch, conv)
    n, h, w, o, rh, rw, rc, *dot = sch.get_loops(conv)
    ob, lane = sch.split(o, [None, lanes])
    split = _splitter(sch, tiles, dict(n=n, h=h, w=w, ob=ob, rh=rh, rw=rw, rc=rc))
    h0, h1 = split("h", 4)
    w0, w1 = split("w", 16)
    ob0, ob1 = split("ob", 4)
    rc0, rc1 = split("rc", 16)
    sch.reorder(n, h0, ob0, w0, h1, rc0, rh, rw, rc1, w1, ob1, lane, *dot)
    _around(sch, conv, epilogue, sch.fuse(n, h0, ob0), h1)
    return w1, ob1, rc0, lane


def schedule_packed_dense(sch, intrinsic: str, lanes: int, tiles: Tiles = None) -> None:
    """Schedule the fused PrimFunc of ``sch`` around its ``dense_packed`` block (in place): the
    packed conv's nest for a matrix product, rows ``m`` and output blocks ``ob``::

        parallel  m0, ob0                        # epilogue and the K padding here
          rk0                                    # K / 4 dot-product steps
            m1, ob1 (unrolled)                   # register tile: m1 x ob1 accumulators
              [lanes x 4] -> one dot-product instruction
    """
    dense = sch.get_sblock(DENSE_BLOCK)
    epilogue = _inline_epilogue(sch, dense)
    *rows, o, rk = sch.get_loops(dense)
    m = sch.fuse(*rows) if len(rows) > 1 else rows[0]
    ob, lane = sch.split(o, [None, lanes])
    rk0, dot = sch.split(rk, [None, 4])
    split = _splitter(sch, tiles, dict(m=m, ob=ob))
    m0, m1 = split("m", 16)
    ob0, ob1 = split("ob", 4)
    sch.reorder(m0, ob0, rk0, m1, ob1, lane, dot)
    outer = sch.fuse(m0, ob0)
    _around(sch, dense, epilogue, outer, outer)
    init = sch.decompose_reduction(dense, rk0)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.unroll(m1)
    sch.unroll(ob1)
    sch.tensorize(lane, intrinsic)


def schedule_depthwise(sch, tiles: Tiles = None) -> None:
    """Schedule the fused PrimFunc of ``sch`` around its ``depthwise_nhwc`` block (in place)."""
    conv = sch.get_sblock(DEPTHWISE_BLOCK)
    epilogue = _inline_epilogue(sch, conv)
    n, h, w, c, rh, rw = sch.get_loops(conv)
    channels = int(sch.get(c).extent)
    c, vector = sch.split(c, [None, math.gcd(channels, VECTOR_LANES)])
    split = _splitter(sch, tiles, dict(n=n, h=h, w=w, c=c, vector=vector, rh=rh, rw=rw))
    h0, h1 = split("h", 4)
    w0, w1 = split("w", 8)
    c0, c1 = split("c", 4)
    sch.reorder(n, h0, c0, w0, h1, rh, rw, w1, c1, vector)
    _around(sch, conv, epilogue, sch.fuse(n, h0, c0), h1)
    sch.unroll(w1)
    sch.vectorize(sch.fuse(c1, vector))  # before the reduction is split into init and update
    sch.decompose_reduction(conv, rh)  # the init keeps the vectorized loop


def schedule_input_edge(sch, tiles: Tiles = None) -> None:
    """An image's quantize, pad and NCHW -> NHWC transpose with its channels padded to 4, as
    one loop nest: every block inlined into the output's, parallel over rows, the channels and
    a searched 1-4 pixels unrolled. TVM's generic rules vectorize the 4 channels instead, each
    lane from another plane: on MobileNetV2's 3x224x224 input 110 µs in the tuned module and
    38 untuned, against 12 with one pixel unrolled; with ResNet-50's padding of 3 one pixel
    took 69 µs and two 38 (measured with a scratch script, not understood), hence the decision."""
    *producers, output = sch.get_child_blocks(sch.get_sblock("root"))
    for block in producers:
        sch.compute_inline(block)
    *rows, pixels, channels = sch.get_loops(output)
    sch.parallel(sch.fuse(*rows))
    _, unrolled = _splitter(sch, tiles, dict(pixels=pixels))("pixels", 4)
    sch.unroll(unrolled)
    sch.unroll(channels)


def _splitter(sch, tiles: Tiles, loops: dict):
    """``split(name, max_inner)``: loop ``name`` of ``loops`` split in two, the inner size sampled
    (``tiles`` None) or ``tiles(extents)[name]``, the rule's choice for these extents."""
    inner = tiles({name: int(sch.get(loop).extent) for name, loop in loops.items()}) if tiles else None

    def split(name: str, max_inner: int):
        loop = loops[name]
        if inner is None:
            return sch.split(loop, sch.sample_perfect_tile(loop, n=2, max_innermost_factor=max_inner))
        return sch.split(loop, [None, inner[name]])

    return split


def _around(sch, conv, epilogue, outer, tile) -> None:
    """Parallelize ``outer``; run the epilogue on each finished ``tile``; compute a producer
    (a spatial pad) per parallel task; vectorize both."""
    sch.parallel(outer)
    if epilogue is not None:
        sch.reverse_compute_at(epilogue, tile, preserve_unit_loops=True)
        _vectorize_innermost(sch, epilogue)
    for producer in sch.get_producers(conv):
        sch.compute_at(producer, outer, preserve_unit_loops=True)
        _vectorize_innermost(sch, producer)


def _inline_epilogue(sch, conv):
    """Inline every block but the conv, its producers (a pad) and the last block, which writes
    the output: the conv's elementwise consumers (crop, bias, cast, scale, clamp) and a residual
    input's own requantize. Returns that last block, or None if the conv writes the output."""
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    keep = {sch.get(b).name_hint for b in [conv, *sch.get_producers(conv)]}
    for block in blocks[:-1]:
        if sch.get(block).name_hint not in keep:
            sch.compute_inline(block)
    last = blocks[-1]
    return None if sch.get(last).name_hint == sch.get(conv).name_hint else last


def _vectorize_innermost(sch, block) -> None:
    sch.vectorize(sch.get_loops(block)[-1])
