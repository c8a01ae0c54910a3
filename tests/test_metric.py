"""The metric protocol (``metric(run) -> float``): built-in metrics, ``module_run``'s batching,
zoo scorers as metrics, and a user's function evaluating candidates inside ``tvmq.compile``."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from tvmq import metric as metrics
from tvmq.data import Dataset
from tvmq.errors import TvmqError
from tvmq.zoo import ZooModel


class _FakeVM:
    """``vm["main"]`` doubling its input, recording each call's batch."""

    def __init__(self):
        self.batches = []

    def __getitem__(self, name):
        import tvm

        def main(x):
            self.batches.append(x.numpy().copy())
            return tvm.runtime.tensor(x.numpy() * 2)

        return main


def _scores(labels, classes=4, wrong=()):
    """One-hot scores of ``labels``, the rows in ``wrong`` pointing at the next class."""
    predicted = np.array([(y + 1) % classes if i in wrong else y for i, y in enumerate(labels)])
    return np.eye(classes, dtype=np.float32)[predicted]


def test_module_run_splits_feeds_into_the_module_batch_and_cuts_the_padding():
    vm = _FakeVM()
    run = metrics.module_run(vm, [], [("x", (4, 3))])
    x = np.arange(30, dtype=np.float32).reshape(10, 3)
    out = run({"x": x})
    assert [b.shape for b in vm.batches] == [(4, 3)] * 3
    assert not vm.batches[-1][2:].any()  # the last batch: 2 samples and 2 rows of zero padding
    np.testing.assert_array_equal(out[0], x * 2)
    assert run({"x": x[:4]})[0].shape == (4, 3) and len(vm.batches) == 4  # an exact feed: one call


def test_module_run_free_batch_runs_in_chunks_and_names_a_missing_input():
    vm = _FakeVM()
    run = metrics.module_run(vm, [], [("x", None)], chunk=8)
    np.testing.assert_array_equal(run({"x": np.ones((20, 2), np.float32)})[0], np.full((20, 2), 2))
    assert [len(b) for b in vm.batches] == [8, 8, 4]
    with pytest.raises(TvmqError, match="lacks input"):
        run({"y": np.ones((1, 2), np.float32)})


def test_builtin_metrics_on_a_run():
    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3, 0, 1])
    data = Dataset({"x": np.zeros((10, 1), np.float32)}, labels)
    exact = lambda feeds: [_scores(labels)]  # noqa: E731
    two_wrong = lambda feeds: [_scores(labels, wrong=(3, 7))]  # noqa: E731
    assert metrics.top1(data)(exact) == 1.0 and metrics.top1(data)(two_wrong) == pytest.approx(0.8)
    assert metrics.agreement(data, two_wrong)(two_wrong) == 1.0
    assert metrics.agreement(data, exact)(two_wrong) == pytest.approx(0.8)
    assert metrics.cosine(data, exact)(two_wrong) == pytest.approx(0.8)  # one-hot rows: cos 1 or 0
    assert metrics.cosine(data, exact)(lambda feeds: [3 * _scores(labels)]) == pytest.approx(1.0)


def test_resolve_picks_top1_with_labels_and_cosine_without():
    labelled = Dataset({"x": np.zeros((2, 1), np.float32)}, np.array([0, 1]))
    unlabelled = Dataset({"x": np.zeros((2, 1), np.float32)})
    reference = lambda feeds: [np.eye(2, dtype=np.float32)]  # noqa: E731
    assert metrics.resolve(None, labelled, reference)[0] == "top1"
    assert metrics.resolve(None, unlabelled, reference)[0] == "cosine"
    with pytest.raises(TvmqError, match="needs labels"):
        metrics.resolve("top1", unlabelled, reference)
    with pytest.raises(TvmqError, match="unknown metric 'f1'.*top1, agreement, cosine"):
        metrics.resolve("f1", labelled, reference)
    with pytest.raises(TvmqError, match="pass --eval"):
        metrics.resolve("cosine", None, reference)


def test_module_function_metrics_are_imported_and_bad_ones_named(monkeypatch):
    module = types.ModuleType("my_metrics")
    module.score = lambda run: float(run({"x": np.ones((1, 1), np.float32)})[0].sum())
    monkeypatch.setitem(sys.modules, "my_metrics", module)
    name, metric = metrics.resolve("my_metrics:score", None, None)
    assert name == "my_metrics:score" and metric(lambda feeds: [feeds["x"] * 5]) == 5.0
    with pytest.raises(TvmqError, match="has no function 'nope'"):
        metrics.resolve("my_metrics:nope", None, None)
    with pytest.raises(TvmqError, match="cannot import 'no_such_module_here'"):
        metrics.resolve("no_such_module_here:f", None, None)
    with pytest.raises(TvmqError, match="not module:function"):
        metrics.check_name("my_metrics:")


def test_evaluate_refuses_what_is_not_a_finite_number():
    assert metrics.evaluate(lambda run: np.float32(0.5), None, "x") == 0.5
    with pytest.raises(TvmqError, match="returned str for the int8 build, not a number"):
        metrics.evaluate(lambda run: "good", None, "the int8 build")
    with pytest.raises(TvmqError, match="returned nan"):
        metrics.evaluate(lambda run: float("nan"), None, "x")


def test_a_zoo_scorer_is_a_metric(tmp_path):
    feeds = [{"x": np.full((1, 2), float(i), np.float32)} for i in range(4)]

    def scorer(root, reference, candidate, split):  # share of samples whose first output matches fp32's
        return np.mean([np.allclose(r[0], c[0]) for r, c in zip(reference, candidate)])

    model = ZooModel("toy", "classifier", "none", "none", {"x": (1, 2)}, lambda root: root,
                     lambda root, split: feeds, scorer, "match", "none")
    metric = metrics.zoo_metric(model, "eval", lambda feed: [feed["x"] * 2], root=tmp_path)
    assert metric(lambda feed: [feed["x"] * 2]) == 1.0
    assert metric(lambda feed: [feed["x"] * 2 + (feed["x"] > 1.5)]) == 0.5  # samples 2 and 3 differ


def test_a_user_metric_sees_a_working_run_of_each_candidate(tmp_path):
    """The user's function gets a ``run`` of each candidate build; the deployed artifact's own
    run gives the metric the report states."""
    import tvmq
    from tvmq.assets import bundled_mnist

    model, calib, evaluation = bundled_mnist()
    with np.load(evaluation) as archive:
        x, y = archive["x"][:120], archive["y"][:120]
    seen = []

    def accuracy(run):
        outputs = run({"input": x})
        assert isinstance(outputs, list) and outputs[0].shape == (len(x), 10)
        seen.append(outputs[0])
        return float(np.mean(outputs[0].argmax(1) == y))

    config = tvmq.Config(max_accuracy_drop=0.5, latency_runs=5, latency_fallback=False)
    compiled = tvmq.compile(model, calib, config=config, eval_data=Dataset(x, y), metric=accuracy)
    section = compiled.report["mixed_precision"]
    assert len(seen) == 2 and section["metric_name"] == "accuracy"  # fp32 and int8: int8 met the loose budget
    assert not np.array_equal(seen[0], seen[1])  # two different builds ran
    deployed = np.concatenate([compiled.run({"input": x[i:i + 1]}) for i in range(len(x))])
    assert section["metric"] == float(np.mean(deployed.argmax(1) == y))
    assert section["configuration"] == "int8" and section["fp32_layers"] == []
