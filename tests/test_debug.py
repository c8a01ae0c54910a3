"""The PTQ debugging flow (``tvmq debug``) and the simulation it analyses with (``passes/simulate.py``).

On the bundled MNIST CNN (eval data cut to keep it fast):

    fp32 module ──SimulateQuantization(off, off)──> identical outputs      (sanity, bit for bit)
    fp32 module ──SimulateQuantization(W8, A8)───> within a step of ──> RealizePlan (int8 module)
    RealizePlan(expose) ──analysis build──┐
                        ──deployed build──┴─> the same bits on every exposed tensor (per_layer)
"""

import dataclasses
import json

import numpy as np
import pytest

import tvmq
from tvmq import assets, debugging
from tvmq.cli import main
from tvmq.passes.graph import constant_value
from tvmq.passes.qparams import activation_qparams, dequantize, quantize
from tvmq.passes.simulate import SimulateQuantization, activation_quantizer, simulation_record

EVAL_SAMPLES = 256


@pytest.fixture(scope="module")
def bundled(tmp_path_factory):
    model, calib, evaluation = assets.bundled_mnist()
    data = dict(np.load(evaluation))
    path = tmp_path_factory.mktemp("debug") / "eval.npz"
    np.savez(path, x=data["x"][:EVAL_SAMPLES], y=data["y"][:EVAL_SAMPLES])
    return model, calib, path


@pytest.fixture(scope="module")
def debug_out(bundled, tmp_path_factory):
    """``tvmq debug`` run once on the bundled model, all steps: its output directory."""
    model, calib, evaluation = bundled
    out = tmp_path_factory.mktemp("flow") / "dbg"
    assert main(["debug", str(model), "--calib", str(calib), "--eval", str(evaluation), "--out", str(out),
                 "--layer-samples", "32"], isolated=False) == 0
    return out


@pytest.fixture(scope="module")
def flow(debug_out):
    """debug.json's steps by name."""
    return {entry["name"]: entry for entry in json.loads((debug_out / "debug.json").read_text())["steps"]}


@pytest.fixture(scope="module")
def session(bundled):
    from tvmq.config import Config

    model, calib, evaluation = bundled
    return debugging._session(model, calib, evaluation, Config(), layer_samples=64)


def test_bypassed_simulation_is_the_fp32_module(session):
    plan, fp32 = session.quantized.plan, session.program.fp32
    bypassed = SimulateQuantization(plan, weights=False, activations=False)(fp32)
    assert simulation_record(bypassed)["fake_quantized"] == []
    assert [b.var.name for b in bypassed["main"].body.blocks[0].bindings] == \
        [b.var.name for b in fp32["main"].body.blocks[0].bindings]


def test_sanity_is_bit_exact(flow):
    result = flow["sanity"]
    assert result["passed"]
    assert result["simulation_bypassed"]["max_abs_diff"] == 0.0 == result["realize_bypassed"]["max_abs_diff"]
    assert result["realize_bypassed"]["samples"] == EVAL_SAMPLES


def test_simulated_weights_are_the_planned_integers(session):
    """8 bits: exactly ``dequantize(quantize(W))`` with the plan's parameters; 16 bits: 256x finer."""
    from tvmq.passes.layers import find_layers

    plan, fp32 = session.quantized.plan, session.program.fp32
    layer = next(iter(find_layers(fp32["main"]).values()))
    entry = plan.layers[layer.out.name]
    at8, at16 = (SimulateQuantization(plan, activations=False, weight_bits=b)(fp32) for b in (8, 16))
    for mod, expected_error in ((at8, None), (at16, entry.weight.scale / 256)):
        first = next(b for b in mod["main"].body.blocks[0].bindings if b.var.name == layer.chain[0].name)
        weight = constant_value(first.value.args[1])
        if expected_error is None:
            np.testing.assert_array_equal(weight, dequantize(quantize(layer.weight, entry.weight), entry.weight))
        else:
            error = np.abs(weight - layer.weight).max(axis=(1, 2, 3))
            assert np.all(error <= expected_error * 1.01)


def test_activation_quantizer_at_8_bits_is_the_plans():
    for dtype in ("uint8", "int8"):
        q = activation_quantizer(-1.5, 4.0, dtype, 8)
        x = np.linspace(-2, 5, 101, dtype=np.float32)
        qp = activation_qparams(-1.5, 4.0, dtype)
        np.testing.assert_array_equal(q.apply(x), dequantize(quantize(x, qp), qp))
    wide = activation_quantizer(-1.5, 4.0, "uint8", 16)
    assert (wide.lo, wide.hi) == (0, 65535) and np.isclose(float(wide.scale), 5.5 / 65535)


def test_simulation_agrees_with_the_int8_module(flow):
    check = flow["sides"]["simulation_vs_int8"]
    assert check["agree"]
    assert all(row["max_steps"] <= 1.001 for row in check["tensors"]), check["tensors"]
    assert {row["node"] for row in check["tensors"]} >= {"relu1", "fc2"} and check["first_beyond_one_step"] is None


def test_per_layer_simulated_and_deployed_agree(flow):
    result = flow["per_layer"]
    assert result["deployed_matches_int8"], result["mismatched"]
    for row in result["layers"]:
        assert row["sqnr_db_deployed"] == row["sqnr_db_int8"] and row["cosine_deployed"] == row["cosine_int8"]
        if row["sqnr_db_int8"] is not None:
            assert abs(row["sqnr_db_simulated"] - row["sqnr_db_int8"]) < 0.5, row
    assert {row["node"] for row in result["layers"]} >= {"relu1", "fc2"}


def test_a_deployed_mismatch_is_caught(session, monkeypatch):
    """The deployed build made from a plan whose first layer's weight scale is 1% off: the check names it."""
    plan = session.quantized.plan
    name, entry = next(iter(plan.layers.items()))
    skewed = dataclasses.replace(entry, weight=dataclasses.replace(entry.weight, scale=entry.weight.scale * 1.01))
    wrong = dataclasses.replace(session.quantized, plan=dataclasses.replace(plan, layers={**plan.layers,
                                                                                          name: skewed}))
    build = debugging.deployed_exposed
    monkeypatch.setattr(debugging, "deployed_exposed",
                        lambda s, program: build(dataclasses.replace(s, quantized=wrong), program))
    result = debugging.per_layer(dataclasses.replace(session, cache={}))
    assert not result["deployed_matches_int8"]
    assert session.node_of(name) in result["mismatched"]


def test_cli_debug_end_to_end(flow, debug_out):
    steps = flow
    assert list(steps) == list(debugging.STEPS) == ["sanity", "sides", "per_layer", "sensitivity"]
    assert all(entry["seconds"] >= 0 for entry in steps.values())
    sides = {v["name"]: v for v in steps["sides"]["variants"]}
    assert len(sides) == len(debugging.SIDES)
    assert all(v["metric"]["name"] == "top-1" and v["metric"]["value"] >= 0.95 for v in sides.values())
    ranking = steps["sensitivity"]["ranking"]
    assert steps["sensitivity"]["metric"] == "top1" and len(ranking) == 4  # the CNN's four int8 layers
    assert [row["metric_drop"] for row in ranking] == sorted((row["metric_drop"] for row in ranking), reverse=True)
    markdown = (debug_out / "debug.md").read_text()
    assert "## per_layer" in markdown and "| relu1 |" in markdown


@pytest.mark.parametrize("args, message", [
    (["--eval", "{eval}"], "calibration data is needed (--calib)"),
    (["--calib", "{calib}", "--step", "magic"], "no debugging step 'magic'; steps: sanity, sides"),
])
def test_bad_input_is_one_line(bundled, tmp_path, capsys, args, message):
    model, calib, evaluation = bundled
    out = tmp_path / "dbg"
    argv = ["debug", str(model), *[a.format(calib=calib, eval=evaluation) for a in args], "--out", str(out)]
    assert main(argv, isolated=False) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tvmq: error: ") and message in err[0], err
    assert not out.exists()


def test_python_entry_is_the_flow(tmp_path):
    assert tvmq.debug is debugging.debug
    (tmp_path / "taken").mkdir()
    with pytest.raises(tvmq.TvmqError, match="already exists"):
        tvmq.debug("any.onnx", "any.npz", out=tmp_path / "taken")


def test_bad_model_path_is_one_line(bundled, tmp_path, capsys):
    _, calib, _ = bundled
    out = tmp_path / "dbg"
    assert main(["debug", str(tmp_path / "absent.onnx"), "--calib", str(calib), "--out", str(out)],
                isolated=False) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"tvmq: error: model file not found: {tmp_path / 'absent.onnx'}"]
    assert not out.exists()


def test_a_simulation_mismatch_is_caught(session):
    """A simulation of a plan whose first layer's weight scale is 1% off, against the int8 module of the
    right plan: the teacher-forced check names that layer (upstream of it, everything still agrees)."""
    plan = session.quantized.plan
    name, entry = next(iter(plan.layers.items()))
    skewed = dataclasses.replace(entry, weight=dataclasses.replace(entry.weight, scale=entry.weight.scale * 1.01))
    wrong = dataclasses.replace(session.quantized, plan=dataclasses.replace(plan, layers={**plan.layers,
                                                                                          name: skewed}))
    debugging.simulation_vs_int8(session)  # the int8 module of the right plan, cached
    cache = {key: value for key, value in session.cache.items() if key[1] == "int8 exposed"}
    check = debugging.simulation_vs_int8(dataclasses.replace(session, quantized=wrong, cache=cache))
    assert not check["agree"] and check["first_beyond_one_step"] == session.node_of(name)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    """A debugging session on one seeded transformer encoder layer (tests/onnx_models.encoder_block)."""
    from onnx_models import encoder_block, save
    from tvmq.config import Config

    root = tmp_path_factory.mktemp("encoder")
    rng = np.random.default_rng(1)
    for split, samples in (("calib", 32), ("eval", 8)):
        np.savez(root / f"{split}.npz", x=rng.standard_normal((samples, 16, 32)).astype(np.float32))
    model = save(encoder_block(), root / "encoder.onnx")
    return debugging._session(model, root / "calib.npz", root / "eval.npz", Config(), layer_samples=8)


def test_on_a_transformer_the_forced_simulation_agrees_where_the_free_one_drifts(encoder):
    """Rounding ties (fp32 fake quantization against int32 accumulation) put a few elements of the
    int8 matmuls one step apart; run freely, softmax and GELU carry them past one step downstream.
    Teacher-forced, every tensor is within one step and the tensors no int8 op computes are exact."""
    check = debugging.simulation_vs_int8(encoder)
    rows = {row["tensor"]: row for row in check["tensors"]}
    assert check["agree"] and check["first_beyond_one_step"] is None
    assert all(row["max_steps"] <= 1.001 for row in rows.values())
    assert max(row["drift_max_steps"] for row in rows.values()) > 1.5  # the drift the local check sees past
    assert rows["probs"]["max_steps"] == 0.0 and rows["probs"]["drift_max_steps"] > 0
