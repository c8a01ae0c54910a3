"""x86 VNNI kernels: packed weight layouts and the bit-identical legalization (tuned kernels: test_int8_kernels)."""

import numpy as np
import pytest
from tvm import relax

import onnx_models
from tvmq.config import Config
from tvmq.passes.graph import dataflow_bindings, op_name
from tvmq.targets import get_target, x86_depthwise, x86_vnni
from tvmq.targets.x86_legalize import LegalizeInt8ForVNNI


def test_conv_weight_packing_puts_each_16x4_block_where_vpdpbusd_reads_it(rng):
    w = rng.integers(-127, 128, (24, 3, 3, 5), dtype=np.int8)  # OHWI, O and I off the block sizes
    packed = x86_vnni.pack_conv_weight(w)
    assert packed.shape == (2, 3, 3, 2, 16, 4)
    o, kh, kw, i = np.meshgrid(*[np.arange(n) for n in w.shape], indexing="ij")
    np.testing.assert_array_equal(packed[o // 16, kh, kw, i // 4, o % 16, i % 4], w)
    assert np.count_nonzero(packed) == np.count_nonzero(w), "padding must be zeros"


def test_dense_weight_packing_puts_each_16x4_block_where_vpdpbusd_reads_it(rng):
    w = rng.integers(-127, 128, (18, 21), dtype=np.int8)  # [K, N]
    packed = x86_vnni.pack_dense_weight(w)
    assert packed.shape == (2, 5, 16, 4)
    k, n = np.meshgrid(np.arange(18), np.arange(21), indexing="ij")
    np.testing.assert_array_equal(packed[n // 16, k // 4, n % 16, k % 4], w)
    assert np.count_nonzero(packed) == np.count_nonzero(w)


def _realized(tmp_path, rng, model, calib_shape):
    """The int8 module tvmq deploys for ``model``, before the target's legalization."""
    from tvmq import api
    from tvmq.build import bind_batch
    from tvmq.frontend import load_model

    path = onnx_models.save(model, tmp_path / "m.onnx")
    imported = load_model(path)
    spec = get_target("host")
    fp32 = api.prepare_fp32(imported.mod)
    source = api._single_float_input(imported)
    calib = rng.standard_normal(calib_shape).astype(np.float32)
    run = api._Runs(spec, source.shape[0], 16)
    quantized = api._quantize(fp32, imported, api._dataset(calib, source, "calibration"), Config(), spec, run)
    return bind_batch(quantized.int8, 1), calib[:1]


@pytest.mark.parametrize("model,shape,packed,depthwise", [
    (onnx_models.conv_chain(channels=8), (16, 8, 12, 12), 2, 0),
    (onnx_models.conv_chain(channels=8, groups=8, stride=2), (16, 8, 12, 12), 1, 1),
    (onnx_models.conv_chain(channels=8, groups=8, pad=2, dilation=2), (16, 8, 12, 12), 1, 1),
    (onnx_models.conv_chain(channels=8, groups=2), (16, 8, 12, 12), 1, 0),  # grouped: generic
    (onnx_models.dense_chain(), (16, 20), 2, 0),
])
def test_legalized_module_is_bit_identical(tmp_path, rng, model, shape, packed, depthwise):
    import tvm

    int8, x = _realized(tmp_path, rng, model, shape)
    legalized = LegalizeInt8ForVNNI()(int8)
    calls = [b.value for b in dataflow_bindings(legalized["main"]) if op_name(b.value) == "relax.call_tir"]
    assert sum(x86_vnni.PACKED_PREFIX in c.args[0].name_hint for c in calls) == packed
    assert sum(x86_depthwise.PREFIX in c.args[0].name_hint for c in calls) == depthwise

    def run(mod):
        vm = relax.VirtualMachine(tvm.compile(mod, get_target("host").target), tvm.cpu())
        return vm["main"](tvm.runtime.tensor(x)).numpy()

    np.testing.assert_array_equal(run(legalized), run(int8))
