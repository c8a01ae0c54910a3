"""x86 int8 kernels on AVX-512 VNNI: the ``vpdpbusd`` tensor intrinsic and packed-weight kernels.

``vpdpbusd`` multiplies 4 unsigned activation bytes by 4 signed weight bytes for each of 16
output lanes and adds the four products into 16 int32 accumulators:

    C[j] += sum_{k<4} int32(A[k]) * int32(B[j, k])        j < 16

It wants the 4 activation bytes contiguous (NHWC / row-major data, input channels padded to
a multiple of 4) and a 16x4 weight block contiguous, so weights are packed at compile time to

    conv2d  OHWI [O, KH, KW, I]  ->  [O/16, KH, KW, I/4, 16, 4]
    dense   [K, N]               ->  [N/16, K/4, 16, 4]

(zero-padded), the layout under which MetaSchedule's auto-tensorization computes correct
results (shared/TOOLCHAIN.md: on a weight in its natural layout it read 16x4 blocks that are
not contiguous and was wrong). TVM's own ``dot_16x4_vnni`` passes the byte operands as
``<16 x i32>``, which LLVM 22 rejects; ours passes them as ``<64 x i8>``.
"""

from __future__ import annotations

import numpy as np

VNNI_INTRIN = "tvmq_dot_16x4_vnni"
LANES, REDUCE = 16, 4  # output lanes and reduction width of one vpdpbusd
PACKED_PREFIX = "vnni_"  # name prefix of the packed kernels: their tuning tasks get the VNNI rules


def register_intrinsic() -> None:
    """Register :data:`VNNI_INTRIN` once per process (cheap: no other intrinsic is imported)."""
    from tvm.s_tir import TensorIntrin

    if TensorIntrin.get(VNNI_INTRIN, allow_missing=True) is None:
        desc, impl = _intrinsic_functions()
        TensorIntrin.register(VNNI_INTRIN, desc, impl)


def _intrinsic_functions():
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def desc(A: T.Buffer((4,), "uint8", offset_factor=1), B: T.Buffer((16, 4), "int8", offset_factor=1),
             C: T.Buffer((16,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            for i in T.serial(0, 16):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((4,), "uint8", offset_factor=1), B: T.Buffer((16, 4), "int8", offset_factor=1),
             C: T.Buffer((16,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            a_i32 = T.reinterpret(A.vload([0], "uint8x4"), dtype="int32")
            a_u8x64 = T.reinterpret(T.broadcast(a_i32, 16), dtype="uint8x64")
            C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                C.vload([0], dtype="int32x16"), a_u8x64, B.vload([0, 0], dtype="int8x64"), dtype="int32x16")

    return desc, impl


def pack_conv_weight(ohwi: np.ndarray) -> np.ndarray:
    """OHWI int8 -> ``[O/16, KH, KW, I/4, 16, 4]``, zero-padded to whole blocks."""
    o, kh, kw, i = ohwi.shape
    padded = np.zeros((_round_up(o, LANES), kh, kw, _round_up(i, REDUCE)), np.int8)
    padded[:o, :, :, :i] = ohwi
    blocks = padded.reshape(-1, LANES, kh, kw, padded.shape[3] // REDUCE, REDUCE)
    return np.ascontiguousarray(blocks.transpose(0, 2, 3, 4, 1, 5))


def pack_dense_weight(kn: np.ndarray) -> np.ndarray:
    """``[K, N]`` int8 -> ``[N/16, K/4, 16, 4]``, zero-padded to whole blocks."""
    k, n = kn.shape
    padded = np.zeros((_round_up(n, LANES), _round_up(k, REDUCE)), np.int8)
    padded[:n, :k] = kn.T
    blocks = padded.reshape(-1, LANES, padded.shape[1] // REDUCE, REDUCE)
    return np.ascontiguousarray(blocks.transpose(0, 2, 1, 3))


def conv2d_nhwc(data, packed, out_channels: int, strides, padding, dilation):
    """TE: uint8 NHWC data x packed int8 weight -> int32 NHWC with ``out_channels`` channels."""
    from tvm import te, topi

    top, left, bottom, right = padding
    channel_pad = packed.shape[3] * REDUCE - data.shape[3]
    if any((top, left, bottom, right, channel_pad)):
        data = topi.nn.pad(data, [0, top, left, 0], [0, bottom, right, channel_pad], name="pad")
    _, height, width, _ = data.shape
    blocks, kh, kw, ic4 = packed.shape[:4]
    out_h = (height - (kh - 1) * dilation[0] - 1) // strides[0] + 1
    out_w = (width - (kw - 1) * dilation[1] - 1) // strides[1] + 1
    rh, rw = te.reduce_axis((0, kh), "rh"), te.reduce_axis((0, kw), "rw")
    rc, ri = te.reduce_axis((0, ic4), "rc"), te.reduce_axis((0, REDUCE), "ri")

    def body(n, h, w, o):
        x = data[n, h * strides[0] + rh * dilation[0], w * strides[1] + rw * dilation[1], rc * REDUCE + ri]
        return te.sum(x.astype("int32") * packed[o // LANES, rh, rw, rc, o % LANES, ri].astype("int32"),
                      axis=[rh, rw, rc, ri])

    acc = te.compute((data.shape[0], out_h, out_w, blocks * LANES), body, name="conv2d_vnni")
    return _first_channels(acc, out_channels)


def dense(data, packed, out_features: int):
    """TE: uint8 ``[M, K]`` x packed int8 weight -> int32 ``[M, out_features]``."""
    from tvm import te, topi

    k_pad = packed.shape[1] * REDUCE - data.shape[-1]
    if k_pad:
        data = topi.nn.pad(data, [0] * len(data.shape), [0] * (len(data.shape) - 1) + [k_pad], name="pad")
    rk = te.reduce_axis((0, packed.shape[1] * REDUCE), "rk")
    acc = te.compute((*data.shape[:-1], packed.shape[0] * LANES),
                     lambda *idx: te.sum(data[(*idx[:-1], rk)].astype("int32") *
                                         packed[idx[-1] // LANES, rk // REDUCE, idx[-1] % LANES,
                                                rk % REDUCE].astype("int32"), axis=rk),
                     name="dense_vnni")
    return _first_channels(acc, out_features)


def _first_channels(acc, count: int):
    from tvm import te

    if int(acc.shape[-1]) == count:
        return acc
    return te.compute((*acc.shape[:-1], count), lambda *idx: acc[idx], name="crop")


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def search_space():
    """MetaSchedule's x86 rules with auto-tensorization onto :data:`VNNI_INTRIN` (TVM's
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
        rule.MultiLevelTilingWithIntrin(VNNI_INTRIN, structure="SSRSRS", tile_binds=None, max_innermost_factor=64,
                                        vector_load_lens=None, reuse_read=None,
                                        reuse_write=rule.ReuseType(req="may", levels=[1, 2], scope="global")),
        rule.ParallelizeVectorizeUnroll(max_jobs_per_core=16, max_vectorize_extent=64,
                                        unroll_max_steps=[0, 16, 64, 512], unroll_explicit=True),
        rule.RandomComputeLocation(),
    ]
    post = ms.postproc
    postprocs = [post.DisallowDynamicLoop(), post.RewriteParallelVectorizeUnroll(), post.RewriteReductionBlock(),
                 post.RewriteTensorize(vectorize_init_loop=True), post.RewriteLayout()]
    return ms.space_generator.PostOrderApply(sch_rules=rules, postprocs=postprocs, mutator_probs="llvm")
