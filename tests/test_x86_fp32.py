"""x86 fp32 kernels: the packed weight layout, the legalized fp32 module against the original,
and the fp32 conv sketch under any tiling."""

import re

import numpy as np
import pytest
import tvm
from tvm import relax

import onnx_models
from test_x86_sketch import _run
from tvmq import api
from tvmq.build import bind_batch
from tvmq.frontend import load_model
from tvmq.passes.graph import dataflow_bindings, op_name
from tvmq.targets import get_target, x86_depthwise, x86_fp32, x86_sketch
from tvmq.targets.x86 import KERNELS, cpu_flags
from tvmq.targets.x86_legalize import LegalizeForX86
from tvmq.tune import fuse


def _fp32(tmp_path, model):
    """The model's fp32 module as tvmq deploys it (folded, batch 1) and a batch-1 input."""
    imported = load_model(onnx_models.save(model, tmp_path / "m.onnx"))
    shape = imported.inputs[0].static_shape(1)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    return bind_batch(api.prepare_fp32(imported.mod), 1), x


def _calls(mod) -> list[str]:
    return [b.value.args[0].name_hint for b in dataflow_bindings(mod["main"]) if op_name(b.value) == "relax.call_tir"]


@pytest.mark.parametrize("lanes", [16, 8])
def test_fp32_conv_weight_packing_puts_each_block_where_the_fma_reads_it(rng, lanes):
    w = rng.standard_normal((24, 3, 3, 5)).astype(np.float32)  # OHWI, O off the block size
    packed = x86_fp32.pack_conv_weight(w, lanes)
    assert packed.shape == (-(-24 // lanes), 3, 3, 5, lanes)
    o, kh, kw, i = np.meshgrid(*[np.arange(n) for n in w.shape], indexing="ij")
    np.testing.assert_array_equal(packed[o // lanes, kh, kw, i, o % lanes], w)
    assert np.count_nonzero(packed) == np.count_nonzero(w), "padding must be zeros"


@pytest.mark.parametrize("lanes", [16, 8])
@pytest.mark.parametrize("model,packed,depthwise", [
    (onnx_models.conv_chain(channels=8), 2, 0),
    (onnx_models.conv_chain(channels=3, stride=2), 2, 0),
    (onnx_models.conv_chain(channels=8, groups=8, pad=2, dilation=2), 1, 1),
    (onnx_models.mobile_block(relu6=True), 2, 1),  # ReLU6 (relax.clip) must not keep the block NCHW
    (onnx_models.residual_block(), 3, 0),
])
def test_legalized_fp32_module_computes_the_same_values(tmp_path, model, packed, depthwise, lanes):
    fp32, x = _fp32(tmp_path, model)
    legalized = LegalizeForX86(lanes)(fp32)
    calls = _calls(legalized)
    assert sum(c.startswith(x86_fp32.PREFIX) for c in calls) == packed
    assert sum(c.startswith(x86_depthwise.PREFIX) for c in calls) == depthwise
    transposes = [b for b in dataflow_bindings(legalized["main"]) if op_name(b.value) == "relax.permute_dims"]
    assert len(transposes) == 2, "layout transforms only at the model's input and output"

    def run(mod):
        vm = relax.VirtualMachine(tvm.compile(mod, get_target("host").target), tvm.cpu())
        return vm["main"](tvm.runtime.tensor(x)).numpy()

    expected = run(fp32)
    np.testing.assert_allclose(run(legalized), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("kernel", [KERNELS["x86-vnni"], KERNELS["x86-avx2"]])
@pytest.mark.parametrize("model", [onnx_models.conv_chain(channels=3, stride=2), onnx_models.residual_block()])
def test_any_tiling_of_the_fp32_sketch_computes_the_untuned_values(tmp_path, model, kernel):
    if kernel.flag not in cpu_flags():
        pytest.skip(f"CPU without {kernel.flag}")
    target = tvm.target.Target({"kind": "llvm", "mcpu": kernel.mcpu})
    lanes = kernel.intrinsic.lanes
    fp32, _ = _fp32(tmp_path, model)
    with target:
        lowered = relax.transform.FuseTIR()(fuse(LegalizeForX86(lanes)(fp32), get_target("host")))
    rng = np.random.default_rng(2)
    calls = [b.value for b in dataflow_bindings(lowered["main"]) if op_name(b.value) == "relax.call_tir"
             and b.value.args[0].name_hint.startswith("fused_" + x86_fp32.PREFIX)]
    assert calls
    for call in calls:
        func = lowered[call.args[0]]
        types = [a.ty for a in call.args[1].fields] + [call.ty]
        args = [rng.standard_normal([int(d) for d in t.shape]).astype(np.float32) for t in types]
        expected, _ = _run(func, args, mcpu=kernel.mcpu)
        for seed in (1, 2, 3):
            got, lib = _run(func, args, lambda sch: x86_sketch.schedule_fp32_conv(sch, lanes), seed, kernel.mcpu)
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
        asm = lib.inspect_source("asm")
        # packed-single FMAs (LLVM narrows the register to the output channels really used)
        assert re.search(r"vfmadd\w*ps\s", asm), "the register tile must be vector FMAs"



@pytest.mark.skipif(KERNELS["x86-vnni"].flag not in cpu_flags(), reason="CPU without AVX-512 VNNI")
def test_a_kept_fp32_conv_quantizes_its_output_in_its_epilogue_under_any_tiling(tmp_path):
    """A layer the latency fallback keeps fp32 feeds an int8 one: its output's quantize fuses into
    the fp32 kernel, which then writes uint8; the sketch schedules that epilogue too."""
    from test_x86_int8 import _realized

    kernel = KERNELS["x86-vnni"]
    int8, _ = _realized(tmp_path, np.random.default_rng(0), onnx_models.conv_chain(channels=8), (16, 8, 12, 12),
                        keep_fp32=["r"])
    spec = get_target("x86-vnni")
    with spec.target:
        lowered = relax.transform.FuseTIR()(fuse(spec.legalize(int8), spec))
    calls = [b.value for b in dataflow_bindings(lowered["main"]) if op_name(b.value) == "relax.call_tir"
             and b.value.args[0].name_hint.startswith("fused_" + x86_fp32.PREFIX)]
    assert len(calls) == 1 and str(calls[0].ty.dtype) == "uint8", [c.args[0].name_hint for c in calls]
    func, rng = lowered[calls[0].args[0]], np.random.default_rng(2)
    args = [rng.standard_normal([int(d) for d in a.ty.shape]).astype(np.float32) for a in calls[0].args[1].fields]
    args.append(np.zeros([int(d) for d in calls[0].ty.shape], np.uint8))
    expected, _ = _run(func, args, mcpu=kernel.mcpu)
    assert len(np.unique(expected)) > 8, "the test input should spread over the uint8 range"
    for seed in (1, 2, 3):
        got, _ = _run(func, args, lambda sch: x86_sketch.schedule_fp32_conv(sch, kernel.intrinsic.lanes), seed,
                      kernel.mcpu)
        assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1  # fp32 sums in another order


def test_a_transposed_conv_keeps_nchw_and_the_model_compiles(tmp_path):
    """ConvertLayout would hand conv2d_transpose NHWC, which TVM 0.27 cannot lower (PP-OCR's detector).

        x[1,4,8,8] --Conv(3x3)--> c --Relu--> r --ConvTranspose(2x2, stride 2)--> y[1,3,16,16]
    """
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    import tvmq

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.3).astype(np.float32), n)
             for n, s in (("w", (6, 4, 3, 3)), ("wt", (6, 3, 2, 2)))]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("ConvTranspose", ["r", "wt"], ["y"], kernel_shape=[2, 2], strides=[2, 2])]
    graph = helper.make_graph(nodes, "deconv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 16, 16])], inits)
    path = onnx_models.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "d.onnx")
    calib = rng.standard_normal((8, 4, 8, 8)).astype(np.float32)
    compiled = tvmq.compile(path, calib, config=tvmq.Config(latency_runs=1))
    want = ort.InferenceSession(path).run(None, {"x": calib[:1]})[0]
    got = compiled.run(calib[:1])
    assert np.linalg.norm(got - want) <= 0.05 * np.linalg.norm(want)


def test_a_module_without_convs_is_not_layout_converted():
    """TVM 0.27's ConvertLayout fails on some graphs with nothing to convert (``relax.stack``
    here; MiniLM's encoder with another op), so a module without conv2d skips it."""
    from tvm import relax

    builder = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 3), "float32"))
    with builder.function("main", [x]):
        with builder.dataflow():
            stacked = builder.emit(relax.op.stack([x, x], axis=0))
            out = builder.emit_output(relax.op.add(stacked, stacked))
        builder.emit_func_output(out)
    mod = builder.get()
    with pytest.raises(Exception, match="out of bounds"):
        relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "OHWI"]})(mod)
    legalized = get_target("host").legalize(mod)
    assert "R.stack" in legalized["main"].script()
