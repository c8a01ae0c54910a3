"""x86 int8 tensor intrinsics: ``C[j] += sum_{k<4} u8 A[k] * s8 B[j, k]`` for ``lanes`` int32 outputs.

Three implementations of the same description, each for one instruction set:

* ``tvmq_dot_16x4_vnni``   AVX-512 VNNI: one ``vpdpbusd`` (4 products into each int32 lane).
* ``tvmq_dot_16x4_avx512`` AVX-512BW: ``vpmaddubsw`` (adjacent u8 x s8 product pairs into
  int16, saturating) then ``vpmaddwd`` with ones (int16 pairs into int32), added to C.
* ``tvmq_dot_8x4_avx2``    AVX2: the same two steps on 256-bit registers, 8 lanes.

``vpmaddubsw`` saturates: 255 * 127 * 2 = 64770 does not fit int16, so the kernels that use
it need weights in [-63, 63] (255 * 63 * 2 = 32130 fits; ONNX Runtime's ``reduce_range``).
TVM's own x86 intrinsics pass the byte operands as ``<16 x i32>``, which LLVM 22 rejects;
ours pass ``<64 x i8>`` / ``<32 x i8>`` as LLVM declares them.
"""

from __future__ import annotations

from dataclasses import dataclass

REDUCE = 4  # bytes of one dot product (one int32 of activations)


@dataclass(frozen=True)
class DotIntrinsic:
    """One tensor intrinsic: its name, int32 lanes, the instruction it emits, whether it saturates int16."""

    name: str
    lanes: int
    instruction: str
    saturates_int16: bool

    @property
    def weight_qmax(self) -> int:
        """The largest weight magnitude whose products cannot saturate the instruction."""
        return 63 if self.saturates_int16 else 127

    def register(self) -> None:
        """Register the intrinsic once per process (cheap: no other intrinsic is imported)."""
        from tvm.s_tir import TensorIntrin

        if TensorIntrin.get(self.name, allow_missing=True) is None:
            impl = _vnni_impl() if self.instruction == "vpdpbusd" else _pmadd_impl(self.lanes)
            TensorIntrin.register(self.name, _desc(self.lanes), impl)


VNNI = DotIntrinsic("tvmq_dot_16x4_vnni", 16, "vpdpbusd", saturates_int16=False)
AVX512 = DotIntrinsic("tvmq_dot_16x4_avx512", 16, "vpmaddubsw", saturates_int16=True)
AVX2 = DotIntrinsic("tvmq_dot_8x4_avx2", 8, "vpmaddubsw", saturates_int16=True)

# LLVM intrinsics of the two-step kernels, by register width in int32 lanes
_PMADD = {16: ("llvm.x86.avx512.pmaddubs.w.512", "llvm.x86.avx512.pmaddw.d.512"),
          8: ("llvm.x86.avx2.pmadd.ub.sw", "llvm.x86.avx2.pmadd.wd")}


def _desc(lanes: int):
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def desc(A: T.Buffer((4,), "uint8", offset_factor=1), B: T.Buffer((lanes, 4), "int8", offset_factor=1),
             C: T.Buffer((lanes,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            for i in T.serial(0, lanes):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    return desc


def _vnni_impl():
    from tvm.script import tirx as T

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

    return impl


def _pmadd_impl(lanes: int):
    """``vpmaddubsw`` (u8 x s8 pairs -> i16, saturating) then ``vpmaddwd`` by ones (i16 pairs -> i32)."""
    from tvm.script import tirx as T

    ubsw, wd = _PMADD[lanes]
    u8, i8, i16, i32 = (f"{t}x{n}" for t, n in (("uint8", 4 * lanes), ("int8", 4 * lanes),
                                                 ("int16", 2 * lanes), ("int32", lanes)))

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((4,), "uint8", offset_factor=1), B: T.Buffer((lanes, 4), "int8", offset_factor=1),
             C: T.Buffer((lanes,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            a_i32 = T.reinterpret(A.vload([0], "uint8x4"), dtype="int32")
            a_u8 = T.reinterpret(T.broadcast(a_i32, lanes), dtype=u8)
            pairs = T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(ubsw), a_u8, B.vload([0, 0], dtype=i8),
                                            dtype=i16)
            C[T.ramp(T.int32(0), 1, lanes)] = C.vload([0], dtype=i32) + T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(wd), pairs, T.broadcast(T.int16(1), 2 * lanes), dtype=i32)

    return impl
