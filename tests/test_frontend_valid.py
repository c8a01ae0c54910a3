"""Legal ONNX that real exporters write: each case imports, builds and matches ONNX Runtime.

Every case is a tiny ``onnx.helper`` model from ``onnx_models`` (its docstring draws the
graph), the input shapes the user would give, and the inputs to run. The fp32 import,
built for the host, must give ONNX Runtime's outputs.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tvm
from onnx import numpy_helper

import onnx_models
from tvmq.build import build, virtual_machine
from tvmq.frontend import load_model
from tvmq.targets import get_target

CASES = {}


RNG = np.random.default_rng(0)


def case(name: str, model, input_shapes=None, **feeds):
    """Register ``model`` with the ``input_shapes`` to give and its inputs ``name=array``."""
    CASES[name] = (model, input_shapes, feeds)


def with_batch_declared(model: onnx.ModelProto, size: int) -> onnx.ModelProto:
    """``model`` whose input declares its batch as ``size`` (exporters write -1 or 0 for "dynamic")."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    dim = out.graph.input[0].type.tensor_type.shape.dim[0]
    dim.Clear()
    dim.dim_value = size
    return out


def normal(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def constants_as_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every ``Constant`` node turned into an initializer of the same name."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    constants = [n for n in out.graph.node if n.op_type == "Constant"]
    for node in constants:
        out.graph.node.remove(node)
        out.graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(node.attribute[0].t),
                                                             node.output[0]))
    onnx.checker.check_model(out)
    return out


case("shape arithmetic: Shape/Gather/ReduceProd/Concat -> Reshape, Range, ConstantOfShape; -1 batch",
     onnx_models.shape_arithmetic(), {"x": (1, 3, 6, 8)}, x=normal(1, 3, 6, 8))
case("batch read by arithmetic: the free batch is fixed to 1", onnx_models.batch_arithmetic(), x=normal(1, 4, 6))
case("-1 batch left free, run at 3", with_batch_declared(onnx_models.hard_activations(), -1), x=normal(3, 4, 6, 6))
case("Pad amounts computed from Shape (constant and edge)", onnx_models.dynamic_pad(), x=normal(1, 3, 8, 8))
for opset in (11, 13, 18, 19):
    case(f"Resize linear, empty roi Constant, opset {opset}", onnx_models.resize_empty_roi(opset), x=normal(1, 2, 5, 6))
case("Resize nearest by sizes, empty roi and scales, opset 13",
     onnx_models.resize_empty_roi(13, "nearest", by_sizes=True), x=normal(1, 2, 5, 6))
case("Resize, empty roi initializer", constants_as_initializers(onnx_models.resize_empty_roi(13)),
     x=normal(1, 2, 5, 6))
case("Upsample, scales attribute, opset 7", onnx_models.upsample(7), x=normal(1, 2, 4, 4))
case("Upsample, scales input, opset 9", onnx_models.upsample(9), x=normal(1, 2, 4, 4))
case("Upsample linear, opset 9", onnx_models.upsample(9, "linear"), x=normal(1, 2, 4, 4))
case("HardSwish and HardSigmoid", onnx_models.hard_activations(), x=normal(2, 4, 6, 6))
for opset in (13, 18):
    case(f"Split and Slice with tensor inputs, opset {opset}", onnx_models.split_slice_tensor_inputs(opset),
         x=normal(1, 6, 8))
case("Clip with attribute bounds, opset 10", onnx_models.clip_attributes(), x=normal(3, 6))
for opset in (7, 9, 11, 13, 15, 17, 19, 21):
    case(f"weights in Constant nodes, opset {opset}",
         onnx_models.at_opset(onnx_models.conv_bn(weights_as_constant_nodes=True), opset), x=normal(1, 4, 8, 8))
case("int64 ids, int64 mask and bool inputs", onnx_models.text_inputs(), {"ids": (2, 5), "mask": (2, 5)},
     ids=RNG.integers(0, 10, (2, 5)), mask=RNG.integers(0, 2, (2, 5)), flag=RNG.integers(0, 2, (2, 1)) > 0)


def run_tvm(path, input_shapes, feeds):
    imported = load_model(path, input_shapes)
    vm = virtual_machine(build(imported.mod, get_target("host")))
    out = vm["main"](*[tvm.runtime.tensor(feeds[spec.name]) for spec in imported.inputs])
    return [out.numpy()] if hasattr(out, "numpy") else [o.numpy() for o in out]


@pytest.mark.parametrize("name", sorted(CASES))
def test_legal_model_matches_onnxruntime(name, tmp_path):
    model, input_shapes, feeds = CASES[name]
    path = onnx_models.save(model, tmp_path / "m.onnx")
    reference = ort.InferenceSession(path).run(None, feeds)
    ours = run_tvm(path, input_shapes, feeds)
    assert len(ours) == len(reference)
    for got, want in zip(ours, reference):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(want).max())))


def test_the_matrix_covers_opsets_7_to_21():
    opsets = {model.opset_import[0].version for model, _, _ in CASES.values()}
    assert {7, 9, 10, 11, 13, 14, 17, 18, 19, 21} <= opsets
