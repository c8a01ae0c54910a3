"""The stage contract of ``tvmq.compile`` (:mod:`tvmq.stages`) and the report sections (:mod:`tvmq.report`).

    model, calib, eval_data, config, metric            (inputs)
        │
    target ─ programs ─ evaluation ─ budget ─ calibration ─ calibrate ─ refine
        ─ builds ─ deploy ─ deployed_plan ─ evaluate ─ baseline ─ debug ──> report.render

On ``conv_chain`` (two convs, 8 channels, 12x12): a variant pipeline re-runs only the stages
downstream of the input it changes, and the counts say so.
"""

import inspect
import json

import numpy as np
import pytest

import onnx_models
import tvmq
from tvmq import report, stages
from tvmq.cli import main
from tvmq.errors import TvmqError
from tvmq.stages import INPUTS, STAGES, Pipeline, downstream


def test_every_stage_needs_only_inputs_and_earlier_stages():
    seen = set(INPUTS)
    for name, entry in STAGES.items():
        assert entry.needs == tuple(inspect.signature(entry.run).parameters)
        assert set(entry.needs) <= seen, (name, set(entry.needs) - seen)
        seen.add(name)
    assert list(STAGES)[:8] == ["target", "programs", "evaluation", "budget", "calibration", "calibrate",
                                "refine_layers", "refine"]


def test_a_stage_with_an_unmet_need_fails_at_registration():
    def late(nonexistent_stage):
        return None

    with pytest.raises(TypeError, match="late needs 'nonexistent_stage'"):
        stages.stage(late)
    assert "late" not in STAGES


def test_downstream_of_the_evaluation_data_is_not_calibration():
    """Declared: ``refine`` needs the budget (non-uniform weights search under its metric), so the
    builds are downstream of the evaluation data; at run time early cutoff keeps them (next tests)."""
    stale = downstream({"eval_data"})
    assert {"evaluation", "budget", "refine", "builds", "deploy", "evaluate", "debug"} <= stale
    assert not stale & {"target", "programs", "calibration", "calibrate", "refine_layers"}
    assert downstream({"config"}) == set(STAGES)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    path = onnx_models.save(onnx_models.conv_chain(), tmp_path_factory.mktemp("chain") / "chain.onnx")
    rng = np.random.default_rng(0)
    calib, first, second = (rng.standard_normal((n, 8, 12, 12)).astype(np.float32) for n in (16, 8, 12))
    return path, calib, first, second


def test_two_evaluations_share_one_calibration_and_one_set_of_builds(chain):
    path, calib, first, second = chain
    results = Pipeline(model=path, calib=calib, eval_data=first, config=tvmq.Config(latency_runs=1))
    assert results["evaluate"].accuracy["num_samples"] == 8
    other = results.variant(eval_data=second)
    assert other["evaluate"].accuracy["num_samples"] == 12
    assert other["refine"] is results["refine"] and other["builds"] is results["builds"]
    assert {name: results.runs[name] for name in ("calibrate", "refine_layers", "builds", "evaluation", "evaluate")} \
        == {"calibrate": 1, "refine_layers": 1, "builds": 1, "evaluation": 2, "evaluate": 2}
    assert results.runs["debug"] == 0, "nothing asked for it: stages run on demand"


def test_two_budgets_metrics_search_one_set_of_tuned_kernels(chain):
    """A metric variant re-runs the budget's search (deploy) on the same builds, not calibration."""
    path, calib, first, _ = chain
    config = tvmq.Config(latency_runs=1, max_accuracy_drop=0.0)
    results = Pipeline(model=path, calib=calib, eval_data=first, config=config, metric=lambda run: 1.0)
    constant = results["deploy"][0].budget_report["mixed_precision"]
    other = results.variant(metric=lambda run: 0.0)
    assert other["deploy"][0].budget_report["mixed_precision"]["metric"] == 0.0 != constant["metric"]
    assert results.runs["builds"] == results.runs["refine_layers"] == 1 and results.runs["deploy"] == 2


def test_a_bad_budget_fails_before_calibration(chain):
    path, calib, first, _ = chain
    results = Pipeline(model=path, calib=calib, eval_data=first, config=tvmq.Config(max_accuracy_drop=0.0),
                       metric="not a function")
    with pytest.raises(TvmqError, match="metric must be a function of run"):
        results["budget"]
    assert results.runs["calibrate"] == 0


def test_one_more_report_section_is_one_registered_function(chain, monkeypatch):
    path, calib, first, _ = chain
    monkeypatch.setitem(report.SECTIONS, "weights_stored", lambda results: {"weight_storage": "int8"})
    compiled = tvmq.compile(path, calib, config=tvmq.Config(latency_runs=1), eval_data=first)
    keys = list(compiled.report)
    assert keys[-2:] == ["weight_storage", "compile_seconds"] and "debug" not in keys
    assert keys.index("accuracy") < keys.index("latency_ms") < keys.index("layers") < keys.index("plan")


def test_compile_with_debug_steps_puts_the_four_steps_in_report_json(chain, tmp_path):
    path, calib, first, _ = chain
    np.save(tmp_path / "calib.npy", calib)
    np.save(tmp_path / "eval.npy", first)
    out = tmp_path / "art"
    assert main(["compile", str(path), "--calib", str(tmp_path / "calib.npy"), "--eval", str(tmp_path / "eval.npy"),
                 "--out", str(out), "--trials", "0", "--debug-steps"], isolated=False) == 0
    steps = {entry["name"]: entry for entry in json.loads((out / "report.json").read_text())["debug"]["steps"]}
    assert list(steps) == ["sanity", "sides", "per_layer", "sensitivity"]
    assert steps["sanity"]["passed"] and steps["per_layer"]["deployed_matches_int8"]
    assert {row["name"] for row in steps["sensitivity"]["ranking"]} == {"conv_a", "conv_b"}
