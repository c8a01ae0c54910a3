"""The CLI runs its work in a worker process: a native crash or a signal becomes one error line.

    x[N,8,12,12] --conv_a--> a --relu_a--> r --conv_b--> y      (onnx_models.conv_chain)
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

import onnx_models


@pytest.fixture()
def started(tmp_path):
    """A ``tvmq compile`` of the tiny model that has reached calibration: ``(supervisor, log, out)``."""
    model = onnx_models.save(onnx_models.conv_chain(), tmp_path / "m.onnx")
    np.save(tmp_path / "c.npy", np.random.default_rng(0).standard_normal((256, 8, 12, 12)).astype(np.float32))
    log = tmp_path / "log"
    with open(log, "w") as handle:
        process = subprocess.Popen([sys.executable, "-m", "tvmq", "compile", model, "--calib", tmp_path / "c.npy",
                                    "--out", tmp_path / "out", "--trials", "0"], stdout=subprocess.DEVNULL, stderr=handle)
    deadline = time.monotonic() + 300
    while "calibrating" not in log.read_text():
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    yield process, log, tmp_path / "out"
    if process.poll() is None:
        process.kill()


def _one_error(log) -> str:
    text = log.read_text()
    assert "Traceback" not in text and "Fatal Python error" not in text, text
    errors = [line for line in text.splitlines() if line.startswith("tvmq: ")]
    return errors[-1]


def test_a_native_crash_in_the_worker_is_one_error_line(started):
    process, log, out = started
    (worker,) = psutil.Process(process.pid).children()
    worker.send_signal(signal.SIGSEGV)
    assert process.wait(timeout=60) == 128 + signal.SIGSEGV
    assert _one_error(log).startswith("tvmq: error: the compiler crashed with SIGSEGV inside native code")
    assert not out.exists() and not list(out.parent.glob(".out.*"))


def test_sigterm_to_the_cli_interrupts_the_worker_cleanly(started):
    process, log, out = started
    (worker,) = psutil.Process(process.pid).children()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 128 + signal.SIGTERM, log.read_text()
    assert _one_error(log) == "tvmq: interrupted (SIGTERM); nothing was written"
    assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE
    assert not out.exists() and not list(out.parent.glob(".out.*"))


def test_the_supervisor_does_not_import_tvm():
    script = ("import sys; from tvmq import cli, isolate\n"
              "assert not [m for m in sys.modules if m.split('.')[0] in ('tvm', 'tvm_ffi', 'onnx')]\n")
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
