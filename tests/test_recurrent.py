"""ONNX LSTM and GRU: unrolled Relax against ONNX Runtime, its matmuls as dense layers, clear refusals.

Every model here is one recurrent node (batch first everywhere when layout=1)::

      X [seq, batch, input] ─────────────┐
      initial_h [dirs, batch, hidden] ───┤   graph inputs, initializers or absent
      initial_c [dirs, batch, hidden] ───┤   (LSTM only; likewise)
      W, R, B (, sequence_lens, P) ──────┤   initializers
                                         ▼
                                    LSTM / GRU ──► Y   [seq, dirs, batch, hidden]
                                         ├───────► Y_h [dirs, batch, hidden]
                                         └───────► Y_c [dirs, batch, hidden]  (LSTM only)
"""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper

import onnx_models
import tvmq
from tvmq import TvmqError
from tvmq.build import build, virtual_machine
from tvmq.config import Config
from tvmq.frontend import load_model
from tvmq.passes.graph import dataflow_bindings, find_layers, op_name
from tvmq.targets import get_target

GATES = {"LSTM": 4, "GRU": 3}
DIRS = {"forward": 1, "reverse": 1, "bidirectional": 2}


def recurrent_model(op, direction="forward", seq=3, batch=2, inputs=5, hidden=4, states="inputs", layout=0,
                    opset=14, seed=0, outputs=None, peepholes=False, sequence_lens=None, **attrs):
    """One ``op`` node; ``states`` is "inputs", "constants" or "absent". Returns (model, feeds)."""
    rng = np.random.default_rng(seed)
    dirs, gates = DIRS[direction], GATES[op]
    init = {"W": rng.normal(0, 0.5, (dirs, gates * hidden, inputs)),
            "R": rng.normal(0, 0.5, (dirs, gates * hidden, hidden)),
            "B": rng.normal(0, 0.5, (dirs, 2 * gates * hidden))}
    x_shape = (batch, seq, inputs) if layout else (seq, batch, inputs)
    state_shape = (batch, dirs, hidden) if layout else (dirs, batch, hidden)
    feeds = {"X": rng.normal(0, 1, x_shape).astype(np.float32)}
    state_names = ["initial_h", "initial_c"] if op == "LSTM" else ["initial_h"]
    for name in state_names:
        value = rng.normal(0, 0.5, state_shape).astype(np.float32)
        if states == "inputs":
            feeds[name] = value
        elif states == "constants":
            init[name] = value
    if sequence_lens is not None:
        init["sequence_lens"] = np.asarray(sequence_lens, np.int32)
    if peepholes:
        init["P"] = rng.normal(0, 0.5, (dirs, 3 * hidden))
    names = ["X", "W", "R", "B", "sequence_lens" if sequence_lens is not None else ""]
    names += [n if states != "absent" else "" for n in state_names] + (["P"] if peepholes else [])
    while names[-1] == "":
        names.pop()
    outputs = outputs or (["Y", "Y_h", "Y_c"] if op == "LSTM" else ["Y", "Y_h"])
    if opset >= 14:
        attrs["layout"] = layout
    y_shape = (batch, seq, dirs, hidden) if layout else (seq, dirs, batch, hidden)
    shape = {"Y": y_shape, "Y_h": state_shape, "Y_c": state_shape}
    node = helper.make_node(op, names, outputs, name="rnn", hidden_size=hidden, direction=direction, **attrs)
    graph = helper.make_graph(
        [node], "rnn", [helper.make_tensor_value_info(k, TensorProto.FLOAT, v.shape) for k, v in feeds.items()],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, shape[o]) for o in outputs if o],
        [numpy_helper.from_array(v if v.dtype == np.int32 else v.astype(np.float32), k) for k, v in init.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), feeds


def run_tvmq(path, feeds, input_shapes):
    """Y, Y_h (, Y_c) from tvmq's import, built for the host."""
    imported = load_model(path, input_shapes)
    vm = virtual_machine(build(imported.mod, get_target("host")))
    ours = vm["main"](*(tvm.runtime.tensor(feeds[spec.name]) for spec in imported.inputs))
    return imported, [ours.numpy()] if isinstance(ours, tvm.runtime.Tensor) else [t.numpy() for t in ours]


def run_ort(path, feeds):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def run_both(model, feeds, tmp_path):
    path = onnx_models.save(model, tmp_path / "rnn.onnx")
    return (*run_tvmq(path, feeds, {k: v.shape for k, v in feeds.items()}), run_ort(path, feeds))


def assert_matches(model, feeds, tmp_path):
    imported, ours, theirs = run_both(model, feeds, tmp_path)
    assert len(ours) == len(theirs) == len(model.graph.output)
    for name, a, b in zip(imported.outputs, ours, theirs):
        assert a.shape == b.shape, name
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=name)
    return imported


def matmuls(imported) -> int:
    return sum(op_name(b.value) == "relax.matmul" for b in dataflow_bindings(imported.mod["main"]))


@pytest.mark.parametrize("states", ["inputs", "absent"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_lstm_matches_onnxruntime(tmp_path, direction, states):
    model, feeds = recurrent_model("LSTM", direction, states=states)
    assert len(feeds) == (3 if states == "inputs" else 1)  # X, initial_h, initial_c as separate VM args
    imported = assert_matches(model, feeds, tmp_path)
    assert matmuls(imported) == 1 + 3 * DIRS[direction]  # X W^T once, then h R^T per step


@pytest.mark.parametrize("linear_before_reset", [0, 1])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_gru_matches_onnxruntime(tmp_path, direction, linear_before_reset):
    model, feeds = recurrent_model("GRU", direction, linear_before_reset=linear_before_reset)
    imported = assert_matches(model, feeds, tmp_path)
    per_step = 1 if linear_before_reset else 2  # (r ⊙ h) R_h^T needs r first
    assert matmuls(imported) == 1 + 3 * DIRS[direction] * per_step


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_absent_states_bidirectional(tmp_path, op):
    assert_matches(*recurrent_model(op, "bidirectional", states="absent"), tmp_path)


@pytest.mark.parametrize("free_batch", [False, True])
@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_batch_first_layout(tmp_path, op, free_batch):
    """layout=1 against ONNX Runtime's layout=0 (it refuses batch-first RNNs) on transposed data.

    Batch first, every input leads with the batch, which ``load_model`` can leave symbolic.
    """
    batch_first, feeds = recurrent_model(op, "bidirectional", layout=1, seq=4, batch=3)
    seq_first, _ = recurrent_model(op, "bidirectional", layout=0, seq=4, batch=3)
    if free_batch:
        for value in [*batch_first.graph.input, *batch_first.graph.output]:
            value.type.tensor_type.shape.dim[0].dim_param = "N"
    path = onnx_models.save(batch_first, tmp_path / "batch_first.onnx")
    imported, ours = run_tvmq(path, feeds, None if free_batch else {k: v.shape for k, v in feeds.items()})
    assert imported.inputs[0].shape == ((None,) if free_batch else (3,)) + (4, 5)
    theirs = run_ort(onnx_models.save(seq_first, tmp_path / "seq_first.onnx"),
                     {k: v.transpose(1, 0, 2) for k, v in feeds.items()})
    back = {"Y": (2, 0, 1, 3), "Y_h": (1, 0, 2), "Y_c": (1, 0, 2)}
    for name, a, b in zip(imported.outputs, ours, theirs):
        np.testing.assert_allclose(a, b.transpose(back[name]), rtol=1e-5, atol=1e-6, err_msg=name)


def test_opsets_7_and_22_constant_states_full_sequence_lens_and_peepholes(tmp_path):
    assert_matches(*recurrent_model("LSTM", "reverse", opset=7, states="constants", sequence_lens=[3, 3]), tmp_path)
    assert_matches(*recurrent_model("GRU", "forward", opset=7, states="constants"), tmp_path)
    assert_matches(*recurrent_model("LSTM", "bidirectional", opset=22, peepholes=True), tmp_path)


def test_unused_outputs(tmp_path):
    """``Y`` left unnamed, ``Y_c`` not asked for: only ``Y_h`` comes out."""
    imported = assert_matches(*recurrent_model("LSTM", "bidirectional", outputs=["", "Y_h"]), tmp_path)
    assert imported.outputs == ["Y_h"]
    assert imported.nodes == {"Y_h": ("rnn", "LSTM")}  # reports name the recurrent node


@pytest.mark.parametrize("seq, hidden", [(1, 64), (4, 64), (1, 128)])
def test_silero_vad_like_lstm(tmp_path, seq, hidden):
    """Silero VAD's decoder: batch 1, a step or a few, h and c fed back between calls (v5 / v6: hidden 128)."""
    model, feeds = recurrent_model("LSTM", seq=seq, batch=1, inputs=hidden, hidden=hidden, opset=13)
    imported = assert_matches(model, feeds, tmp_path)
    assert [spec.name for spec in imported.inputs] == ["X", "initial_h", "initial_c"]


def test_every_matmul_is_a_dense_layer_with_a_constant_weight(tmp_path):
    model, feeds = recurrent_model("GRU", "bidirectional", linear_before_reset=0)
    path = onnx_models.save(model, tmp_path / "gru.onnx")
    imported = load_model(path)
    dense = [layer for layer in find_layers(imported.mod["main"]).values() if layer.kind == "dense"]
    assert len(dense) == matmuls(imported) == 13
    widths = sorted(layer.weight.shape for layer in dense)
    assert widths[-1] == (5, 2 * 3 * 4)  # the input projection: all steps and directions at once
    assert dense[0].bias is not None and dense[0].bias.shape == (24,)  # Wb + Rb folded in


@pytest.mark.parametrize("attrs, message", [
    ({"activations": ["Sigmoid", "Relu", "Tanh"]}, r"LSTM node 'rnn': activations=\['Sigmoid', 'Relu', 'Tanh'\]"),
    ({"clip": 3.0}, r"LSTM node 'rnn': clip=3.0 is not supported"),
    ({"input_forget": 1}, r"LSTM node 'rnn': input_forget=1 is not supported"),
    ({"sequence_lens": [3, 2]}, r"LSTM node 'rnn': sequence_lens=\[3, 2\] is not supported"),
])
def test_unsupported_attributes_are_refused(tmp_path, attrs, message):
    path = onnx_models.save(recurrent_model("LSTM", **attrs)[0], tmp_path / "odd.onnx")
    with pytest.raises(TvmqError, match=message):
        load_model(path)


def test_default_activations_spelled_out_are_accepted(tmp_path):
    activations = ["Sigmoid", "Tanh"] * 2
    assert_matches(*recurrent_model("GRU", "bidirectional", activations=activations), tmp_path)


def test_symbolic_sequence_length_is_refused(tmp_path):
    """A free leading dimension stays symbolic in ``load_model``; for layout=0 that is the sequence."""
    model, _ = recurrent_model("GRU")
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "T"
    path = onnx_models.save(model, tmp_path / "sym.onnx")
    with pytest.raises(TvmqError, match=r"GRU node 'rnn': the sequence length of X .* is symbolic"):
        load_model(path)
    assert load_model(path, {"X": (3, 2, 5)}).inputs[0].shape == (3, 2, 5)


def test_weights_that_are_graph_inputs_are_refused(tmp_path):
    model, _ = recurrent_model("GRU")
    r = model.graph.initializer[1]
    model.graph.input.append(helper.make_tensor_value_info("R", TensorProto.FLOAT, list(r.dims)))
    del model.graph.initializer[1]
    path = onnx_models.save(model, tmp_path / "r_input.onnx")
    with pytest.raises(TvmqError, match=r"GRU node 'rnn': input R must be a constant"):
        load_model(path)


def test_onnx_checker_still_passes_our_models():
    for op in GATES:
        onnx.checker.check_model(recurrent_model(op, "bidirectional")[0], full_check=True)


def test_compile_accepts_an_unrolled_lstm(tmp_path):
    """The whole pipeline (calibrate, realize, the x86 legalize's ConvertLayout, build) takes the
    unrolled graph; ``relax.stack`` would break ConvertLayout, hence concat of expand_dims."""
    model, _ = recurrent_model("LSTM", "bidirectional", layout=1, states="absent", seq=4, batch=8)
    for value in [*model.graph.input, *model.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    x = np.random.default_rng(1).normal(0, 1, (32, 4, 5)).astype(np.float32)
    compiled = tvmq.compile(onnx_models.save(model, tmp_path / "lstm.onnx"), x, config=Config(trials=0, batch_size=16))
    assert compiled.report["accuracy"]["output_cosine"] > 0.9999
    assert {layer["op"] for layer in compiled.report["layers"]} == {"LSTM"}
