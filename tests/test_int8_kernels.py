"""The compiled int8 conv / dense kernels agree bit for bit with an independent numpy reference."""

import numpy as np
import pytest

import onnx_models
import tvmq
from reference import conv2d_int, requantize, weights_at_clamp
from tvmq.config import Config
from tvmq.targets import get_target, x86_int8
from tvmq.targets.x86 import KERNELS, cpu_flags


def _scales(compiled, tensor):
    record = compiled.manifest["quantization"]
    act = record["activations"][tensor]
    return np.float32(act["scale"][0]), int(act["zero_point"][0])


def _weights(compiled, layer_out, weight, axis):
    record = compiled.manifest["quantization"]["weights"][layer_out]
    qmax = compiled.manifest["config"]["weight_qmax"]
    assert (record["qmin"], record["qmax"]) == (-qmax, qmax)
    scale = np.asarray(record["scale"], np.float32)
    shape = [1] * weight.ndim
    shape[axis] = -1
    w_q = np.clip(np.round(weight / scale.reshape(shape)), -qmax, qmax).astype(np.int64)
    return w_q, scale


def _bias(bias, s_in, s_w):
    return np.round(bias.astype(np.float64) / (np.float64(s_in) * s_w.astype(np.float64))).astype(np.int64)


def _multiplier(s_in, s_w, s_out):
    return (np.float64(s_in) * s_w.astype(np.float64) / np.float64(s_out)).astype(np.float32)


def _inits(model):
    from onnx import numpy_helper

    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


@pytest.mark.parametrize("groups,stride,pad,dilation,per_channel", [
    (1, 1, 1, 1, True), (8, 2, 1, 1, True), (2, 1, 2, 2, True), (1, 1, 1, 1, False),
])
def test_conv_matches_integer_reference(tmp_path, rng, groups, stride, pad, dilation, per_channel):
    model = onnx_models.conv_chain(channels=8, groups=groups, stride=stride, pad=pad, dilation=dilation)
    path = onnx_models.save(model, tmp_path / "conv.onnx")
    calib = rng.standard_normal((16, 8, 12, 12)).astype(np.float32)
    compiled = tvmq.compile(path, calib, config=Config(per_channel=per_channel, latency_runs=1))
    _check_conv(compiled, model, calib[:1], stride, pad, dilation, groups)


def _runnable(name: str):
    flag = KERNELS[name].flag
    return pytest.param(name, marks=pytest.mark.skipif(flag not in cpu_flags(), reason=f"CPU without {flag}"))


@pytest.mark.parametrize("target", [_runnable(name) for name in KERNELS])
def test_conv_for_each_kernel_matches_integer_reference_with_its_weight_range(tmp_path, rng, target):
    """Legalization and the target's weight range (7-bit on vpmaddubsw kernels) keep the integers exact."""
    model = onnx_models.conv_chain(channels=8)
    path = onnx_models.save(model, tmp_path / "conv.onnx")
    calib = rng.standard_normal((16, 8, 12, 12)).astype(np.float32)
    compiled = tvmq.compile(path, calib, config=Config(target=target, latency_runs=1))
    assert compiled.manifest["config"]["weight_qmax"] == get_target(target).weight_qmax
    _check_conv(compiled, model, calib[:1], 1, 1, 1, 1)


def test_tuned_conv_matches_integer_reference(tmp_path, rng):
    model = onnx_models.conv_chain(channels=8)
    path = onnx_models.save(model, tmp_path / "conv.onnx")
    calib = rng.standard_normal((8, 8, 12, 12)).astype(np.float32)
    config = Config(trials=8, tuning_db=tmp_path / "db", latency_runs=1, latency_fallback=False)  # int8 under test
    compiled = tvmq.compile(path, calib, config=config)
    records = {p: p.read_bytes() for p in (tmp_path / "db").glob("*.json")}
    assert any(records.values()), "tuning wrote no records"
    _check_conv(compiled, model, calib[:1], 1, 1, 1, 1)
    again = tvmq.compile(path, calib, config=config)  # a warm database: no new trials
    assert {p: p.read_bytes() for p in (tmp_path / "db").glob("*.json")} == records
    np.testing.assert_array_equal(again.run(calib[:1]), compiled.run(calib[:1]))


@pytest.mark.skipif("avx512_vnni" not in cpu_flags(), reason="CPU without AVX-512 VNNI")
def test_tuned_vnni_conv_runs_vpdpbusd_and_matches_integer_reference(tmp_path, rng):
    """The auto-tensorized kernel (packed weights) is in the code and computes the same integers."""
    model = onnx_models.conv_chain(channels=32)
    path = onnx_models.save(model, tmp_path / "conv.onnx")
    calib = rng.standard_normal((8, 32, 12, 12)).astype(np.float32)
    compiled = tvmq.compile(path, calib, config=Config(trials=24, tuning_db=tmp_path / "db", latency_runs=1,
                                                       latency_fallback=False))
    asm = "\n".join(m.inspect_source("asm") for m in compiled.executable.mod.imports if m.kind == "llvm")
    assert "vpdpbusd" in asm, "no tuned kernel uses the VNNI instruction"
    _check_conv(compiled, model, calib[:1], 1, 1, 1, 1)


def _check_conv(compiled, model, x, stride, pad, dilation, groups):
    w = _inits(model)
    s_x, z_x = _scales(compiled, "x")
    s_r, z_r = _scales(compiled, "r")
    x_q = np.clip(np.round(x / s_x) + z_x, 0, 255).astype(np.int64)
    wa_q, s_wa = _weights(compiled, "r", w["wa"], 0)
    acc = conv2d_int(x_q - z_x, wa_q, 0, stride, pad, dilation, groups)
    acc += _bias(w["ba"], s_x, s_wa).reshape(1, -1, 1, 1)
    r_q = requantize(acc, _multiplier(s_x, s_wa, s_r).reshape(1, -1, 1, 1), z_r, z_r, 255, np.uint8)
    wb_q, s_wb = _weights(compiled, "y", w["wb"], 0)
    acc_b = conv2d_int(r_q.astype(np.int64) - z_r, wb_q, 0, 1, 0, 1, 1)
    acc_b += _bias(w["bb"], s_r, s_wb).reshape(1, -1, 1, 1)
    expected = acc_b.astype(np.float32) * (s_r * s_wb).reshape(1, -1, 1, 1)
    np.testing.assert_array_equal(compiled.run(x), expected)


def test_easyquant_weight_scales_stay_within_7_bits(tmp_path, rng):
    """EQ may pick weight scales below absmax / 63; realize must still clip at 63 on x86-avx2
    (the reference clips there, so weights clipped at 127 would not match)."""
    if "avx2" not in cpu_flags():
        pytest.skip("CPU without avx2")
    model = onnx_models.conv_chain(channels=8)
    path = onnx_models.save(model, tmp_path / "conv.onnx")
    calib = rng.standard_normal((16, 8, 12, 12)).astype(np.float32)
    compiled = tvmq.compile(path, calib, config=Config(target="x86-avx2", calibrator="eq", latency_runs=1))
    scales = np.asarray(compiled.manifest["quantization"]["weights"]["r"]["scale"])
    absmax = np.abs(_inits(model)["wa"]).max(axis=(1, 2, 3))
    assert (scales < absmax / 63 * 0.999).any(), "EQ kept every absmax scale: the test needs one below"
    _check_conv(compiled, model, calib[:1], 1, 1, 1, 1)


@pytest.mark.parametrize("target", ["host", *(_runnable(name) for name in KERNELS)])
def test_dense_matches_integer_reference(tmp_path, rng, target):
    model = onnx_models.dense_chain()
    path = onnx_models.save(model, tmp_path / "dense.onnx")
    calib = (rng.standard_normal((32, 20)) * 2).astype(np.float32)
    compiled = tvmq.compile(path, calib, config=Config(target=target, latency_runs=1))
    w = _inits(model)
    x = calib[:1]
    s_x, z_x = _scales(compiled, "x")
    s_r, z_r = _scales(compiled, "r")
    x_q = np.clip(np.round(x / s_x) + z_x, 0, 255).astype(np.int64)
    w1_q, s_w1 = _weights(compiled, "r", w["w1"].T, 1)
    acc = (x_q - z_x) @ w1_q + _bias(w["b1"], s_x, s_w1)
    hi = min(255, z_r + int(np.round(6.0 / s_r)))
    r_q = requantize(acc, _multiplier(s_x, s_w1, s_r), z_r, z_r, hi, np.uint8)
    w2_q, s_w2 = _weights(compiled, "y", w["w2"], 1)
    acc2 = (r_q.astype(np.int64) - z_r) @ w2_q + _bias(w["b2"], s_r, s_w2)
    expected = acc2.astype(np.float32) * (s_r * s_w2)
    np.testing.assert_array_equal(compiled.run(x), expected)


def _packed_module(x_conv, w_conv, x_dense, w_dense, lanes: int):
    """A Relax module of one packed conv (3x3, pad 1) and one packed dense, as legalization emits them."""
    from tvm import relax

    bb = relax.BlockBuilder()
    xc = relax.Var("xc", relax.TensorType(x_conv.shape, "uint8"))
    xd = relax.Var("xd", relax.TensorType(x_dense.shape, "uint8"))
    with bb.function("main", [xc, xd]):
        with bb.dataflow():
            conv = bb.emit(bb.call_te(x86_int8.conv2d_nhwc, xc, relax.const(x86_int8.pack_conv_weight(w_conv, lanes)),
                                      out_channels=w_conv.shape[0], strides=[1, 1], padding=[1, 1, 1, 1],
                                      dilation=[1, 1], primfunc_name_hint=x86_int8.PACKED_PREFIX + "conv2d"))
            dense = bb.emit(bb.call_te(x86_int8.dense, xd, relax.const(x86_int8.pack_dense_weight(w_dense, lanes)),
                                       out_features=w_dense.shape[1],
                                       primfunc_name_hint=x86_int8.PACKED_PREFIX + "dense"))
            out = bb.emit_output(relax.Tuple([conv, dense]))
        bb.emit_func_output(out)
    return bb.get()


@pytest.mark.parametrize("target", [_runnable(name) for name in KERNELS])
def test_tuned_packed_kernels_run_their_instruction_and_match_integer_reference(tmp_path, rng, target):
    """MetaSchedule tensorizes each target's packed conv and dense onto its intrinsic; with activations
    near 255 and weights at the target's clamp (which would saturate int16 with 8-bit weights) the
    integers stay exact."""
    import tvm
    from tvmq.build import build, virtual_machine
    from tvmq.tune import tune

    spec = get_target(target)
    intrinsic = KERNELS[target].intrinsic
    x_conv = rng.integers(250, 256, (1, 6, 6, 12)).astype(np.uint8)  # NHWC
    w_conv = weights_at_clamp(rng, (20, 3, 3, 12), spec.weight_qmax, 3)  # OHWI
    x_dense = rng.integers(250, 256, (2, 36)).astype(np.uint8)
    w_dense = weights_at_clamp(rng, (36, 24), spec.weight_qmax, 0)  # [K, N]
    tuned, summary = tune(_packed_module(x_conv, w_conv, x_dense, w_dense, intrinsic.lanes), spec, 8, tmp_path / "db")
    assert summary["tuned_now"] == summary["tasks"] == 2
    executable = build(tuned, spec)
    asm = "\n".join(m.inspect_source("asm") for m in executable.mod.imports if m.kind == "llvm")
    assert intrinsic.instruction in asm, f"no tuned kernel uses {intrinsic.instruction}"
    conv, dense = virtual_machine(executable)["main"](tvm.runtime.tensor(x_conv), tvm.runtime.tensor(x_dense))
    expected = conv2d_int(x_conv.transpose(0, 3, 1, 2).astype(np.int64), w_conv.transpose(0, 3, 1, 2), 0, 1, 1, 1, 1)
    np.testing.assert_array_equal(conv.numpy(), expected.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(dense.numpy(), x_dense.astype(np.int64) @ w_dense.astype(np.int64))


def test_symmetric_activations_keep_8_bit_weights_on_a_vpmaddubsw_target(tmp_path, rng):
    """Int8 activations do not reach the u8 x s8 kernels, so their int16 limit does not apply."""
    if "avx2" not in cpu_flags():
        pytest.skip("CPU without avx2")
    path = onnx_models.save(onnx_models.dense_chain(), tmp_path / "dense.onnx")
    calib = rng.standard_normal((32, 20)).astype(np.float32)
    compiled = tvmq.compile(path, calib, config=Config(target="x86-avx2", symmetric=True, latency_runs=1))
    assert compiled.manifest["config"]["weight_qmax"] == 127 and compiled.report["weight_bits"] == 8
