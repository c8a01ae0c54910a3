"""ONNX ``If`` inlined by the frontend (``tvmq.frontend.branches``): each tiny model imports without
If, builds and gives ONNX Runtime's outputs.

Four shapes of If that exporters write: a condition on a shape (constant once the input
shapes are fixed), a condition on an input value with both branches valid (both computed,
``Where`` selects), one with only one branch valid on the fixed shapes (Silero VAD's
``sr == 16000``), and Ifs nested inside branches that read tensors of the outer scopes.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper

import onnx_models
from tvmq.build import build, virtual_machine
from tvmq.errors import TvmqError
from tvmq.frontend import load_model
from tvmq.frontend.branches import inline_branches
from tvmq.frontend.shapes import infer_shapes
from tvmq.targets import get_target

RNG = np.random.default_rng(0)
SHAPE = [1, 4, "F"]


def _branch(name, nodes, outputs, inits=None):
    return helper.make_graph(nodes, name, [], outputs,
                             [numpy_helper.from_array(v, k) for k, v in (inits or {}).items()])


def _if(cond, outputs, then, other, name):
    return helper.make_node("If", [cond], outputs, name=name, then_branch=then, else_branch=other)


def _float(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def shape_condition():
    """A condition on a shape: ``x.shape[1] == 1`` picks Squeeze, else a mean over the channels.

        x[1,C,4] --Shape--> s --Gather(1)--> c --Equal(1)--> cond
        If(cond): then  t = Squeeze(x, 1)   else  t = ReduceMean(x, 1)
        t --Relu--> y[1,4]
    """
    then = _branch("then", [helper.make_node("Squeeze", ["x", "axis1"], ["t_then"])], [_float("t_then", [1, 4])])
    other = _branch("else", [helper.make_node("ReduceMean", ["x"], ["t_else"], axes=[1], keepdims=0)],
                    [_float("t_else", [1, 4])])
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "one"], ["c"], axis=0),
             helper.make_node("Equal", ["c", "one"], ["cond"]),
             _if("cond", ["t"], then, other, "pick"),
             helper.make_node("Relu", ["t"], ["y"], name="relu")]
    inits = {"one": np.array(1, np.int64), "axis1": np.array([1], np.int64)}
    return onnx_models._model(nodes, [_float("x", [1, "C", 4])], [_float("y", [1, 4])], inits)


def value_condition():
    """A condition on an input value; both branches valid, the same output shape.

        x[1,6] --Gemm(w1)--> a      flag (bool, 0-d)
        If(flag): then  t = Relu(a) * 2        else  t = Sigmoid(a) + x
        t --Gemm(w2)--> y[1,3]
    """
    then = _branch("then", [helper.make_node("Relu", ["a"], ["r"]), helper.make_node("Mul", ["r", "two"], ["t1"])],
                   [_float("t1", [1, 6])], {"two": np.array(2.0, np.float32)})
    other = _branch("else", [helper.make_node("Sigmoid", ["a"], ["r"]), helper.make_node("Add", ["r", "x"], ["t2"])],
                    [_float("t2", [1, 6])])
    nodes = [helper.make_node("Gemm", ["x", "w1"], ["a"], name="fc1"),
             _if("flag", ["t"], then, other, "branch"),
             helper.make_node("Gemm", ["t", "w2"], ["y"], name="fc2")]
    inits = {"w1": RNG.standard_normal((6, 6)).astype(np.float32),
             "w2": RNG.standard_normal((6, 3)).astype(np.float32)}
    inputs = [_float("x", [1, 6]), helper.make_tensor_value_info("flag", TensorProto.BOOL, [])]
    return onnx_models._model(nodes, inputs, [_float("y", [1, 3])], inits)


def rate_condition():
    """Silero's shape: ``sr == 16000`` picks a branch made for 16 kHz frames; the 8 kHz one's weight
    does not fit the fixed frame length, so it cannot run.

        x[1,F] sr (int64, 0-d) --Equal(16000)--> cond
        If(cond): then  y = MatMul(x, w16[32,4])     else  y = MatMul(x, w8[16,4])
    """
    then = _branch("then", [helper.make_node("MatMul", ["x", "w16"], ["y16"])], [_float("y16", [1, 4])],
                   {"w16": RNG.standard_normal((32, 4)).astype(np.float32)})
    other = _branch("else", [helper.make_node("MatMul", ["x", "w8"], ["y8"])], [_float("y8", [1, 4])],
                    {"w8": RNG.standard_normal((16, 4)).astype(np.float32)})
    nodes = [helper.make_node("Equal", ["sr", "rate"], ["cond"]), _if("cond", ["y"], then, other, "rate")]
    inputs = [_float("x", [1, "F"]), helper.make_tensor_value_info("sr", TensorProto.INT64, [])]
    return onnx_models._model(nodes, inputs, [_float("y", [1, 4])], {"rate": np.array(16000, np.int64)})


def nested():
    """An If on an input value whose branches hold Ifs on shapes and read the outer scopes; both
    branches name tensors ``t``, ``u``, ``k``, and the inner branches give an initializer as an output.

        x[1,4,F] --Relu--> h            flag (bool, [1])
        If(flag):
          then: If(F == 8): then (u, v) = (h * x, k=2)  else (u, v) = (h', k=3) ; t = u + v  -> (t, h'')
          else: If(F == 8): then (u, v) = (-x, k=2)     else (u, v) = (x', k=3) ; t = u - h  -> (t, Sigmoid(t))
        outputs: y = first, z = second
    """
    def inner(name, a, b):
        cond = helper.make_node("Equal", ["f", "eight"], [f"{name}_cond"])
        k = [_float("k", [])]
        return [cond, _if(f"{name}_cond", ["u", "v"],
                          _branch(f"{name}_t", a, [_float("ut", SHAPE)] + k, {"k": np.array(2.0, np.float32)}),
                          _branch(f"{name}_e", b, [_float("ue", SHAPE)] + k, {"k": np.array(3.0, np.float32)}),
                          f"{name}/inner")]

    then = _branch("then", inner("a", [helper.make_node("Mul", ["h", "x"], ["ut"])],
                                 [helper.make_node("Identity", ["h"], ["ue"])])
                   + [helper.make_node("Add", ["u", "v"], ["t"]), helper.make_node("Identity", ["h"], ["h2"])],
                   [_float("t", SHAPE), _float("h2", SHAPE)])
    other = _branch("else", inner("b", [helper.make_node("Neg", ["x"], ["ut"])],
                                  [helper.make_node("Identity", ["x"], ["ue"])])
                    + [helper.make_node("Sub", ["u", "h"], ["t"]), helper.make_node("Sigmoid", ["t"], ["st"])],
                    [_float("t", SHAPE), _float("st", SHAPE)])
    nodes = [helper.make_node("Relu", ["x"], ["h"]),
             helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "two"], ["f"], axis=0),
             _if("flag", ["y", "z"], then, other, "outer")]
    inits = {"two": np.array(2, np.int64), "eight": np.array(8, np.int64)}
    inputs = [_float("x", [1, 4, "F"]), helper.make_tensor_value_info("flag", TensorProto.BOOL, [1])]
    return onnx_models._model(nodes, inputs, [_float("y", SHAPE), _float("z", SHAPE)], inits)


def run_both(model, tmp_path, input_shapes, feeds):
    """``(ONNX Runtime's outputs, tvmq's fp32 outputs, the imported model)`` on ``feeds``."""
    path = onnx_models.save(model, tmp_path / "m.onnx")
    imported = load_model(path, input_shapes)
    vm = virtual_machine(build(imported.mod, get_target("host")))
    out = vm["main"](*[tvm.runtime.tensor(feeds[spec.name]) for spec in imported.inputs])
    ours = [out.numpy()] if hasattr(out, "numpy") else [o.numpy() for o in out]
    return ort.InferenceSession(path).run(None, feeds), ours, imported


def assert_same(reference, ours):
    assert len(ours) == len(reference)
    for got, want in zip(ours, reference):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def inlined(model, input_shapes):
    """The frontend's graph before import: shapes fixed, folded, Ifs inlined."""
    from tvmq.frontend.shapes import input_specs, set_input_shapes

    shaped = infer_shapes(set_input_shapes(model, input_specs(model, input_shapes)), strict=False)
    return infer_shapes(inline_branches(shaped))


def ops(model) -> list[str]:
    return [n.op_type for n in model.graph.node]


@pytest.mark.parametrize("channels", [1, 3])
def test_a_shape_condition_inlines_the_branch_it_selects(channels, tmp_path):
    model = shape_condition()
    graph = inlined(model, {"x": (1, channels, 4)})
    assert "If" not in ops(graph) and ("Squeeze" in ops(graph)) == (channels == 1)
    x = RNG.standard_normal((1, channels, 4)).astype(np.float32)
    reference, ours, _ = run_both(model, tmp_path, {"x": (1, channels, 4)}, {"x": x})
    assert_same(reference, ours)


@pytest.mark.parametrize("flag", [True, False])
def test_a_value_condition_computes_both_branches_and_selects(flag, tmp_path):
    model = value_condition()
    graph = inlined(model, {})
    assert "If" not in ops(graph) and ops(graph).count("Where") == 1
    assert {"Relu", "Sigmoid"} <= set(ops(graph))
    feeds = {"x": RNG.standard_normal((1, 6)).astype(np.float32), "flag": np.array(flag)}
    reference, ours, imported = run_both(model, tmp_path, None, feeds)
    assert_same(reference, ours)
    assert [s.shape for s in imported.inputs] == [(1, 6), ()]


def test_only_the_branch_that_runs_on_the_fixed_shapes_is_kept(tmp_path, caplog):
    model = rate_condition()
    with caplog.at_level(logging.WARNING, logger="tvmq.frontend.branches"):
        graph = inlined(model, {"x": (1, 32)})
    assert ops(graph) == ["MatMul"] and graph.graph.node[0].input[1] == "w16"
    assert "only its then_branch runs" in caplog.text and "else_branch fails" in caplog.text
    feeds = {"x": RNG.standard_normal((1, 32)).astype(np.float32), "sr": np.array(16000, np.int64)}
    reference, ours, _ = run_both(model, tmp_path, {"x": (1, 32)}, feeds)
    assert_same(reference, ours)


def test_neither_branch_running_is_one_clear_error():
    model = rate_condition()
    with pytest.raises(TvmqError, match="neither branch runs"):
        inlined(model, {"x": (1, 12)})


@pytest.mark.parametrize("length", [8, 5])
@pytest.mark.parametrize("flag", [True, False])
def test_nested_ifs_with_outer_scope_references(length, flag, tmp_path):
    model = nested()
    graph = inlined(model, {"x": (1, 4, length)})
    assert "If" not in ops(graph) and ops(graph).count("Where") == 2
    names = [o for n in graph.graph.node for o in n.output]
    assert len(names) == len(set(names))  # both branches' `t` and `u` renamed apart
    feeds = {"x": RNG.standard_normal((1, 4, length)).astype(np.float32), "flag": np.array([flag])}
    reference, ours, _ = run_both(model, tmp_path, {"x": (1, 4, length)}, feeds)
    assert_same(reference, ours)


def test_branches_with_outputs_of_different_shapes_are_refused():
    """``flag`` decides between a [1,6] and a [1,3] output: no Where can select."""
    then = _branch("then", [helper.make_node("Identity", ["x"], ["a"])], [_float("a", [1, 6])])
    other = _branch("else", [helper.make_node("Slice", ["x", "zero", "three", "one"], ["b"])], [_float("b", [1, 3])])
    nodes = [_if("flag", ["y"], then, other, "mismatch")]
    inits = {"zero": np.array([0], np.int64), "three": np.array([3], np.int64), "one": np.array([1], np.int64)}
    inputs = [_float("x", [1, 6]), helper.make_tensor_value_info("flag", TensorProto.BOOL, [])]
    model = onnx_models._model(nodes, inputs, [_float("y", [1, "k"])], inits)
    with pytest.raises(TvmqError, match="different shapes"):
        inlined(model, {})


def test_a_spliced_branch_keeps_its_unique_names():
    graph = inlined(nested(), {"x": (1, 4, 8)})
    produced = {o for n in graph.graph.node for o in n.output}
    assert {"st", "y", "z", "h"} <= produced
    assert sum(name == "t" or name.startswith("t__") for name in produced) == 2
    onnx.checker.check_model(graph)


def test_a_scalar_input_stays_0d_through_calibration_and_the_runtime(tmp_path):
    """Silero's ``sr``: a 0-d int64 feed, stacked one run a feed, must reach ``main`` as 0-d."""
    import tvmq
    from tvmq.data import load_data
    from tvmq.runtime import input_arrays

    path = onnx_models.save(rate_condition(), tmp_path / "rate.onnx")
    feeds = [{"x": RNG.standard_normal((1, 32)).astype(np.float32), "sr": np.array(16000, np.int64)}
             for _ in range(8)]
    imported = load_model(path, {"x": (1, 32)})
    (data,) = load_data(feeds, imported.inputs, "calibration", batched=False)
    for feed, _ in data.batches(4):
        assert feed["sr"].shape == () and feed["x"].shape == (1, 32)
    specs = [{"name": "x", "shape": [1, 32], "dtype": "float32"}, {"name": "sr", "shape": [], "dtype": "int64"}]
    assert [a.shape for a in input_arrays((feeds[0],), specs)] == [(1, 32), ()]
    compiled = tvmq.compile(path, feeds, config=tvmq.Config(input_shapes={"x": (1, 32)}, latency_runs=1))
    compiled.save(tmp_path / "artifact")
    want = ort.InferenceSession(path).run(None, feeds[0])[0]
    for got in (compiled.run(feeds[0]), tvmq.load(tmp_path / "artifact").run(feeds[0])):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0.05, atol=0.05 * float(np.abs(want).max()))


def test_both_branches_and_where_compile_to_int8(tmp_path):
    """The Where that selects the branch takes the bool input's value in the int8 module too."""
    import tvmq

    path = onnx_models.save(value_condition(), tmp_path / "value.onnx")
    feeds = [{"x": RNG.standard_normal((1, 6)).astype(np.float32), "flag": np.array(i % 2 == 0)} for i in range(16)]
    compiled = tvmq.compile(path, feeds, config=tvmq.Config(latency_runs=1))
    assert {r["name"]: r["precision"] for r in compiled.report["layers"] if r["op"] == "Gemm"} == \
        {"fc1": "int8", "fc2": "int8"}
    session = ort.InferenceSession(path)
    for feed in feeds[:2]:  # one of each flag
        want = session.run(None, feed)[0]
        np.testing.assert_allclose(compiled.run(feed), want, rtol=0.1, atol=0.05 * float(np.abs(want).max()))
