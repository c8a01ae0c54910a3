"""Activation x activation MatMul (attention's ``Q K^T`` and ``softmax(.) V``) as int8
(``tvmq.passes.rules.attention``): ``a`` on the scheme's activation quantizer, ``b`` symmetric int8,
``acc = a_q b_q - z_a sum_k b_q`` in int32, a dequantize or requantize epilogue; planned "dynamic",
both operands' parameters at run time. Every compiled result (the x86 rule schedules at trials 0) is
checked bit for bit against the same integer arithmetic in numpy (:func:`int_matmul`).

    x[N,S,8] -> q = x Wq, k = x Wk, v = x Wv -> [N,2,S,4] heads
             -> scores = MatMul(q, k^T) * 0.5 -> Softmax -> context = MatMul(p, v) -> [N,S,8] -> MatMul Wo -> y
"""

import logging

import numpy as np
import onnxruntime as ort
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

import onnx_models
from reference import dynamic_qparams
from tvmq import api
from tvmq.build import build, virtual_machine
from tvmq.config import Config
from tvmq.errors import TvmqError
from tvmq.passes.layers import find_batch_matmuls
from tvmq.passes.plan import ATTENTION_DEFAULT, UNCALIBRATED, USER_OVERRIDE, plan_quantization
from tvmq.passes.qparams import activation_qparams
from tvmq.passes.realize import RECORD_ATTR, Realize, Scheme, quantization_record
from tvmq.targets import get_target
from tvmq.targets.qemu import default_sysroot, toolchain_missing

F32 = np.float32
STATS = {"a": (-1.0, 2.0), "b": (-1.5, 1.0), "y": (-6.0, 6.0), "t": (-6.0, 6.0)}
INT8, DYNAMIC = {"y": "int8"}, {"y": "dynamic"}  # batch matmuls are fp32 unless named


@I.ir_module
class Scores:
    @R.function
    def main(a: R.Tensor((2, 3, 5, 8), "float32"), b: R.Tensor((2, 3, 8, 5), "float32")):
        with R.dataflow():
            y = R.matmul(a, b)
            R.output(y)
        return y


@I.ir_module
class Context:
    """The matmul read by a transpose (an int8 reader): requantized onto ``y``'s parameters."""

    @R.function
    def main(a: R.Tensor((2, 3, 5, 8), "float32"), b: R.Tensor((2, 3, 8, 5), "float32")):
        with R.dataflow():
            y = R.matmul(a, b)
            t = R.permute_dims(y, [0, 2, 1, 3])
            R.output(t)
        return t


def int_matmul(a_q, b_q, z_a) -> np.ndarray:
    """``sum_k (a_q - z_a) b_q`` as ``a_q b_q - z_a sum_k b_q`` in int64 (``z_a`` scalar or ``[..., M, 1]``)."""
    a_q, b_q = a_q.astype(np.int64), b_q.astype(np.int64)
    return a_q @ b_q - np.asarray(z_a, np.int64) * b_q.sum(axis=-2, keepdims=True)


def _quantize(x, qp):
    lo, hi = (0, 255) if qp.dtype == "uint8" else (-128, 127)
    return np.clip(np.round(x / qp.scale) + F32(qp.zero_point), lo, hi).astype(np.int64)


def _operands(rng):
    return (rng.uniform(-1, 2, (2, 3, 5, 8)).astype(F32), rng.uniform(-1.5, 1, (2, 3, 8, 5)).astype(F32))


def _run(mod, *args, target="host"):
    spec = get_target(target)
    vm = virtual_machine(build(spec.legalize(mod) if target != "host" else mod, spec))
    return vm["main"](*(tvm.runtime.tensor(a) for a in args)).numpy()


def _without_record(mod):
    return tvm.IRModule({"main": mod["main"].without_attr(RECORD_ATTR)})


def test_static_scores_are_u8_x_s8_with_one_zero_point_term_then_dequantized(rng, caplog):
    """``a`` uint8 with ``z_a``, ``b`` symmetric int8: the expected Relax op for op, and the compiled
    module (rule schedules applied, no fallback to TVM's loops) the numpy integers times ``s_a s_b``."""
    a_qp, b_qp = activation_qparams(*STATS["a"], "uint8"), activation_qparams(*STATS["b"], "int8")
    scale, z_a = F32(a_qp.scale * b_qp.scale), int(a_qp.zero_point)

    @I.ir_module
    class Expected:
        @R.function
        def main(a: R.Tensor((2, 3, 5, 8), "float32"), b: R.Tensor((2, 3, 8, 5), "float32"),
                 s_a: R.Tensor((), "float32"), z: R.Tensor((), "int32"), s_b: R.Tensor((), "float32"),
                 z_b: R.Tensor((), "int32"), z_acc: R.Tensor((), "int32"), s_ab: R.Tensor((), "float32")):
            with R.dataflow():
                a_q = R.quantize(a, s_a, z, out_dtype="uint8")
                b_q = R.quantize(b, s_b, z_b, out_dtype="int8")
                y_int = R.matmul(a_q, b_q, out_dtype="int32")
                sums = R.sum(R.astype(b_q, "int32"), axis=[-2], keepdims=True)
                y_acc = R.subtract(y_int, R.multiply(z_acc, sums))
                y = R.multiply(R.astype(y_acc, "float32"), s_ab)
                gv = y
                R.output(gv)
            return gv

    got = Realize(STATS, Scheme("uint8"), overrides=INT8)(Scores)
    assert quantization_record(got)["precision"] == {"y": "int8"}
    bound = {"s_a": a_qp.scale, "z": a_qp.zero_point, "s_b": b_qp.scale, "z_b": b_qp.zero_point,
             "z_acc": np.int32(z_a), "s_ab": scale}
    want = relax.transform.BindParams("main", {k: np.asarray(v) for k, v in bound.items()})(Expected)
    tvm.ir.assert_structural_equal(_without_record(got), want)
    a, b = _operands(rng)
    with caplog.at_level(logging.WARNING, logger="tvmq.build"):
        out = _run(got, a, b)
    assert not caplog.records, [r.getMessage() for r in caplog.records]
    acc = int_matmul(_quantize(a, a_qp), _quantize(b, b_qp), z_a)
    np.testing.assert_array_equal(out, acc.astype(F32) * scale)
    assert np.abs(out - a @ b).max() < 0.05  # and it is attention's matmul: within a few steps of fp32


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_static_context_requantizes_for_its_transpose_exactly(rng, dtype):
    """An int8 reader (the transpose): ``clip(round(float(acc) M + z_y))`` with ``M = s_a s_b / s_y``, the
    transpose on the 8-bit values, dequantized where the result leaves; int8 ``a`` leaves no zero-point term."""
    got = Realize(STATS, Scheme(dtype), overrides=INT8)(Context)
    record = quantization_record(got)
    assert record["precision"] == {"y": "int8", "t": "int8"} and "y" in record["batch_matmuls"]
    has_term = any(b.var.name == "y_acc" for b in got["main"].body.blocks[0].bindings)
    assert has_term == (dtype == "uint8")
    a_qp, b_qp, y_qp = (activation_qparams(*STATS["a"], dtype), activation_qparams(*STATS["b"], "int8"),
                        activation_qparams(*STATS["y"], dtype))
    a, b = _operands(rng)
    acc = int_matmul(_quantize(a, a_qp), _quantize(b, b_qp), int(a_qp.zero_point))
    multiplier = (np.float64(a_qp.scale) * np.float64(b_qp.scale) / np.float64(y_qp.scale)).astype(F32)
    lo, hi = (0, 255) if dtype == "uint8" else (-128, 127)
    y_q = np.clip(np.round(acc.astype(F32) * multiplier + F32(y_qp.zero_point)), lo, hi)
    want = ((y_q - F32(y_qp.zero_point)) * y_qp.scale).astype(F32).transpose(0, 2, 1, 3)
    np.testing.assert_array_equal(_run(got, a, b), want)


ARM_MISSING = toolchain_missing(default_sysroot())


@pytest.mark.skipif(ARM_MISSING is not None, reason=f"aarch64 toolchain: {ARM_MISSING}")
def test_on_aarch64_int8_operands_are_s8_x_s8_and_equal_numpy(rng):
    """The ARM target (int8 activations): no zero-point term, cross-compiled and run under qemu, the
    numpy integers (requantized for the transpose) exactly."""
    got = Realize(STATS, Scheme("int8"), overrides=INT8)(Context)
    a_qp, b_qp, y_qp = (activation_qparams(*STATS[n], "int8") for n in "aby")
    a, b = _operands(rng)
    acc = int_matmul(_quantize(a, a_qp), _quantize(b, b_qp), 0)
    multiplier = (np.float64(a_qp.scale) * np.float64(b_qp.scale) / np.float64(y_qp.scale)).astype(F32)
    y_q = np.clip(np.round(acc.astype(F32) * multiplier), -128, 127)
    np.testing.assert_array_equal(_run(got, a, b, target="arm"), (y_q * y_qp.scale).astype(F32).transpose(0, 2, 1, 3))


@pytest.mark.parametrize("dtype, granularity", [("uint8", "tensor"), ("int8", "tensor"), ("uint8", "row"),
                                                ("int8", "row")])
def test_dynamic_scores_compute_both_scales_at_run_time(rng, dtype, granularity):
    """Planned "dynamic": no ranges needed; ``a`` on its own (per-row) parameters, ``b`` symmetric on its
    own (per-column) ones, the same integers and ``float(acc) * (s_a s_b)`` as numpy."""
    got = Realize({}, Scheme(dtype, dynamic_granularity=granularity), overrides=DYNAMIC)(Scores)
    assert quantization_record(got)["precision"] == {"y": "dynamic"}
    rows = granularity == "row"
    a, b = _operands(rng)
    spread = b * np.exp(rng.normal(0, 1, (2, 3, 1, 5))).astype(F32)  # columns of b with different ranges
    for a, b in ((a, b), (a, spread), (np.zeros_like(a), b)):
        s_a, z_a, lo, hi = dynamic_qparams(a, dtype, rows)
        s_b, _, _, _ = dynamic_qparams(np.swapaxes(b, -1, -2), "int8", rows)
        s_b = np.swapaxes(np.asarray(s_b), -1, -2) if rows else s_b
        a_q = np.clip(np.round(a / s_a) + np.asarray(z_a).astype(F32), lo, hi)
        b_q = np.clip(np.round(b / s_b), -128, 127)
        want = int_matmul(a_q, b_q, z_a).astype(F32) * (s_a * s_b)
        np.testing.assert_array_equal(_run(got, a, b), want)


def test_plan_lists_each_batch_matmul_with_its_operand_and_reason():
    """fp32 unless named (also in mode dynamic); named int8 with both ranges, fp32 "no calibrated range"
    without; the plan's JSON names the second operand and its symmetric parameters; the latency
    fallback's keep is listed."""
    (found,) = find_batch_matmuls(Scores["main"]).values()
    assert (found.a.name, found.b.name, found.out.name) == ("a", "b", "y")
    for scheme in (Scheme(), Scheme(mode="dynamic")):
        default = plan_quantization(Scores["main"], STATS, scheme).layers["y"]
        assert (default.kind, default.precision, default.reason) == ("batch_matmul", "fp32", ATTENTION_DEFAULT)
    plan = plan_quantization(Scores["main"], STATS, Scheme(), overrides={"y*": "int8"})
    entry = plan.layers["y"]
    assert (entry.precision, entry.reason, entry.input, entry.operand) == ("int8", USER_OVERRIDE, "a", "b")
    assert entry.to_json(plan.activations)["operand"]["zero_point"] == [0]
    uncalibrated = plan_quantization(Scores["main"], {"a": (0, 1)}, Scheme(), overrides=INT8).layers["y"]
    assert (uncalibrated.precision, uncalibrated.reason) == ("fp32", UNCALIBRATED)
    dynamic = plan_quantization(Scores["main"], {}, Scheme(), overrides=DYNAMIC).layers["y"]
    assert (dynamic.precision, dynamic.reason) == ("dynamic", USER_OVERRIDE)
    record = quantization_record(Realize(STATS, Scheme(), keep_fp32=("y",), overrides=INT8)(Scores))
    assert record["precision"] == {"y": "fp32"} and record["kept_fp32"] == {"y": "y"}


SEQ, HEADS, DIM = 6, 2, 4


def attention_block(seed=0):
    """One self-attention block in ONNX, named as a transformer export names it (module docstring)."""
    rng = np.random.default_rng(seed)
    width = HEADS * DIM
    inits = {f"w{n}": rng.normal(0, 0.4, (width, width)).astype(F32) for n in "qkvo"}
    inits.update(heads=np.array([0, SEQ, HEADS, DIM], np.int64), merged=np.array([0, SEQ, width], np.int64),
                 scale=np.array(DIM ** -0.5, F32))
    nodes = []
    for n in "qkv":
        nodes += [helper.make_node("MatMul", ["x", f"w{n}"], [f"{n}_lin"], name=f"/{n}/MatMul"),
                  helper.make_node("Reshape", [f"{n}_lin", "heads"], [f"{n}_heads"], name=f"/{n}/Reshape"),
                  helper.make_node("Transpose", [f"{n}_heads"], [f"{n}_t"], name=f"/{n}/Transpose",
                                   perm=[0, 2, 3, 1] if n == "k" else [0, 2, 1, 3])]
    nodes += [helper.make_node("MatMul", ["q_t", "k_t"], ["scores"], name="/attention/MatMul"),
              helper.make_node("Mul", ["scores", "scale"], ["scaled"], name="/attention/Mul"),
              helper.make_node("Softmax", ["scaled"], ["probs"], name="/attention/Softmax", axis=-1),
              helper.make_node("MatMul", ["probs", "v_t"], ["context"], name="/attention/MatMul_1"),
              helper.make_node("Transpose", ["context"], ["context_t"], name="/attention/Transpose", perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", ["context_t", "merged"], ["merged_out"], name="/attention/Reshape"),
              helper.make_node("MatMul", ["merged_out", "wo"], ["y"], name="/o/MatMul")]
    graph = helper.make_graph(nodes, "attention", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", SEQ, width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", SEQ, width])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_attention_block_compiles_with_named_attention_matmuls_int8(tmp_path, rng):
    """Through ``tvmq.compile`` (trials 0): both attention MatMuls fp32 by default; named by ONNX node
    (``Config.layers``) int8 in the plan, output near ONNX Runtime fp32; a name that
    matches nothing is one error."""
    path = onnx_models.save(attention_block(), tmp_path / "attention.onnx")
    calib = rng.standard_normal((16, SEQ, HEADS * DIM)).astype(F32)
    x = rng.standard_normal((1, SEQ, HEADS * DIM)).astype(F32)
    (want,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    named = {"/attention/MatMul": "int8", "/attention/MatMul_1": "int8"}
    for layers, expected in (({}, ("fp32", "fp32")), (named, ("int8", "int8"))):
        compiled = api.compile(path, calib, config=Config(batch_size=16, latency_runs=1, latency_fallback=False,
                                                          layers=layers))
        plan = {e["node"]: (e["kind"], e["precision"]) for e in compiled.plan["layers"]}
        assert (plan["/attention/MatMul"], plan["/attention/MatMul_1"]) == tuple(("batch_matmul", p) for p in expected)
        got = compiled.run({"x": x})
        cosine = float((got * want).sum() / np.linalg.norm(got) / np.linalg.norm(want))
        assert cosine > 0.99, (layers, cosine)
    with pytest.raises(TvmqError, match="attention/NoSuch"):
        api.compile(path, calib, config=Config(batch_size=16, layers={"/attention/NoSuch": "fp32"}))
