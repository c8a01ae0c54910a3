"""SinkDequantize: the int8 tensor, not its fp32 dequantize, passes between fused kernels."""

import numpy as np
import tvm
from tvm import relax

import onnx_models
from test_x86_int8 import _realized
from tvmq.passes.graph import dataflow_bindings
from tvmq.targets import get_target
from tvmq.tune import fuse


def _conv_outputs(mod) -> list[tuple[str, str]]:
    """(kernel, output dtype) of each fused conv kernel call in ``main``, in order."""
    return [(b.value.op.name_hint, str(b.var.ty.dtype)) for b in dataflow_bindings(mod["main"])
            if isinstance(b.value.op, tvm.ir.GlobalVar) and "conv2d" in b.value.op.name_hint]


def _run(mod, spec, x):
    vm = relax.VirtualMachine(tvm.compile(mod, spec.target), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


def test_projection_shortcut_passes_int8_between_the_convs_with_the_same_values(tmp_path, rng):
    spec = get_target("host")
    int8, x = _realized(tmp_path, rng, onnx_models.projection_block(), (16, 8, 10, 10))
    legalized = spec.legalize(int8)
    fused = fuse(legalized, spec)
    # conv_a, conv_p, conv_b (its epilogue adds the shortcut), conv_c: FuseOps alone has conv_p
    # write its output dequantized to fp32; only conv_c, the model's output, should
    assert [dtype for _, dtype in _conv_outputs(fused)] == ["uint8", "uint8", "uint8", "float32"]
    shortcut_reader = _conv_outputs(fused)[2][0]
    assert shortcut_reader.count("_subtract") == 2, shortcut_reader  # its own output's and conv_p's dequantize
    with spec.target:
        lowered = relax.transform.FuseTIR()(fused)
    np.testing.assert_array_equal(_run(lowered, spec, x), _run(legalized, spec, x))  # TVM's own fusion
