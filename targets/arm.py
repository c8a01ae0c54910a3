"""ARM aarch64 Linux CPUs (Raspberry Pi 4/5, Graviton, Jetson, phones), cross-compiled from here.

ARM's int8 dot products multiply signed by signed bytes (``sdot``), so activations are
symmetric ``int8`` and weights symmetric ``int8`` in the full [-127, 127]. Convs and dense
layers take the packed kernels of :mod:`tvmq.targets.x86_int8` with 4 lanes: weights packed
``[O/4, KH, KW, I/4, 4, 4]`` / ``[N/4, K/4, 4, 4]``, each 4 x 4 block the 16 contiguous bytes
one ``sdot`` reads; the requantize epilogue fuses into the kernel. Tuning uses the project's
own design spaces on those kernels (:func:`tvmq.targets.x86.packed_space` with the ARM
intrinsic), never TVM's default ARM space, which tensorizes natural-layout weights into wrong
results (shared/arm/README.md).

* ``arm``       ARMv8.2 + dotprod (default ``cortex-a76``: Raspberry Pi 5; Neoverse N1 alike): ``sdot``.
* ``arm-neon``  ARMv8.0 (``cortex-a53``: Raspberry Pi 3, A72 of the Pi 4): ``smull`` / ``saddlp``.

Modules are exported with ``aarch64-linux-gnu-g++`` and run here under ``qemu-aarch64`` with
``-cpu`` the target's ``mcpu`` (:mod:`tvmq.targets.qemu`).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import TargetSpec, register_target
from .arm_intrinsics import NEON, SDOT, ArmDot
from .qemu import CROSS_COMPILER, QemuUser

CORES = 4  # a Pi 5 / Pi 4 cluster: MetaSchedule's parallel extents


@dataclass(frozen=True)
class ArmCpu:
    """One ARM target: its CPU, the LLVM features it enables and the dot product it uses."""

    mcpu: str
    mattr: tuple[str, ...]
    intrinsic: ArmDot
    features: tuple[str, ...]


CPUS = {
    "arm": ArmCpu("cortex-a76", ("+neon", "+dotprod"), SDOT, ("dotprod",)),
    "arm-neon": ArmCpu("cortex-a53", ("+neon",), NEON, ("neon",)),
}


def _factory(name: str):
    cpu = CPUS[name]

    def factory() -> TargetSpec:
        import tvm
        from tvm.support import cc

        from .x86 import packed_space
        from .x86_legalize import LegalizeForX86

        target = tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": cpu.mcpu,
                                    "mattr": list(cpu.mattr), "num-cores": CORES})
        return TargetSpec(name, target, "int8", cpu.features, prepare=cpu.intrinsic.register,
                          legalize=LegalizeForX86(cpu.intrinsic.lanes, "int8"),
                          search_space=lambda task: packed_space(cpu.intrinsic, task),
                          weight_qmax=cpu.intrinsic.weight_qmax, executor=QemuUser(cpu.mcpu),
                          exporter=cc.cross_compiler(CROSS_COMPILER))

    return factory


for _name in CPUS:
    register_target(_name)(_factory(_name))
