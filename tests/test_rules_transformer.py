"""MatMul with a constant weight on a 3-D activation (a transformer's Linear) as an int8 dense.

    x[N,S,16] --MatMul(W1 [16,24]) + b1--> h --Relu--> r --MatMul(W2 [24,8]) + b2--> y[N,S,8]

Both MatMuls become ``reshape [N S, K] -> int8 matmul -> reshape``; the x86 target puts each on
its packed 2-D dense kernel, bit for bit the realized module.
"""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

import onnx_models
from tvmq import api
from tvmq.build import bind_batch
from tvmq.config import Config
from tvmq.passes.graph import dataflow_bindings, op_name
from tvmq.passes.realize import quantization_record
from tvmq.targets import get_target, x86_int8
from tvmq.targets.x86_legalize import LegalizeForX86

SEQ = 5


def linear_block(seed=0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    inits = {"w1": rng.normal(0, 0.3, (16, 24)), "b1": rng.normal(0, 0.1, 24),
             "w2": rng.normal(0, 0.3, (24, 8)), "b2": rng.normal(0, 0.1, 8)}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["m1"], name="/fc1/MatMul"),
             helper.make_node("Add", ["m1", "b1"], ["h"], name="/fc1/Add"),
             helper.make_node("Relu", ["h"], ["r"], name="/relu"),
             helper.make_node("MatMul", ["r", "w2"], ["m2"], name="/fc2/MatMul"),
             helper.make_node("Add", ["m2", "b2"], ["y"], name="/fc2/Add")]
    graph = helper.make_graph(nodes, "linear_block",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", SEQ, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", SEQ, 8])],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("lanes", [16, 8])
def test_3d_matmuls_are_int8_dense_kernels_bit_identical_after_legalization(tmp_path, rng, lanes):
    path = onnx_models.save(linear_block(), tmp_path / "linear.onnx")
    calib = rng.standard_normal((16, SEQ, 16)).astype(np.float32)
    quantized = api.quantize(path, calib, Config(batch_size=16))
    record = quantization_record(quantized.int8)
    assert len(record["weights"]) == 2 and record["precision"]["r"] == "int8"
    int8, x = bind_batch(quantized.int8, 1), calib[:1]
    legalized = LegalizeForX86(lanes)(int8)
    calls = [b.value for b in dataflow_bindings(legalized["main"]) if op_name(b.value) == "relax.call_tir"]
    assert sum(x86_int8.PACKED_PREFIX in c.args[0].name_hint for c in calls) == 2

    def run(mod):
        vm = relax.VirtualMachine(tvm.compile(mod, get_target("host").target), tvm.cpu())
        return vm["main"](tvm.runtime.tensor(x)).numpy()

    got = run(legalized)
    np.testing.assert_array_equal(got, run(int8))
    want = ort.InferenceSession(path).run(None, {"x": x})[0]
    cosine = float((got * want).sum() / (np.linalg.norm(got) * np.linalg.norm(want)))
    assert cosine > 0.999, cosine
