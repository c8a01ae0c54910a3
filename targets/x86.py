"""x86 CPUs: the host, detected from the running machine (never a hard-coded CPU).

Activations are asymmetric ``uint8`` because the x86 int8 dot products take one unsigned
and one signed operand: AVX-512 VNNI ``vpdpbusd`` and AVX2 ``vpmaddubsw`` multiply u8 by s8.
Weights are symmetric ``int8``.
"""

from __future__ import annotations

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
    if "avx512_vnni" not in features:
        return TargetSpec("x86", target, "uint8", features)
    from . import x86_vnni
    from .x86_legalize import LegalizeInt8ForVNNI

    return TargetSpec("x86", target, "uint8", features, prepare=x86_vnni.register_intrinsic,
                      legalize_int8=LegalizeInt8ForVNNI(), search_space=_vnni_space)


def _vnni_space(task_name: str):
    """VNNI auto-tensorization for the packed kernels; TVM's generic rules for the rest."""
    from . import x86_vnni

    return x86_vnni.search_space() if x86_vnni.PACKED_PREFIX in task_name else None


def _as_dict(target) -> dict:
    out = {"kind": target.kind.name}
    for key in ("mtriple", "mcpu", "mattr"):
        if key in target.attrs:
            value = target.attrs[key]
            out[key] = list(value) if key == "mattr" else str(value)
    return out

