"""MetaSchedule tuning with an in-process builder and a reusable JSON record database.

TVM's stock ``LocalBuilder`` starts worker processes that each import every tensor
intrinsic (~60 s) and time out here, failing every trial; building in this process,
with only the target's own intrinsics registered once, works (shared/TOOLCHAIN.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from tvmq.targets import TargetSpec

logger = logging.getLogger(__name__)


def tune(mod, spec: TargetSpec, trials: int, work_dir: Path):
    """``_tune`` holding the database's lock: one tvmq process tunes into ``work_dir`` at a time."""
    with _locked(work_dir):
        return _tune(mod, spec, trials, work_dir)


def _tune(mod, spec: TargetSpec, trials: int, work_dir: Path):
    """Lower ``mod`` to fused TIR, tune the tasks missing from ``work_dir``, apply the records.

    Tasks that already have records in ``work_dir`` are not tuned again, so a second build
    of the same model and target runs zero new trials. Returns ``(module, summary)`` with
    the number of tasks tuned now and taken from the database.
    """
    import tvm
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    with spec.target:
        mod = tvm.transform.Sequential([relax.transform.DecomposeOpsForInference(),
                                        relax.transform.CanonicalizeBindings(),
                                        relax.get_pipeline("zero")])(mod)
    database = _open_database(work_dir)
    tasks = ms.relax_integration.extract_tasks(mod, spec.target)
    missing = [t for t in tasks if database.query_tuning_record(t.dispatched[0], spec.target, t.task_name) is None]
    if missing:
        spec.prepare()
        _quiet_meta_schedule_console()
        start = time.perf_counter()
        logger.info("tuning %d of %d tasks with %d trials (records in %s)", len(missing), len(tasks), trials, work_dir)
        with tqdm(total=trials, desc="tune", unit="trial", leave=False) as bar:
            _tune_tasks(
                missing, work_dir=str(work_dir), max_trials_global=trials,
                max_trials_per_task=max(1, -(-trials // len(missing))), num_trials_per_iter=min(32, trials),
                builder=_in_process_builder(), runner=ms.runner.LocalRunner(timeout_sec=30), database=database,
                space=_search_space(), measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"),
                                                          _progress(bar)], seed=0)
        logger.info("tuned in %.1f s (per-task logs in %s)", time.perf_counter() - start, work_dir / "logs")
    else:
        logger.info("all %d tasks have tuning records in %s: no new trials", len(tasks), work_dir)
    summary = {"tasks": len(tasks), "tuned_now": len(missing), "from_database": len(tasks) - len(missing)}
    with spec.target, tvm.transform.PassContext(opt_level=3):
        return relax.transform.MetaScheduleApplyDatabase(str(work_dir), enable_warning=False)(mod), summary


def _tune_tasks(tasks, work_dir: str, space, seed: int, **options):
    """``tune_relax`` for the given tasks only: it would tune every task of the module again,
    spending a resumed run's budget on tasks that already have records."""
    from tvm.s_tir import meta_schedule as ms

    contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(tasks, work_dir, space=space, seed=seed)
    return ms.tune.tune_tasks(tasks=contexts, task_weights=weights, work_dir=work_dir, **options)


@contextlib.contextmanager
def _locked(work_dir: Path):
    """An exclusive ``flock`` on ``work_dir/.lock`` (the kernel drops it when a process dies).

    MetaSchedule's JSONDatabase numbers workloads by its in-memory count at open time and
    appends lines; two processes appending to one database would write records that point
    at each other's workloads. Tuning is therefore serialized per database; the second
    process then finds the first one's records and tunes only what is still missing.
    """
    import fcntl

    work_dir.mkdir(parents=True, exist_ok=True)
    with open(work_dir / ".lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("waiting for another tvmq process to finish tuning into %s", work_dir)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _open_database(work_dir: Path):
    """Open the JSON database, first cutting a torn last line left by a killed process.

    Records are appended one line at a time, so only the last line can be partial, and a
    partial workload line has no record pointing at it yet (records follow their workload).
    JSONDatabase would refuse to parse the whole file otherwise.
    """
    from tvm.s_tir import meta_schedule as ms

    for name in ("database_workload.json", "database_tuning_record.json"):
        path = work_dir / name
        data = path.read_bytes() if path.is_file() else b""
        if data and not data.endswith(b"\n"):
            logger.warning("dropping a partial line at the end of %s (an interrupted run)", path)
            with open(path, "r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)
    return ms.database.JSONDatabase(work_dir=str(work_dir), module_equality="structural")


def _quiet_meta_schedule_console() -> None:
    """Keep MetaSchedule's per-round tables in its log files, off the console (unless debugging)."""
    if not logger.isEnabledFor(logging.DEBUG):
        logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)


def _progress(bar):
    """A measure callback that advances ``bar`` by each round's measured candidates."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    @derived_object
    class Progress(ms.measure_callback.PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            bar.update(len(runner_results))

    return Progress()


def _search_space():
    """TVM's generic CPU schedule rules, without auto-tensorization.

    MetaSchedule's default x86 space tries the VNNI intrinsic on weights in their natural
    layout, which was measured to compute wrong results (shared/TOOLCHAIN.md); int8
    intrinsics come with pre-packed weights, not before.
    """
    from tvm.s_tir import meta_schedule as ms

    return ms.space_generator.PostOrderApply(sch_rules="llvm", postprocs="llvm", mutator_probs="llvm")


def _in_process_builder():
    import tvm
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock
    from tvm.support.tar import tar

    @derived_object
    class InProcessBuilder(ms.builder.PyBuilder):
        """Build each candidate in this process and export it as a tar for the runner."""

        def build(self, build_inputs):
            results = []
            for item in build_inputs:
                try:
                    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(item.mod)
                    built = tvm.tirx.build(mod, target=item.target)
                    path = os.path.join(tempfile.mkdtemp(prefix="tvmq-ms-"), "candidate." + tar.output_format)
                    built.export_library(path, fcompile=tar)
                    results.append(ms.builder.BuilderResult(path, None))
                except Exception as err:  # a failing candidate is a tuning outcome, not an error
                    results.append(ms.builder.BuilderResult(None, f"{type(err).__name__}: {err}"[:2000]))
            return results

    return InProcessBuilder()
