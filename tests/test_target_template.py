"""One test template run on every registered target (as NNCF runs each algorithm test on every
backend): the legalized int8 module computes the same integers as the unlegalized one, packed
weights come back out of the kernels unchanged, and a tuned kernel equals numpy's integer
reference.

A target's modules run on its executor; a target that cannot run here but whose legalization
has an ``on_host()`` twin (CUDA: the word product emulated) runs that twin on its analysis
target (the host); otherwise a case skips with the executor's reason. An alias (``host`` is
``x86``) runs once, under its spec's own name.
"""

import dataclasses

import numpy as np
import pytest
from tvm import relax

import onnx_models
from tvmq.build import bind_batch, build, virtual_machine
from tvmq.config import Config
from tvmq.errors import TvmqError
from tvmq.passes.graph import dataflow_bindings, op_name
from tvmq.targets import get_target, target_names

LAYER_OPS = {"relax.nn.conv2d", "relax.matmul"}


def _spec(name: str):
    spec = get_target(name)
    if spec.name != name:
        pytest.skip(f"{name} is an alias of {spec.name}, which runs under its own name")
    if spec.legalize is None:
        pytest.skip(f"{name} has no int8 legalization on this machine ({spec.description})")
    return spec


def _where_it_runs(spec):
    """``(spec to build for, legalization)`` of modules that can run here, or skip saying why."""
    why = spec.executor.unavailable()
    if why is None:
        return spec, spec.legalize
    on_host = getattr(spec.legalize, "on_host", None)
    if on_host is None:
        pytest.skip(f"{spec.name}: {why}")
    return spec.analysis_spec(), on_host()


def _run(executable, *arrays):
    import tvm

    return virtual_machine(executable)["main"](*[tvm.runtime.tensor(a) for a in arrays]).numpy()


def _realized(tmp_path, rng, spec, model, shape):
    """``model`` calibrated on the host and realized in ``spec``'s int8 scheme (activation dtype,
    weight range), batch 1: the module its legalization takes."""
    from tvmq.stages import Pipeline

    twin = dataclasses.replace(get_target("host"), activation_dtype=spec.activation_dtype,
                               weight_qmax=spec.weight_qmax, legalize=None)
    path = onnx_models.save(model, tmp_path / "m.onnx")
    calib = rng.standard_normal(shape).astype(np.float32)
    config = Config(batch_size=16)
    quantized = Pipeline({"target": twin}, model=path, calib=calib, config=config)["refine"]
    assert quantized.scheme.activation_dtype == spec.activation_dtype
    return bind_batch(quantized.int8, 1), calib[:2]


@pytest.mark.parametrize("name", target_names())
def test_legalized_module_is_bit_identical_to_the_unlegalized_one(tmp_path, rng, name):
    spec = _spec(name)
    runs_on, legalize = _where_it_runs(spec)
    host = get_target("host")
    for model, shape in [(onnx_models.conv_chain(channels=3), (16, 3, 12, 12)), (onnx_models.dense_chain(), (16, 20))]:
        int8, x = _realized(tmp_path, rng, spec, model, shape)
        legalized = legalize(int8)
        assert not LAYER_OPS & {op_name(b.value) for b in dataflow_bindings(legalized["main"])}  # all packed
        executable = build(legalized, runs_on)
        for sample in x:
            np.testing.assert_array_equal(_run(executable, sample[None]), _run(build(int8, host), sample[None]))


def _layers_module(spec, channels: int, out_channels: int, k: int, n: int, conv_w, dense_w):
    """One int8 conv2d (NCHW, 3x3, padding 1) and one dense, each int8 x int8 -> int32."""
    import tvm

    dtype = spec.activation_dtype
    bb = relax.BlockBuilder()
    xc = relax.Var("xc", relax.TensorType((channels, channels, 3, 3), dtype))
    xd = relax.Var("xd", relax.TensorType((k, k), dtype))
    with bb.function("main", [xc, xd]):
        with bb.dataflow():
            conv = bb.emit(relax.op.nn.conv2d(xc, relax.const(conv_w), padding=[1, 1], out_dtype="int32"))
            dense = bb.emit(relax.op.matmul(xd, relax.const(dense_w), out_dtype="int32"))
            out = bb.emit_output(relax.Tuple([conv, dense]))
        bb.emit_func_output(out)
    return tvm.ir.IRModule(bb.get().functions)


@pytest.mark.parametrize("name", target_names())
def test_packed_weights_come_back_out_of_the_kernels_unchanged(rng, name):
    """Packing round trip through the kernels: a 3x3 image with a single 1 in its centre, in
    channel ``c`` of sample ``c``, convolves to ``W[:, c]`` flipped; the identity matrix times a
    dense weight is the weight. Channels (5) and K (38) are not multiples of 4, the output
    channels (20) not a multiple of 16: every padding of the packing is crossed."""
    import tvm

    spec = _spec(name)
    runs_on, legalize = _where_it_runs(spec)
    q = spec.weight_qmax
    channels, out_channels, k, n = 5, 20, 38, 24
    conv_w = rng.integers(-q, q + 1, (out_channels, channels, 3, 3)).astype(np.int8)
    dense_w = rng.integers(-q, q + 1, (k, n)).astype(np.int8)
    legalized = legalize(_layers_module(spec, channels, out_channels, k, n, conv_w, dense_w))
    assert not LAYER_OPS & {op_name(b.value) for b in dataflow_bindings(legalized["main"])}
    deltas = np.zeros((channels, channels, 3, 3), spec.activation_dtype)
    deltas[np.arange(channels), np.arange(channels), 1, 1] = 1

    identity = np.eye(k, dtype=spec.activation_dtype)
    conv, dense = virtual_machine(build(legalized, runs_on))["main"](tvm.runtime.tensor(deltas),
                                                                    tvm.runtime.tensor(identity))
    np.testing.assert_array_equal(conv.numpy().transpose(1, 0, 2, 3)[:, :, ::-1, ::-1], conv_w)
    np.testing.assert_array_equal(dense.numpy(), dense_w)


@pytest.mark.parametrize("name", target_names())
def test_a_tuned_kernel_equals_the_integer_reference(tmp_path, rng, name):
    """Tuned with 2 trials on the target's own runner (where it has one here), built, run."""
    from tvmq.tune import tune

    spec = _spec(name)
    why = spec.executor.unavailable()
    if why:  # e.g. x86-vnni's code on a CPU without AVX-512: it would stop the process
        pytest.skip(f"{name}: {why}")
    try:
        spec.runner()
    except TvmqError as err:
        pytest.skip(f"{name}: {err}")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((4, 38), spec.activation_dtype))
    w = rng.integers(-spec.weight_qmax, spec.weight_qmax + 1, (38, 24)).astype(np.int8)
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.matmul(x, relax.const(w), out_dtype="int32"))
        bb.emit_func_output(out)
    tuned, summary = tune(spec.legalize(bb.get()), spec, 2, tmp_path / "db")
    assert summary["measured"] >= 1
    info = np.iinfo(spec.activation_dtype)
    xv = rng.integers(info.min, info.max + 1, (4, 38)).astype(spec.activation_dtype)
    np.testing.assert_array_equal(_run(build(tuned, spec), xv), xv.astype(np.int64) @ w.astype(np.int64))


@pytest.mark.parametrize("name", target_names())
def test_every_executor_implements_the_whole_executor_interface(name):
    """Each member of :class:`tvmq.targets.Executor` (a Protocol nothing checks at run time)."""
    from tvmq.targets import Executor

    members = set(Executor.__annotations__) | {m for m in vars(Executor) if not m.startswith("_")}
    executor = get_target(name).executor
    assert not [m for m in sorted(members) if not hasattr(executor, m)], type(executor).__name__
