"""The hand-written conv design spaces: any tile decisions give the untuned kernel's results bit for bit."""

import numpy as np
import pytest
import tvm
from tvm import relax

import onnx_models
from test_x86_int8 import _realized
from tvmq.passes.graph import dataflow_bindings, op_name
from tvmq.targets import get_target, x86_sketch
from tvmq.targets.x86 import KERNELS, cpu_flags
from tvmq.tune import fuse

VNNI = KERNELS["x86-vnni"]


def _kernels(tmp_path, rng, model, shape, prefix):
    """The fused PrimFuncs named ``prefix...`` of ``model``'s legalized int8 module, each with
    random arguments of the shapes its call passes."""
    spec = get_target("x86-vnni")
    spec.prepare()
    int8, _ = _realized(tmp_path, rng, model, shape)
    with spec.target:
        lowered = relax.transform.FuseTIR()(fuse(spec.legalize(int8), spec))
    calls = [b.value for b in dataflow_bindings(lowered["main"]) if op_name(b.value) == "relax.call_tir"
             and b.value.args[0].name_hint.startswith("fused_" + prefix)]
    assert calls, f"no {prefix} kernel"
    for call in calls:
        types = [a.ty for a in call.args[1].fields] + [call.ty]
        yield lowered[call.args[0]], [_random(rng, [int(d) for d in t.shape], str(t.dtype)) for t in types]


def _random(rng, shape, dtype):
    if dtype in ("uint8", "int8", "int32"):
        low, high = {"uint8": (0, 256), "int8": (-127, 128), "int32": (-1000, 1000)}[dtype]
        return rng.integers(low, high, shape).astype(dtype)
    return (rng.random(shape) * 0.05).astype(dtype)


def _run(func, args, schedule=None, seed=1, mcpu=VNNI.mcpu):
    """``func`` (scheduled by ``schedule`` with ``seed``) built for ``mcpu`` and run on ``args``
    (the last one the output's shape): ``(output, library)``."""
    mod = tvm.IRModule({"main": func.with_attr("global_symbol", "main")})
    if schedule is not None:
        sch = tvm.s_tir.Schedule(mod, seed=seed)
        schedule(sch)
        mod = sch.mod
    lib = tvm.tirx.build(mod, target=tvm.target.Target({"kind": "llvm", "mcpu": mcpu}))
    tensors = [tvm.runtime.tensor(a) for a in args[:-1]] + [tvm.runtime.tensor(np.zeros_like(args[-1]))]
    lib(*tensors)
    return tensors[-1].numpy(), lib


@pytest.mark.skipif(VNNI.flag not in cpu_flags(), reason="CPU without AVX-512 VNNI")
@pytest.mark.parametrize("model,shape,prefix,schedule", [
    (onnx_models.conv_chain(channels=8), (16, 8, 12, 12), "packed_conv2d",
     lambda sch: x86_sketch.schedule_packed_conv(sch, VNNI.intrinsic.name, VNNI.intrinsic.lanes)),
    (onnx_models.conv_chain(channels=3, stride=2), (16, 3, 12, 12), "packed_conv2d",
     lambda sch: x86_sketch.schedule_packed_conv(sch, VNNI.intrinsic.name, VNNI.intrinsic.lanes)),
    (onnx_models.residual_block(), (16, 8, 10, 10), "packed_conv2d",  # the shortcut's requantize in the epilogue
     lambda sch: x86_sketch.schedule_packed_conv(sch, VNNI.intrinsic.name, VNNI.intrinsic.lanes)),
    (onnx_models.projection_block(), (16, 8, 10, 10), "packed_conv2d",  # and the other conv's dequantize
     lambda sch: x86_sketch.schedule_packed_conv(sch, VNNI.intrinsic.name, VNNI.intrinsic.lanes)),
    (onnx_models.conv_chain(channels=16, groups=16), (16, 16, 12, 12), "dw_conv2d", x86_sketch.schedule_depthwise),
    (onnx_models.conv_chain(channels=3, stride=2), (16, 3, 12, 12), "divide_tir_round", x86_sketch.schedule_input_edge),
    (onnx_models.conv_chain(channels=24, groups=24, stride=2), (16, 24, 12, 12), "dw_conv2d",
     x86_sketch.schedule_depthwise),
])
def test_any_tiling_of_the_sketch_computes_the_same_integers(tmp_path, rng, model, shape, prefix, schedule):
    for func, args in _kernels(tmp_path, rng, model, shape, prefix):
        expected, _ = _run(func, args)
        for seed in (1, 2, 3):
            got, lib = _run(func, args, schedule, seed)
            np.testing.assert_array_equal(got, expected)
        if prefix == "packed_conv2d":
            assert VNNI.intrinsic.instruction in lib.inspect_source("asm")


def test_the_input_quantize_and_transpose_kernel_gets_its_own_schedule(tmp_path, rng):
    from tvmq.targets.x86 import INPUT_QUANTIZE

    spec = get_target("x86-vnni")
    int8, _ = _realized(tmp_path, rng, onnx_models.conv_chain(channels=3, stride=2), (16, 3, 12, 12))
    with spec.target:
        names = [gv.name_hint for gv in fuse(spec.legalize(int8), spec).get_global_vars()]
    edges = [n for n in names if n.startswith(INPUT_QUANTIZE)]
    assert len(edges) == 1 and "transpose" in edges[0], names
    assert spec.search_space(edges[0]) is not None and spec.search_space("fused_transpose_reshape") is None
