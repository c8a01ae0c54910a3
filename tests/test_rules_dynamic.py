"""Dynamic quantization of dense layers (``--mode dynamic``, ``Config.layers`` "dynamic"):
int8 weights at compile time, the input's scale and zero point computed at run time from the
tensor itself, the static rule's int8 x int8 -> int32 matmul, the zero-point term
``z sum_k w_q`` subtracted in int32 and the result rescaled to fp32.
Every compiled result is checked against :func:`reference.dynamic_dense`, the same arithmetic in numpy.
"""

import numpy as np
import pytest
import tvm
from onnx import helper, numpy_helper
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

import onnx_models
from reference import dynamic_conv, dynamic_dense
from tvmq import api, report
from tvmq.build import bind_batch, build, virtual_machine
from tvmq.config import Config
from tvmq.errors import TvmqError
from tvmq.passes.graph import dataflow_bindings, op_name
from tvmq.passes.plan import DYNAMIC_MODE, USER_OVERRIDE
from tvmq.passes.realize import RECORD_ATTR, Realize, Scheme, quantization_record
from tvmq.targets import get_target, x86_int8
from tvmq.targets.x86_legalize import LegalizeForX86


def _weights(w, qmax=127):
    """Symmetric int8 per output channel (the last axis of a ``(K, N)`` weight)."""
    scale = np.maximum(np.abs(w).max(axis=0) / qmax, 1e-8).astype(np.float32)
    return np.clip(np.round(w / scale), -qmax, qmax).astype(np.int8), scale


def _run(mod, *args):
    vm = virtual_machine(build(mod, get_target("host")))
    return vm["main"](*(tvm.runtime.tensor(a) for a in args)).numpy()


def test_dynamic_dense_computes_its_input_scale_at_run_time(rng):
    """``relu(x @ W + b)`` planned dynamic (uint8): the expected Relax, op for op."""
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((2, 4), "float32"), w: R.Tensor((4, 3), "float32"), b: R.Tensor((3,), "float32")):
            with R.dataflow():
                a = R.matmul(x, w)
                c = R.add(a, b)
                r = R.nn.relu(c)
                R.output(r)
            return r

    w, b = rng.normal(0, 1, (4, 3)).astype(np.float32), rng.normal(0, 1, 3).astype(np.float32)
    w_q, s_w = _weights(w)
    f32 = "float32"

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((2, 4), "float32"), w_q: R.Tensor((4, 3), "int8"), sums: R.Tensor((3,), "int32"),
                 s_w: R.Tensor((3,), "float32"), b: R.Tensor((3,), "float32")):
            with R.dataflow():
                lo = R.minimum(R.min(x), R.const(0.0, f32))
                hi = R.maximum(R.max(x), R.const(0.0, f32))
                s = R.maximum(R.divide(R.subtract(hi, lo), R.const(255.0, f32)), R.const(1e-8, f32))
                z = R.round(R.divide(R.negative(lo), s))
                steps = R.add(R.round(R.divide(x, s)), z)
                x_q = R.astype(R.minimum(R.maximum(steps, R.const(0.0, f32)), R.const(255.0, f32)), "uint8")
                acc = R.matmul(x_q, w_q, out_dtype="int32")
                acc = R.subtract(acc, R.multiply(R.astype(z, "int32"), sums))
                y = R.add(R.multiply(R.astype(acc, f32), R.multiply(s, s_w)), b)
                r = R.minimum(R.maximum(y, R.const(0.0, f32)), R.const(3.4e38, f32))
                gv = r
                R.output(gv)
            return gv

    bound = relax.transform.BindParams("main", {"w": w, "b": b})(Before)
    got = Realize({}, Scheme("uint8", mode="dynamic"))(bound)
    record = quantization_record(got)
    assert record["precision"] == {"a": "dynamic", "c": "dynamic", "r": "dynamic"}
    got = tvm.IRModule({"main": got["main"].without_attr(RECORD_ATTR)})
    want = relax.transform.BindParams("main", {"w_q": w_q, "sums": w_q.sum(0, dtype=np.int32), "s_w": s_w,
                                               "b": b})(Expected)
    tvm.ir.assert_structural_equal(got, want)
    x = rng.uniform(-1, 3, (2, 4)).astype(np.float32)
    np.testing.assert_array_equal(_run(got, x), dynamic_dense(x, w_q, s_w, b, "uint8", (0.0, np.inf)))


@I.ir_module
class Linear3d:
    @R.function
    def main(x: R.Tensor((2, 5, 16), "float32"), w: R.Tensor((16, 8), "float32"), b: R.Tensor((8,), "float32")):
        with R.dataflow():
            a = R.matmul(x, w)
            y = R.add(a, b)
            R.output(y)
        return y


@pytest.mark.parametrize("dtype, granularity", [("uint8", "tensor"), ("int8", "tensor"), ("uint8", "row"),
                                                ("int8", "row")])
def test_nd_matmul_runs_on_the_packed_int8_dense_kernel_as_the_reference(rng, dtype, granularity):
    """``[B, S, K] x [K, N] + b`` dynamic: one packed int8 dense kernel after the target's
    legalization, and exactly the numpy reference (uint8 with a zero point; int8 symmetric;
    one scale per tensor or per row, i.e. per token)."""
    w, b = rng.normal(0, 0.3, (16, 8)).astype(np.float32), rng.normal(0, 0.1, 8).astype(np.float32)
    bound = relax.transform.BindParams("main", {"w": w, "b": b})(Linear3d)
    realized = Realize({}, Scheme(dtype, mode="dynamic", dynamic_granularity=granularity))(bound)
    legalized = LegalizeForX86(16, dtype)(realized)
    calls = [bv.value for bv in dataflow_bindings(legalized["main"]) if op_name(bv.value) == "relax.call_tir"]
    assert sum(x86_int8.PACKED_PREFIX in c.args[0].name_hint for c in calls) == 1
    w_q, s_w = _weights(w)
    rows = granularity == "row"
    spread = rng.normal(0, 3, (2, 5, 16)) * np.exp(rng.normal(0, 1, (2, 5, 1)))  # rows of different ranges
    for x in (rng.uniform(-0.5, 2.0, (2, 5, 16)), spread, np.zeros((2, 5, 16))):
        x = x.astype(np.float32)
        want = dynamic_dense(x, w_q, s_w, b, dtype, rows=rows)
        vm = relax.VirtualMachine(tvm.compile(legalized, get_target("host").target), tvm.cpu())
        np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), want)
    np.testing.assert_array_equal(want, np.broadcast_to(b, want.shape))  # all-zero input: s floored, y = b


def test_mode_dynamic_compiles_a_dense_chain_as_the_reference(tmp_path, rng):
    """``Config(mode="dynamic")`` on Gemm -> Clip -> MatMul + Add: both layers dynamic in the plan
    and the report, the compiled module the chained numpy reference (integers exact)."""
    model = onnx_models.dense_chain()
    path = onnx_models.save(model, tmp_path / "dense.onnx")
    calib = rng.standard_normal((16, 20)).astype(np.float32)
    compiled = api.compile(path, calib, config=Config(mode="dynamic", batch_size=16, latency_runs=1))
    plan = {entry["node"]: (entry["precision"], entry["reason"]) for entry in compiled.plan["layers"]}
    assert plan == {"fc1": ("dynamic", DYNAMIC_MODE), "fc2": ("dynamic", DYNAMIC_MODE)}
    layers = {row["name"]: row["precision"] for row in compiled.report["layers"]}
    assert layers["fc1"] == layers["fc2"] == "dynamic", layers
    assert compiled.report["dynamic"] == {"layers": 2, "granularity": "tensor"}
    assert "2 layers dynamic (input scale per tensor at run time)" in report.to_markdown(compiled.report)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    x = rng.standard_normal((1, 20)).astype(np.float32) * 2
    qmax = compiled.plan["scheme"]["weight_qmax"]
    w1_q, s1 = _weights(inits["w1"].T, qmax)
    w2_q, s2 = _weights(inits["w2"], qmax)
    dtype = get_target("host").activation_dtype
    h = dynamic_dense(x, w1_q, s1, inits["b1"], dtype, (0.0, 6.0))
    want = dynamic_dense(h, w2_q, s2, inits["b2"], dtype)
    # integers exact; the fp32 dequantize may fuse into an FMA (an ulp), far below one output step
    np.testing.assert_allclose(compiled.run({"x": x}), want, rtol=0, atol=2 * np.spacing(np.abs(want).max()))
    with pytest.raises(TvmqError, match="cannot export: layer 'fc1' is dynamic"):
        compiled.export_qdq(tmp_path / "qdq.onnx")


def test_a_layer_override_makes_one_dense_dynamic_and_the_rest_static(tmp_path, rng):
    path = onnx_models.save(onnx_models.dense_chain(), tmp_path / "dense.onnx")
    calib = rng.standard_normal((16, 20)).astype(np.float32)
    quantized = api.quantize(path, calib, Config(batch_size=16, layers={"fc2": "dynamic"}))
    assert {name: (e.precision, e.reason) for name, e in quantized.plan.layers.items()} == \
        {"r": ("int8", "calibrated"), "y": ("dynamic", USER_OVERRIDE)}
    record = quantization_record(quantized.int8)
    assert record["precision"]["r"] == "int8" and record["precision"]["y"] == "dynamic"


@pytest.mark.parametrize("groups", [1, 8])
def test_dynamic_convs_pad_in_fp32_and_match_the_reference(tmp_path, rng, groups):
    """Conv(3x3, pad 1) -> Relu -> Conv(1x1), both dynamic by override (``--mode dynamic`` alone
    keeps convs static): packed x86 conv kernels after legalization, exactly the reference."""
    model = onnx_models.conv_chain(groups=groups)
    path = onnx_models.save(model, tmp_path / "conv.onnx")
    calib = rng.standard_normal((4, 8, 12, 12)).astype(np.float32)
    assert {e.precision for e in api.quantize(path, calib, Config(batch_size=4, mode="dynamic"))
            .plan.layers.values()} == {"int8"}
    quantized = api.quantize(path, calib, Config(batch_size=4, layers={"conv_*": "dynamic"}))
    assert {(e.precision, e.reason) for e in quantized.plan.layers.values()} == {("dynamic", USER_OVERRIDE)}
    dtype = get_target("host").activation_dtype
    legalized = LegalizeForX86(16, dtype)(bind_batch(quantized.int8, 1))
    calls = [bv.value for bv in dataflow_bindings(legalized["main"]) if op_name(bv.value) == "relax.call_tir"]
    assert sum("conv2d" in c.args[0].name_hint and str(c.ty.dtype) == "int32" for c in calls) == 2, \
        [c.args[0].name_hint for c in calls]  # the packed / depthwise int8 kernels
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    qmax = quantized.scheme.weight_qmax
    (wa_q, sa), (wb_q, sb) = (_conv_weights(inits[w], qmax) for w in ("wa", "wb"))
    vm = relax.VirtualMachine(tvm.compile(legalized, get_target("host").target), tvm.cpu())
    x = rng.normal(0.5, 1.0, (1, 8, 12, 12)).astype(np.float32)
    h = dynamic_conv(x, wa_q, sa, inits["ba"], dtype, pad=1, groups=groups, clamp=(0.0, np.inf))
    want = dynamic_conv(h, wb_q, sb, inits["bb"], dtype, pad=0)
    np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), want)


def _conv_weights(w, qmax):
    """Symmetric int8 per output channel of an OIHW weight."""
    scale = np.maximum(np.abs(w).max(axis=(1, 2, 3)) / qmax, 1e-8).astype(np.float32)
    return np.clip(np.round(w / scale.reshape(-1, 1, 1, 1)), -qmax, qmax).astype(np.int8), scale


def test_modes_and_precisions_are_checked():
    with pytest.raises(TvmqError, match="unknown mode 'fast'; choose one of: static, dynamic"):
        Config(mode="fast")
    with pytest.raises(TvmqError, match="unknown dynamic granularity 'token'; choose one of: tensor, row"):
        Config(dynamic_granularity="token")
    with pytest.raises(TvmqError, match="unknown precision 'dyn'"):
        Config(layers={"fc1": "dyn"})


def test_cli_mode_and_dynamic_layers_become_the_config():
    from tvmq import cli

    args = cli._parser().parse_args(["compile", "m.onnx", "--out", "o", "--mode", "dynamic",
                                     "--dynamic-layers", "fc1, /enc/*/MatMul", "--fp32-layers", "fc1"])
    config = cli._config(args)
    assert config.mode == "dynamic" and config.dynamic_granularity == "tensor"
    assert list(config.layers.items()) == [("/enc/*/MatMul", "dynamic"), ("fc1", "fp32")]  # fp32 wins
    assert cli._config(cli._parser().parse_args(["compile", "m.onnx", "--out", "o"])).mode == "static"


def _arm_toolchain_missing():
    from tvmq.targets.qemu import default_sysroot, toolchain_missing

    return toolchain_missing(default_sysroot())


@pytest.mark.skipif(_arm_toolchain_missing() is not None, reason="aarch64 toolchain (make arm-env)")
def test_dynamic_dense_chain_on_aarch64_is_the_symmetric_int8_reference(tmp_path, rng):
    """The ARM target (int8 activations: ``s = max|x| / 127``, ``z = 0``) under qemu: its packed
    sdot dense kernels compute exactly the numpy reference."""
    model = onnx_models.dense_chain()
    path = onnx_models.save(model, tmp_path / "dense.onnx")
    calib = rng.standard_normal((16, 20)).astype(np.float32)
    arm = get_target("arm")
    quantized = api.quantize(path, calib, Config(target="arm", batch_size=16, mode="dynamic"))
    assert quantized.scheme.activation_dtype == "int8"
    vm = virtual_machine(build(arm.legalize(bind_batch(quantized.int8, 1)), arm))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    (w1_q, s1), (w2_q, s2) = _weights(inits["w1"].T), _weights(inits["w2"])
    x = rng.standard_normal((1, 20)).astype(np.float32) * 2
    h = dynamic_dense(x, w1_q, s1, inits["b1"], "int8", (0.0, 6.0))
    want = dynamic_dense(h, w2_q, s2, inits["b2"], "int8")
    np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), want)


@pytest.mark.parametrize("granularity", ["tensor", "row"])
def test_dynamic_matmul_for_cuda_is_a_dp4a_dense_and_the_reference_emulated(rng, granularity):
    """The CUDA target (int8, symmetric): its legalization puts the dynamic matmul on the dp4a
    dense kernel (CUDA source built here, no GPU needed); with dp4a emulated the host computes
    exactly the reference."""
    import re

    from tvmq.targets import cuda_int8
    from tvmq.targets.cuda import cuda_source
    from tvmq.targets.cuda_legalize import LegalizeForCuda

    w, b = rng.normal(0, 0.3, (16, 8)).astype(np.float32), rng.normal(0, 0.1, 8).astype(np.float32)
    bound = relax.transform.BindParams("main", {"w": w, "b": b})(Linear3d)
    realized = Realize({}, Scheme("int8", mode="dynamic", dynamic_granularity=granularity))(bound)
    x = rng.normal(0, 2, (2, 5, 16)).astype(np.float32) * np.exp(rng.normal(0, 1, (2, 5, 1))).astype(np.float32)
    got = _run(LegalizeForCuda(cuda_int8.EMULATED)(realized), x)
    w_q, s_w = _weights(w)
    np.testing.assert_array_equal(got, dynamic_dense(x, w_q, s_w, b, "int8", rows=granularity == "row"))
    spec = get_target("cuda")
    source = cuda_source(build(spec.legalize(realized), spec))
    kernels = re.findall(r"void __launch_bounds__\(\d+\) (\w+)\(", source)
    assert any(cuda_int8.PREFIX in name and "dense" in name for name in kernels), kernels


def test_mode_dynamic_on_a_qdq_model_is_one_error_line(tmp_path, rng):
    from test_qdq_import import ort_qdq

    path = onnx_models.save(onnx_models.dense_chain(), tmp_path / "dense.onnx")
    qdq = ort_qdq(path, rng.standard_normal((16, 20)).astype(np.float32), tmp_path)
    with pytest.raises(TvmqError, match="--mode dynamic is for float models: this is a QDQ model"):
        api.compile(qdq, None, config=Config(mode="dynamic"))
