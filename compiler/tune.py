"""MetaSchedule tuning with a reusable JSON record database; the target gives the builder, the
runner and the design spaces (:mod:`tvmq.targets.base`)."""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

from tqdm import tqdm

from tvmq.errors import TvmqError
from tvmq.targets import TargetSpec

logger = logging.getLogger(__name__)


def tune(mod, spec: TargetSpec, trials: int, work_dir: Path, share: int | None = None):
    """``_tune`` holding the database's lock: one tvmq process tunes into ``work_dir`` at a time."""
    with _locked(work_dir):
        return _tune(mod, spec, trials, work_dir, share)


def _tune(mod, spec: TargetSpec, trials: int, work_dir: Path, share: int | None = None):
    """Lower ``mod`` to fused TIR, tune what the budget still asks of ``work_dir``, apply the records.

    Each task is owed ``share`` trials: given, or ``trials`` split evenly over the tasks. A task
    tuned before to at least its share (:func:`_trials_done`) is not tuned again, so a second
    build of the same model and target runs zero new trials, a larger budget tunes on from the
    best records, and a killed run resumes; a rebuild passes the first build's ``share`` so that
    its new kernels get as many trials as the first build's did. Returns ``(module, summary)``:
    the share, the tasks tuned now, taken from the database and without any record before.
    """
    import tvm
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    mod = relax.transform.FuseTIR()(fuse(mod, spec))  # fuse() enters the target itself
    spec.prepare()  # first: reading records that use the target's tensor intrinsics needs them registered
    database = _open_database(work_dir)
    tasks = ms.relax_integration.extract_tasks(mod, spec.target)
    share = share or max(1, -(-trials // len(tasks)))
    ledger = _Ledger(work_dir)
    done = [_trials_done(database, ledger, task, share) for task in tasks]
    owed = {i: share - n for i, n in enumerate(done) if n < share}
    measured, seconds = _tune_owed(tasks, owed, share, spec, work_dir, database, ledger) if owed else (0, 0.0)
    if not owed:
        logger.info("all %d tasks have tuning records in %s: no new trials", len(tasks), work_dir)
    summary = {"tasks": len(tasks), "share": share, "tuned_now": len(owed), "from_database": len(tasks) - len(owed),
               "no_record": done.count(0), "measured": measured, "seconds": round(seconds, 1),
               "kernels": _kernel_latencies(database, tasks)}
    with spec.target, database, tvm.transform.PassContext(opt_level=3):
        try:
            return relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod), summary
        except tvm.s_tir.schedule.ScheduleError:
            raise _unreadable(work_dir, "ScheduleError") from None


def _tune_owed(tasks: list, owed: dict, share: int, spec: TargetSpec, work_dir: Path, database,
               ledger: "_Ledger") -> tuple[int, float]:
    """Tune every task in ``owed`` (task index -> trials still owed) for exactly what it is owed:
    one MetaSchedule run per group of tasks owed alike (:func:`_by_owed`), its per-task cap that
    count and its global budget the group's total, each group recorded in the ledger as it ends.

    One run for all of them, with one global budget and the largest debt as every task's cap,
    let the task scheduler hand the budget unevenly: a latency fallback's rebuild gave 45 new
    kernels about 3 trials each. Returns the candidates measured and the seconds it took.
    """
    budget = sum(owed.values())
    logger.info("tuning %d of %d tasks with %d trials, %d each (records in %s)", len(owed), len(tasks), budget,
                share, work_dir)
    start, measured = time.perf_counter(), 0
    with tqdm(total=budget, desc="tune", unit="trial", leave=False, disable=None) as bar:
        for count, group in _by_owed(owed):
            measured += _tune_group([tasks[i] for i in group], count, spec, work_dir, database, bar)
            ledger.record(database, [tasks[i] for i in group], share)
    seconds = time.perf_counter() - start
    logger.info("tuned %d candidates in %.1f s (%.0f a minute; per-task logs in %s)", measured, seconds,
                60 * measured / max(seconds, 1e-9), work_dir / "logs")
    return measured, seconds


def _by_owed(owed: dict) -> list[tuple[int, list]]:
    """``owed`` (task -> trials still owed) grouped by that count, largest debt first:
    ``{0: 8, 1: 3, 2: 8}`` -> ``[(8, [0, 2]), (3, [1])]``."""
    groups: dict = {}
    for task, count in owed.items():
        groups.setdefault(count, []).append(task)
    return sorted(groups.items(), key=lambda item: -item[0])


def _tune_group(tasks: list, trials_each: int, spec: TargetSpec, work_dir: Path, database, bar) -> int:
    """One MetaSchedule run giving each of ``tasks`` ``trials_each`` trials; returns the candidates measured."""
    from tvm.s_tir import meta_schedule as ms

    contexts, weights = _tune_contexts(tasks, spec, work_dir, _round_size(trials_each))
    _quiet_meta_schedule_console()  # after the contexts: making their loggers configures logging
    progress = _progress(bar)
    ms.tune.tune_tasks(tasks=contexts, task_weights=weights, work_dir=str(work_dir),
                       max_trials_global=trials_each * len(tasks), max_trials_per_task=trials_each,
                       num_trials_per_iter=_round_size(trials_each), builder=spec.builder(),
                       runner=spec.runner(), database=database,
                       measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"), progress,
                                          _stop_exhausted()])
    return progress.measured


def _round_size(trials_per_task: int, largest: int = 32) -> int:
    """Candidates per search round: at most ``largest``, in rounds of equal size. Each round pays a
    whole evolutionary search (about half a minute a task here), so 37 trials run as 19 + 18,
    not 32 + 5."""
    rounds = -(-trials_per_task // largest)
    return -(-trials_per_task // rounds)


def _trials_done(database, ledger: "_Ledger", task, share: int) -> int:
    """How many of ``share`` trials ``task`` already had: its records (a killed run's count too),
    or the share of a finished run, which may have measured fewer (a small space runs out)."""
    mod = task.dispatched[0]
    if not database.has_workload(mod):
        return 0
    workload = database.commit_workload(mod)  # the stored one: has_workload said it is there
    return max(len(database.get_top_k(workload, share)), ledger.trials(workload))


class _Ledger:
    """``trials.json`` in the database directory: the trials each workload was given by tuning
    runs that finished, keyed by MetaSchedule's structural hash of the workload."""

    def __init__(self, work_dir: Path):
        import json

        self.path = work_dir / "trials.json"
        self.given = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def trials(self, workload) -> int:
        return int(self.given.get(_workload_key(workload), 0))

    def record(self, database, tasks: list, share: int) -> None:
        import json

        from tvmq.fileio import atomic_write_bytes

        for task in tasks:
            key = _workload_key(database.commit_workload(task.dispatched[0]))
            self.given[key] = max(self.given.get(key, 0), share)
        atomic_write_bytes(self.path, json.dumps(self.given, indent=0, sort_keys=True).encode())


def _workload_key(workload) -> str:
    return str(workload.as_json()[0])


def fuse(mod, spec: TargetSpec):
    """``mod`` as tuning lowers it, up to FuseOps: TVM's "zero" pipeline without its FuseTIR, and
    8-bit tensors between kernels where FuseOps would widen them first (``sink_dequantize``).

    Each fused Relax function still holds the original bindings (their variable names kept);
    FuseTIR then turns each into the PrimFunc of the same name, one tuning task per distinct one.
    """
    import tvm
    from tvm import relax

    from tvmq.passes.sink_dequantize import sink_dequantize

    with spec.target:
        return tvm.transform.Sequential([relax.transform.DecomposeOpsForInference(),
                                         relax.transform.CanonicalizeBindings(),
                                         relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
                                         relax.transform.FoldConstant(), relax.transform.FuseOps(),
                                         sink_dequantize])(mod)


def _kernel_latencies(database, tasks: list) -> list[dict]:
    """Each task's best measured latency in the database, slowest total first: where the time goes."""
    rows = []
    for task in tasks:
        record = database.query_tuning_record(task.dispatched[0], task.target, task.task_name)
        if record is not None and record.run_secs:
            us = 1e6 * sum(float(t) for t in record.run_secs) / len(record.run_secs)
            rows.append({"kernel": task.task_name, "calls": int(task.weight), "us": round(us, 2)})
    return sorted(rows, key=lambda r: -r["us"] * r["calls"])


def _search(round_size: int):
    """MetaSchedule's evolutionary search with a population of ``16 * round_size`` (at most its
    default, 512): every round evolves the whole population on the cost model, so a 512 population
    for a round of 2 candidates is what made a task cost 20-30 s before its first measurement.
    Measured on the MobileNetV3 block of the tests (20 tasks, 24 trials): 199 s with 512, 88 s
    with 16, the same latencies within the timing's noise."""
    from tvm.s_tir import meta_schedule as ms

    population = min(512, 16 * round_size)
    return ms.search_strategy.EvolutionarySearch(population_size=population,
                                                 init_min_unmeasured=min(50, population))


def _tune_contexts(tasks: list, spec: TargetSpec, work_dir: Path, round_size: int):
    """One tuning context per task (as MetaSchedule's relax integration makes them), each with
    the target's search space for that task and a search sized to its rounds (:func:`_search`)."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.utils import fork_seed

    loggers = _task_loggers(work_dir, [t.task_name for t in tasks])
    contexts = [ms.TuneContext(mod=task.dispatched[0], target=task.target, task_name=task.task_name,
                               space_generator=spec.space(task.task_name), search_strategy=_search(round_size), logger=task_logger,
                               rand_state=seed, num_threads="physical").clone()
                for task, task_logger, seed in zip(tasks, loggers, fork_seed(0, n=len(tasks)))]
    return contexts, [t.weight for t in tasks]


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
    try:
        return ms.database.JSONDatabase(work_dir=str(work_dir), module_equality="structural")
    except Exception as err:  # reading a record replays its schedule on its workload
        raise _unreadable(work_dir, type(err).__name__) from None


def _unreadable(work_dir: Path, why: str) -> TvmqError:
    """A database whose records name blocks its workloads lack: MetaSchedule matches workloads
    by structure, block names aside, so records of a kernel renamed between tvmq versions attach
    to the old workload and no longer replay."""
    return TvmqError(f"cannot use the tuning database {work_dir}: its records do not replay on this tvmq's "
                     f"kernels (made by another version?); remove it or use another --tuning-db ({why})")


def _task_loggers(work_dir: Path, names: list[str]) -> list:
    """MetaSchedule's per-task loggers. Its logging setup lists the handlers already on its
    global logger by name and fails on an unnamed one (another library's or a test's), so
    those are set aside while it configures logging."""
    from tvm.s_tir.meta_schedule.logging import get_loggers_from_work_dir

    global_logger = logging.getLogger("tvm.s_tir.meta_schedule")
    unnamed = [h for h in global_logger.handlers if h.get_name() is None]
    for handler in unnamed:
        global_logger.removeHandler(handler)
    try:
        return get_loggers_from_work_dir(str(work_dir), names)
    finally:
        for handler in unnamed:
            global_logger.addHandler(handler)


def _quiet_meta_schedule_console() -> None:
    """Keep MetaSchedule's per-round tables in its log files, off the console (unless debugging)."""
    if not logger.isEnabledFor(logging.DEBUG):
        logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)


def _progress(bar):
    """A measure callback that counts measured candidates and advances ``bar`` (which is
    silent when the output is not a terminal) by each round's."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    @derived_object
    class Progress(ms.measure_callback.PyMeasureCallback):
        measured = 0

        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            self.measured += len(runner_results)
            bar.update(len(runner_results))

    return Progress()


def _stop_exhausted():
    """A measure callback that ends a task whose round had no candidate left to measure.

    A small design space (a depthwise sketch has a few dozen schedules) runs out before its
    share of the budget. MetaSchedule's evolutionary search then returns an empty round
    instead of ending the task, and the scheduler keeps picking it: each empty round cost a
    whole search (~20 s), and a module whose tasks all run out could never reach its budget.
    Ended from the callback, the task leaves the scheduler's live set before it picks again.
    """
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    @derived_object
    class StopExhausted(ms.measure_callback.PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            if not measure_candidates:
                logger.debug("task %d has no unmeasured schedule left: ending it", task_id)
                task_scheduler.terminate_task(task_id)

    return StopExhausted()
