"""Sensitivity and mixed precision under an accuracy budget: the ranking, the search, the
budget's bounds, and the CLI flags and their errors."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tvmq import mixed_precision
from tvmq.errors import TvmqError
from tvmq.latency import LayerLatency
from tvmq.mixed_precision import FALLBACK, FP32, INT8, Budget


# ---- the search, on a model of metric and time that adds up per layer ----

RECOVERED = {"a": 0.05, "b": 0.01, "c": 0.002, "d": 0.0}  # metric each layer's fp32 buys back
LOST_US = {"a": 10.0, "b": 1.0, "c": 1.0, "d": -5.0}  # µs it costs fp32 (d: faster in fp32)
INT8_METRIC = 1.0 - sum(RECOVERED.values())  # fp32's metric is 1.0


class _Sensitivity:
    """What :func:`tvmq.sensitivity.measure` returns, as far as the search reads it."""

    layers = [type("Row", (), {"tensor": name})() for name in RECOVERED]

    def recovered(self, row):
        return RECOVERED[row.tensor]


def _latencies():
    return {name: LayerLatency(fp32_us=20.0 + lost, int8_us=20.0) for name, lost in LOST_US.items()}


def _search(budget: Budget, fp32_ms: float = 1.0, fallback: bool = True):
    """``search`` where a build is its fp32 layers, its metric adds up their recovery and its
    time their µs (fp32 measured at ``fp32_ms``); returns the outcome and the sensitivity calls."""
    calls = []

    def timer(builds):
        return {key: fp32_ms if set(keep) == set(RECOVERED) else 0.5 + sum(LOST_US[n] for n in keep) / 1000
                for key, keep in builds.items()}

    def sensitivity():
        calls.append(1)
        return _Sensitivity()

    outcome = mixed_precision.search(list(RECOVERED), _latencies(), budget, lambda keep: keep,
                                     lambda keep: INT8_METRIC + sum(RECOVERED[n] for n in keep), timer,
                                     sensitivity, fallback=fallback)
    return outcome, calls


def test_rank_puts_free_layers_first_then_metric_per_microsecond():
    order = mixed_precision.rank(list(RECOVERED), RECOVERED, _latencies())
    assert [name for name, _ in order] == ["d", "b", "a", "c"]  # d is faster fp32; b 0.01/µs, a 0.005, c 0.002
    assert dict(order)["b"] == pytest.approx(0.01) and dict(order)["d"] is None


def test_rank_gives_an_untimed_layer_the_median_cost():
    latencies = _latencies() | {"c": LayerLatency(fp32_us=None, int8_us=3.0)}
    order = [name for name, _ in mixed_precision.rank(list(RECOVERED), RECOVERED | {"c": 0.04}, latencies)]
    assert order == ["d", "b", "c", "a"]  # c: 0.04 over 5.5 µs (a's 10 and b's 1) = 0.0073/µs: between b and a


def test_search_keeps_the_shortest_gainful_prefix_fp32():
    outcome, calls = _search(Budget(max_drop=0.01))  # needs 0.052 of the 0.062 lost: d, b and a
    assert calls == [1]
    assert set(outcome.chosen.fp32_layers) == {"d", "b", "a"}
    assert outcome.chosen.metric >= outcome.threshold == pytest.approx(0.99)
    labels = [p.label for p in outcome.points]
    assert labels[:3] == [FP32, INT8, FALLBACK] and len(labels) == 5  # bisection of 4: prefixes 2 and 3
    assert outcome.chosen.latency_ms == min(p.latency_ms for p in outcome.points if p.metric >= outcome.threshold)


def test_a_loose_budget_deploys_the_fastest_int8_build_without_ranking():
    outcome, calls = _search(Budget(max_drop=0.5))
    assert calls == [] and outcome.chosen.label == FALLBACK  # d alone fp32 is 5 µs faster than all int8
    outcome, _ = _search(Budget(max_drop=0.5), fallback=False)
    assert outcome.chosen.label == INT8 and outcome.chosen.fp32_layers == ()


def test_budget_zero_gives_fp32_metric_and_time_decides_among_those_meeting():
    outcome, _ = _search(Budget(max_drop=0.0))
    assert outcome.chosen.metric == pytest.approx(1.0) and set(outcome.chosen.fp32_layers) == set(RECOVERED)
    outcome, _ = _search(Budget(max_relative_drop=0.05), fp32_ms=0.1)  # int8 meets, but fp32 measured faster
    assert outcome.chosen.label == FP32


def test_dense_layers_dynamic_instead_of_fp32_when_that_meets_the_budget_faster():
    """Dynamic b and a recover what fp32 would (their input scale per run) for a tenth of the µs."""
    def build(keep, dynamic=()):
        return keep, dynamic

    def score(built):
        keep, dynamic = built
        return INT8_METRIC + sum(RECOVERED[n] for n in keep + dynamic)

    def timer(builds):
        return {k: 0.5 + sum(LOST_US[n] for n in keep) / 1000 + sum(LOST_US[n] for n in dynamic) / 10000
                for k, (keep, dynamic) in builds.items()}

    outcome = mixed_precision.search(list(RECOVERED), _latencies(), Budget(max_drop=0.01), build, score, timer,
                                     _Sensitivity, dynamic=["a", "b"])
    labels = [p.label for p in outcome.points]
    assert mixed_precision.DENSE_DYNAMIC in labels and labels[-1] == "3 most gainful, dense ones dynamic"
    dense_dynamic = next(p for p in outcome.points if p.label == mixed_precision.DENSE_DYNAMIC)
    assert dense_dynamic.metric >= outcome.threshold  # meets, but d fp32 is 5 µs faster still:
    assert outcome.chosen.label == labels[-1] and outcome.chosen.fp32_layers == ("d",)
    assert set(outcome.chosen.dynamic_layers) == {"a", "b"}


def test_budget_bounds():
    assert Budget(max_drop=0.01, max_relative_drop=0.5).threshold(0.8) == pytest.approx(0.79)  # both must hold
    assert Budget(max_relative_drop=0.1).threshold(-2.0) == pytest.approx(-2.2)
    for kwargs, message in (({}, "needs --max-accuracy-drop or --max-relative-drop"),
                            ({"max_drop": -0.1}, "--max-accuracy-drop must be a number >= 0"),
                            ({"max_drop": float("nan")}, "--max-accuracy-drop must be a number >= 0"),
                            ({"max_relative_drop": 1.0}, "share of fp32's metric below 1")):
        with pytest.raises(TvmqError, match=message):
            Budget(**kwargs)


# ---- sensitivity on a model with one deliberately sensitive layer ----

def _mlp(outlier: str, seed: int = 0) -> onnx.ModelProto:
    """x[N,16] -> fc_a -> Relu -> fc_b -> Relu -> fc_c -> y[N,10]; one weight of ``outlier`` is
    200x the rest, so per-tensor int8 rounds that layer's other weights to zero."""
    rng = np.random.default_rng(seed)
    shapes = {"fc_a": (16, 32), "fc_b": (32, 32), "fc_c": (32, 10)}
    inits, nodes, current = {}, [], "x"
    for i, (name, (k, n)) in enumerate(shapes.items()):
        weight = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
        if name == outlier:
            weight[0, 0] = 200 * np.abs(weight).max()
        inits[f"{name}_w"], inits[f"{name}_b"] = weight, (rng.standard_normal(n) * 0.1).astype(np.float32)
        out = "y" if name == "fc_c" else f"{name}_out"
        nodes.append(helper.make_node("Gemm", [current, f"{name}_w", f"{name}_b"], [out], name=name))
        if name != "fc_c":
            nodes.append(helper.make_node("Relu", [out], [f"{name}_relu"], name=f"relu_{i}"))
            out = f"{name}_relu"
        current = out
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("outlier", ["fc_a", "fc_b"])
def test_sensitivity_ranks_the_layer_with_the_outlier_first(tmp_path, outlier):
    import tvmq
    from tvmq import api, metric
    from tvmq.data import Dataset
    from tvmq.report import layer_node
    from tvmq.sensitivity import measure, program_evaluator, program_run

    path = tmp_path / "mlp.onnx"
    onnx.save(_mlp(outlier), path)
    rng = np.random.default_rng(1)
    calib, evaluation = (rng.standard_normal((n, 16)).astype(np.float32) for n in (64, 64))
    quantized = api.quantize(path, calib, tvmq.Config(per_channel=False))
    program = quantized.program
    cosine = metric.cosine(Dataset({"x": evaluation}), program_run(program, program.fp32))
    layers = list(quantized.plan.layers)
    names = {name: layer_node(program.imported.nodes, list(entry.chain)) for name, entry in quantized.plan.layers.items()}
    result = measure(program_evaluator(quantized, program, cosine), layers, names, alone=True)
    ranked = result.to_json()
    assert [row["name"] for row in ranked][0] == outlier, ranked
    assert {row["name"] for row in ranked} == {"fc_a", "fc_b", "fc_c"}
    assert result.fp32 == pytest.approx(1.0) and result.int8 < 0.99
    alone = max(ranked, key=lambda row: row["metric_drop_alone"])
    assert alone["name"] == outlier  # quantized alone, it is the one that hurts too
    assert ranked[0]["metric_drop"] > 5 * ranked[1]["metric_drop"] and result.seconds > 0


# ---- through tvmq.compile and the command line ----

def _mnist(samples: int = 120):
    from tvmq.assets import bundled_mnist
    from tvmq.data import Dataset

    model, calib, evaluation = bundled_mnist()  # the eval split is disjoint from calib
    with np.load(evaluation) as archive:
        return model, calib, Dataset(archive["x"][:samples], archive["y"][:samples])


def test_budget_zero_on_cosine_deploys_fp32s_metric_and_reports_the_curve():
    import tvmq

    model, calib, evaluation = _mnist()
    config = tvmq.Config(max_accuracy_drop=0.0, metric="cosine", latency_runs=5)
    compiled = tvmq.compile(model, calib, config=config, eval_data=evaluation)
    section, report = compiled.report["mixed_precision"], compiled.report
    assert section["metric"] == section["fp32_metric"] and section["budget"]["threshold"] == pytest.approx(section["fp32_metric"])
    curve = section["curve"]
    assert curve[0]["configuration"] == FP32 and curve[1]["configuration"] == INT8 and len(curve) >= 3
    assert all(isinstance(p["latency_ms"], float) for p in curve)
    assert not curve[1]["meets_budget"]  # int8's cosine is below 1: the search had to run
    assert {row["name"] for row in report["sensitivity"]} == {"conv1", "conv2", "fc1", "fc2"}
    kept = {entry["node"] for entry in report["plan"]["layers"] if entry["reason"] == mixed_precision.ACCURACY_BUDGET}
    assert kept == set(section["fp32_layers"]) and section["latency_ms"] == report["latency_ms"]["artifact"]


def test_cli_budget_flags_reach_the_config():
    from tvmq.cli import _config, _parser

    args = _parser().parse_args(["compile", "m.onnx", "--out", "o", "--max-accuracy-drop", "0.005",
                                 "--max-relative-drop", "0.01", "--metric", "agreement"])
    config = _config(args)
    assert (config.max_accuracy_drop, config.max_relative_drop, config.metric) == (0.005, 0.01, "agreement")
    assert config.budget().threshold(0.9) == pytest.approx(0.895)


@pytest.mark.parametrize("flags, eval_data, message", [
    (["--max-accuracy-drop", "-1"], True, r"--max-accuracy-drop must be a number >= 0, got -1.0"),
    (["--max-relative-drop", "1.5"], True, r"--max-relative-drop is a share of fp32's metric below 1"),
    (["--max-accuracy-drop", "0.01", "--metric", "f1"], True, r"unknown metric 'f1'"),
    (["--max-accuracy-drop", "0.01", "--metric", "nosuchmodule:f"], True, r"cannot import 'nosuchmodule'"),
    (["--max-accuracy-drop", "0.01"], False, r"pass --eval"),
    (["--max-accuracy-drop", "0.01", "--metric", "top1"], "unlabelled", r"top1 needs labels"),
])
def test_cli_budget_errors_are_one_line_and_write_nothing(tmp_path, capsys, flags, eval_data, message):
    import re

    from tvmq.cli import main

    model, calib, evaluation = _mnist(16)
    argv = ["compile", str(model), "--calib", str(calib), "--out", str(tmp_path / "out"), *flags]
    if eval_data:
        path = tmp_path / "eval.npz"
        np.savez(path, x=evaluation.x, **({} if eval_data == "unlabelled" else {"y": evaluation.y}))
        argv += ["--eval", str(path)]
    assert main(argv, isolated=False) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("tvmq: error: ") and re.search(message, err[-1]), err
    assert not (tmp_path / "out").exists()
