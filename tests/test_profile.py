"""The in-module kernel timer: every kernel call timed on its real arguments, the run's result intact."""

import numpy as np
import tvm

import onnx_models
from tvmq import profile
from tvmq.build import bind_batch, build, virtual_machine
from tvmq.frontend import load_model
from tvmq.passes.lift_params import lift_params
from tvmq.targets import get_target


def _built(model, tmp_path, batch=2):
    spec = get_target("host")
    mod, params = lift_params(bind_batch(load_model(onnx_models.save(model, tmp_path / "m.onnx")).mod, batch))
    return build(mod, spec), params


def test_each_kernel_call_is_timed_and_twin_layers_count_as_two_calls(tmp_path, rng):
    executable, params = _built(onnx_models.twin_convs(), tmp_path)
    x = rng.standard_normal((2, 8, 10, 10)).astype(np.float32)
    args = [tvm.runtime.tensor(x)] + [tvm.runtime.tensor(v) for v in params.values()]
    expected = virtual_machine(executable)["main"](*args).numpy()

    rows = profile.kernel_rows(executable, args)
    library = profile._library(executable)
    assert rows and all(library.implements_function(r["kernel"]) and r["us"] > 0 for r in rows), rows
    assert sum(r["calls"] for r in rows if "conv2d" in r["kernel"]) == 2, rows
    assert [r["us"] * r["calls"] for r in rows] == sorted((r["us"] * r["calls"] for r in rows), reverse=True)
    np.testing.assert_array_equal(virtual_machine(executable)["main"](*args).numpy(), expected)


def test_a_bigger_layer_measures_slower_and_the_sum_is_near_the_whole_run(tmp_path):
    small, params_small = _built(onnx_models.conv_chain(channels=8), tmp_path, batch=1)
    # 512x the small chain's work: a parallel kernel's wake-up under a loaded machine (the suite's two
    # workers on two cores) costs milliseconds, which must not decide the comparison
    large, params_large = _built(onnx_models.conv_chain(channels=64), tmp_path, batch=8)
    small_rows = profile.profile(small, params_small, [((1, 8, 12, 12), "float32")])
    large_rows = profile.profile(large, params_large, [((8, 64, 12, 12), "float32")])
    assert profile.total_us(large_rows) > 4 * profile.total_us(small_rows)

    vm = virtual_machine(large)
    args = [tvm.runtime.tensor(np.zeros((8, 64, 12, 12), np.float32))] + \
        [tvm.runtime.tensor(v) for v in params_large.values()]
    whole_us = np.median(vm.time_evaluator("main", tvm.cpu(), number=1, repeat=5)(*args).results) * 1e6
    assert 0.5 * whole_us < profile.total_us(large_rows) < 1.5 * whole_us, (profile.total_us(large_rows), whole_us)


def test_cold_timing_times_the_same_calls_and_leaves_the_result_intact(tmp_path, rng):
    executable, params = _built(onnx_models.twin_convs(), tmp_path)
    x = rng.standard_normal((2, 8, 10, 10)).astype(np.float32)
    args = [tvm.runtime.tensor(x)] + [tvm.runtime.tensor(v) for v in params.values()]
    expected = virtual_machine(executable)["main"](*args).numpy()
    warm, cold = profile.kernel_rows(executable, args), profile.kernel_rows(executable, args, cold=True)
    assert {(r["kernel"], r["calls"]) for r in cold} == {(r["kernel"], r["calls"]) for r in warm}
    assert all(r["us"] > 0 for r in cold)
    np.testing.assert_array_equal(virtual_machine(executable)["main"](*args).numpy(), expected)


def test_in_run_timing_times_every_call_where_it_runs(tmp_path, rng):
    executable, params = _built(onnx_models.twin_convs(), tmp_path)
    x = rng.standard_normal((2, 8, 10, 10)).astype(np.float32)
    args = [tvm.runtime.tensor(x)] + [tvm.runtime.tensor(v) for v in params.values()]
    expected = virtual_machine(executable)["main"](*args).numpy()
    warm, in_run = profile.kernel_rows(executable, args), profile.in_run_rows(executable, args, runs=5)
    assert {(r["kernel"], r["calls"]) for r in in_run} == {(r["kernel"], r["calls"]) for r in warm}
    assert all(r["us"] > 0 for r in in_run)
    np.testing.assert_array_equal(virtual_machine(executable)["main"](*args).numpy(), expected)
