"""x86 CPUs: the host, detected from the running machine (never a hard-coded CPU).

Activations are asymmetric ``uint8`` because the x86 int8 dot products take one unsigned
and one signed operand: AVX-512 VNNI ``vpdpbusd`` and AVX2 ``vpmaddubsw`` multiply u8 by s8.
Weights are symmetric ``int8``.
"""

from __future__ import annotations

import functools
from pathlib import Path

from . import TargetSpec, register_target

INT8_FEATURES = ("avx512_vnni", "avx_vnni", "avx512bw", "avx2")


def cpu_flags() -> set[str]:
    """The CPU feature flags of this machine, from /proc/cpuinfo (empty where unavailable)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@register_target("host", "x86")
def host() -> TargetSpec:
    import tvm
    import psutil

    detected = tvm.target.Target.from_device(tvm.cpu())
    cores = psutil.cpu_count(logical=False) or 1
    target = tvm.target.Target({**_as_dict(detected), "num-cores": cores})
    features = tuple(f for f in INT8_FEATURES if f in cpu_flags())
    return TargetSpec("x86", target, "uint8", features, prepare=register_vnni_intrinsic)


def _as_dict(target) -> dict:
    out = {"kind": target.kind.name}
    for key in ("mtriple", "mcpu", "mattr"):
        if key in target.attrs:
            value = target.attrs[key]
            out[key] = list(value) if key == "mattr" else str(value)
    return out


@functools.cache
def register_vnni_intrinsic() -> None:
    """Re-register TVM's ``dot_16x4_vnni`` so it builds with the bundled LLVM.

    LLVM 22 declares ``llvm.x86.avx512.vpdpbusd.512``'s byte operands as ``<64 x i8>``;
    TVM 0.27 passes ``<16 x i32>`` and module verification fails (shared/TOOLCHAIN.md).
    Tuning (issue 6) relies on this; plain builds do not tensorize and never need it.
    """
    from tvm.s_tir.tensor_intrin import x86 as intrin  # ~20 s the first time in a process
    from tvm.s_tir import TensorIntrin
    from tvm.script import tir as T

    @T.prim_func
    def impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4,), "uint8", offset_factor=1)
        B = T.match_buffer(b, (16, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (16,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            A_u8x4 = A.vload([0], "uint8x4")
            A_i32 = T.reinterpret(A_u8x4, dtype="int32")
            A_brdcst = T.broadcast(A_i32, 16)
            A_u8x64 = T.reinterpret(A_brdcst, dtype="uint8x64")
            B_i8x64 = B.vload([0, 0], dtype="int8x64")
            C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.int32x16, T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                C[T.ramp(T.int32(0), 1, 16)], A_u8x64, B_i8x64)

    TensorIntrin.register(intrin.VNNI_DOT_16x4_INTRIN, intrin.dot_product_16x4_u8i8i32_desc, impl, override=True)
