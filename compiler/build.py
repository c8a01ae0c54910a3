"""Build a Relax module for a target: optional MetaSchedule tuning, then ``tvm.compile``."""

from __future__ import annotations

import logging
import time

from tvmq.targets import TargetSpec

logger = logging.getLogger(__name__)


def bind_batch(mod, batch: int):
    """Fix a free batch dimension (the symbolic var ``batch``) to ``batch``."""
    from tvm import relax

    return relax.transform.BindSymbolicVars({"batch": batch})(mod)


def build(mod, spec: TargetSpec):
    """Compile ``mod`` (tuned or not: see ``tvmq.tune``) for ``spec``."""
    import tvm

    start = time.perf_counter()
    with tvm.transform.PassContext(opt_level=3):
        executable = tvm.compile(mod, target=spec.target)
    logger.debug("built in %.1f s", time.perf_counter() - start)
    return executable


def virtual_machine(executable):
    import tvm
    from tvm import relax

    return relax.VirtualMachine(executable, tvm.cpu())
