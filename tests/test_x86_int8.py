"""x86 int8 kernels: target selection, packed weight layouts, the three tensor intrinsics on a fixed
schedule, and the bit-identical legalization (MetaSchedule-tuned kernels: test_int8_kernels)."""

import numpy as np
import pytest
from tvm import relax

import onnx_models
from reference import conv2d_int, weights_at_clamp
from tvmq.config import Config
from tvmq.passes.graph import dataflow_bindings, op_name
from tvmq.passes.realize import quantization_record
from tvmq.targets import get_target, target_names, x86_depthwise, x86_int8
from tvmq.targets.x86 import KERNELS, best_kernel, cpu_flags
from tvmq.targets.x86_legalize import LegalizeForX86


@pytest.mark.parametrize("flags,expected", [
    ({"avx512_vnni", "avx512bw", "avx2"}, "x86-vnni"), ({"avx512bw", "avx2"}, "x86-avx512"),
    ({"avx2", "avx_vnni"}, "x86-avx2"), ({"sse4_2"}, None),
])
def test_best_kernel_follows_the_cpu_flags(flags, expected):
    kernel = best_kernel(flags)
    assert (kernel and kernel.intrinsic) == (KERNELS[expected].intrinsic if expected else None)


@pytest.mark.parametrize("name,mcpu,qmax", [("x86-vnni", "cascadelake", 127), ("x86-avx512", "skylake-avx512", 63),
                                            ("x86-avx2", "haswell", 63)])
def test_explicit_targets_name_their_cpu_and_weight_range(name, mcpu, qmax):
    spec = get_target(name)
    assert name in target_names() and str(spec.target.attrs["mcpu"]) == mcpu
    assert spec.weight_qmax == qmax and (spec.weight_bits == 7) == (qmax == 63)
    assert spec.legalize is not None and ("7-bit" in spec.description) == (qmax == 63)


def test_unknown_target_name_lists_the_choices():
    with pytest.raises(KeyError, match="unknown target 'x86-sse'.*x86-avx2"):
        get_target("x86-sse")


@pytest.mark.parametrize("lanes", [16, 8])
def test_conv_weight_packing_puts_each_block_where_the_dot_product_reads_it(rng, lanes):
    w = rng.integers(-127, 128, (24, 3, 3, 5), dtype=np.int8)  # OHWI, O and I off the block sizes
    packed = x86_int8.pack_conv_weight(w, lanes)
    assert packed.shape == (-(-24 // lanes), 3, 3, 2, lanes, 4)
    o, kh, kw, i = np.meshgrid(*[np.arange(n) for n in w.shape], indexing="ij")
    np.testing.assert_array_equal(packed[o // lanes, kh, kw, i // 4, o % lanes, i % 4], w)
    assert np.count_nonzero(packed) == np.count_nonzero(w), "padding must be zeros"


@pytest.mark.parametrize("lanes", [16, 8])
def test_dense_weight_packing_puts_each_block_where_the_dot_product_reads_it(rng, lanes):
    w = rng.integers(-127, 128, (18, 21), dtype=np.int8)  # [K, N]
    packed = x86_int8.pack_dense_weight(w, lanes)
    assert packed.shape == (-(-21 // lanes), 5, lanes, 4)
    k, n = np.meshgrid(np.arange(18), np.arange(21), indexing="ij")
    np.testing.assert_array_equal(packed[n // lanes, k // 4, n % lanes, k % 4], w)
    assert np.count_nonzero(packed) == np.count_nonzero(w)


def _tensorized_build(intrinsic, mcpu: str, kernel, data_shape, packed_shape, **attrs):
    """``kernel`` under a fixed schedule: output channels split by lanes, the reduction's last
    4 innermost, that block tensorized onto ``intrinsic``; built for ``mcpu``."""
    import tvm
    from tvm import te

    intrinsic.register()
    data = te.placeholder(data_shape, "uint8", name="data")
    weight = te.placeholder(packed_shape, "int8", name="weight")
    out = kernel(data, weight, **attrs)
    sch = tvm.s_tir.Schedule(te.create_prim_func([data, weight, out]))
    block = sch.get_sblock("dense_packed" if kernel is x86_int8.dense else "conv2d_packed")
    loops = sch.get_loops(block)
    *spatial, channel = loops[:len(data_shape)]
    reductions = loops[len(data_shape):]
    if len(reductions) == 1:  # dense: one reduction over K, split into K/4 x 4
        reductions = list(sch.split(reductions[0], [None, 4]))
    outer, inner = sch.split(channel, [None, intrinsic.lanes])
    sch.reorder(*spatial, outer, *reductions[:-1], inner, reductions[-1])
    sch.decompose_reduction(block, reductions[0])
    sch.tensorize(inner, intrinsic.name)
    return tvm.tirx.build(sch.mod, target=tvm.target.Target({"kind": "llvm", "mcpu": mcpu}))


def _run(lib, x, packed, out_shape):
    import tvm

    out = tvm.runtime.tensor(np.zeros(out_shape, np.int32))
    lib(tvm.runtime.tensor(x), tvm.runtime.tensor(packed), out)
    return out.numpy()


@pytest.mark.parametrize("name", list(KERNELS))
def test_tensorized_conv_emits_the_instruction_and_matches_numpy_at_the_weight_clamp(name, rng):
    if KERNELS[name].flag not in cpu_flags():
        pytest.skip(f"CPU without {KERNELS[name].flag}: cannot run {name} code")
    kernel = KERNELS[name]
    intrinsic = kernel.intrinsic
    x = rng.integers(250, 256, (1, 6, 6, 12)).astype(np.uint8)  # NHWC, activations near 255
    w = weights_at_clamp(rng, (20, 3, 3, 12), intrinsic.weight_qmax, 3)  # OHWI, 20 channels: a partial block
    lanes = intrinsic.lanes
    lib = _tensorized_build(intrinsic, kernel.mcpu, x86_int8.conv2d_nhwc, x.shape,
                            x86_int8.pack_conv_weight(w, lanes).shape, out_channels=20, strides=[1, 1],
                            padding=[1, 1, 1, 1], dilation=[1, 1])
    assert intrinsic.instruction in lib.inspect_source("asm")

    def check(weight):
        got = _run(lib, x, x86_int8.pack_conv_weight(weight, lanes), (1, 6, 6, 20))
        expected = conv2d_int(x.transpose(0, 3, 1, 2).astype(np.int64), weight.transpose(0, 3, 1, 2), 0, 1, 1, 1, 1)
        return np.array_equal(got, expected.transpose(0, 2, 3, 1))

    assert check(w)
    if intrinsic.saturates_int16:  # why these kernels get 7-bit weights: 8-bit ones saturate int16
        assert not check(weights_at_clamp(rng, w.shape, 127, 3))


@pytest.mark.parametrize("name", list(KERNELS))
def test_tensorized_dense_emits_the_instruction_and_matches_numpy_at_the_weight_clamp(name, rng):
    if KERNELS[name].flag not in cpu_flags():
        pytest.skip(f"CPU without {KERNELS[name].flag}: cannot run {name} code")
    kernel = KERNELS[name]
    intrinsic = kernel.intrinsic
    x = rng.integers(250, 256, (3, 38)).astype(np.uint8)  # K = 38: padded to 40
    w = weights_at_clamp(rng, (40, 24), intrinsic.weight_qmax, 0)[:38]  # [K, N]
    lanes = intrinsic.lanes
    lib = _tensorized_build(intrinsic, kernel.mcpu, x86_int8.dense, x.shape,
                            x86_int8.pack_dense_weight(w, lanes).shape, out_features=24)
    assert intrinsic.instruction in lib.inspect_source("asm")

    def check(weight):
        got = _run(lib, x, x86_int8.pack_dense_weight(weight, lanes), (3, 24))
        return np.array_equal(got, x.astype(np.int64) @ weight.astype(np.int64))

    assert check(w)
    if intrinsic.saturates_int16:
        assert not check(weights_at_clamp(rng, (40, 24), 127, 0)[:38])


def _realized(tmp_path, rng, model, calib_shape, keep_fp32=()):
    """The int8 module tvmq deploys for ``model`` (the layers ``keep_fp32`` left fp32, as the
    latency fallback does), before the target's legalization."""
    from tvmq import api
    from tvmq.build import bind_batch

    path = onnx_models.save(model, tmp_path / "m.onnx")
    calib = rng.standard_normal(calib_shape).astype(np.float32)
    quantized = api.quantize(path, calib, Config(batch_size=16))
    int8 = quantized.realize(quantized.program, keep_fp32) if keep_fp32 else quantized.int8
    return bind_batch(int8, 1), calib[:1]


@pytest.mark.parametrize("lanes", [16, 8])
@pytest.mark.parametrize("model,shape,packed,depthwise", [
    (onnx_models.conv_chain(channels=8), (16, 8, 12, 12), 2, 0),
    (onnx_models.conv_chain(channels=3), (16, 3, 12, 12), 2, 0),  # channels padded 3 -> 4 by an op of its own
    (onnx_models.conv_chain(channels=8, groups=8, stride=2), (16, 8, 12, 12), 1, 1),
    (onnx_models.conv_chain(channels=8, groups=8, pad=2, dilation=2), (16, 8, 12, 12), 1, 1),
    (onnx_models.dense_chain(), (16, 20), 2, 0),
])
def test_legalized_module_is_bit_identical(tmp_path, rng, model, shape, packed, depthwise, lanes):
    import tvm

    int8, x = _realized(tmp_path, rng, model, shape)
    legalized = LegalizeForX86(lanes)(int8)
    calls = [b.value for b in dataflow_bindings(legalized["main"]) if op_name(b.value) == "relax.call_tir"]
    assert sum(x86_int8.PACKED_PREFIX in c.args[0].name_hint for c in calls) == packed
    assert sum(x86_depthwise.PREFIX in c.args[0].name_hint for c in calls) == depthwise

    def run(mod):
        vm = relax.VirtualMachine(tvm.compile(mod, get_target("host").target), tvm.cpu())
        return vm["main"](tvm.runtime.tensor(x)).numpy()

    np.testing.assert_array_equal(run(legalized), run(int8))


def test_a_layer_kept_fp32_between_int8_layers_adds_no_transposes(tmp_path, rng):
    """Its quantize / dequantize edges follow NHWC like every other op: the legalized module
    transposes only its input and output (relax.quantize has no layout inference: ConvertLayout
    put a transpose on each side of each, four more kernels, on MobileNetV2's stem 0.4 ms)."""
    import tvm

    int8, x = _realized(tmp_path, rng, onnx_models.conv_chain(channels=8), (16, 8, 12, 12), keep_fp32=["r"])
    legalized = LegalizeForX86(16)(int8)
    ops = [op_name(b.value) for b in dataflow_bindings(legalized["main"])]
    assert ops.count("relax.permute_dims") == 2, ops
    assert "relax.quantize" not in ops and "relax.dequantize" not in ops

    def run(mod):
        vm = relax.VirtualMachine(tvm.compile(mod, get_target("host").target), tvm.cpu())
        return vm["main"](tvm.runtime.tensor(x)).numpy()

    assert quantization_record(int8)["precision"]["r"] == "fp32"
    # the fp32 conv sums in another order: a value of r on a rounding edge may quantize one step apart
    np.testing.assert_allclose(run(legalized), run(int8), atol=0.05)
