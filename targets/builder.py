"""MetaSchedule's builder for every target: candidates built on threads of this process.

TVM's stock ``LocalBuilder`` starts worker processes that each import every tensor
intrinsic (~60 s) and time out here, failing every trial; building in this process,
with only the target's own intrinsics registered once, works (shared/TOOLCHAIN.md).
"""

from __future__ import annotations

import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

BUILD_SECONDS = 20  # a candidate normally builds in 0.2-1 s


def in_process_builder(fcompile):
    """A builder exporting each candidate with ``fcompile`` (a tar for the local runner, a
    cross-compiled ``.so`` for a device's)."""
    import tvm
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    suffix = getattr(fcompile, "output_format", "so")

    def build_one(item):
        try:
            mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(item.mod)
            built = tvm.tirx.build(mod, target=item.target)
            path = os.path.join(tempfile.mkdtemp(prefix="tvmq-ms-"), "candidate." + suffix)
            built.export_library(path, fcompile=fcompile)
            return ms.builder.BuilderResult(path, None)
        except Exception as err:  # a failing candidate is a tuning outcome, not an error
            return ms.builder.BuilderResult(None, f"{type(err).__name__}: {err}"[:2000])

    @derived_object
    class InProcessBuilder(ms.builder.PyBuilder):
        """Build candidates on threads of this process (TVM's build releases the GIL: two
        threads halve a round's build time on two cores) and export each for the runner.

        A candidate still building at the round's deadline fails as timed out, and the round
        goes on: LLVM once spent over ten minutes on one heavily unrolled candidate. Its thread
        cannot be stopped and finishes in the background.
        """

        def build(self, build_inputs):
            pool = ThreadPoolExecutor(max_workers=build_threads())
            futures = [pool.submit(build_one, item) for item in build_inputs]
            deadline = time.monotonic() + BUILD_SECONDS * (1 + len(futures) // build_threads())
            try:
                return [_result_by(future, deadline) for future in futures]
            finally:
                pool.shutdown(wait=False, cancel_futures=True)

    def _result_by(future, deadline: float):
        try:
            return future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            return ms.builder.BuilderResult(None, f"build timed out (over {BUILD_SECONDS} s a candidate)")

    return InProcessBuilder()


def build_threads() -> int:
    from tvmq.threads import physical_cores

    return physical_cores()
