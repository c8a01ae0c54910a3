"""Build a Relax module for a target: optional MetaSchedule tuning, then ``tvm.compile``."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from tvmq.targets import TargetSpec

logger = logging.getLogger(__name__)


def bind_batch(mod, batch: int):
    """Fix a free batch dimension (the symbolic var ``batch``) to ``batch``."""
    from tvm import relax

    return relax.transform.BindSymbolicVars({"batch": batch})(mod)


def build(mod, spec: TargetSpec, trials: int = 0, work_dir: Path | None = None):
    """Compile ``mod`` for ``spec``; with ``trials`` > 0 tune first, recording into ``work_dir``."""
    import tvm

    if trials > 0:
        from .tune import tune

        mod = tune(mod, spec, trials, Path(work_dir))
    start = time.perf_counter()
    with tvm.transform.PassContext(opt_level=3):
        executable = tvm.compile(mod, target=spec.target)
    logger.debug("built in %.1f s", time.perf_counter() - start)
    return executable


def virtual_machine(executable):
    import tvm
    from tvm import relax

    return relax.VirtualMachine(executable, tvm.cpu())
