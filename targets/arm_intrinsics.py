"""ARM int8 tensor intrinsics: ``C[j] += sum_{k<4} s8 A[k] * s8 B[j, k]`` for 4 int32 outputs.

Two implementations of the same description (TVM's own, registered under tvmq names so that
``tvm.s_tir.tensor_intrin``, whose import loads every target's intrinsics, is not imported):

* ``tvmq_dot_4x4_i8_sdot``  ARMv8.2 dotprod: one ``sdot`` (4 products into each int32 lane).
* ``tvmq_dot_4x4_i8_neon``  ARMv8.0 NEON: ``smull`` (s8 x s8 -> s16, exact) twice, ``saddlp``
  (s16 pairs -> s32) and ``addp``: no saturation, so weights keep the full [-127, 127].

ARM's dot products multiply signed by signed (``sdot``) or unsigned by unsigned (``udot``),
never x86's unsigned x signed, so the ARM scheme is int8 activations with int8 weights. The
intrinsic reads the 4 x 4 weight block as 16 contiguous bytes: it is correct only on weights
packed ``[N/4, K/4, 4, 4]`` (shared/arm/README.md: on natural layout TVM's default ARM space
tensorized into wrong results).
"""

from __future__ import annotations

from dataclasses import dataclass

LANES = 4


@dataclass(frozen=True)
class ArmDot:
    """One ARM dot-product intrinsic: its name, lanes, the instruction it emits."""

    name: str
    instruction: str
    lanes: int = LANES
    weight_qmax: int = 127

    def register(self) -> None:
        """Register the intrinsic once per process."""
        from tvm.s_tir import TensorIntrin

        if TensorIntrin.get(self.name, allow_missing=True) is None:
            impl = _sdot_impl() if self.instruction == "sdot" else _neon_impl()
            TensorIntrin.register(self.name, _desc(), impl)


SDOT = ArmDot("tvmq_dot_4x4_i8_sdot", "sdot")
NEON = ArmDot("tvmq_dot_4x4_i8_neon", "smull")


def _desc():
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def desc(A: T.Buffer((4,), "int8", offset_factor=1), B: T.Buffer((4, 4), "int8", offset_factor=1),
             C: T.Buffer((4,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:4], A[0:4], B[0:4, 0:4])
            T.writes(C[0:4])
            for i in T.serial(0, 4):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    return desc


def _sdot_impl():
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((4,), "int8", offset_factor=1), B: T.Buffer((4, 4), "int8", offset_factor=1),
             C: T.Buffer((4,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:4], A[0:4], B[0:4, 0:4])
            T.writes(C[0:4])
            a = T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "int8x4"), dtype="int32"), 4), dtype="int8x16")
            C[T.ramp(T.int32(0), 1, 4)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.sdot.v4i32.v16i8"),
                C.vload([0], dtype="int32x4"), a, B.vload([0, 0], dtype="int8x16"), dtype="int32x4")

    return impl


def _neon_impl():
    """The 4 activation bytes twice against each half of the block: ``smull`` -> 8 s16 products,
    ``saddlp`` -> 4 s32 pair sums per half, ``addp`` -> one s32 per output, added to C."""
    from tvm.script import tirx as T

    smull, saddlp, addp = ("llvm.aarch64.neon.smull.v8i16", "llvm.aarch64.neon.saddlp.v4i32.v8i16",
                           "llvm.aarch64.neon.addp.v4i32")

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((4,), "int8", offset_factor=1), B: T.Buffer((4, 4), "int8", offset_factor=1),
             C: T.Buffer((4,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:4], A[0:4], B[0:4, 0:4])
            T.writes(C[0:4])
            a = T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "int8x4"), dtype="int32"), 2), dtype="int8x8")
            b = B.vload([0, 0], dtype="int8x16")
            low = T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(saddlp), T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(smull), a, T.vectorlow(b, dtype="int8x8"), dtype="int16x8"),
                dtype="int32x4")
            high = T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(saddlp), T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(smull), a, T.vectorhigh(b, dtype="int8x8"), dtype="int16x8"),
                dtype="int32x4")
            C[T.ramp(T.int32(0), 1, 4)] = C.vload([0], dtype="int32x4") + T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(addp), low, high, dtype="int32x4")

    return impl
