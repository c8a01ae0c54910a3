"""Latency fallback: per-layer kernel attribution, the slower-in-int8 choice, the rebuilt module and report.

Tuning is replaced by a stand-in that returns the module untuned (real tuning takes minutes
here) and the in-module kernel timer by made-up kernel latencies; attribution, decision,
realize and rebuild are the product's.
"""

import json

import numpy as np
import pytest

import onnx_models
import tvmq
from tvmq import api, latency
from tvmq.stages import deploy, lower
from tvmq.build import bind_batch
from tvmq.config import Config
from tvmq.latency import LayerLatency, slower_in_int8
from tvmq.passes.graph import find_layers
from tvmq.passes.lift_params import lift_params
from tvmq.passes.realize import RECORD_ATTR, quantization_record
from tvmq.targets import get_target


def _deployables(path, calib):
    """The fp32 and int8 modules as tuning would receive them, and each int8 layer's fp32 chain."""
    spec = get_target("host")
    quantized = api.quantize(path, calib, Config())
    fp32 = quantized.program.fp32
    weights = quantization_record(quantized.int8)["weights"]
    chains = {layer.out.name: [v.name for v in layer.chain] for layer in find_layers(fp32["main"]).values()
              if layer.out.name in weights}
    legalized = [spec.legalize(bind_batch(m, 1)) if spec.legalize else bind_batch(m, 1) for m in (fp32, quantized.int8)]
    return lift_params(legalized[0])[0], lift_params(legalized[1])[0], chains, spec  # as lower.build_deployable


def _task_rows(mod, spec, us):
    """Kernel rows named as tuning names its tasks (one per distinct kernel), ``us(task name)`` each."""
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    from tvmq.tune import fuse

    with spec.target:
        lowered = relax.transform.FuseTIR()(fuse(mod, spec))
    return [{"kernel": t.task_name, "calls": int(t.weight), "us": us(t.task_name)}
            for t in ms.relax_integration.extract_tasks(lowered, spec.target)]


def test_every_int8_layer_of_the_bundled_cnn_maps_to_its_kernels_in_both_modules(bundled):
    model, calib, _ = bundled
    fp32, int8, chains, spec = _deployables(model, np.load(calib)["x"][:64])
    assert len(chains) == 4  # conv1, conv2, fc1, fc2
    fp32_rows, int8_rows = _task_rows(fp32, spec, lambda name: 10.0), _task_rows(int8, spec, lambda name: 1.0)
    timings = latency.attribute(fp32, int8, chains, spec, fp32_rows, int8_rows)
    assert set(timings) == set(chains)
    for name, t in timings.items():
        assert len(t.fp32_kernels) == 1 and any(op in t.fp32_kernels[0] for op in ("conv2d", "matmul")), (name, t)
        assert any(op in k for k in t.int8_kernels for op in ("conv2d", "dense", "matmul")), (name, t)
        assert t.fp32_us == 10.0 and t.int8_us == len(t.int8_kernels) * 1.0, (name, t)
    own = [t.int8_kernels[0] for t in timings.values()]
    assert len(own) == len(set(own)) == 4, "each layer has a kernel of its own"
    edges = timings["relu1"].int8_kernels[1:]
    assert len(edges) == 1 and edges[0].startswith("fused_divide_tir_round"), "conv1's input quantize is its edge"


@pytest.mark.parametrize("bias", [True, False])
def test_identical_layers_sharing_one_tuning_task_both_get_its_time(tmp_path, rng, bias):
    """With a bias or without (then only the conv's own binding reads a weight), each layer's
    fp32 kernel is found in the legalized fp32 module."""
    model = onnx_models.twin_convs(bias=bias)
    fp32, int8, chains, spec = _deployables(onnx_models.save(model, tmp_path / "twin.onnx"),
                                            rng.standard_normal((16, 8, 10, 10)).astype(np.float32))
    fp32_rows = _task_rows(fp32, spec, lambda name: 7.0)
    timings = latency.attribute(fp32, int8, chains, spec, fp32_rows, _task_rows(int8, spec, lambda name: 2.0))
    assert len(chains) == 2
    assert all(t.fp32_us == 7.0 and t.int8_us is not None for t in timings.values()), timings


def test_decision_keeps_fp32_exactly_the_layers_slower_in_int8():
    timings = {
        "faster": LayerLatency(["a"], ["b"], 10.0, 4.0),
        "slower": LayerLatency(["a"], ["b", "q"], 10.0, 11.5),
        "within_noise": LayerLatency(["a"], ["b", "q"], 10.0, 10.9),
        "equal": LayerLatency(["a"], ["b"], 10.0, 10.0),
        "unmeasured_int8": LayerLatency(["a"], ["b"], 10.0, None),
        "unmeasured_fp32": LayerLatency(["a"], ["b"], None, 99.0),
        "much_slower": LayerLatency(["a"], ["b"], 1.0, 50.0),
        "sub_microsecond": LayerLatency(["a"], ["b"], 0.10, 0.15),  # 50% over, but within the timer's noise
    }
    assert slower_in_int8(timings) == ["much_slower", "slower"]
    assert slower_in_int8({}) == []


def _stand_in_tune(mod, spec, trials, db, share=None):
    """A ``tune`` that tunes nothing."""
    return mod, {"tasks": 0, "share": share or 1, "tuned_now": 0, "from_database": 0, "no_record": 0, "measured": 0,
                 "seconds": 0.0, "kernels": []}


def _stand_in_profile(slow_tensor):
    """A kernel timer that measures nothing: int8 kernels 1 µs, fp32 kernels 10 µs, and 1000 µs
    for the int8 kernel that computes ``slow_tensor``."""
    def profile(built, shape):
        mod = built.module
        is_int8 = RECORD_ATTR in mod["main"].attrs
        spec = get_target("host")
        params = latency._params_of(mod, {slow_tensor})
        slow = {k.function for k in latency._kernels(mod, spec, []) if k.params & params}
        return _task_rows(mod, spec, lambda n: (1000.0 if n in slow else 1.0) if is_int8 else 10.0)
    return profile


def _rebuild_fastest(modules, inputs, runs):
    """An end-to-end timer that measures nothing: the fallback's rebuild 1 ms, the others 2 ms."""
    return {name: 1.0 if name == "int8_rebuild" else 2.0 for name in modules}


@pytest.fixture(scope="module")
def fell_back(bundled, tmp_path_factory):
    """The bundled CNN compiled with tuning standing in, its conv2 (output ``relu2``) slow in int8."""
    model, calib, evaluation = bundled
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(lower, "tune", _stand_in_tune)
    monkeypatch.setattr(lower, "kernel_profile", _stand_in_profile("relu2_int"))
    monkeypatch.setattr(deploy, "time_modules", _rebuild_fastest)  # the end-to-end choice deploys the rebuild
    try:
        compiled = tvmq.compile(model, calib, config=Config(trials=8, latency_runs=1), eval_data=evaluation)
    finally:
        monkeypatch.undo()
    out = tmp_path_factory.mktemp("fallback") / "artifact"
    compiled.save(out)
    return out, compiled


def test_a_layer_slower_in_int8_is_rebuilt_fp32_and_reported(fell_back):
    out, compiled = fell_back
    report = json.loads((out / "report.json").read_text())
    section = report["latency_fallback"]
    assert section["status"] == "ran" and section["rebuilt"] and section["kept_fp32"] == ["conv2"]
    conv2 = next(row for row in section["layers"] if row["layer"] == "conv2")
    assert conv2["fp32_us"] == 10.0 and conv2["int8_us"] == 1000.0 and conv2["kept_fp32"]
    rows = {row["name"]: row["precision"] for row in report["layers"]}
    assert rows["conv2"] == rows["relu2"] == "fp32 (slower in int8)"
    assert rows["conv1"] == rows["fc1"] == rows["fc2"] == "int8"
    quantization = compiled.manifest["quantization"]
    assert quantization["precision"]["conv2"] == "fp32" and quantization["kept_fp32"]["conv2"] == "relu2"
    assert "relu2" not in quantization["weights"]
    text = (out / "report.md").read_text()
    assert "## Latency fallback" in text and "| conv2 | 10.0 | 1000.0 |" in text
    assert "| conv2 | Conv | fp32 (slower in int8) |" in text
    assert set(report["tuning"]) >= {"fp32", "int8", "int8_rebuild"}, "the first int8 tuning is kept beside the rebuild's"
    assert "int8 rebuilt by the latency fallback: 0 of 0 tasks" in text


def test_the_rebuilt_module_runs_and_matches_fp32_at_least_as_well(fell_back, demo, bundled):
    _, compiled = fell_back
    _, all_int8 = demo  # the same model and data, every layer int8 (untuned: no fallback)
    assert all_int8.report["latency_fallback"]["status"].startswith("not run")
    x = np.load(bundled[2])["x"][:100:4]
    import tvm
    from tvmq.build import virtual_machine

    executable, params = compiled.baseline
    vm = virtual_machine(executable)
    reference = np.concatenate([vm["main"](tvm.runtime.tensor(x[i:i + 1]),
                                           *[tvm.runtime.tensor(v) for v in params.values()]).numpy()
                                for i in range(len(x))])
    ours = np.concatenate([compiled.run(x[i:i + 1]) for i in range(len(x))])
    theirs = np.concatenate([all_int8.run(x[i:i + 1]) for i in range(len(x))])
    assert np.abs(ours - reference).mean() <= np.abs(theirs - reference).mean()
    ours_acc, theirs_acc = compiled.report["accuracy"], all_int8.report["accuracy"]
    assert ours_acc["output_cosine"] >= theirs_acc["output_cosine"]
    assert ours_acc["top1_agreement"] >= theirs_acc["top1_agreement"]


def test_fallback_off_keeps_every_layer_int8(bundled, monkeypatch):
    model, calib, evaluation = bundled
    monkeypatch.setattr(lower, "tune", _stand_in_tune)
    monkeypatch.setattr(lower, "kernel_profile", _stand_in_profile("relu2_int"))
    report = tvmq.compile(model, calib, config=Config(trials=8, latency_runs=1, latency_fallback=False),
                          eval_data=np.load(evaluation)["x"][:64]).report
    assert report["latency_fallback"] == {"status": "off (--no-latency-fallback)", "layers": [], "kept_fp32": []}
    assert all(row["precision"] == "int8" for row in report["layers"] if row["op"] in ("Conv", "Gemm"))


def test_cli_flag_turns_the_fallback_off():
    from tvmq.cli import _config, _parser

    args = ["demo", "--out", "x"]
    assert _config(_parser().parse_args(args)).latency_fallback is True
    assert _config(_parser().parse_args(args + ["--no-latency-fallback"])).latency_fallback is False


def test_report_text_says_when_every_int8_layer_was_faster_or_nothing_ran():
    from tvmq.report import _fallback

    rows = [{"layer": "conv1", "fp32_us": 5.0, "int8_us": 2.0, "kept_fp32": False},
            {"layer": "fc1", "fp32_us": None, "int8_us": 2.0, "kept_fp32": False}]
    text = "\n".join(_fallback({"status": "ran", "layers": rows, "kept_fp32": []}))
    assert "Every int8 layer (1 compared) was faster" in text and "1 without measurements stay int8" in text
    text = "\n".join(_fallback({"status": "not run: no tuning (--trials 0)", "layers": [], "kept_fp32": []}))
    assert "Latency fallback: not run: no tuning (--trials 0)." in text
