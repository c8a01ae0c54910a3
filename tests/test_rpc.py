"""Tuning and measuring on remote devices through TVM's RPC tracker (:mod:`tvmq.targets.rpc`).

A farm on 127.0.0.1 (``rpc_farm.py``): a tracker, two x86 servers under one key (the devices
tune in parallel) and, with the aarch64 toolchain (``make arm-env``), one server under
``qemu-aarch64 -cpu cortex-a76`` for ``arm``. Every process is killed by the fixture's
finalizer and ends by itself within 15 minutes or when this process dies.
"""

import json

import numpy as np
import pytest

import onnx_models
from rpc_farm import Farm
from tvmq.build import bind_batch, build, virtual_machine
from tvmq.config import Config
from tvmq.errors import TvmqError
from tvmq.targets import get_target
from tvmq.targets.qemu import default_sysroot, toolchain_missing
from tvmq.targets.rpc import servers, with_tracker

MISSING = toolchain_missing(default_sysroot())
TRIALS = 4


@pytest.fixture(scope="module")
def farm():
    farm = Farm(seconds=900)
    try:
        farm.server("x86")
        farm.server("x86")
        if MISSING is None:
            farm.server("pi5", qemu=(default_sysroot(), "cortex-a76"))
        yield farm
    finally:
        farm.stop()


@pytest.fixture(scope="module")
def int8(tmp_path_factory):
    """A two-layer int8 dense model with int8 activations (every target's scheme), batch 1, and a feed."""
    from tvmq import api

    rng = np.random.default_rng(0)
    path = onnx_models.save(onnx_models.dense_chain(), tmp_path_factory.mktemp("m") / "m.onnx")
    calib = rng.standard_normal((16, 20)).astype(np.float32)
    quantized = api.quantize(path, calib, Config(batch_size=16, symmetric=True))
    return bind_batch(quantized.int8, 1), calib[:1], path, calib


def _local(mod, x):
    """``mod`` built and run on this machine: the reference the remote runs must equal."""
    import tvm

    return virtual_machine(build(mod, get_target("host")))["main"](tvm.runtime.tensor(x)).numpy()


def _records(db) -> int:
    path = db / "database_tuning_record.json"
    return sum(1 for line in path.read_text().splitlines() if line.strip()) if path.is_file() else 0


@pytest.mark.parametrize("target,key", [("host", "x86"), ("arm", "pi5")])
def test_tuned_on_the_devices_of_a_key_records_land_and_outputs_are_exact(tmp_path, farm, int8, target, key):
    import tvm

    from tvmq.tune import tune

    if key == "pi5" and MISSING is not None:
        pytest.skip(f"aarch64 toolchain: {MISSING}")
    mod, x, _, _ = int8
    spec = with_tracker(get_target(target), farm.tracker, key)
    assert spec.name == f"{get_target(target).name}@{key}" and spec.executor.timed
    runner = spec.runner()  # one connection per server on the key (TVM's pool keeps its size private)
    assert runner.pool._threadpool._max_workers == len(servers(spec.executor.tracker, key)) == (2 if key == "x86" else 1)
    lifted = spec.legalize(mod) if spec.legalize else mod
    tuned, summary = tune(lifted, spec, TRIALS, tmp_path / "db")
    assert summary["measured"] >= 1 and _records(tmp_path / "db") >= 1
    assert summary["kernels"] and all(row["us"] > 0 for row in summary["kernels"])  # the device's clock
    out = virtual_machine(build(tuned, spec))["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_array_equal(out, _local(mod, x))


def test_compile_through_the_cli_runs_and_times_on_the_device_and_records_it(tmp_path, farm, int8):
    """``--rpc-tracker / --rpc-key``: calibration, evaluation and whole-module times on the device
    (its own clock), the manifest and report name the key, its servers and what was timed where."""
    from tvmq import api, cli
    from tvmq.runtime import load

    _, x, path, calib = int8
    np.savez(tmp_path / "calib.npz", x=calib)
    argv = ["compile", path, "--calib", tmp_path / "calib.npz", "--out", tmp_path / "out", "--symmetric",
            "--batch-size", "16", "--trials", "0", "--rpc-tracker", farm.tracker, "--rpc-key", "x86"]
    assert cli.main(argv, isolated=False) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert manifest["measured_on"]["key"] == report["measured_on"]["key"] == "x86"
    assert manifest["measured_on"]["tracker"] == farm.tracker and len(manifest["measured_on"]["servers"]) == 2
    assert all(isinstance(ms, float) and ms > 0 for ms in report["latency_ms"].values())
    assert "RPC key `x86`" in (tmp_path / "out" / "report.md").read_text()
    here = api.quantize(path, calib, Config(batch_size=16, symmetric=True))
    np.testing.assert_array_equal(load(tmp_path / "out").run(x), _local(bind_batch(here.int8, 1), x))


def test_bad_tracker_options_and_an_unreachable_tracker_are_one_clear_line():
    with pytest.raises(TvmqError, match="not HOST:PORT"):
        Config(rpc_tracker="localhost", rpc_key="pi5")
    with pytest.raises(TvmqError, match="--rpc-key"):
        Config(rpc_tracker="127.0.0.1:9190")
    with pytest.raises(TvmqError, match="--rpc-tracker"):
        Config(rpc_key="pi5")
    spec = with_tracker(get_target("host"), "127.0.0.1:1", "pi5")
    assert "cannot reach the RPC tracker at 127.0.0.1:1" in spec.executor.unavailable()
    with pytest.raises(TvmqError, match="cannot reach the RPC tracker"):
        spec.runner()


def test_a_key_without_servers_is_a_clear_error(farm):
    spec = with_tracker(get_target("host"), farm.tracker, "nobody", wait=1)
    with pytest.raises(TvmqError, match="no RPC server registered under key 'nobody'.*keys there: .*x86"):
        spec.runner()
