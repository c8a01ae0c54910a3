"""Tuning plumbing that needs no tuning run."""

import logging


def test_task_loggers_survive_an_unnamed_handler_on_meta_schedules_logger(tmp_path):
    """MetaSchedule's logging setup crashed ('NoneType' has no attribute 'format') when its
    global logger carried a handler without a name; tvmq sets such handlers aside and back."""
    from tvmq.tune import _task_loggers

    ms_logger = logging.getLogger("tvm.s_tir.meta_schedule")
    handler = logging.NullHandler()
    ms_logger.addHandler(handler)
    try:
        loggers = _task_loggers(tmp_path, ["task_a", "task_b"])
        assert len(loggers) == 2
        assert handler in ms_logger.handlers
    finally:
        ms_logger.removeHandler(handler)


def _dense_module():
    """One float dense: a single tuning task."""
    import numpy as np
    from tvm import relax

    builder = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((4, 32), "float32"))
    with builder.function("main", [x]):
        with builder.dataflow():
            w = relax.const(np.ones((32, 16), np.float32))
            out = builder.emit_output(relax.op.matmul(x, w))
        builder.emit_func_output(out)
    return builder.get()


def test_a_larger_budget_tunes_on_and_an_equal_one_runs_nothing(tmp_path):
    """The budget is split over the tasks: a task is tuned again only when its share grew."""
    from tvmq.targets import get_target
    from tvmq.tune import tune

    spec, db = get_target("host"), tmp_path / "db"

    def tuned(trials):
        return tune(_dense_module(), spec, trials, db)[1]

    first = tuned(2)
    assert first["tuned_now"] == first["tasks"] == 1 and first["measured"] >= 1
    again = tuned(2)
    assert again["tuned_now"] == 0 and again["measured"] == 0 and again["from_database"] == 1
    more = tuned(4)
    assert more["tuned_now"] == 1 and more["measured"] >= 1


def test_a_database_whose_records_do_not_replay_is_a_clear_error(tmp_path):
    """A record naming a block its workload lacks (a kernel renamed between versions) made
    MetaSchedule fail deep inside; tvmq names the database and what to do."""
    import pytest
    import tvm
    from tvm import s_tir, te
    from tvm.s_tir import meta_schedule as ms

    from tvmq.errors import TvmqError
    from tvmq.tune import _open_database

    a = te.placeholder((8,), name="a")
    mod = tvm.IRModule({"main": te.create_prim_func([a, te.compute((8,), lambda i: a[i] + 1.0, name="add_one")])})
    sch = s_tir.Schedule(mod)
    sch.get_sblock("add_one")
    database = _open_database(tmp_path)
    workload = database.commit_workload(mod)
    database.commit_tuning_record(ms.database.TuningRecord(sch.trace, workload, [1e-6], tvm.target.Target("llvm"),
                                                           ms.arg_info.ArgInfo.from_prim_func(mod["main"])))
    records = tmp_path / "database_tuning_record.json"
    records.write_text(records.read_text().replace("add_one", "add_renamed"))
    with pytest.raises(TvmqError, match="do not replay"):
        _open_database(tmp_path)


def test_a_candidate_past_the_build_deadline_fails_as_timed_out_and_the_rest_build(monkeypatch):
    """One candidate that LLVM cannot finish must not stall tuning: the round returns without it."""
    import time

    import tvm
    from tvm import te
    from tvm.s_tir import meta_schedule as ms

    from tvmq.targets import builder, get_target

    a = te.placeholder((8,), name="a")
    mod = tvm.IRModule({"main": te.create_prim_func([a, te.compute((8,), lambda i: a[i] + 1.0, name="b")])})
    inputs = [ms.builder.BuilderInput(mod, tvm.target.Target("llvm")) for _ in range(2)]
    build = tvm.tirx.build

    def slow_first(mod, target):
        if not slow_first.calls:
            slow_first.calls.append(1)
            time.sleep(3)
        return build(mod, target=target)

    slow_first.calls = []
    monkeypatch.setattr(tvm.tirx, "build", slow_first)
    monkeypatch.setattr(builder, "BUILD_SECONDS", 1)
    monkeypatch.setattr(builder, "build_threads", lambda: 2)
    results = get_target("host").builder().build(inputs)
    assert "timed out" in (results[0].error_msg or "")
    assert results[1].error_msg is None and results[1].artifact_path


EXHAUSTED = """
import sys
from pathlib import Path

import numpy as np
from tvm import relax
from tvmq.targets import get_target
from tvmq.tune import tune

builder = relax.BlockBuilder()
x = relax.Var("x", relax.TensorType((1, 2, 2, 16), "float32"))
with builder.function("main", [x]):
    with builder.dataflow():
        w = relax.const(np.ones((16, 3, 3, 1), np.float32))
        out = builder.emit_output(relax.op.nn.conv2d(x, w, padding=1, groups=16, data_layout="NHWC",
                                                     kernel_layout="OHWI"))
    builder.emit_func_output(out)
spec = get_target("host")
summary = tune(spec.legalize(builder.get()), spec, 64, Path(sys.argv[1]))[1]
log = next((Path(sys.argv[1]) / "logs").glob("*task_0*")).read_text()
print(summary["tasks"], summary["measured"], log.count("Sending 0 candidates"))
"""


def test_a_task_whose_design_space_runs_out_ends_before_its_share(tmp_path):
    """A 2x2x16 depthwise conv's sketch has four schedules: a budget of 64 cannot be spent.
    MetaSchedule's search gave the task five empty rounds before giving up (each a whole
    evolutionary search: ~20 s on a real layer); tvmq ends it after the first."""
    import subprocess
    import sys

    import pytest

    from tvmq.targets import get_target

    if get_target("host").legalize is None:
        pytest.skip("no x86 int8 kernel on this CPU: the depthwise sketch is not used")
    done = subprocess.run([sys.executable, "-c", EXHAUSTED, str(tmp_path / "db")], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    tasks, measured, empty_rounds = map(int, done.stdout.split()[-3:])
    assert tasks == 1 and 1 <= measured < 64 and empty_rounds == 1


def _dense_chain(widths):
    """Float denses chained ``4 x widths[0] -> 4 x widths[1] -> ...``: one tuning task per distinct shape."""
    import numpy as np
    from tvm import relax

    builder = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((4, widths[0]), "float32"))
    with builder.function("main", [x]):
        with builder.dataflow():
            out = x
            for a, b in zip(widths, widths[1:]):
                out = builder.emit(relax.op.matmul(out, relax.const(np.ones((a, b), np.float32))))
            out = builder.emit_output(out)
        builder.emit_func_output(out)
    return builder.get()


def _records_per_task(mod, spec, db) -> list[int]:
    """How many measured records each of ``mod``'s tuning tasks has in the database at ``db``."""
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    from tvmq.tune import _open_database, fuse

    database = _open_database(db)
    tasks = ms.relax_integration.extract_tasks(relax.transform.FuseTIR()(fuse(mod, spec)), spec.target)
    return [len(database.get_top_k(database.commit_workload(t.dispatched[0]), 1000)) for t in tasks]


def test_a_rebuild_gives_each_new_task_the_first_builds_share(tmp_path):
    """A latency fallback's rebuild re-fuses the graph into new kernels; they must each get the
    per-task share the first build gave, not a token few trials of one run's global budget
    (a MobileNetV3 rebuild gave 45 new kernels about 3 trials each). Counted from the database."""
    from tvmq.targets import get_target
    from tvmq.tune import tune

    spec, db = get_target("host"), tmp_path / "db"
    first = tune(_dense_module(), spec, 4, db)[1]
    assert first["share"] == 4 and first["tasks"] == 1 and first["no_record"] == 1
    rebuilt_mod = _dense_chain([32, 16, 24, 8])  # the first build's dense, then two new ones
    rebuilt = tune(rebuilt_mod, spec, 4, db, share=first["share"])[1]
    assert rebuilt["tasks"] == 3 and rebuilt["share"] == 4
    assert rebuilt["from_database"] == 1 and rebuilt["tuned_now"] == rebuilt["no_record"] == 2
    assert all(n >= first["share"] for n in _records_per_task(rebuilt_mod, spec, db)), \
        _records_per_task(rebuilt_mod, spec, db)
    again = tune(rebuilt_mod, spec, 4, db, share=first["share"])[1]
    assert again["tuned_now"] == again["measured"] == 0, "the ledger holds what the rebuild was given"


def test_tasks_are_grouped_by_the_trials_they_are_still_owed():
    """One MetaSchedule run per group, its per-task cap the group's debt: a task owed less
    cannot take another's trials, nor one owed more run short."""
    from tvmq.tune import _by_owed

    assert _by_owed({0: 8, 1: 3, 2: 8, 3: 1}) == [(8, [0, 2]), (3, [1]), (1, [3])]
    assert _by_owed({}) == []
