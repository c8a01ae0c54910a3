"""Build a Relax module for a target: optional MetaSchedule tuning, then ``tvm.compile``."""

from __future__ import annotations

import functools
import logging
import time

from tvmq.targets import LocalCpu, TargetSpec

logger = logging.getLogger(__name__)


def bind_batch(mod, batch: int):
    """Fix a free batch dimension (the symbolic var ``batch``) to ``batch``."""
    from tvm import relax

    return relax.transform.BindSymbolicVars({"batch": batch})(mod)


def build(mod, spec: TargetSpec):
    """Compile ``mod`` (tuned or not: see ``tvmq.tune``) for ``spec``; kernels without a tuned
    schedule get the target's rule schedule (``spec.schedule``) first."""
    start = time.perf_counter()
    executable = None
    if spec.schedule is not None:
        try:
            executable = _compiled(scheduled_by_rule(mod, spec), spec)
        except Exception as err:  # a rule's schedule that TVM cannot lower: its loop nests still build
            logger.warning("the rule schedules did not build (%s: %s); building TVM's unscheduled loops",
                           type(err).__name__, str(err).strip().splitlines()[-1] if str(err).strip() else "")
    if executable is None:
        executable = _compiled(mod, spec)
    logger.debug("built in %.1f s", time.perf_counter() - start)
    return _built(executable.mod, spec)


def _compiled(mod, spec: TargetSpec):
    import tvm

    with tvm.transform.PassContext(opt_level=3):
        return spec.compiler(mod, spec.target) if spec.compiler else tvm.compile(mod, target=spec.target)


def scheduled_by_rule(mod, spec: TargetSpec):
    """``mod`` fused into kernels as tuning fuses it (:func:`tvmq.tune.fuse`), every kernel without
    a schedule (no tuning record) scheduled by ``spec.schedule``."""
    import tvm
    from tvm import relax

    from .tune import fuse

    spec.prepare()  # the target's tensor intrinsics, which its schedules tensorize onto
    fused = relax.transform.FuseTIR()(fuse(mod, spec))
    with spec.target, tvm.transform.PassContext(opt_level=3):
        return spec.schedule(fused)


def virtual_machine(executable):
    """A VM running ``executable`` where its target runs modules (:class:`tvmq.targets.Executor`)."""
    return executor_of(executable).vm(executable)


def executor_of(executable):
    """The executor of the target ``executable`` was built for (this CPU for a foreign one)."""
    spec = getattr(executable, "spec", None)
    return spec.executor if spec is not None else LocalCpu()


def _built(module, spec: TargetSpec):
    built = _built_class()(module)
    built.spec = spec
    return built


@functools.cache
def _built_class():
    from tvm.runtime import Executable

    class Built(Executable):
        """An executable that remembers its target (``spec``): it exports with the target's
        compiler and runs on the target's executor."""

        def export_library(self, file_name, **kwargs):
            if self.spec.exporter is not None:
                kwargs.setdefault("fcompile", self.spec.exporter)
            return super().export_library(file_name, **kwargs)

    return Built
