"""Cross-layer equalization keeps the fp32 function, balances ranges, and helps per-tensor int8."""

import numpy as np
import tvm
from tvm import relax

import onnx_models
import tvmq
from tvmq.api import prepare_fp32
from tvmq.build import build, virtual_machine
from tvmq.frontend import load_model
from tvmq.passes.equalize_cross_layer import EqualizeCrossLayer, equalization_scales
from tvmq.passes.graph import find_layers, pass_notes
from tvmq.targets import get_target


def _run(mod, x):
    return virtual_machine(build(mod, get_target("host")))["main"](tvm.runtime.tensor(x)).numpy()


def _ranges(layer, axis):
    return np.abs(layer.weight).max(axis=tuple(i for i in range(layer.weight.ndim) if i != axis))


def test_scales_balance_two_ranges():
    r1, r2 = np.array([4.0, 1.0, 0.0]), np.array([1.0, 4.0, 2.0])
    s = equalization_scales(r1, r2)
    np.testing.assert_allclose((r1 / s)[:2], (r2 * s)[:2])
    assert s[2] == 1.0  # a dead channel is left alone


def test_cle_keeps_fp32_outputs_and_equalizes_ranges(tmp_path, rng):
    path = onnx_models.save(onnx_models.mobile_block(relu6=False), tmp_path / "block.onnx")
    fp32 = prepare_fp32(load_model(path).mod)
    equalized = EqualizeCrossLayer()(fp32)
    x = rng.standard_normal((2, 4, 10, 10)).astype(np.float32)
    before, after = _run(fp32, x), _run(equalized, x)
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4 * np.abs(before).max())
    layers = {l.out.name: l for l in find_layers(equalized["main"]).values()}
    depthwise, project = layers["rd"], layers["y"]
    np.testing.assert_allclose(_ranges(depthwise, 0), _ranges(project, 1), rtol=1e-3)
    spread = lambda r: r.max() / r.min()
    original = {l.out.name: l for l in find_layers(fp32["main"]).values()}
    assert spread(_ranges(layers["re"], 0)) < spread(_ranges(original["re"], 0)) / 10
    note = pass_notes(equalized)[-1]
    assert note["pass"] == "EqualizeCrossLayer" and note["pairs"] == [["re", "rd"], ["rd", "y"]]
    assert note["relu6_replaced_by_relu"] == []


def test_relu6_is_replaced_and_reported(tmp_path):
    path = onnx_models.save(onnx_models.mobile_block(relu6=True), tmp_path / "block6.onnx")
    equalized = EqualizeCrossLayer()(prepare_fp32(load_model(path).mod))
    assert pass_notes(equalized)[-1]["relu6_replaced_by_relu"] == ["re", "rd"]
    ops = [b.value.op.name for b in equalized["main"].body.blocks[0].bindings if isinstance(b.value, relax.Call)]
    assert "relax.clip" not in ops and ops.count("relax.nn.relu") == 2


def test_cle_improves_per_tensor_int8(tmp_path, rng):
    path = onnx_models.save(onnx_models.mobile_block(relu6=False), tmp_path / "block.onnx")
    calib = rng.standard_normal((32, 4, 10, 10)).astype(np.float32)
    cosines = {}
    for cle in (False, True):
        config = tvmq.Config(per_channel=False, cle=cle, latency_runs=1)
        cosines[cle] = tvmq.compile(path, calib, config=config).report["accuracy"]["output_cosine"]
    assert cosines[True] > cosines[False]


def test_high_bias_absorption_keeps_outputs_and_shrinks_the_range(tmp_path, rng):
    from tvmq.passes.absorb_high_bias import AbsorbHighBias

    path = onnx_models.save(onnx_models.high_bias_pair(), tmp_path / "hb.onnx")
    fp32 = prepare_fp32(load_model(path).mod)
    equalized = EqualizeCrossLayer()(fp32)
    absorbed = AbsorbHighBias()(equalized)
    x = rng.standard_normal((1, 4, 8, 8)).astype(np.float32)
    before, after = _run(fp32, x), _run(absorbed, x)
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4 * np.abs(before).max())
    note = pass_notes(absorbed)[-1]
    assert note["pass"] == "AbsorbHighBias" and note["layers"] == ["r"]
    bias = {l.out.name: l.bias for l in find_layers(absorbed["main"]).values()}
    scaled = {l.out.name: l.bias for l in find_layers(equalized["main"]).values()}
    assert np.all(bias["r"] < 0.7 * scaled["r"])  # about (5 - 3 sigma) / 5 of it moved out of layer 1
