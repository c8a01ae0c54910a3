"""The goals logic of ``bench/coverage.py``: nearest-neighbour agreement, goal checks and the table."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

# loaded from its file: the name "coverage" is also a well-known package's
_SPEC = importlib.util.spec_from_file_location("bench_coverage", Path(__file__).resolve().parents[1] / "bench" / "coverage.py")
coverage = sys.modules["bench_coverage"] = importlib.util.module_from_spec(_SPEC)  # dataclasses look it up
_SPEC.loader.exec_module(coverage)


def _outputs(vectors) -> list[list[np.ndarray]]:
    return [[np.asarray(v, np.float32)[None]] for v in vectors]


def test_nearest_neighbour_agreement_counts_changed_neighbours():
    # nearest neighbours a <-> b, c <-> d; the candidate turns b towards d: b -> d (cos 0.93, a 0.45),
    # while a -> b (0.45 against d's 0.10), c -> d and d -> c stay: 3 of 4 agree
    reference = _outputs([[1, 0], [1, 0.1], [0, 1], [0.1, 1]])
    assert coverage.nearest_neighbour_agreement(reference, reference) == 1.0
    candidate = _outputs([[1, 0], [0.5, 1], [0, 1], [0.1, 1]])
    assert coverage.nearest_neighbour_agreement(reference, candidate) == 0.75


def test_goal_floor_drop_and_neighbours():
    floor = coverage.Goal("x", floor=0.99, nn_floor=0.99)
    assert floor.met({"metric_fp32": 1.0, "metric_t": 0.995, "nn_agreement_t": 1.0}, "t")
    assert not floor.met({"metric_fp32": 1.0, "metric_t": 0.995, "nn_agreement_t": 0.95}, "t")
    assert not floor.met({"metric_fp32": 1.0, "metric_t": 0.98, "nn_agreement_t": 1.0}, "t")
    assert floor.met({"metric_fp32": 1.0}, "t") is None
    drop = coverage.Goal("y", drop=0.005)
    assert drop.met({"metric_fp32": 0.98, "metric_t": 0.975}, "t")
    assert not drop.met({"metric_fp32": 1.0, "metric_t": 0.994}, "t")


def test_int8_layer_share_counts_dynamic_and_each_node_once():
    report = {"layers": [{"name": "lstm", "op": "LSTM", "precision": "fp32"},
                         {"name": "lstm", "op": "LSTM", "precision": "fp32"},
                         {"name": "conv", "op": "Conv", "precision": "dynamic"},
                         {"name": "fc", "op": "Gemm", "precision": "int8"}, {"name": "relu", "op": "Relu", "precision": "fp32"}]}
    assert coverage.int8_layer_share(report) == 0.667


def test_goals_table_row():
    row = {"model": "ppocr_rec", "tvmq_recipe": "static, per channel", "metric_fp32": 1.0, "metric_tvmq_int8": 0.996,
           "metric_ort_int8": 0.909, "metric_ort_int8_layers_only": 0.917,
           "ort_int8_dynamic_error": "NotImplemented: ConvInteger", "tvmq_report_ms": {"fp32": 20.0, "int8": 10.0},
           "latency_ms": {"ort_fp32": 15.0, "ort_int8": 24.0, "ort_int8_dynamic": None, "tvmq_int8": 12.0}}
    line = coverage.goals_markdown([row]).splitlines()[-1]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[3] == "- / -" and cells[5] == "0.9960" and cells[8].startswith("fails: NotImplemented")
    assert cells[9] == "yes / **no**"
    assert cells[10] == "20.00 / 10.00" and cells[11] == "15.00 / 24.00 / -" and cells[13] == "2.00x"
