"""Nothing is lost on interruption, and a shared tuning database stays consistent.

These run the real ``tvmq compile`` in processes and kill its worker with SIGKILL, the way
the kernel's OOM killer would: no handler runs, so only what was already on disk survives.
Int8 arithmetic does not depend on the schedule, so a resumed (tuned) artifact must give
bit-exactly the outputs of an uninterrupted untuned compile.

    x[N,8,12,12] --conv_a--> a --relu_a--> r --conv_b--> y      (onnx_models.conv_chain)
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import psutil
import pytest

import onnx_models
import tvmq

RECORDS = "database_tuning_record.json"
WORKLOADS = "database_workload.json"


@pytest.fixture()
def job(tmp_path, rng):
    """The tiny model and its calibration data on disk, and the in-process untuned reference output."""
    model = onnx_models.save(onnx_models.conv_chain(), tmp_path / "m.onnx")
    calib = rng.standard_normal((16, 8, 12, 12)).astype(np.float32)
    np.save(tmp_path / "c.npy", calib)
    reference = tvmq.compile(model, calib, config=tvmq.Config(latency_runs=1))
    return tmp_path, calib[:1], reference.run(calib[:1])


@contextlib.contextmanager
def _running(tmp, out, *extra):
    """``tvmq compile`` of the tiny model to ``tmp/out`` in a process: ``(process, log)``; killed if left running."""
    log = tmp / f"{out}.log"
    argv = [sys.executable, "-m", "tvmq", "compile", tmp / "m.onnx", "--calib", tmp / "c.npy", "--out", tmp / out,
            "--trials", "0", *extra]  # untuned unless extra says otherwise (a later --trials wins)
    with open(log, "w") as handle:
        process = subprocess.Popen(list(map(str, argv)), stdout=subprocess.DEVNULL, stderr=handle)
    try:
        yield process, log
    finally:
        if process.poll() is None:
            process.terminate()  # the supervisor forwards it to its worker
            process.wait(timeout=60)


def _wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _kill_worker(supervisor: subprocess.Popen) -> None:
    """SIGKILL the worker doing the work, as the OOM killer would; the supervisor must report it."""
    workers = psutil.Process(supervisor.pid).children()
    assert len(workers) == 1
    workers[0].send_signal(signal.SIGKILL)
    assert supervisor.wait(timeout=60) == 128 + signal.SIGKILL


def _lines(path):
    return path.read_text().splitlines() if path.is_file() else []


def _assert_clean_kill(log, tmp, out):
    errors = [line for line in log.read_text().splitlines() if line.startswith("tvmq: error:")]
    assert len(errors) == 1 and "killed (SIGKILL" in errors[0], log.read_text()
    assert "Traceback" not in log.read_text()
    assert not (tmp / out).exists()
    assert not list(tmp.glob(f".{out}.*")), "a staging directory was left behind"


def test_sigkill_during_calibration_leaves_nothing_and_the_rerun_matches(job):
    tmp, x, expected = job
    with _running(tmp, "out") as (process, log):
        _wait_for(lambda: "calibrating" in log.read_text(), 300, "calibration to start")
        _kill_worker(process)
    _assert_clean_kill(log, tmp, "out")

    with _running(tmp, "out") as (process, log):
        assert process.wait(timeout=600) == 0, log.read_text()
    np.testing.assert_array_equal(tvmq.load(tmp / "out").run(x), expected)


def test_tuning_database_survives_sigkill_and_two_concurrent_runs(job):
    """Kill a tuning run after its first record; run it again together with a second compile.

    With ``--trials 8`` every task of this model gets a trial (at most 8 a module), so
    between them the two later runs must tune exactly the tasks the killed run had not given
    their share of the budget, each once: the second one to take the database's lock finds
    the first's records.
    """
    tmp, x, expected = job
    db = tmp / "db"
    tuned = ("--trials", "8", "--tuning-db", db, "--no-latency-fallback")  # no rebuild: tasks counted once
    with _running(tmp, "out", *tuned) as (process, log):
        _wait_for(lambda: len(_lines(db / RECORDS)) >= 1, 600, "the first tuning record")
        _kill_worker(process)
    _assert_clean_kill(log, tmp, "out")
    kept = _lines(db / RECORDS)
    assert kept and all(json.loads(line) for line in kept)

    # the same command again (it resumes), and a second compile sharing the database at once
    with _running(tmp, "out", *tuned) as first, _running(tmp, "out2", *tuned) as second:
        for process, log in (first, second):
            assert process.wait(timeout=900) == 0, log.read_text()
    after = _lines(db / RECORDS)
    assert set(kept) <= set(after), "a finished tuning record was lost"
    _assert_database_consistent(db)
    reports = [json.loads((tmp / out / "report.json").read_text())["tuning"] for out in ("out", "out2")]
    assert max(r[m]["tasks"] for r in reports for m in ("fp32", "int8")) <= 8, "the budget no longer covers every task"
    # the killed run tuned fp32 first; its tasks with their whole share of the budget are done
    share = -(-8 // reports[0]["fp32"]["tasks"])
    done_before = sum(n >= share for n in Counter(json.loads(line)[0] for line in kept).values())
    assert sum(r["fp32"]["tuned_now"] for r in reports) == reports[0]["fp32"]["tasks"] - done_before
    # and every other task once: an int8 task equal to an fp32 one (the output's NHWC -> NCHW
    # transpose) finds the fp32 run's records
    workloads = {json.loads(line)[0] for line in after}
    assert sum(r[m]["tuned_now"] for r in reports for m in ("fp32", "int8")) == len(workloads) - done_before
    for out in ("out", "out2"):
        np.testing.assert_array_equal(tvmq.load(tmp / out).run(x), expected)


def _assert_database_consistent(db):
    """Every line parses, and every record's schedule trace replays on the workload it points at."""
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms

    from tvmq.targets import get_target

    get_target("host").prepare()  # records of packed kernels name the target's tensor intrinsic
    for name in (RECORDS, WORKLOADS):
        data = (db / name).read_bytes()
        assert data.endswith(b"\n") and all(json.loads(line) for line in data.splitlines())
    records = ms.database.JSONDatabase(work_dir=str(db), module_equality="structural").get_all_tuning_records()
    assert records
    for record in records:
        record.trace.apply_to_schedule(s_tir.Schedule(record.workload.mod), remove_postproc=False)


WRITER = """
import sys, time
from pathlib import Path
import tvm
from tvm import s_tir, te
from tvm.s_tir import meta_schedule as ms
from tvmq.tune import _locked, _open_database

tag, n, db = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
a = te.placeholder((n,), name="a")
b = te.compute((n,), lambda i: a[i] + 1.0, name="add_" + tag)
mod = tvm.IRModule({"main": te.create_prim_func([a, b])})
sch = s_tir.Schedule(mod)
sch.get_sblock("add_" + tag) if hasattr(sch, "get_sblock") else sch.get_block("add_" + tag)
target = tvm.target.Target("llvm")
with _locked(db):
    database = _open_database(db)
    time.sleep(2)  # both writers have opened the database by now, unless the lock serializes them
    workload = database.commit_workload(mod)
    for _ in range(3):
        database.commit_tuning_record(ms.database.TuningRecord(sch.trace, workload, [1e-6], target,
                                                               ms.arg_info.ArgInfo.from_prim_func(mod["main"])))
        time.sleep(0.2)
"""


def test_database_lock_keeps_concurrent_writers_consistent(tmp_path):
    """Two processes append to one database: each record must still point at its own workload."""
    db = tmp_path / "db"
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, tag, str(n), str(db)])
               for tag, n in (("first", 4), ("second", 8))]
    assert [w.wait(timeout=300) for w in writers] == [0, 0]
    assert len(_lines(db / WORKLOADS)) == 2 and len(_lines(db / RECORDS)) == 6
    _assert_database_consistent(db)


def test_a_torn_last_line_is_dropped_on_open(tmp_path):
    """A process killed in mid-append leaves a partial last line; opening drops only that line."""
    from tvmq.tune import _open_database

    db = tmp_path / "db"
    subprocess.run([sys.executable, "-c", WRITER, "only", "4", str(db)], check=True, timeout=300)
    complete = (db / RECORDS).read_bytes()
    (db / RECORDS).write_bytes(complete + complete.splitlines()[0][:57])
    database = _open_database(db)
    assert (db / RECORDS).read_bytes() == complete
    assert len(database.get_all_tuning_records()) == 3
