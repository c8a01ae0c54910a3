"""ARM targets: their int8 scheme, the packed sdot / NEON kernels cross-compiled for aarch64 and
run under qemu-user (``-cpu`` the target's ``mcpu``) against numpy's integer reference and x86's
int8 module, the project's design space on them, and SIGILL on a CPU without dotprod.

Everything that runs aarch64 code skips, saying why, without the toolchain (``make arm-env``).
One qemu worker per target serves all of a target's modules here (each start costs 10-20 s).
"""

import subprocess

import numpy as np
import pytest
from tvm import relax

import onnx_models
from reference import conv2d_int
from tvmq.build import bind_batch, build, virtual_machine
from tvmq.config import Config
from tvmq.errors import TvmqError
from tvmq.passes.graph import dataflow_bindings, op_name
from tvmq.targets import get_target, x86_int8
from tvmq.targets.arm_intrinsics import NEON, SDOT
from tvmq.targets.qemu import default_sysroot, toolchain_missing

MISSING = toolchain_missing(default_sysroot())
needs_toolchain = pytest.mark.skipif(MISSING is not None, reason=f"aarch64 toolchain: {MISSING}")


@pytest.fixture(scope="module")
def arm():
    return get_target("arm")


@pytest.fixture(scope="module")
def neon():
    return get_target("arm-neon")


@pytest.mark.parametrize("name,mcpu,dotprod", [("arm", "cortex-a76", True), ("arm-neon", "cortex-a53", False)])
def test_arm_targets_take_int8_activations_and_emulate_their_own_cpu(name, mcpu, dotprod):
    spec = get_target(name)
    assert spec.activation_dtype == "int8" and spec.weight_qmax == 127
    assert str(spec.target.attrs["mtriple"]) == "aarch64-linux-gnu" and str(spec.target.attrs["mcpu"]) == mcpu
    assert bool(spec.target.attrs["feature.has_dotprod"]) == dotprod
    assert spec.executor.mcpu == mcpu and not spec.executor.timed
    with pytest.raises(TvmqError, match="--trials 0"):
        spec.runner()


def _realized(tmp_path, rng, model, calib_shape):
    """``model``'s int8 module with int8 activations, calibrated on this machine (the ranges are
    fp32 statistics; the integer module is the one an ARM target realizes from them)."""
    from tvmq import api

    path = onnx_models.save(model, tmp_path / "m.onnx")
    calib = rng.standard_normal(calib_shape).astype(np.float32)
    quantized = api.quantize(path, calib, Config(batch_size=16, symmetric=True))
    assert quantized.scheme.activation_dtype == "int8"
    return bind_batch(quantized.int8, 1), calib[:4]


MODELS = [(onnx_models.conv_chain(channels=3), (16, 3, 12, 12), 2),  # input channels padded 3 -> 4
          (onnx_models.dense_chain(), (16, 20), 2)]


@pytest.mark.parametrize("model,shape,packed", MODELS[1:])  # the conv: every target's template, test_target_template
def test_arm_legalization_packs_int8_x_int8_layers_bit_identically(tmp_path, rng, arm, model, shape, packed):
    """On x86, so it runs everywhere: the legalized module computes the same integers."""
    import tvm

    int8, x = _realized(tmp_path, rng, model, shape)
    legalized = arm.legalize(int8)
    calls = [b.value for b in dataflow_bindings(legalized["main"]) if op_name(b.value) == "relax.call_tir"]
    assert sum(x86_int8.PACKED_PREFIX in c.args[0].name_hint for c in calls) == packed
    host = get_target("host")
    run = [virtual_machine(build(m, host))["main"](tvm.runtime.tensor(x[:1])).numpy() for m in (legalized, int8)]
    np.testing.assert_array_equal(*run)


@needs_toolchain
@pytest.mark.parametrize("model,shape,packed", MODELS)
def test_int8_model_on_aarch64_equals_the_x86_int8_module(tmp_path, rng, arm, model, shape, packed):
    import tvm

    int8, x = _realized(tmp_path, rng, model, shape)
    executable = build(arm.legalize(int8), arm)
    expected = virtual_machine(build(int8, get_target("host")))
    for sample in x:
        feed = tvm.runtime.tensor(sample[None])
        got, want = virtual_machine(executable)["main"](feed).numpy(), expected["main"](feed).numpy()
        assert np.count_nonzero(got != want) == 0, f"{np.count_nonzero(got != want)} of {got.size} values differ"


def _fixed_schedule(intrinsic, kernel, data_shape, packed_shape, **attrs):
    """``kernel`` on int8 data with output channels split by 4, the reduction's last 4 innermost,
    that 4 x 4 block tensorized onto ``intrinsic``: a Relax module calling it."""
    import tvm
    from tvm import te

    intrinsic.register()
    data = te.placeholder(data_shape, "int8", name="data")
    weight = te.placeholder(packed_shape, "int8", name="weight")
    out = kernel(data, weight, **attrs)
    sch = tvm.s_tir.Schedule(te.create_prim_func([data, weight, out]))
    block = sch.get_sblock("dense_packed" if kernel is x86_int8.dense else "conv2d_packed")
    loops = sch.get_loops(block)
    *spatial, channel = loops[:len(data_shape)]
    reductions = loops[len(data_shape):]
    if len(reductions) == 1:
        reductions = list(sch.split(reductions[0], [None, 4]))
    outer, inner = sch.split(channel, [None, 4])
    sch.reorder(*spatial, outer, *reductions[:-1], inner, reductions[-1])
    sch.decompose_reduction(block, reductions[0])
    sch.tensorize(inner, intrinsic.name)
    return _calling(sch.mod["main"])


def _calling(prim):
    """A Relax ``main`` that passes its arguments to ``prim`` and returns ``prim``'s last buffer."""
    import tvm

    buffers = list(prim.params)
    bb = relax.BlockBuilder()
    args = [relax.Var(f"a{i}", relax.TensorType(b.shape, b.dtype)) for i, b in enumerate(buffers[:-1])]
    with bb.function("main", args):
        kernel = bb.add_func(prim.without_attr("global_symbol"), "kernel")
        out = bb.emit(relax.call_tir(kernel, args, relax.TensorType(buffers[-1].shape, buffers[-1].dtype)))
        bb.emit_func_output(out)
    return tvm.ir.IRModule(bb.get().functions)


def _disassembly(executable, tmp_path) -> str:
    path = tmp_path / "lib.so"
    executable.export_library(str(path))
    return subprocess.run(["aarch64-linux-gnu-objdump", "-d", str(path)], capture_output=True, text=True,
                          check=True).stdout


def _conv_case(rng):
    x = rng.integers(-128, 128, (1, 6, 6, 12), dtype=np.int8)  # NHWC, the full int8 range
    w = (rng.choice([-1, 1], (20, 3, 3, 12)) * 127).astype(np.int8)  # OHWI at the clamp; 20: a partial block
    expected = conv2d_int(x.transpose(0, 3, 1, 2).astype(np.int64), w.transpose(0, 3, 1, 2), 0, 1, 1, 1, 1)
    packed = x86_int8.pack_conv_weight(w, 4)
    attrs = dict(out_channels=20, strides=[1, 1], padding=[1, 1, 1, 1], dilation=[1, 1])
    return x86_int8.conv2d_nhwc, x, packed, attrs, expected.transpose(0, 2, 3, 1)


def _dense_case(rng):
    x = rng.integers(-128, 128, (3, 38), dtype=np.int8)  # K = 38: padded to 40
    w = (rng.choice([-1, 1], (38, 24)) * 127).astype(np.int8)  # [K, N]
    packed = x86_int8.pack_dense_weight(w, 4)
    return x86_int8.dense, x, packed, dict(out_features=24), x.astype(np.int64) @ w.astype(np.int64)


@needs_toolchain
@pytest.mark.parametrize("case", [_conv_case, _dense_case])
def test_sdot_kernel_runs_on_aarch64_and_its_int32_accumulators_equal_numpy(tmp_path, rng, arm, case):
    import tvm

    kernel, x, packed, attrs, expected = case(rng)
    assert packed.shape[-2:] == (4, 4)  # [..., 4 outputs, 4 bytes]: one sdot's 16 contiguous bytes
    executable = build(_fixed_schedule(SDOT, kernel, x.shape, packed.shape, **attrs), arm)
    assert "sdot" in _disassembly(executable, tmp_path).split()
    got = virtual_machine(executable)["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(packed)).numpy()
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, expected)


@needs_toolchain
def test_the_project_design_space_tensorizes_the_packed_conv_onto_sdot_exactly(tmp_path, rng, arm, monkeypatch):
    """The arm target's space for the packed conv task (conv + requantize fused) is the conv sketch
    on sdot; a schedule drawn from it, built for aarch64, has sdot in its code and outputs equal to
    the untuned kernel's. (The sketch is applied directly: MetaSchedule's TuneContext imports every
    target's tensor intrinsics, minutes on a busy machine.)"""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from tvmq.targets import x86_sketch
    from tvmq.tune import fuse

    int8, _ = _realized(tmp_path, rng, onnx_models.conv_chain(channels=8), (16, 8, 12, 12))
    arm.prepare()
    lowered = relax.transform.FuseTIR()(fuse(arm.legalize(int8), arm))
    tasks = ms.relax_integration.extract_tasks(lowered, arm.target)
    task = next(t for t in tasks if x86_int8.PACKED_PREFIX + "conv2d" in t.task_name)
    monkeypatch.setattr(x86_sketch, "conv_space", lambda intrinsic, lanes: ("conv sketch", intrinsic, lanes))
    assert arm.space(task.task_name) == ("conv sketch", SDOT.name, 4)
    schedule = tvm.s_tir.Schedule(task.dispatched[0], seed=1)
    x86_sketch.schedule_packed_conv(schedule, SDOT.name, 4)
    prim = task.dispatched[0]["main"]
    args = [rng.integers(-20, 20, [int(d) for d in p.shape]).astype(str(p.dtype)) for p in prim.params[:-1]]
    tuned = build(_calling(schedule.mod["main"]), arm)
    assert "sdot" in _disassembly(tuned, tmp_path).split()
    got = virtual_machine(tuned)["main"](*[tvm.runtime.tensor(a) for a in args]).numpy()
    want = virtual_machine(build(_calling(prim), get_target("host")))["main"](*[tvm.runtime.tensor(a) for a in args])
    np.testing.assert_array_equal(got, want.numpy())


@needs_toolchain
def test_arm_code_dies_with_sigill_on_a_cpu_without_dotprod_while_arm_neon_runs(tmp_path, rng, arm, neon):
    import tvm

    kernel, x, packed, attrs, expected = _dense_case(rng)
    feeds = [tvm.runtime.tensor(x), tvm.runtime.tensor(packed)]
    neon_code = build(_fixed_schedule(NEON, kernel, x.shape, packed.shape, **attrs), neon)
    assert "smull" in _disassembly(neon_code, tmp_path).split()
    assert neon.executor.mcpu == "cortex-a53"  # ARMv8.0: no dotprod
    np.testing.assert_array_equal(virtual_machine(neon_code)["main"](*feeds).numpy(), expected)
    sdot_code = build(_fixed_schedule(SDOT, kernel, x.shape, packed.shape, **attrs), arm)
    with pytest.raises(TvmqError, match="SIGILL"):
        neon.executor.vm(sdot_code)["main"](*feeds)  # the arm module on the arm-neon target's CPU
