"""Recurrent int8: the gate matmuls of the unrolled LSTM / GRU quantize like any dense layer.

    X --reshape--> X_rows --matmul(W^T)+b--> G_x ----------------------------┐
    h_{t-1} --matmul(R^T) (int8, dequantized from its int32 accumulator) --> + --> sigmoid / tanh (fp32)
                                                                                    --> c_t, h_t (fp32 state)

The converter names each matmul's input (``<node>/X_rows``, ``<node>/d<d>/initial<k>``,
``<node>/d<d>/t<t>/h``, GRU's ``.../rh``), calibration observes them, and the plan gives every
gate matmul int8; the gates' sum has no range of its own, so each matmul's accumulator is
dequantized (``y = float(acc) * s_in * s_w``) rather than requantized.
"""

import numpy as np
import onnxruntime as ort
import pytest
import tvm

import onnx_models
from test_recurrent import recurrent_model
from tvmq.api import quantize
from tvmq.build import build, virtual_machine
from tvmq.config import Config
from tvmq.passes.graph import dataflow_bindings, op_name
from tvmq.passes.realize import quantization_record
from tvmq.targets import get_target


def _calibration(feeds, count=24, seed=1):
    rng = np.random.default_rng(seed)
    return [{k: (rng.normal(0, 1, v.shape) * (1.0 if k == "X" else 0.5)).astype(np.float32) for k, v in feeds.items()}
            for _ in range(count)]


@pytest.mark.parametrize("op, direction, attrs", [("LSTM", "forward", {}), ("LSTM", "reverse", {"peepholes": True}),
                                                  ("GRU", "bidirectional", {"linear_before_reset": 0}),
                                                  ("GRU", "forward", {"linear_before_reset": 1})])
def test_every_gate_matmul_is_int8_and_the_gates_stay_fp32(tmp_path, op, direction, attrs):
    model, feeds = recurrent_model(op, direction, seq=3, batch=2, inputs=6, hidden=8, **attrs)
    path = onnx_models.save(model, tmp_path / "rnn.onnx")
    calib = _calibration(feeds)
    quantized = quantize(path, calib, Config(batch_size=1))
    record = quantization_record(quantized.int8)
    assert set(record["weights"]) == set(quantized.plan.layers) and quantized.plan.layers  # every matmul
    assert all(entry.reason == "calibrated" for entry in quantized.plan.layers.values())
    bindings = dataflow_bindings(quantized.int8["main"])
    ops = [op_name(b.value) for b in bindings]
    assert ops.count("relax.matmul") == len(quantized.plan.layers)
    integer = [b for b in bindings if op_name(b.value) == "relax.matmul"]
    assert all(str(b.value.args[0].ty.dtype) == "uint8" and str(b.var.ty.dtype) == "int32" for b in integer)
    for binding in bindings:  # nonlinearities run on fp32
        if op_name(binding.value) in ("relax.sigmoid", "relax.tanh"):
            assert str(binding.var.ty.dtype) == "float32"
    vm = virtual_machine(build(quantized.int8, get_target("host")))
    session = ort.InferenceSession(path)
    for feed in calib[:6]:
        want = session.run(None, feed)[0]
        result = vm["main"](*[tvm.runtime.tensor(feed[k]) for k in feeds])
        got = result[0].numpy()
        cosine = float((want * got).sum() / (np.linalg.norm(want) * np.linalg.norm(got)))
        assert cosine > 0.999, cosine
