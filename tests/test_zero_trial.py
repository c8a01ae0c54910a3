"""Untuned builds schedule every kernel by rule (targets/x86_default.py): same results as TVM's
unscheduled loop nests (int8 bit for bit, fp32 to 1e-5), no kernel left a plain loop nest, and
tuning records still win."""

import dataclasses

import numpy as np
import pytest
import tvm

import onnx_models
from tvmq import api
from tvmq.build import bind_batch, build, scheduled_by_rule, virtual_machine
from tvmq.config import Config
from tvmq.targets import get_target, x86_blocking
from tvmq.targets.x86_default import PARALLEL_MIN_ITERATIONS, SCHEDULED, ScheduleByRule


@pytest.fixture(scope="module")
def host():
    spec = get_target("host")
    if spec.schedule is None:
        pytest.skip("the host target has no rule schedules")
    return spec


def _modules(tmp_path, rng, case, bundled):
    """``(fp32, int8, input)``: the deployable modules of a test model (batch 1, legalized)."""
    if case == "bundled":
        path, calib = bundled[0], bundled[1]
        with np.load(calib) as archive:
            calib = archive[archive.files[0]][:32]
    else:
        model, shape = {"mobilenet_v3_block": (onnx_models.mobilenet_v3_block(), (16, 3, 16, 16)),
                        "mobile_block": (onnx_models.mobile_block(), (16, 4, 10, 10))}[case]
        path = onnx_models.save(model, tmp_path / "m.onnx")
        calib = rng.standard_normal(shape).astype(np.float32)
    quantized = api.quantize(path, calib, Config(batch_size=16))
    legalize = get_target("host").legalize or (lambda m: m)
    fp32, int8 = (legalize(bind_batch(m, 1)) for m in (quantized.program.fp32, quantized.int8))
    return fp32, int8, calib[:1]


def _run(mod, spec, x):
    return virtual_machine(build(mod, spec))["main"](tvm.runtime.tensor(x)).numpy()


def _close(got, expected):
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


# the MobileNetV3 block keeps HardSwish and squeeze-excite fp32 between its int8 layers (and adds
# its residual in fp32): inlined into one expression, a multiply and an add may contract into an
# FMA, one rounding instead of two, so its output may differ by an ulp; every integer kernel is exact
@pytest.mark.parametrize("case,exact", [("bundled", True), ("mobile_block", True), ("mobilenet_v3_block", False)])
def test_rule_schedules_compute_what_the_plain_loop_nests_compute(tmp_path, rng, bundled, host, case, exact,
                                                                 caplog):
    fp32, int8, x = _modules(tmp_path, rng, case, bundled)
    plain = dataclasses.replace(host, schedule=None)
    (np.testing.assert_array_equal if exact else _close)(_run(int8, host, x), _run(int8, plain, x))
    _close(_run(fp32, host, x), _run(fp32, plain, x))
    assert "rule schedules did not build" not in caplog.text  # build() fell back to the loop nests
    integer_kernels = 0
    for name, scheduled, unscheduled in _kernel_pairs(int8, host):
        args = [_random(rng, [int(d) for d in p.shape], str(p.dtype), host.weight_qmax) for p in unscheduled.params]
        if str(unscheduled.params[-1].dtype) in ("uint8", "int8", "int32"):
            integer_kernels += 1
            np.testing.assert_array_equal(_call(scheduled, args, host), _call(unscheduled, args, host), name)
    assert integer_kernels


def _kernel_pairs(mod, spec):
    """``(name, rule-scheduled, unscheduled)`` for every kernel of ``mod`` fused as tuning fuses it."""
    from tvm import relax

    from tvmq.tune import fuse

    unscheduled = relax.transform.FuseTIR()(fuse(mod, spec))
    scheduled = scheduled_by_rule(mod, spec)
    for gvar, func in unscheduled.functions_items():
        if isinstance(func, tvm.tirx.PrimFunc):
            yield gvar.name_hint, scheduled[gvar.name_hint], func


def _random(rng, shape, dtype, weight_qmax=127):
    """Random kernel arguments; int8 ones (the weights) within the target's weight range: AVX2's
    ``vpmaddubsw`` sums two u8 x s8 products in saturating int16, exact only for 7-bit weights."""
    if dtype in ("uint8", "int8", "int32"):
        low, high = {"uint8": (0, 256), "int8": (-weight_qmax, weight_qmax + 1), "int32": (-1000, 1000)}[dtype]
        return rng.integers(low, high, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def _call(func, args, spec):
    lib = tvm.tirx.build(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=spec.target)
    tensors = [tvm.runtime.tensor(a) for a in args[:-1]] + [tvm.runtime.tensor(np.zeros_like(args[-1]))]
    lib(*tensors)
    return tensors[-1].numpy()


def _vectorized_or_parallel(func) -> bool:
    text = func.script()
    return "T.parallel(" in text or "T.vectorized(" in text


def _output_elements(func) -> int:
    return int(np.prod([int(d) for d in func.params[-1].shape]))


@pytest.mark.parametrize("case", ["bundled", "mobilenet_v3_block"])
def test_no_kernel_is_left_an_unscheduled_loop_nest(tmp_path, rng, bundled, host, case):
    for mod in _modules(tmp_path, rng, case, bundled)[:2]:
        kernels = {gv.name_hint: f for gv, f in scheduled_by_rule(mod, host).functions_items()
                   if isinstance(f, tvm.tirx.PrimFunc)}
        assert kernels
        for name, func in kernels.items():
            assert func.attrs and int(func.attrs.get(SCHEDULED, 0)) == 1, f"{name} has no schedule"
            assert _vectorized_or_parallel(func) or _output_elements(func) < PARALLEL_MIN_ITERATIONS, name


def test_a_kernel_already_scheduled_keeps_its_schedule(host):
    """Tuning records are applied before the rules: a scheduled kernel is not touched."""
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def add_one(a: T.Buffer((64, 64), "float32"), b: T.Buffer((64, 64), "float32")):
        for i, j in T.grid(64, 64):
            with T.sblock("b"):
                vi, vj = T.axis.remap("SS", [i, j])
                b[vi, vj] = a[vi, vj] + T.float32(1)

    tuned = add_one.with_attr(SCHEDULED, True)
    mod = tvm.IRModule({"tuned": tuned, "plain": add_one})
    with host.target:
        out = ScheduleByRule()(mod)
    tvm.ir.assert_structural_equal(out["tuned"], tuned)
    assert _vectorized_or_parallel(out["plain"])


@pytest.mark.parametrize("registers,spare", [(32, 1), (32, 3), (16, 1), (16, 3)])
@pytest.mark.parametrize("width,blocks", [(112, 2), (56, 9), (28, 4), (14, 32), (7, 32), (1, 63), (3, 1)])
def test_the_register_tile_divides_the_loops_and_fits_the_registers(width, blocks, registers, spare):
    w1, b1 = x86_blocking.register_tile(width, blocks, 16, 4, registers, spare, vectors_each=1)
    assert width % w1 == 0 and blocks % b1 == 0 and w1 <= 16 and b1 <= 4
    assert w1 * b1 + b1 + spare <= registers or (w1, b1) == (1, 1)
    # nothing that also fits does more work per load
    better = [(w, b) for w in x86_blocking.divisors(width, 16) for b in x86_blocking.divisors(blocks, 4)
              if w * b + b + spare <= registers and w * b / (w + b) > w1 * b1 / (w1 + b1)]
    assert not better


def test_rows_per_task_leave_enough_parallel_tasks():
    cpu = x86_blocking.CpuModel(cores=2, vector_bits=512, registers=32)
    assert x86_blocking.rows_per_task({"n": 1, "h": 56}, 4, cpu) == 4  # 14 x 4 tasks >= 8
    assert x86_blocking.rows_per_task({"n": 1, "h": 7}, 1, cpu) == 1  # 7 rows cannot feed 8 tasks
    assert x86_blocking.rows_per_task({"n": 1, "h": 8}, 1, cpu) == 1
    assert x86_blocking.rows_per_task({"n": 1, "h": 8}, 2, cpu) == 2


def test_a_rule_schedule_that_fails_falls_back_to_the_loop_nests(host, caplog):
    from tvm import relax

    def broken(mod):
        raise RuntimeError("cannot lower this")

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((4, 4), "float32"))
    with bb.function("main", [x]):
        bb.emit_func_output(bb.emit(relax.op.add(x, relax.const(1.0))))
    out = _run(bb.get(), dataclasses.replace(host, schedule=broken), np.zeros((4, 4), "float32"))
    np.testing.assert_array_equal(out, np.ones((4, 4), "float32"))
    assert "rule schedules did not build (RuntimeError: cannot lower this)" in caplog.text
