"""NVIDIA GPUs through CUDA: int8 convs and dense layers on ``__dp4a``, built with or without a GPU.

* ``cuda``  the GPU architecture from ``$TVMQ_CUDA_ARCH`` (``sm_61`` or later: ``dp4a``), else
  the GPU of this machine, else ``sm_80`` (A100).

Activations and weights are symmetric ``int8`` (``__dp4a`` multiplies signed bytes exactly,
so weights keep the full [-127, 127]). :class:`~tvmq.targets.cuda_legalize.LegalizeForCuda`
puts int8 convs (NHWC) and dense layers on the word kernels of
:mod:`tvmq.targets.cuda_int8`, the requantize epilogue fused into each; untuned builds get
:mod:`tvmq.targets.cuda_schedule` (our dp4a rule, then DLight's GPU rules), tuning uses
MetaSchedule's stock CUDA rules (every task: the dp4a kernels need no tensor intrinsic).

Code generation runs anywhere; each build is also compiled to PTX with ``nvcc`` for the
architecture when ``nvcc`` is on the PATH, so a kernel that does not compile fails here and
not on the device. TVM 0.27's CUDA module carries the CUDA source, which the runtime compiles
when the GPU loads it (NVRTC, or ``nvcc`` when NVRTC's Python bindings are absent).

Calibration and evaluation run on the host (:attr:`TargetSpec.analysis`), GPU or not: the
integer arithmetic is the same (``scripts/gpu_check.py`` checks the GPU's results against the
host's bit for bit), so a report's accuracy is the host's integer simulation and says so.
Without a GPU, modules are built but not run: latency is "not measured (no GPU here)", and
tuning (``--trials`` > 0) stops with one error line (its runner times candidates on the GPU).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass

from tvmq.errors import TvmqError

from . import TargetSpec, register_target
from .base import wall_timer

logger = logging.getLogger(__name__)

DEFAULT_ARCH = "sm_80"
MIN_SM = 61  # __dp4a
# every architecture since sm_61 has these (per block: 1024 threads, 48 KB of static shared memory,
# 64 K registers); MetaSchedule's CUDA rules and GPU code verification read them off the target
LIMITS = {"max_threads_per_block": 1024, "max_num_threads": 1024, "max_shared_memory_per_block": 49152,
          "registers_per_block": 65536, "thread_warp_size": 32}


def cuda_arch() -> str:
    """``$TVMQ_CUDA_ARCH``, else this machine's GPU (``sm_XY``), else :data:`DEFAULT_ARCH`."""
    given = os.environ.get("TVMQ_CUDA_ARCH")
    if given:
        match = re.fullmatch(r"sm_(\d+)[a-z]?", given)
        if not match:
            raise TvmqError(f"TVMQ_CUDA_ARCH={given!r} is not a CUDA architecture like sm_80")
        if int(match.group(1)) < MIN_SM:
            raise TvmqError(f"TVMQ_CUDA_ARCH={given}: the int8 kernels need __dp4a, sm_{MIN_SM} or later")
        return given
    if gpu_present():
        import tvm

        return "sm_" + tvm.cuda(0).compute_version.replace(".", "")
    return DEFAULT_ARCH


def gpu_present() -> bool:
    import tvm

    return bool(tvm.cuda(0).exist)


def gpu_name() -> str | None:
    """The GPU's name (``tvm.cuda(0).device_name``), None without one."""
    import tvm

    return str(tvm.cuda(0).device_name) if gpu_present() else None


@register_target("cuda")
def cuda() -> TargetSpec:
    import tvm

    from .cuda_legalize import LegalizeForCuda

    arch = cuda_arch()
    target = tvm.target.Target({"kind": "cuda", "arch": arch, **LIMITS})
    return TargetSpec("cuda", target, "int8", ("dp4a",), legalize=LegalizeForCuda(),
                      search_space=lambda _task: cuda_space(), executor=CudaGpu(arch, timed=gpu_present()),
                      compiler=compile_module, analysis=_host())


def _host() -> TargetSpec:
    from . import get_target

    return get_target("host")


def cuda_space():
    """MetaSchedule's CUDA rules, post-processors and mutators (``ScheduleRule::DefaultCUDA``)."""
    from tvm.s_tir import meta_schedule as ms

    return ms.space_generator.PostOrderApply(sch_rules="cuda", postprocs="cuda", mutator_probs="cuda")


def compile_module(mod, target):
    """``tvm.compile`` with tvmq's CUDA pipeline (:func:`tvmq.targets.cuda_schedule.pipeline`),
    then the kernels compiled to PTX by ``nvcc`` (when it is installed) as a check."""
    import tvm

    from .cuda_schedule import pipeline

    executable = tvm.compile(mod, target=target, relax_pipeline=pipeline(target))
    if shutil.which("nvcc") is None:
        logger.warning("nvcc not found: the CUDA kernels were generated but not compiled here")
    elif cuda_source(executable) is not None:
        ptx(executable, target)
    return executable


def cuda_source(executable) -> str | None:
    """The CUDA C source of ``executable``'s kernels (None: it has no CUDA module)."""
    pending = [getattr(executable, "mod", executable)]
    while pending:
        module = pending.pop()
        if module.kind == "cuda":
            return module.inspect_source()
        pending.extend(module.imports_)
    return None


def ptx(executable, target) -> str:
    """``executable``'s kernels compiled by ``nvcc`` to PTX for ``target``'s architecture."""
    from tvm.support import nvcc

    source = cuda_source(executable)
    if source is None:
        raise TvmqError("the module has no CUDA kernels")
    if shutil.which("nvcc") is None:
        raise TvmqError("nvcc not found: install the CUDA toolkit to compile CUDA kernels here")
    arch = str(target.attrs["arch"])
    try:
        with target:
            return nvcc.compile_cuda(source, target_format="ptx", arch=arch, compiler="nvcc").decode()
    except RuntimeError as err:
        raise TvmqError(f"nvcc failed on the generated CUDA kernels for {arch}: {_first_error(str(err))}") from None


def _first_error(log: str) -> str:
    lines = [line for line in log.splitlines() if "error" in line.lower()]
    return (lines or log.splitlines() or ["(no output)"])[0].strip()


@dataclass(frozen=True)
class CudaGpu:
    """Runs modules on GPU 0; ``timed`` only where there is one."""

    arch: str
    timed: bool = True
    why_untimed: str = "not measured (no GPU here)"
    instrumented: bool = True  # its VMs run in this process: tvmq.profile's instrument sees each kernel

    def device(self):
        import tvm

        return tvm.cuda(0)

    def vm(self, executable) -> "DeviceVM":
        from tvm import relax

        why = self.unavailable()
        if why:
            raise TvmqError(f"cannot run CUDA modules here: {why}")
        jit_settings()
        return DeviceVM(relax.VirtualMachine(executable, self.device()), self.device())

    def runner(self):
        from tvm.s_tir import meta_schedule as ms

        why = self.unavailable()
        if why:
            raise TvmqError(f"tuning times candidates on the GPU, and {why}: build with --trials 0")
        jit_settings()
        config = ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=40, enable_cpu_cache_flush=False)
        return ms.runner.LocalRunner(timeout_sec=30, evaluator_config=config)

    def candidate_compiler(self, exporter):
        from tvm.support.tar import tar

        return tar

    def unavailable(self) -> str | None:
        return None if gpu_present() else "there is no CUDA GPU here"

    def timer(self, vm, args: list, clock):
        """One run by ``clock``, the GPU synchronized after it: a kernel launch returns before the kernel ends."""
        return wall_timer(vm, args, clock, self.device().sync)

    def measured_on(self) -> dict:
        return {"executor": "cuda", "arch": self.arch, "gpu": gpu_present()}


# Float ops IEEE-exact on the GPU (TVM compiles CUDA with --use_fast_math), so that a module's
# quantize / requantize / dequantize round as the host's do and its outputs equal them bit for bit.
EXACT_NVRTC = "--ftz=false --prec-div=true --prec-sqrt=true --fmad=false"
EXACT_NVCC = "--fmad=false"


def jit_settings() -> None:
    """Set up how the runtime compiles a module's CUDA source when the GPU loads it: NVRTC when
    its Python bindings are installed, else ``nvcc`` (``TVM_CUDA_COMPILE_MODE``); exact float
    math either way (settings already in the environment win)."""
    try:
        import cuda.bindings.nvrtc  # noqa: F401
    except ImportError:
        if shutil.which("nvcc"):
            os.environ.setdefault("TVM_CUDA_COMPILE_MODE", "nvcc")
    os.environ.setdefault("TVM_CUDA_NVRTC_EXTRA_OPTS", EXACT_NVRTC)
    os.environ.setdefault("TVM_CUDA_NVCC_NO_FAST_MATH", "1")
    os.environ.setdefault("NVCC_APPEND_FLAGS", EXACT_NVCC)


class DeviceVM:
    """A Relax VM on a GPU: ``vm["main"](*tensors)`` copies arguments that are not on the GPU there
    (the timers pass theirs on the GPU already) and returns once the GPU has finished, its
    tensors on the GPU."""

    def __init__(self, vm, device):
        self.vm, self.device = vm, device

    def __getitem__(self, func: str):
        function = self.vm[func]

        def call(*args):
            result = function(*[self._on_device(a) for a in args])
            self.device.sync()  # a host clock around the call times the GPU's work
            return result

        return call

    def set_instrument(self, instrument) -> None:
        self.vm.set_instrument(instrument)

    def _on_device(self, value):
        import numpy as np
        import tvm

        if isinstance(value, tvm.runtime.Tensor) and value.device == self.device:
            return value
        return tvm.runtime.tensor(value.numpy() if hasattr(value, "numpy") else np.asarray(value), self.device)
