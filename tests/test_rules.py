"""Realize rules, one family each: TVMScript Before -> realize -> the Expected module, whose
constants come from numpy formulas written out here (not from tvmq.passes.qparams).

Every Before starts with a layer (a constant-weight matmul or conv) so that the op under test
reads a quantized tensor; array constants are function parameters bound with ``BindParams``.
"""

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import ir as I
from tvm.script import relax as R

from tvmq.build import build, virtual_machine
from tvmq.passes.realize import RECORD_ATTR, Realize, Scheme, quantization_record
from tvmq.passes.rules import rule_for, rule_ops
from tvmq.targets import get_target


def _act(lo, hi):
    """uint8: s = (hi - lo) / 255 over a range widened to 0, z = round(-lo / s) (s in float64, then fp32)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255.0
    return np.float32(scale), int(np.round(-lo / scale))


def _weights(w, axis):
    """Symmetric int8 per output channel: s_c = max|w_c| / 127, w_q = clip(round(w / s_c))."""
    reduce = tuple(i for i in range(w.ndim) if i != axis)
    scale = (np.abs(w).max(axis=reduce) / 127).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    return np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8), scale


def _bias(bias, s_x, s_w, z_x, w_q, axis):
    """int32 bias at s_x s_w minus z_x sum_k w_q (the input zero point folded in)."""
    reduce = tuple(i for i in range(w_q.ndim) if i != axis)
    folded = np.round(bias / (np.float64(s_x) * s_w.astype(np.float64))) - z_x * w_q.astype(np.int64).sum(reduce)
    return folded.astype(np.int32)


def _realized(before, binds, stats):
    bound = relax.transform.BindParams("main", {k: v.astype(np.float32) for k, v in binds.items()})(before)
    out = Realize(stats, Scheme("uint8", per_channel=True))(bound)
    return tvm.IRModule({"main": out["main"].without_attr(RECORD_ATTR)})


def _expected(expected, binds):
    return relax.transform.BindParams("main", binds)(expected)


def test_every_rule_family_is_registered():
    ops = set(rule_ops())
    assert {"relax.nn.conv2d", "relax.matmul", "relax.nn.relu", "relax.add", "relax.concat", "relax.reshape",
            "relax.nn.max_pool2d", "relax.nn.avg_pool2d", "relax.mean"} <= ops
    assert rule_for("relax.nn.softmax") is None  # no rule: fp32


def test_matmul_requantizes_then_reshape_moves_the_uint8_values(rng):
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((2, 4), "float32"), w: R.Tensor((4, 3), "float32"), b: R.Tensor((3,), "float32")):
            with R.dataflow():
                a = R.matmul(x, w)
                c = R.add(a, b)
                r = R.nn.relu(c)
                d = R.reshape(r, R.shape([3, 2]))
                R.output(d)
            return d

    w, b = rng.normal(0, 1, (4, 3)).astype(np.float32), rng.normal(0, 1, 3).astype(np.float32)
    (s_x, z_x), (s_r, z_r) = _act(-1.0, 1.0), _act(0.0, 2.0)
    w_q, s_w = _weights(w, axis=1)
    multiplier = (np.float64(s_x) * s_w / np.float64(s_r)).astype(np.float32)

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((2, 4), "float32"), w_q: R.Tensor((4, 3), "int8"), bias_q: R.Tensor((3,), "int32"),
                 m: R.Tensor((3,), "float32")):
            with R.dataflow():
                x_q = R.quantize(x, R.const(s_x, "float32"), R.const(z_x, "int32"), out_dtype="uint8", axis=-1)
                acc = R.add(R.matmul(x_q, w_q, out_dtype="int32"), bias_q)
                y = R.add(R.round(R.multiply(R.astype(acc, "float32"), m)), R.const(float(z_r), "float32"))
                y = R.minimum(R.maximum(y, R.const(float(z_r), "float32")), R.const(255.0, "float32"))
                r_q = R.astype(y, "uint8")
                d_q = R.reshape(r_q, R.shape([3, 2]))
                d = R.dequantize(d_q, R.const(s_r, "float32"), R.const(z_r, "int32"), out_dtype="float32", axis=-1)
                gv = d
                R.output(gv)
            return gv

    got = _realized(Before, {"w": w, "b": b}, {"x": (-1, 1), "r": (0, 2)})
    want = _expected(Expected, {"w_q": w_q, "bias_q": _bias(b, s_x, s_w, z_x, w_q, 1), "m": multiplier})
    tvm.ir.assert_structural_equal(got, want)


def test_padded_conv_pads_with_the_zero_point_and_dequantizes_its_accumulator(rng):
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 2, 5, 5), "float32"), w: R.Tensor((3, 2, 3, 3), "float32")):
            with R.dataflow():
                y = R.nn.conv2d(x, w, padding=[1, 1, 1, 1])
                R.output(y)
            return y

    w = rng.normal(0, 1, (3, 2, 3, 3)).astype(np.float32)
    s_x, z_x = _act(-1.0, 3.0)
    w_q, s_w = _weights(w, axis=0)
    assert z_x != 0

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 2, 5, 5), "float32"), w_q: R.Tensor((3, 2, 3, 3), "int8"),
                 bias_q: R.Tensor((1, 3, 1, 1), "int32"), acc_scale: R.Tensor((1, 3, 1, 1), "float32")):
            with R.dataflow():
                x_q = R.quantize(x, R.const(s_x, "float32"), R.const(z_x, "int32"), out_dtype="uint8", axis=-1)
                padded = R.nn.pad(x_q, pad_width=[0, 0, 0, 0, 1, 1, 1, 1], pad_value=float(z_x))
                acc = R.add(R.nn.conv2d(padded, w_q, padding=[0, 0, 0, 0], out_dtype="int32"), bias_q)
                y = R.multiply(R.astype(acc, "float32"), acc_scale)
                gv = y
                R.output(gv)
            return gv

    got = _realized(Before, {"w": w}, {"x": (-1, 3), "y": (-5, 5)})
    bias_q = _bias(np.zeros(3, np.float32), s_x, s_w, z_x, w_q, 0).reshape(1, 3, 1, 1)
    want = _expected(Expected, {"w_q": w_q, "bias_q": bias_q,
                                "acc_scale": (s_x * s_w).astype(np.float32).reshape(1, 3, 1, 1)})
    tvm.ir.assert_structural_equal(got, want)


def test_residual_add_requantizes_both_inputs_onto_the_output(rng):
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((2, 4), "float32"), w: R.Tensor((4, 3), "float32"), x2: R.Tensor((2, 3), "float32")):
            with R.dataflow():
                a = R.matmul(x, w)
                s = R.add(a, x2)
                f = R.reshape(s, R.shape([6]))
                R.output(f)
            return f

    w = rng.normal(0, 1, (4, 3)).astype(np.float32)
    (s_x, z_x), (s_a, z_a), (s_2, z_2), (s_s, z_s) = _act(-1, 1), _act(-2, 2), _act(-1, 3), _act(-3, 3)
    w_q, s_w = _weights(w, axis=1)
    multiplier = (np.float64(s_x) * s_w / np.float64(s_a)).astype(np.float32)
    a_steps, b_steps = np.float32(s_a / s_s), np.float32(s_2 / s_s)

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((2, 4), "float32"), x2: R.Tensor((2, 3), "float32"), w_q: R.Tensor((4, 3), "int8"),
                 bias_q: R.Tensor((3,), "int32"), m: R.Tensor((3,), "float32")):
            with R.dataflow():
                x_q = R.quantize(x, R.const(s_x, "float32"), R.const(z_x, "int32"), out_dtype="uint8", axis=-1)
                acc = R.add(R.matmul(x_q, w_q, out_dtype="int32"), bias_q)
                y = R.add(R.round(R.multiply(R.astype(acc, "float32"), m)), R.const(float(z_a), "float32"))
                a_q = R.astype(R.minimum(R.maximum(y, R.const(0.0, "float32")), R.const(255.0, "float32")), "uint8")
                x2_q = R.quantize(x2, R.const(s_2, "float32"), R.const(z_2, "int32"), out_dtype="uint8", axis=-1)
                a_f = R.multiply(R.subtract(R.astype(a_q, "float32"), R.const(float(z_a), "float32")),
                                 R.const(a_steps, "float32"))
                b_f = R.multiply(R.subtract(R.astype(x2_q, "float32"), R.const(float(z_2), "float32")),
                                 R.const(b_steps, "float32"))
                total = R.round(R.add(R.add(a_f, b_f), R.const(float(z_s), "float32")))
                s_q = R.astype(R.minimum(R.maximum(total, R.const(0.0, "float32")), R.const(255.0, "float32")),
                               "uint8")
                f_q = R.reshape(s_q, R.shape([6]))
                f = R.dequantize(f_q, R.const(s_s, "float32"), R.const(z_s, "int32"), out_dtype="float32", axis=-1)
                gv = f
                R.output(gv)
            return gv

    got = _realized(Before, {"w": w}, {"x": (-1, 1), "a": (-2, 2), "x2": (-1, 3), "s": (-3, 3)})
    want = _expected(Expected, {"w_q": w_q, "bias_q": _bias(np.zeros(3), s_x, s_w, z_x, w_q, 1), "m": multiplier})
    tvm.ir.assert_structural_equal(got, want)


def test_max_pool_relu_concat_and_mean_stay_in_uint8(rng):
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 2, 6, 6), "float32"), w: R.Tensor((2, 2, 1, 1), "float32")):
            with R.dataflow():
                a = R.nn.conv2d(x, w)
                p = R.nn.max_pool2d(a, pool_size=[2, 2], strides=[2, 2])
                r = R.nn.relu(p)
                c = R.concat((p, r), axis=1)
                m = R.mean(c, axis=[2, 3])
                R.output(m)
            return m

    w = rng.normal(0, 1, (2, 2, 1, 1)).astype(np.float32)
    (s_x, z_x), (s_a, z_a), (s_c, z_c) = _act(-1, 1), _act(-2, 2), _act(0, 3)
    w_q, s_w = _weights(w, axis=0)
    multiplier = (np.float64(s_x) * s_w / np.float64(s_a)).astype(np.float32).reshape(1, 2, 1, 1)
    steps = np.float32(s_a / s_c)

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((1, 2, 6, 6), "float32"), w_q: R.Tensor((2, 2, 1, 1), "int8"),
                 bias_q: R.Tensor((1, 2, 1, 1), "int32"), mult: R.Tensor((1, 2, 1, 1), "float32")):
            with R.dataflow():
                x_q = R.quantize(x, R.const(s_x, "float32"), R.const(z_x, "int32"), out_dtype="uint8", axis=-1)
                acc = R.add(R.nn.conv2d(x_q, w_q, out_dtype="int32"), bias_q)
                y = R.add(R.round(R.multiply(R.astype(acc, "float32"), mult)), R.const(float(z_a), "float32"))
                a_q = R.astype(R.minimum(R.maximum(y, R.const(0.0, "float32")), R.const(255.0, "float32")), "uint8")
                p_q = R.nn.max_pool2d(a_q, pool_size=[2, 2], strides=[2, 2])
                r_q = R.maximum(p_q, R.const(z_a, "uint8"))  # relu: max(q, z)
                p_f = R.round(R.add(R.multiply(R.subtract(R.astype(p_q, "float32"), R.const(float(z_a), "float32")),
                                               R.const(steps, "float32")), R.const(float(z_c), "float32")))
                p_rq = R.astype(R.minimum(R.maximum(p_f, R.const(0.0, "float32")), R.const(255.0, "float32")), "uint8")
                r_f = R.round(R.add(R.multiply(R.subtract(R.astype(r_q, "float32"), R.const(float(z_a), "float32")),
                                               R.const(steps, "float32")), R.const(float(z_c), "float32")))
                r_rq = R.astype(R.minimum(R.maximum(r_f, R.const(0.0, "float32")), R.const(255.0, "float32")), "uint8")
                c_q = R.concat((p_rq, r_rq), axis=1)
                mean = R.round(R.mean(R.astype(c_q, "float32"), axis=[2, 3]))  # round(mean(q)), same params
                m_q = R.astype(R.minimum(R.maximum(mean, R.const(0.0, "float32")), R.const(255.0, "float32")), "uint8")
                m = R.dequantize(m_q, R.const(s_c, "float32"), R.const(z_c, "int32"), out_dtype="float32", axis=-1)
                gv = m
                R.output(gv)
            return gv

    got = _realized(Before, {"w": w}, {"x": (-1, 1), "a": (-2, 2), "c": (0, 3)})
    bias_q = _bias(np.zeros(2), s_x, s_w, z_x, w_q, 0).reshape(1, 2, 1, 1)
    want = _expected(Expected, {"w_q": w_q, "bias_q": bias_q, "mult": multiplier})
    tvm.ir.assert_structural_equal(got, want)


@pytest.mark.parametrize("count_include_pad, falls_back", [(True, True), (False, False)])
def test_padded_average_pool_counting_the_padding_stays_fp32(rng, count_include_pad, falls_back):
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((1, 2, 4, 4), "float32"), w: R.Tensor((2, 2, 1, 1), "float32")):
            with R.dataflow():
                a = R.nn.conv2d(x, w)
                p = R.nn.avg_pool2d(a, pool_size=[3, 3], padding=[1, 1, 1, 1], count_include_pad=count_include_pad)
                R.output(p)
            return p

    got = _realized(Before, {"w": rng.normal(0, 1, (2, 2, 1, 1))}, {"x": (-1, 1), "a": (-2, 2)})
    ops = [b.value.op.name for b in got["main"].body.blocks[0].bindings if isinstance(b.value, relax.Call)]
    pool = ops.index("relax.nn.avg_pool2d")
    assert ("relax.dequantize" in ops[:pool]) == falls_back  # fp32: dequantized before the pool
    assert ("relax.round" in ops[pool:]) != falls_back  # int8: round(mean(q)) after it


def test_matmul_without_an_output_range_dequantizes_its_accumulator(rng):
    """An LSTM gate matmul's sum with the other gate terms has no range: ``y = float(acc) * s_x s_w``,
    bit for bit what numpy computes from the integers."""
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((2, 4), "float32"), w: R.Tensor((4, 3), "float32"), g: R.Tensor((2, 3), "float32")):
            with R.dataflow():
                a = R.matmul(x, w)
                s = R.add(g, a)
                R.output(s)
            return s

    w = rng.normal(0, 1, (4, 3)).astype(np.float32)
    s_x, z_x = _act(-1.0, 2.0)
    w_q, s_w = _weights(w, axis=1)
    bias_q = _bias(np.zeros(3), s_x, s_w, z_x, w_q, 1)
    acc_scale = (s_x * s_w).astype(np.float32)

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((2, 4), "float32"), g: R.Tensor((2, 3), "float32"), w_q: R.Tensor((4, 3), "int8"),
                 bias_q: R.Tensor((3,), "int32"), acc_scale: R.Tensor((3,), "float32")):
            with R.dataflow():
                x_q = R.quantize(x, R.const(s_x, "float32"), R.const(z_x, "int32"), out_dtype="uint8", axis=-1)
                acc = R.add(R.matmul(x_q, w_q, out_dtype="int32"), bias_q)
                a = R.multiply(R.astype(acc, "float32"), acc_scale)
                s = R.add(g, a)
                gv = s
                R.output(gv)
            return gv

    got = _realized(Before, {"w": w}, {"x": (-1.0, 2.0), "g": (-1.0, 1.0)})
    tvm.ir.assert_structural_equal(got, _expected(Expected, {"w_q": w_q, "bias_q": bias_q, "acc_scale": acc_scale}))
    x, g = rng.uniform(-1, 2, (2, 4)).astype(np.float32), rng.normal(0, 1, (2, 3)).astype(np.float32)
    vm = virtual_machine(build(got, get_target("host")))
    out = vm["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(g)).numpy()
    x_q = np.clip(np.round(x / s_x) + z_x, 0, 255).astype(np.int64)
    want = g + ((x_q - z_x) @ w_q.astype(np.int64)).astype(np.float32) * acc_scale
    # the int32 accumulator is exact; its fp32 multiply-add may fuse into one FMA (an ulp), far below one step
    assert np.abs(acc_scale).min() > 100 * np.spacing(np.abs(want).max())
    np.testing.assert_allclose(out, want, rtol=0, atol=2 * np.spacing(np.abs(want).max()))


def test_matmul_on_a_3d_activation_runs_as_a_2d_int8_dense(rng):
    """``[B, S, K] x [K, N] + b``: reshaped to ``[B S, K]`` around the int8 matmul (a view), bias and
    dequantize on the ``[B, S, N]`` accumulator; bit for bit the numpy integer reference."""
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((2, 3, 4), "float32"), w: R.Tensor((4, 5), "float32"), b: R.Tensor((5,), "float32")):
            with R.dataflow():
                a = R.matmul(x, w)
                y = R.add(a, b)
                R.output(y)
            return y

    w, b = rng.normal(0, 1, (4, 5)).astype(np.float32), rng.normal(0, 1, 5).astype(np.float32)
    s_x, z_x = _act(-1.0, 2.0)
    w_q, s_w = _weights(w, axis=1)
    bias_q = _bias(b, s_x, s_w, z_x, w_q, 1)
    acc_scale = (s_x * s_w).astype(np.float32)

    @I.ir_module
    class Expected:
        @R.function
        def main(x: R.Tensor((2, 3, 4), "float32"), w_q: R.Tensor((4, 5), "int8"), bias_q: R.Tensor((5,), "int32"),
                 acc_scale: R.Tensor((5,), "float32")):
            with R.dataflow():
                x_q = R.quantize(x, R.const(s_x, "float32"), R.const(z_x, "int32"), out_dtype="uint8", axis=-1)
                rows = R.reshape(x_q, R.shape([6, 4]))
                acc = R.reshape(R.matmul(rows, w_q, out_dtype="int32"), R.shape([2, 3, 5]))
                y = R.multiply(R.astype(R.add(acc, bias_q), "float32"), acc_scale)
                gv = y
                R.output(gv)
            return gv

    got = _realized(Before, {"w": w, "b": b}, {"x": (-1.0, 2.0), "y": (-3.0, 3.0)})
    tvm.ir.assert_structural_equal(got, _expected(Expected, {"w_q": w_q, "bias_q": bias_q, "acc_scale": acc_scale}))
    x = rng.uniform(-1, 2, (2, 3, 4)).astype(np.float32)
    out = virtual_machine(build(got, get_target("host")))["main"](tvm.runtime.tensor(x)).numpy()
    x_q = np.clip(np.round(x / s_x) + z_x, 0, 255).astype(np.int64)
    acc = x_q @ w_q.astype(np.int64) + bias_q  # bias_q holds -z_x sum_k w_q
    np.testing.assert_array_equal(out, acc.astype(np.float32) * acc_scale)


@pytest.mark.parametrize("reader, precision", [("softmax", "fp32"), ("reshape", "int8")])
def test_residual_add_read_only_by_fp32_ops_adds_in_fp32(rng, reader, precision):
    """Rounding a sum only an fp32 op reads (a transformer's residual stream into LayerNorm) to 8 bits
    would only add error: the add stays fp32 unless some reader has a rule."""
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((2, 4), "float32"), w: R.Tensor((4, 3), "float32"), x2: R.Tensor((2, 3), "float32")):
            with R.dataflow():
                a = R.matmul(x, w)
                s = R.add(a, x2)
                t = R.nn.softmax(s) if reader == "softmax" else R.reshape(s, R.shape([6]))
                R.output(t)
            return t

    bound = relax.transform.BindParams("main", {"w": rng.normal(0, 1, (4, 3)).astype(np.float32)})(Before)
    stats = {"x": (-1, 1), "a": (-2, 2), "x2": (-1, 3), "s": (-3, 3), "t": (0, 1)}
    record = quantization_record(Realize(stats, Scheme("uint8", per_channel=True))(bound))
    assert record["precision"]["s"] == precision and record["precision"]["a"] == "int8"
