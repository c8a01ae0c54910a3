"""The target interface: what the compiler asks of a target, and nothing it decides itself.

A target says

* what to build for (``target``: the ``tvm.target.Target``);
* its int8 scheme: the activation dtype its dot products want, the weight range, the
  legalization that packs weights for its intrinsics, its design spaces per tuning task and
  TVM's generic rules for the rest (``space``);
* how to export a library (``exporter``: the ``fcompile`` of ``export_library``, None for the
  host compiler) and how to build tuning candidates (``builder``);
* how to compile a Relax module (``compiler``: None for ``tvm.compile`` with TVM's default
  pipeline; CUDA's schedules its kernels for the GPU), and the schedules its kernels get without
  tuning (``schedule``: a pass over the fused module that schedules every PrimFunc tuning left
  unscheduled; None: TVM's default loop nests);
* how to run and time a module (``executor``, :class:`Executor`): in this process, under
  emulation, or on a remote device; and whether it can run here at all (``unavailable``);
* where calibration and evaluation run (``analysis``: another target's spec, None for the
  target itself).

Modules built for a target (calibration, evaluation and deployment alike) run on its
executor, so every number a report gives was measured on the target's own code; a target
whose device may be absent (CUDA) names the host as its ``analysis`` target, and its report
says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol


class Executor(Protocol):
    """How a target's modules run and are measured."""

    timed: bool  # whether its clock says anything about the target's speed
    why_untimed: str  # what a report gives instead of a latency when it is not
    instrumented: bool  # whether its VMs call an instrument here (tvmq.profile times kernels with it)

    def device(self):
        """The ``tvm.runtime.Device`` its modules run on."""

    def vm(self, executable):
        """A Relax VM (``vm["main"](*tensors)``) running ``executable`` here or on the device."""

    def runner(self):
        """MetaSchedule's runner that measures tuning candidates."""

    def candidate_compiler(self, exporter):
        """The ``fcompile`` the tuning builder exports candidates with, for this runner to load."""

    def timer(self, vm, args: list, clock):
        """A function running ``vm["main"](*args)`` once and returning its seconds by the device's clock."""

    def unavailable(self) -> str | None:
        """Why modules cannot run here (None: they can)."""

    def measured_on(self) -> dict:
        """Where modules run and are measured, for the manifest and report."""


@dataclass(frozen=True)
class LocalCpu:
    """Runs modules in this process on the CPU tvmq runs on."""

    timed: bool = True
    why_untimed: str = ""
    instrumented: bool = True
    why_unavailable: str = ""  # non-empty: this CPU cannot run the target's code (e.g. lacks its ISA)

    def device(self):
        import tvm

        return tvm.cpu()

    def vm(self, executable):
        from tvm import relax

        return relax.VirtualMachine(executable, self.device())

    def runner(self):
        """A runner that times each candidate 10 times, flushing the CPU caches of all its arguments
        but the first before each run.

        In a model's run a kernel's first argument, its input, was just written by the kernel
        before, but its weights and output buffer come from memory. MetaSchedule's default
        (3 back-to-back runs, averaged) measures them cached, and so favours a schedule that
        re-reads a weight too large for the L2 (ResNet-50's last 3x3 convs: 2.4 MB) over one that
        streams it once.
        """
        from tvm.s_tir import meta_schedule as ms

        config = ms.runner.EvaluatorConfig(number=1, repeat=10, min_repeat_ms=0, enable_cpu_cache_flush=True)
        return ms.runner.LocalRunner(timeout_sec=30, evaluator_config=config)

    def candidate_compiler(self, exporter):
        """A tar of object files: the local runner links it with the host compiler when it loads it."""
        from tvm.support.tar import tar

        return tar

    def timer(self, vm, args: list, clock):
        return wall_timer(vm, args, clock)

    def unavailable(self) -> str | None:
        return self.why_unavailable or None

    def measured_on(self) -> dict:
        import platform

        return {"executor": "local", "host": platform.node()}


def wall_timer(vm, args: list, clock, sync=None):
    """A function running ``vm["main"](*args)`` once and returning the seconds ``clock`` saw pass
    (``sync``: waits for the device after the call, for a device whose launches return early)."""
    main = vm["main"]

    def run() -> float:
        start = clock()
        main(*args)
        if sync is not None:
            sync()
        return clock() - start

    return run


@dataclass(frozen=True)
class TargetSpec:
    """What the compiler needs to know about one target.

    ``activation_dtype`` is the int8 flavour the target's dot-product instructions want for
    activations. Weights are always symmetric int8 in ``[-weight_qmax, weight_qmax]``: 127, or
    63 (7-bit) where the target's kernel would saturate int16 with 8-bit weights.
    """

    name: str
    target: object  # tvm.target.Target
    activation_dtype: str
    features: tuple[str, ...] = field(default_factory=tuple)
    prepare: Callable[[], None] = lambda: None  # per-process setup before building or tuning
    legalize: Callable | None = None  # IRModule -> IRModule: conv / dense in the target's kernels and layouts
    search_space: Callable[[str], object] | None = None  # tuning task name -> space (None: generic)
    weight_qmax: int = 127
    executor: Executor = field(default_factory=LocalCpu)
    exporter: Callable | None = None  # export_library's fcompile; None: the host compiler
    compiler: Callable | None = None  # (IRModule, Target) -> executable; None: tvm.compile's default pipeline
    schedule: Callable | None = None  # fused IRModule -> IRModule: rule schedules for the unscheduled kernels
    analysis: "TargetSpec | None" = None  # the target calibration / evaluation modules run on; None: this one

    @property
    def description(self) -> str:
        bits = "" if self.weight_qmax == 127 else f"; {self.weight_bits}-bit weights"
        cpu = self.target.attrs.get("mcpu") or self.target.attrs.get("arch") or "generic"
        return (f"{self.name} ({cpu}; "
                f"{', '.join(self.features) or 'no int8 dot product'}{bits})")

    @property
    def weight_bits(self) -> int:
        """Bits of the symmetric weight range: 8 for [-127, 127], 7 for [-63, 63]."""
        from tvmq.passes.qparams import weight_bits

        return weight_bits(self.weight_qmax)

    def analysis_spec(self) -> "TargetSpec":
        """The target whose modules calibrate and evaluate for this one (itself unless ``analysis``)."""
        return self.analysis or self

    def space(self, task_name: str):
        """The design space of tuning task ``task_name``: the target's own, else :func:`generic_space`."""
        return (self.search_space and self.search_space(task_name)) or generic_space()

    def builder(self):
        """MetaSchedule's builder: candidates built in this process, exported for the executor's runner."""
        from .builder import in_process_builder

        return in_process_builder(self.executor.candidate_compiler(self.exporter))

    def runner(self):
        return self.executor.runner()


def generic_space():
    """TVM's generic CPU schedule rules, without auto-tensorization.

    MetaSchedule's default x86 and ARM spaces try their dot-product intrinsics on weights in
    their natural layout, which was measured to compute wrong results (shared/TOOLCHAIN.md,
    shared/arm/README.md); a target offers tensorizing spaces only for its own packed kernels
    (``TargetSpec.search_space``).
    """
    from tvm.s_tir import meta_schedule as ms

    return ms.space_generator.PostOrderApply(sch_rules="llvm", postprocs="llvm", mutator_probs="llvm")
