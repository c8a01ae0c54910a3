"""x86 CPUs: the host, detected from the running machine, and one explicit target per int8 kernel.

Activations are asymmetric ``uint8`` because the x86 int8 dot products take one unsigned
and one signed operand: AVX-512 VNNI ``vpdpbusd`` and AVX2 / AVX-512BW ``vpmaddubsw`` multiply
u8 by s8. Weights are symmetric ``int8``, 7-bit where the kernel uses ``vpmaddubsw``.

``host`` / ``x86`` pick the best kernel the CPU has (VNNI, else AVX-512BW, else AVX2, else
TVM's generic code); ``x86-vnni``, ``x86-avx512`` and ``x86-avx2`` name one kernel and its
CPU explicitly, to cross-compile or to force a kernel.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from . import TargetSpec, register_target
from .base import LocalCpu
from .x86_intrinsics import AVX2, AVX512, VNNI, DotIntrinsic

INT8_FEATURES = ("avx512_vnni", "avx_vnni", "avx512bw", "avx2")


@dataclass(frozen=True)
class Kernel:
    """An int8 kernel: the CPU flag it needs, the intrinsic, and a CPU that has it (explicit targets)."""

    flag: str
    intrinsic: DotIntrinsic
    mcpu: str
    features: tuple[str, ...]  # the INT8_FEATURES that ``mcpu`` has


KERNELS = {  # best first
    "x86-vnni": Kernel("avx512_vnni", VNNI, "cascadelake", ("avx512_vnni", "avx512bw", "avx2")),
    "x86-avx512": Kernel("avx512bw", AVX512, "skylake-avx512", ("avx512bw", "avx2")),
    "x86-avx2": Kernel("avx2", AVX2, "haswell", ("avx2",)),
}


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


def best_kernel(flags: set[str]) -> Kernel | None:
    """The first kernel of :data:`KERNELS` whose CPU flag is in ``flags``."""
    return next((k for k in KERNELS.values() if k.flag in flags), None)


@register_target("host", "x86")
def host() -> TargetSpec:
    import tvm

    detected = tvm.target.Target.from_device(tvm.cpu())
    target = tvm.target.Target({**_as_dict(detected), "num-cores": _cores()})
    flags = cpu_flags()
    features = tuple(f for f in INT8_FEATURES if f in flags)
    kernel = best_kernel(flags)
    if kernel is None:
        return TargetSpec("x86", target, "uint8", features, schedule=_rule_schedules(None))
    return _spec("x86", target, features, kernel.intrinsic)


def _explicit(name: str):
    kernel = KERNELS[name]

    def factory() -> TargetSpec:
        import tvm

        target = tvm.target.Target({"kind": "llvm", "mcpu": kernel.mcpu, "num-cores": _cores()})
        spec = _spec(name, target, kernel.features, kernel.intrinsic)
        missing = [flag for flag in kernel.features if flag not in cpu_flags()]
        return _cross_compiled(spec, missing) if missing else spec

    return factory


def _cross_compiled(spec: TargetSpec, missing: list[str]) -> TargetSpec:
    """``spec`` on a CPU that lacks its ``missing`` flags: its code builds but would stop at the first
    instruction this CPU does not have, so nothing of it runs here. Calibration and evaluation run on
    the host's generic code in ``spec``'s integer scheme (the same integers), latency is not measured."""
    why = f"this CPU lacks {', '.join(missing)}, which {spec.name}'s code needs"
    analysis = dataclasses.replace(host(), activation_dtype=spec.activation_dtype, weight_qmax=spec.weight_qmax,
                                   legalize=None, search_space=None)
    executor = LocalCpu(timed=False, why_untimed=f"not measured ({why})", instrumented=False, why_unavailable=why)
    return dataclasses.replace(spec, executor=executor, analysis=analysis)


for _name in KERNELS:
    register_target(_name)(_explicit(_name))


def _spec(name: str, target, features: tuple[str, ...], intrinsic: DotIntrinsic) -> TargetSpec:
    from .x86_legalize import LegalizeForX86

    return TargetSpec(name, target, "uint8", features, prepare=intrinsic.register,
                      legalize=LegalizeForX86(intrinsic.lanes),
                      search_space=lambda task: packed_space(intrinsic, task), weight_qmax=intrinsic.weight_qmax,
                      schedule=_rule_schedules(intrinsic))


def _rule_schedules(intrinsic):
    """The kernels' schedules without tuning (:mod:`tvmq.targets.x86_default`)."""
    from .x86_default import ScheduleByRule

    return ScheduleByRule(intrinsic)


INPUT_QUANTIZE = "fused_divide_tir_round_add_minimum_maximum_cast"  # LegalizeForX86's quantize, fused


def packed_space(intrinsic, task_name: str):
    """Our sketches for the packed (int8, fp32) and depthwise convs (``intrinsic``: a dot product
    with ``name`` and ``lanes``, x86's or ARM's) and the input's quantize +
    transpose, auto-tensorization onto ``intrinsic`` for the other packed int8 kernels (dense),
    TVM's generic rules for the rest."""
    from . import x86_depthwise, x86_fp32, x86_int8, x86_sketch

    if x86_fp32.PREFIX + "conv2d" in task_name:
        return x86_sketch.fp32_conv_space(intrinsic.lanes)
    if x86_int8.PACKED_PREFIX + "conv2d" in task_name:
        return x86_sketch.conv_space(intrinsic.name, intrinsic.lanes)
    if x86_depthwise.PREFIX + "conv2d" in task_name:
        return x86_sketch.depthwise_space()
    if task_name.startswith(INPUT_QUANTIZE) and "transpose" in task_name:
        return x86_sketch.input_edge_space()
    return x86_int8.search_space(intrinsic.name) if x86_int8.PACKED_PREFIX in task_name else None


def _cores() -> int:
    from tvmq.threads import physical_cores

    return physical_cores()


def _as_dict(target) -> dict:
    out = {"kind": target.kind.name}
    for key in ("mtriple", "mcpu", "mattr"):
        if key in target.attrs:
            value = target.attrs[key]
            out[key] = list(value) if key == "mattr" else str(value)
    return out
