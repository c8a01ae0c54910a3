"""Non-uniform weights (``tvmq.passes.nonuniform``, ``--non-uniform``): weighted k-means in the int8
domain on known data, then through ``tvmq.compile``: the deployed module bit for bit against the
numpy integer reference with the snapped integers, the artifact's lut round trip, and the
automatic search under a budget.

    x[1,8,12,12] --conv_a 3x3 + bias + relu--> r --conv_b 1x1 + bias--> y      (onnx_models.conv_chain)
"""

import itertools
import json

import numpy as np
import pytest

import tvmq
from tvmq.data import Dataset
from tvmq.errors import TvmqError
from tvmq.passes.nonuniform import kmeans_levels, non_uniform, snap

from onnx_models import conv_chain, save
from test_adaround import _initializers, _reference


def test_kmeans_recovers_the_levels_the_weights_were_drawn_around(rng):
    true = np.array([-90, -40, -11, 0, 3, 25, 60, 101])
    q = np.concatenate([level + rng.integers(-2, 3, 300) for level in true]).astype(np.int8)
    snapped, levels = non_uniform(rng.permutation(q), 8)
    assert levels.tolist() == true.tolist() and set(np.unique(snapped)) <= set(true)


def _cost(values, weights, levels):
    return float((weights * np.min((values[:, None] - np.asarray(levels)[None]) ** 2, axis=1)).sum())


def test_levels_are_as_good_as_the_best_partition_with_zero_pinned(rng):
    """Brute force on 9 values in 4 levels, one of them 0: every contiguous partition, integer means."""
    values = np.array([-50, -31, -30, -4, 0, 2, 9, 40, 44], np.float64)
    weights = rng.integers(1, 20, values.size).astype(np.float64)
    best = np.inf
    for cuts in itertools.combinations(range(1, values.size), 3):
        parts = np.split(np.arange(values.size), cuts)
        levels = [np.rint((weights[p] * values[p]).sum() / weights[p].sum()) for p in parts]
        levels[int(np.argmin(np.abs(levels)))] = 0.0
        best = min(best, _cost(values, weights, levels))
    levels = kmeans_levels(values, weights, 4)
    assert 0 in levels and levels.size <= 4 and _cost(values, weights, levels) <= best


def test_importance_pulls_a_level_onto_the_weights_that_matter(rng):
    q = rng.integers(-100, 101, size=(16, 64)).astype(np.int8)
    q[3, 7] = 77
    importance = np.ones(q.shape)
    importance[3, 7] = 1e6
    plain, _ = non_uniform(q, 16)
    weighted, levels = non_uniform(q, 16, importance)
    assert 77 in levels and weighted[3, 7] == 77 and plain[3, 7] != 77


def test_few_values_keep_their_levels_and_snapping_is_nearest():
    assert kmeans_levels(np.array([-3, 5]), np.array([1, 1]), 16).tolist() == [-3, 0, 5]
    assert snap(np.array([-9, -5, 1, 2, 6], np.int8), np.array([-8, 0, 4])).tolist() == [-8, -8, 0, 0, 4]


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nonuniform")
    rng = np.random.default_rng(0)
    return (save(conv_chain(), folder / "chain.onnx"), Dataset(rng.normal(size=(16, 8, 12, 12)).astype(np.float32)),
            Dataset(rng.normal(size=(16, 8, 12, 12)).astype(np.float32)), folder)


@pytest.fixture(scope="module")
def sixteen(chain):
    model, calib, _, folder = chain
    compiled = tvmq.compile(model, calib, config=tvmq.Config(non_uniform=16, latency_runs=1))
    return compiled, compiled.save(folder / "k16")


def test_compiled_non_uniform_module_is_bit_exact_with_the_integer_reference(chain, sixteen, rng):
    compiled, _ = sixteen
    layers = {entry["node"]: entry for entry in compiled.plan["layers"]}
    assert {(e["rounding"], e["weight_levels"]) for e in layers.values()} == {("non-uniform", 16)}
    w_a, w_b = compiled.qdq_weights["weight_0"], compiled.qdq_weights["weight_1"]
    assert np.unique(w_a).size == 16 and 0 in w_a and np.unique(w_b).size <= 16
    x = rng.normal(size=(1, 8, 12, 12)).astype(np.float32)
    want = _reference(x, compiled.plan, layers, w_a, w_b, _initializers(chain[0]))
    assert np.array_equal(compiled.run(x), want)


def test_the_artifact_stores_indices_and_a_table_and_loads_identical(sixteen, rng):
    compiled, out = sixteen
    codecs = json.loads((out / "manifest.json").read_text())["buckets"][0]["codecs"]
    assert {e["codec"] for e in codecs.values()} == {"lut"}
    storage = json.loads((out / "report.json").read_text())["weight_storage"]
    assert storage["stored_bytes"] < storage["int8_bytes"] and storage["ratio"] > 1.3
    report = compiled.report["non_uniform"]
    assert report["mode"] == 16 and [row["levels"] for row in report["layers"]] == [16, 16]
    x = rng.normal(size=(1, 8, 12, 12)).astype(np.float32)
    assert np.array_equal(tvmq.load(out).run(x), compiled.run(x))


def test_auto_takes_the_smallest_levels_within_the_budget(chain):
    model, calib, evaluation, _ = chain
    config = tvmq.Config(non_uniform="auto", max_accuracy_drop=0.002, metric="cosine", latency_runs=1)
    report = tvmq.compile(model, calib, config=config, eval_data=evaluation).report["non_uniform"]
    assert report["metric"] >= report["threshold"] == pytest.approx(report["fp32_metric"] - 0.002)
    chosen = {row["layer"]: row["levels"] for row in report["layers"]}
    assert set(chosen) == {"conv_a", "conv_b"} and all(k in (16, 32, 64, None) for k in chosen.values())
    assert any(chosen.values()) and report["ratio"] > 1.0


@pytest.mark.parametrize("config, message", [
    ({"non_uniform": 8}, r"unknown non-uniform levels 8; choose one of: 16, 32, 64, auto"),
    ({"non_uniform": "some"}, r"unknown non-uniform levels 'some'"),
    ({"non_uniform": "auto"}, r"--non-uniform auto searches under an accuracy budget: give --max-accuracy-drop"),
])
def test_bad_non_uniform_options_are_one_line_errors(config, message):
    with pytest.raises(TvmqError, match=message):
        tvmq.Config(**config)
