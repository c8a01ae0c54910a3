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
