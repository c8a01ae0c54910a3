"""MetaSchedule tuning with a reusable JSON record database; the target gives the builder, the
runner and the design spaces (:mod:`tvmq.targets.base`)."""

from __future__ import annotations

import contextlib
import logging
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from tvmq.errors import TvmqError
from tvmq.targets import TargetSpec

logger = logging.getLogger(__name__)

TASK_TRIALS = 64  # a task's trial cap under a time budget when --trials sets none
ROUND_TRIALS = 8  # candidates per round under a time budget: the deadline and the stall are checked each round
FIRST_ROUND_S = 10.0  # a round's cost before one was timed (8 candidates of a conv: ~11 s on 2 shared cores)
STALL_ROUNDS, STALL_GAIN = 2, 0.02  # stopped improving: its best gained under 2% in its last 2 rounds
TIME_SPLIT = {"fp32": 0.4, "int8": 0.4, "int8_rebuild": 0.2}  # a compile's tuning time per module, nominally
DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600}


def parse_duration(value) -> float:
    """Seconds in ``value``: a number of seconds, or ``"90s"``, ``"10m"``, ``"1.5h"``; >= 0."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)\s*", str(value).lower())
    if isinstance(value, bool) or match is None:
        raise TvmqError(f"tuning time {value!r} (--tuning-time, Config.tuning_time) is not a duration: "
                        f"give seconds (90) or 90s, 10m, 1h")
    return float(match.group(1)) * DURATION_UNITS[match.group(2)]


@dataclass(frozen=True)
class TimeBudget:
    """A wall-clock tuning budget for one module: ``seconds`` nominal (what a rerun compares with:
    a task that a finished run with that much time included is not tuned again), spent until ``deadline``
    (``time.monotonic()``, which may lie later: time the phases before left over). ``profile``
    builds the fused, untuned module it is given and returns its kernel rows
    (:func:`tvmq.profile.profile`): each task's share of the runtime."""

    seconds: float
    deadline: float
    profile: Callable[[object], list[dict]] | None = None

    def left(self) -> float:
        return self.deadline - time.monotonic()


class TuningClock:
    """One compile's tuning time, split into phases (fp32, int8, the fallback's rebuild): a phase
    gets ``fraction`` of the whole nominally, and may spend what the phases before it left."""

    def __init__(self, seconds: float):
        self.seconds, self.end, self.given = seconds, time.monotonic() + seconds, 0.0

    def phase(self, fraction: float, profile: Callable | None = None) -> TimeBudget:
        nominal = fraction * self.seconds
        self.given += nominal
        reserved = max(0.0, self.seconds - self.given)  # the later phases' nominal time
        return TimeBudget(nominal, max(time.monotonic(), self.end - reserved), profile)


def tune(mod, spec: TargetSpec, trials: int, work_dir: Path, share: int | None = None,
         budget: TimeBudget | None = None):
    """``_tune`` holding the database's lock: one tvmq process tunes into ``work_dir`` at a time."""
    with _locked(work_dir):
        return _tune(mod, spec, trials, work_dir, share, budget)


def _tune(mod, spec: TargetSpec, trials: int, work_dir: Path, share: int | None = None,
          budget: TimeBudget | None = None):
    """Lower ``mod`` to fused TIR, tune what the budget still asks of ``work_dir``, apply the records.

    Each task is owed ``share`` trials: given, or ``trials`` split evenly over the tasks (under a
    time ``budget`` without trials: :data:`TASK_TRIALS`). A task tuned before to at least its share
    (:func:`_trials_done`) is not tuned again, so a second build of the same model and target runs
    zero new trials, a larger budget tunes on from the best records, and a killed run resumes; a
    rebuild passes the first build's ``share`` so that its new kernels get as many trials as the
    first build's did. Under a time ``budget`` the tasks still owed are tuned by
    :func:`_tune_in_time`, but not those that a finished run with as much time included.
    Returns ``(module, summary)``: the share, the tasks tuned now, taken from the database and
    without any record before, and under a budget what each task got (``time_budget``).
    """
    import tvm
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    mod = relax.transform.FuseTIR()(fuse(mod, spec))  # fuse() enters the target itself
    spec.prepare()  # first: reading records that use the target's tensor intrinsics needs them registered
    database = _open_database(work_dir)
    tasks = ms.relax_integration.extract_tasks(mod, spec.target)
    share = share or (max(1, -(-trials // len(tasks))) if trials or budget is None else TASK_TRIALS)
    ledger = _Ledger(work_dir)
    done = [_trials_done(database, ledger, task, share) for task in tasks]
    owed = {i: share - n for i, n in enumerate(done) if n < share}
    timed = None
    if budget is not None:  # a task that runs before gave this much time (or more) is not tuned again
        owed = {i: n for i, n in owed.items() if ledger.seconds(tasks[i]) < budget.seconds}
    if budget is not None and owed:
        timed = _tune_in_time(mod, tasks, owed, share, spec, work_dir, database, ledger, budget)
        measured, seconds = timed["measured"], timed["seconds"]
    else:
        measured, seconds = _tune_owed(tasks, owed, share, spec, work_dir, database, ledger) if owed else (0, 0.0)
    if not owed:
        logger.info("all %d tasks have tuning records in %s: no new trials", len(tasks), work_dir)
    summary = {"tasks": len(tasks), "share": share, "tuned_now": len(owed), "from_database": len(tasks) - len(owed),
               "no_record": done.count(0), "measured": measured, "seconds": round(seconds, 1),
               "kernels": _kernel_latencies(database, tasks), **({"time_budget": timed} if timed else {})}
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


def _tune_in_time(mod, tasks: list, owed: dict, share: int, spec: TargetSpec, work_dir: Path, database,
                  ledger: "_Ledger", budget: TimeBudget) -> dict:
    """Tune the tasks in ``owed`` (index -> trials owed) until ``budget.deadline``, the costliest first.

    A task's cost is its µs in ``mod`` untuned (``budget.profile``; FLOPs where it has no row, or
    without a profile: an untuned MobileNetV2 took minutes to build on the shared machine, more
    than an 8-minute budget's int8 phase) times its calls. Each task in turn gets ``left * cost / cost of the tasks not yet tuned`` seconds
    (at least one round), so time a task does not use (it stops improving, its space or its trials
    run out: :func:`_watch`) goes to the rest; tasks left when under a round remains stay untuned.
    One cost model learns from every task. Returns what each task got, the time and what was left.
    """
    start = time.monotonic()
    costs = _task_costs(tasks, budget.profile(mod) if budget.profile else [])
    order = sorted(owed, key=lambda i: -costs[i][0])
    total = sum(costs[i][0] for i in order) or 1.0
    cost_model, rows, round_s, untuned = _cost_model(), [], FIRST_ROUND_S, []
    logger.info("tuning %d of %d tasks for up to %.0f s, the costliest first (records in %s)", len(order), len(tasks),
                budget.left(), work_dir)
    with tqdm(total=sum(owed.values()), desc="tune", unit="trial", leave=False, disable=None) as bar:
        for position, i in enumerate(order):
            left, rest = budget.left(), sum(costs[j][0] for j in order[position:]) or 1.0
            if left < round_s:
                untuned = [tasks[j].task_name for j in order[position:]]
                break
            until = min(budget.deadline, time.monotonic() + max(round_s, left * costs[i][0] / rest))
            row = _tune_task(tasks[i], owed[i], spec, work_dir, database, cost_model, until, bar)
            round_s = max(row["last_round_s"] or round_s, 1.0)
            if row["stopped"] != "time":  # it stopped improving, or its space or trials ran out: done
                ledger.record(database, [tasks[i]], share)
            rows.append({**row, "calls": int(tasks[i].weight), "share_pct": round(100 * costs[i][0] / total, 1),
                         **({"untuned_us": costs[i][1]} if costs[i][1] is not None else {})})
    ledger.record_seconds(tasks, budget.seconds)  # a rerun with no more time tunes none of them
    seconds = time.monotonic() - start
    measured = sum(r["trials"] for r in rows)
    logger.info("tuned %d tasks (%d candidates) in %.1f s; %d left untuned", len(rows), measured, seconds, len(untuned))
    profiled = any(us is not None for _, us in costs)
    return {"budget_s": round(budget.seconds, 1), "seconds": round(seconds, 1), "measured": measured,
            "ranked_by": "untuned profile" if profiled else "FLOPs",
            **({"untuned_total_us": round(sum(cost for cost, _ in costs), 1)} if profiled else {}),
            "tasks": rows, "left_untuned": untuned}


def _task_costs(tasks: list, rows: list[dict]) -> list[tuple[float, float | None]]:
    """Each task's ``(µs per run, µs per call or None)`` in the untuned module: its kernel row's
    µs times its calls; a task without a row is costed by its FLOPs at the median µs per FLOP of
    those with one (1 µs per MFLOP when none has)."""
    from tvm.s_tir.analysis import estimate_tir_flops

    per_call = {row["kernel"]: float(row["us"]) for row in rows}
    flops = [max(1.0, float(estimate_tir_flops(task.dispatched[0]))) for task in tasks]
    rates = [per_call[t.task_name] / f for t, f in zip(tasks, flops) if t.task_name in per_call]
    rate = statistics.median(rates) if rates else 1e-6
    return [(per_call.get(t.task_name, f * rate) * float(t.weight), per_call.get(t.task_name))
            for t, f in zip(tasks, flops)]


def _cost_model():
    """One XGBoost cost model for every task of a budgeted run (MetaSchedule's default, as
    ``tune_tasks`` makes it), so that each task's search starts from what the others taught it."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.utils import cpu_count

    return ms.cost_model.CostModel.create("xgb", num_tuning_cores=cpu_count(logical=False), tree_method="auto")


def _tune_task(task, trials: int, spec: TargetSpec, work_dir: Path, database, cost_model, until: float,
               bar) -> dict:
    """Tune one task in rounds of :data:`ROUND_TRIALS` until ``until``, ``trials``, its design space
    or its improvement (:func:`_watch`) runs out. Returns its trials, best µs, seconds, why it stopped."""
    from tvm.s_tir import meta_schedule as ms

    round_size = min(ROUND_TRIALS, trials)
    start = time.monotonic()
    contexts, weights = _tune_contexts([task], spec, work_dir, round_size)
    _quiet_meta_schedule_console()
    progress, watch = _progress(bar), _watch(until, start)
    ms.tune.tune_tasks(tasks=contexts, task_weights=weights, work_dir=str(work_dir), max_trials_global=trials,
                       max_trials_per_task=trials, num_trials_per_iter=round_size, builder=spec.builder(),
                       runner=spec.runner(), database=database, cost_model=cost_model,
                       measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"), progress,
                                          _stop_exhausted(), watch])
    stopped = watch.why or ("trials" if progress.measured >= trials else "space")
    best = watch.history[-1] if watch.history and watch.history[-1] < float("inf") else None
    return {"kernel": task.task_name, "trials": progress.measured, "tuned_us": round(best * 1e6, 2) if best else None,
            "seconds": round(time.monotonic() - start, 1), "stopped": stopped,
            "last_round_s": round(watch.round_s, 1) if watch.round_s else None}


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

        self.path, self.seconds_path = work_dir / "trials.json", work_dir / "seconds.json"
        self.given = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.given_seconds = json.loads(self.seconds_path.read_text()) if self.seconds_path.is_file() else {}

    def seconds(self, task) -> float:
        """The largest tuning time of the runs that finished with ``task`` in them (``seconds.json``)."""
        return float(self.given_seconds.get(_task_key(task), 0.0))

    def record_seconds(self, tasks: list, seconds: float) -> None:
        import json

        from tvmq.fileio import atomic_write_bytes

        for key in map(_task_key, tasks):
            self.given_seconds[key] = max(self.given_seconds.get(key, 0.0), seconds)
        atomic_write_bytes(self.seconds_path, json.dumps(self.given_seconds, indent=0, sort_keys=True).encode())

    def trials(self, workload) -> int:
        return int(self.given.get(_workload_key(workload), 0))

    def record(self, database, tasks: list, share: int) -> None:
        import json

        from tvmq.fileio import atomic_write_bytes

        for task in tasks:
            key = _workload_key(database.commit_workload(task.dispatched[0]))
            self.given[key] = max(self.given.get(key, 0), share)
        atomic_write_bytes(self.path, json.dumps(self.given, indent=0, sort_keys=True).encode())


def _task_key(task) -> str:
    """A task's key in the ledger's ``seconds``: its workload's structural hash."""
    import tvm_ffi

    return str(tvm_ffi.structural_hash(task.dispatched[0]))


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
    """MetaSchedule's evolutionary search with a population of ``max(32, 4 * round_size)``
    (its default is 512): every round samples and evolves the whole population on the cost
    model, and that, not measuring, is what a round costs. One round of 8 candidates on a
    MobileNetV2 int8 1x1 conv (14x14, 2 cores shared, load 5): 2.8 s with 32, 11.5 s with 128,
    54 s with 512 (16 * 32, the population before); a depthwise conv 3.0 / 10.8 / 36 s. Our
    design spaces are small (the sketches fix the loop structure; only tiles and unrolls vary),
    so the cost model ranks a small population as well: the MobileNetV3 block of the tests
    (20 tasks, 24 trials) reached the same latencies within the timing's noise with 16 as 512."""
    from tvm.s_tir import meta_schedule as ms

    population = min(512, max(32, 4 * round_size))
    return ms.search_strategy.EvolutionarySearch(population_size=population,
                                                 init_min_unmeasured=min(population // 2, 50))


def _tune_contexts(tasks: list, spec: TargetSpec, work_dir: Path, round_size: int):
    """One tuning context per task (as MetaSchedule's relax integration makes them), each with
    the target's search space for that task and a search sized to its rounds (:func:`_search`)."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.utils import fork_seed

    _import_tensor_intrinsics()

    loggers = _task_loggers(work_dir, [t.task_name for t in tasks])
    contexts = [ms.TuneContext(mod=task.dispatched[0], target=task.target, task_name=task.task_name,
                               space_generator=spec.space(task.task_name), search_strategy=_search(round_size), logger=task_logger,
                               rand_state=seed, num_threads="physical").clone()
                for task, task_logger, seed in zip(tasks, loggers, fork_seed(0, n=len(tasks)))]
    return contexts, [t.weight for t in tasks]


def _import_tensor_intrinsics() -> None:
    """Import ``tvm.s_tir.tensor_intrin`` (every target's tensor intrinsics, which the first
    ``TuneContext`` imports) with :func:`_frames` standing in for ``inspect.stack``.

    TVMScript's ``prim_func`` calls ``inspect.stack()`` for each of the ~500 intrinsics it parses,
    and for every frame ``inspect`` looks up a file that does not exist (the import machinery's
    ``<frozen importlib._bootstrap>``) by scanning all of ``sys.modules`` (1,255 in a compile).
    That import was the first task's 20-30 s "initialisation": 56 s on 2 shared cores (load 7),
    6-9 s with the stand-in. The parser reads only each frame's locals and its source line.
    """
    import inspect
    import sys

    if "tvm.s_tir.tensor_intrin" in sys.modules:
        return
    stack = inspect.stack
    inspect.stack = _frames
    try:
        import tvm.s_tir.tensor_intrin  # noqa: F401
    finally:
        inspect.stack = stack


def _frames(context: int = 1) -> list:
    """``inspect.stack(context)`` for the caller, each frame's source line read from ``linecache``
    without searching ``sys.modules`` for its module (at most one line of context)."""
    import inspect
    import linecache
    import sys

    frames, frame = [], sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        line = linecache.getline(code.co_filename, frame.f_lineno) if context > 0 else ""
        frames.append(inspect.FrameInfo(frame, code.co_filename, frame.f_lineno, code.co_name,
                                        [line] if line else None, 0 if line else None))
        frame = frame.f_back
    return frames


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
    """Keep MetaSchedule's per-round tables in its log files, off the console (unless debugging), in
    a notebook too: there MetaSchedule would render them as a pandas table, and stop on a missing pandas."""
    import tvm

    tvm.register_global_func("s_tir.meta_schedule.using_ipython", lambda: False, override=True)
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


def _watch(until: float, start: float):
    """A measure callback that ends its task (one per run) when another round would end past
    ``until`` (a round is assumed to take as long as the last one did) or when the task stopped
    improving: its best latency gained under :data:`STALL_GAIN` over its last :data:`STALL_ROUNDS`
    rounds. ``history`` holds the best seconds after each round, ``why`` the reason it ended."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    @derived_object
    class Watch(ms.measure_callback.PyMeasureCallback):
        history, why, round_s, last = [], None, None, start

        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            now = time.monotonic()
            self.round_s, self.last = now - self.last, now
            times = [sum(map(float, r.run_secs)) / len(r.run_secs) for r in runner_results
                     if r.error_msg is None and r.run_secs]
            self.history = [*self.history, min([*times, *self.history[-1:], float("inf")])]
            if not measure_candidates:  # _stop_exhausted ends it
                return
            if now + self.round_s > until:
                self.why = "time"
            elif len(self.history) > STALL_ROUNDS and \
                    self.history[-1] > (1 - STALL_GAIN) * self.history[-1 - STALL_ROUNDS]:
                self.why = "stalled"
            if self.why:
                task_scheduler.terminate_task(task_id)

    return Watch()


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
