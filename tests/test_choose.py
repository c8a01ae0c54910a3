"""The end-to-end choice of the deployed build (``tvmq.choose``): int8, the latency fallback's
rebuild or fp32, by whole-module times measured side by side.

The choice is driven by an injected timer where a test needs a given winner; one test tunes a
tiny MobileNetV3 block for real and checks that the artifact is the fastest build measured.
"""

import json
from types import SimpleNamespace

import numpy as np
import pytest

import onnx_models
import tvmq
from tvmq import api
from tvmq.choose import FP32, INT8, REBUILD, pick_artifact, time_modules
from tvmq.config import Config
from tvmq.stages import deploy, lower


def _timer(ms: dict):
    """A ``time_modules`` stand-in returning ``ms`` for the builds it is given (and recording them)."""
    def timer(modules, inputs, runs):
        timer.timed = list(modules)
        return {name: ms[name] for name in modules}
    return timer


def test_int8_wins_when_it_is_fastest():
    choice = pick_artifact("f", "i", "r", 2, inputs=[], runs=1, timer=_timer({FP32: 3.0, INT8: 1.0, REBUILD: 2.0}))
    assert (choice.name, choice.reason) == (INT8, "int8")
    assert choice.latency_ms == {INT8: 1.0, REBUILD: 2.0, FP32: 3.0}


def test_the_rebuild_wins_when_it_is_fastest_and_says_how_many_layers_stayed_fp32():
    choice = pick_artifact("f", "i", "r", 5, inputs=[], runs=1, timer=_timer({FP32: 3.0, INT8: 2.5, REBUILD: 1.0}))
    assert choice.name == REBUILD and choice.reason == "int8 with 5 layer(s) kept fp32 (latency fallback)"


def test_fp32_wins_over_every_int8_build_and_the_reason_gives_both_times():
    timer = _timer({FP32: 0.93, INT8: 7.05, REBUILD: 2.5})
    choice = pick_artifact("f", "i", "r", 5, inputs=[], runs=1, timer=timer)
    assert choice.name == FP32 and choice.reason == "fp32: int8 measured 2.500 ms vs fp32 0.930 ms"
    assert pick_artifact("f", "i", None, inputs=[], runs=1, timer=timer).reason == \
        "fp32: int8 measured 7.050 ms vs fp32 0.930 ms"
    assert timer.timed == [INT8, FP32], "no rebuild, nothing timed for it"


def test_on_equal_times_int8_is_kept():
    choice = pick_artifact("f", "i", None, inputs=[], runs=1, timer=_timer({FP32: 1.0, INT8: 1.0}))
    assert choice.name == INT8


def test_time_modules_interleaves_rounds_and_takes_each_modules_median():
    """One warm-up run each, then rounds that run every module once, each round starting one
    module further: a load drift hits all modules alike. The clock is driven by the runs."""
    now, log = [0.0], []
    seconds = {"a": [0.001] * 9 + [1.0], "b": [0.002] * 10, "c": [0.003] * 10}  # one outlier run of a

    def vm_of(name):
        def main(*args):
            log.append(name)
            now[0] += seconds[name].pop(0) if len(log) > 3 else 0.0  # warm-ups take no time
        return {"main": main}

    modules = {n: SimpleNamespace(executable=n, params={}) for n in "abc"}
    ms = time_modules(modules, [((1, 2), "float32")], runs=4, clock=lambda: now[0], vm_of=vm_of)
    assert log == list("abc") + list("abc") + list("bca") + list("cab") + list("abc")
    assert ms == {"a": 1.0, "b": 2.0, "c": 3.0}


def _stand_in_tune(mod, spec, trials, db, share=None):
    """A ``tune`` that tunes nothing (real tuning takes minutes here)."""
    return mod, {"tasks": 0, "share": share or 1, "tuned_now": 0, "from_database": 0, "no_record": 0, "measured": 0,
                 "seconds": 0.0, "kernels": []}


@pytest.fixture(scope="module")
def block(tmp_path_factory):
    """The tiny MobileNetV3 block on disk, with calibration images."""
    path = onnx_models.save(onnx_models.mobilenet_v3_block(), tmp_path_factory.mktemp("mv3") / "block.onnx")
    return path, np.random.default_rng(0).standard_normal((16, 3, 16, 16)).astype(np.float32)


def test_when_fp32_is_fastest_the_artifact_is_the_fp32_module_realized_all_fp32(block, tmp_path, monkeypatch):
    path, calib = block
    monkeypatch.setattr(lower, "tune", _stand_in_tune)
    monkeypatch.setattr(deploy, "time_modules", _timer({FP32: 1.0, INT8: 5.0, REBUILD: 4.0}))
    compiled = tvmq.compile(path, calib, config=Config(trials=8, latency_runs=1))
    report = compiled.report
    fastest_int8 = 4.0 if REBUILD in report["latency_ms"] else 5.0  # whether the fallback kept a layer
    assert report["artifact_choice"] == {"artifact": FP32, "timed": True,
                                         "reason": f"fp32: int8 measured {fastest_int8:.3f} ms vs fp32 1.000 ms"}
    assert report["latency_ms"]["artifact"] == report["latency_ms"]["fp32"] == 1.0
    record = compiled.manifest["quantization"]
    assert set(record["precision"].values()) == {"fp32"} and not record["weights"] and record["kept_fp32"]
    assert all(row["precision"] != "int8" for row in report["layers"])
    assert report["accuracy"]["output_cosine"] > 0.99999, "evaluated as deployed: the fp32 model"
    out = compiled.save(tmp_path / "artifact")
    assert "Artifact: the fastest build timed end to end, **fp32: int8 measured" in (out / "report.md").read_text()
    assert json.loads((out / "report.json").read_text())["artifact_choice"]["artifact"] == FP32
    import tvm

    from tvmq.build import virtual_machine

    executable, params = compiled.baseline
    x = calib[:1]
    fp32 = virtual_machine(executable)["main"](tvm.runtime.tensor(x), *[tvm.runtime.tensor(v) for v in params.values()])
    np.testing.assert_array_equal(tvmq.load(out).run(x), fp32.numpy())


def test_untuned_compiles_deploy_int8_and_say_nothing_was_chosen_by_time(block):
    path, calib = block
    report = tvmq.compile(path, calib, config=Config(latency_runs=2)).report
    assert report["artifact_choice"] == {"artifact": INT8, "timed": False,
                                         "reason": "int8 (not chosen by time: no tuning, --trials 0)"}
    assert set(report["latency_ms"]) == {INT8, FP32, "artifact"}
    assert report["latency_ms"]["artifact"] == report["latency_ms"][INT8]


def test_a_tuned_mobilenet_v3_block_deploys_the_fastest_build_measured(block, tmp_path):
    """Tuned for real with a tiny budget: whatever the fallback did, the artifact is the build
    that measured fastest end to end (never slower than fp32 beyond the timing's noise), it
    runs, and the report says which and why."""
    path, calib = block
    compiled = tvmq.compile(path, calib, config=Config(trials=24, latency_runs=20, tuning_db=tmp_path / "db"))
    report = compiled.report
    measured = {k: v for k, v in report["latency_ms"].items() if k != "artifact"}
    chosen = report["artifact_choice"]["artifact"]
    assert report["artifact_choice"]["timed"] and chosen == min(measured, key=measured.get)
    assert report["latency_ms"]["artifact"] == min(measured.values()) <= measured[FP32]
    if REBUILD in measured:
        assert report["tuning"][REBUILD]["share"] == report["tuning"][INT8]["share"]
    precisions = set(compiled.manifest["quantization"]["precision"].values())
    assert ("int8" in precisions) == (chosen != FP32)
    out = compiled.save(tmp_path / "artifact")
    y = tvmq.load(out).run(calib[:1])
    assert y.shape == (1, 8, 8, 8) and np.isfinite(y).all()
