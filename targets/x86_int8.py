"""x86 int8 kernels on packed weights: the layouts, the TE kernels and their tuning space.

One x86 int8 dot-product step (:mod:`tvmq.targets.x86_intrinsics`) multiplies 4 unsigned
activation bytes by 4 signed weight bytes for each of ``lanes`` outputs (16 on AVX-512,
8 on AVX2) and adds them into ``lanes`` int32 accumulators. It wants the 4 activation bytes
contiguous (NHWC / row-major data, input channels padded to a multiple of 4) and a
``lanes`` x 4 weight block contiguous, so weights are packed at compile time to

    conv2d  OHWI [O, KH, KW, I]  ->  [O/lanes, KH, KW, I/4, lanes, 4]
    dense   [K, N]               ->  [N/lanes, K/4, lanes, 4]

(zero-padded), the layout under which MetaSchedule's auto-tensorization computes correct
results (shared/TOOLCHAIN.md: on a weight in its natural layout it read blocks that are not
contiguous and was wrong). The kernels read ``lanes`` off the packed weight's shape.
"""

from __future__ import annotations

import numpy as np

from .x86_intrinsics import REDUCE

PACKED_PREFIX = "packed_"  # name prefix of the packed kernels: their tuning tasks get the tensorizing rules


def pack_conv_weight(ohwi: np.ndarray, lanes: int) -> np.ndarray:
    """OHWI int8 -> ``[O/lanes, KH, KW, I/4, lanes, 4]``, zero-padded to whole blocks."""
    o, kh, kw, i = ohwi.shape
    padded = np.zeros((round_up(o, lanes), kh, kw, round_up(i, REDUCE)), np.int8)
    padded[:o, :, :, :i] = ohwi
    blocks = padded.reshape(-1, lanes, kh, kw, padded.shape[3] // REDUCE, REDUCE)
    return np.ascontiguousarray(blocks.transpose(0, 2, 3, 4, 1, 5))


def pack_dense_weight(kn: np.ndarray, lanes: int) -> np.ndarray:
    """``[K, N]`` int8 -> ``[N/lanes, K/4, lanes, 4]``, zero-padded to whole blocks."""
    k, n = kn.shape
    padded = np.zeros((round_up(n, lanes), round_up(k, REDUCE)), np.int8)
    padded[:n, :k] = kn.T
    blocks = padded.reshape(-1, lanes, padded.shape[1] // REDUCE, REDUCE)
    return np.ascontiguousarray(blocks.transpose(0, 2, 1, 3))


def conv2d_nhwc(data, packed, out_channels: int, strides, padding, dilation):
    """TE: uint8 NHWC data x packed int8 weight -> int32 NHWC with ``out_channels`` channels."""
    from tvm import te

    data = pad_nhwc(data, padding, packed.shape[3] * REDUCE - data.shape[3])
    blocks, kh, kw, ic4, lanes = packed.shape[:5]
    out_h, out_w = output_size(data, (kh, kw), strides, dilation)
    rh, rw = te.reduce_axis((0, kh), "rh"), te.reduce_axis((0, kw), "rw")
    rc, ri = te.reduce_axis((0, ic4), "rc"), te.reduce_axis((0, REDUCE), "ri")

    def body(n, h, w, o):
        x = data[n, h * strides[0] + rh * dilation[0], w * strides[1] + rw * dilation[1], rc * REDUCE + ri]
        return te.sum(x.astype("int32") * packed[o // lanes, rh, rw, rc, o % lanes, ri].astype("int32"),
                      axis=[rh, rw, rc, ri])

    acc = te.compute((data.shape[0], out_h, out_w, blocks * lanes), body, name="conv2d_packed")
    return first_channels(acc, out_channels)


def dense(data, packed, out_features: int):
    """TE: uint8 ``[M, K]`` x packed int8 weight -> int32 ``[M, out_features]``."""
    from tvm import te, topi

    blocks, k4, lanes = packed.shape[:3]
    k_pad = k4 * REDUCE - data.shape[-1]
    if k_pad:
        data = topi.nn.pad(data, [0] * len(data.shape), [0] * (len(data.shape) - 1) + [k_pad], name="pad")
    rk = te.reduce_axis((0, k4 * REDUCE), "rk")
    acc = te.compute((*data.shape[:-1], blocks * lanes),
                     lambda *idx: te.sum(data[(*idx[:-1], rk)].astype("int32") *
                                         packed[idx[-1] // lanes, rk // REDUCE, idx[-1] % lanes,
                                                rk % REDUCE].astype("int32"), axis=rk),
                     name="dense_packed")
    return first_channels(acc, out_features)


def pad_nhwc(data, padding, channel_pad: int = 0):
    """NHWC ``data`` zero-padded by ``padding`` (top, left, bottom, right) and ``channel_pad``
    trailing channels, as a TE stage named ``pad`` (the sketches compute it per parallel task)."""
    from tvm import topi

    top, left, bottom, right = padding
    if not any((top, left, bottom, right, channel_pad)):
        return data
    return topi.nn.pad(data, [0, top, left, 0], [0, bottom, right, channel_pad], name="pad")


def output_size(padded, kernel, strides, dilation) -> tuple:
    """The output height and width of a conv over the padded NHWC ``padded``."""
    return tuple((padded.shape[1 + i] - (kernel[i] - 1) * dilation[i] - 1) // strides[i] + 1 for i in (0, 1))


def first_channels(acc, count: int):
    from tvm import te

    if int(acc.shape[-1]) == count:
        return acc
    return te.compute((*acc.shape[:-1], count), lambda *idx: acc[idx], name="crop")


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def search_space(intrinsic: str):
    """MetaSchedule's x86 rules with auto-tensorization onto ``intrinsic`` (TVM's
    ``ScheduleRule::DefaultX86`` and ``Postproc::DefaultCPUTensorization``), for packed kernels only."""
    from tvm.s_tir import meta_schedule as ms

    rule = ms.schedule_rule
    rules = [
        rule.ApplyCustomRule(),
        rule.InlineConstantScalars(),
        rule.AutoInline(into_producer=False, into_consumer=True, inline_const_tensor=True,
                        disallow_if_then_else=True, require_injective=True, require_ordered=True,
                        disallow_op=["tirx.exp"]),
        rule.AddRFactor(max_jobs_per_core=16, max_innermost_factor=64),
        rule.MultiLevelTilingWithIntrin(intrinsic, structure="SSRSRS", tile_binds=None, max_innermost_factor=64,
                                        vector_load_lens=None, reuse_read=None,
                                        reuse_write=rule.ReuseType(req="may", levels=[1, 2], scope="global")),
        # no 512-step unroll: LLVM once spent over ten minutes on such a tensorized candidate
        rule.ParallelizeVectorizeUnroll(max_jobs_per_core=16, max_vectorize_extent=64,
                                        unroll_max_steps=[0, 16, 64], unroll_explicit=True),
        rule.RandomComputeLocation(),
    ]
    post = ms.postproc
    postprocs = [post.DisallowDynamicLoop(), post.RewriteParallelVectorizeUnroll(), post.RewriteReductionBlock(),
                 post.RewriteTensorize(vectorize_init_loop=True), post.RewriteLayout()]
    return ms.space_generator.PostOrderApply(sch_rules=rules, postprocs=postprocs, mutator_probs="llvm")
