"""LegalizeForX86: put a module's convs and dense layers into the x86 kernels and their layouts.

1. ``ConvertLayout`` turns every conv2d to NHWC data / OHWI weights; the requantize chains,
   bias adds, pads, pools and residual adds follow, so layout transforms remain only at the edges.
   ``relax.clip`` (an fp32 ReLU6) has no layout inference and would keep a transpose on each
   side, so it becomes ``minimum(maximum(x, lo), hi)`` first; so do per-tensor ``quantize`` /
   ``dequantize`` (the edges of a layer the latency fallback keeps fp32), which become the
   elementwise ops TVM's legalization computes, in its order.
2. Each uint8 x int8 conv2d (groups == 1) and matmul with a constant weight becomes a call to
   a packed kernel of :mod:`tvmq.targets.x86_int8`, its weight packed here, at compile time,
   in blocks of ``lanes`` outputs (16 for AVX-512, 8 for AVX2); a conv's input channels are
   zero-padded to a multiple of 4 by a pad op that fuses into the producer (an RGB image's
   quantize and transpose), not inside the conv kernel.
3. Each float32 conv2d (groups == 1) with a constant weight becomes :mod:`tvmq.targets.x86_fp32`'s
   kernel on a weight packed in blocks of ``lanes`` output channels: the fp32 baseline module
   and the layers the latency fallback keeps fp32 in the int8 one.
4. Depthwise convolutions, int8 or fp32, become :mod:`tvmq.targets.x86_depthwise`'s kernel
   on a weight packed channel-innermost; grouped ones keep TVM's generic kernels.

Integer results are unchanged (the tests compare them bit for bit); float results change by
summation order only.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from tvmq.passes.graph import constant_value, dataflow_bindings, op_name, prim_float, with_main

from . import x86_depthwise, x86_fp32, x86_int8


# conv2d goes NHWC / OHWI; conv2d_transpose stays NCHW / IOHW, the only layout TVM 0.27 lowers it in
# (left alone, ConvertLayout hands it NHWC and the build fails in VM codegen: PP-OCR's detector).
DESIRED_LAYOUTS = {"relax.nn.conv2d": ["NHWC", "OHWI"], "relax.nn.conv2d_transpose": ["NCHW", "IOHW"]}


def _convert_layout(mod: tvm.IRModule) -> tvm.IRModule:
    """NHWC convs, when there are any: TVM 0.27's ConvertLayout fails on some graphs without one
    (MiniLM: ``Invalid SLayout: can't find S in source layout ABC``), and then has nothing to do."""
    if not any(op_name(b.value) == "relax.nn.conv2d" for b in dataflow_bindings(mod["main"])):
        return mod
    return relax.transform.ConvertLayout(DESIRED_LAYOUTS)(mod)


@tvm.transform.module_pass(opt_level=0, name="tvmq.LegalizeForX86")
class LegalizeForX86:
    """``activation_dtype``: the 8-bit activations the int8 kernels take (``uint8`` on x86;
    ``int8`` on ARM, whose ``sdot`` kernels are these same TE kernels with 4 lanes)."""

    def __init__(self, lanes: int, activation_dtype: str = "uint8"):
        self.lanes, self.activation_dtype = lanes, activation_dtype

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        mod = with_main(mod, _ClipAsMinMax(mod).visit_expr(mod["main"]))
        mod = with_main(mod, _QdqAsElementwise(mod).visit_expr(mod["main"]))
        mod = _convert_layout(mod)
        mod = relax.transform.EliminateCommonSubexpr()(relax.transform.FoldConstant()(mod))  # one transpose per input
        packer = _Packer(mod, self.lanes, self.activation_dtype)
        main = packer.visit_expr(mod["main"])
        return relax.transform.DeadCodeElimination()(with_main(packer.builder_.get(), main))


@relax.expr_functor.mutator
class _ClipAsMinMax(relax.PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if op_name(call) != "relax.clip":
            return call
        dtype = str(call.ty.dtype)
        lo, hi = (relax.const(np.array(prim_float(b), dtype)) for b in call.args[1:])
        return relax.op.minimum(relax.op.maximum(call.args[0], lo), hi)


@relax.expr_functor.mutator
class _QdqAsElementwise(relax.PyExprMutator):
    """Per-tensor ``quantize`` as ``astype(max(min(round(x / s) + z, qmax), qmin))`` and
    ``dequantize`` as ``float(int32(q) - z) * s``: what TVM's legalization computes (bit for bit),
    but on ops that follow ConvertLayout instead of keeping a transpose on each side."""

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        name = op_name(call)
        if name not in ("relax.quantize", "relax.dequantize"):
            return call
        scale, zero_point = (constant_value(a) for a in call.args[1:])
        if scale is None or zero_point is None or scale.size != 1 or zero_point.size != 1:
            return call
        x, scale, zero_point = call.args[0], np.float32(scale.item()), zero_point.item()
        if name == "relax.dequantize":
            if str(call.attrs.out_dtype) != "float32":
                return call
            centred = relax.op.subtract(relax.op.astype(x, "int32"), relax.const(np.int32(zero_point)))
            return relax.op.multiply(relax.op.astype(centred, "float32"), relax.const(scale))
        dtype = str(call.attrs.out_dtype)
        limits = np.iinfo(dtype)
        shifted = relax.op.add(relax.op.round(relax.op.divide(x, relax.const(scale))),
                               relax.const(np.float32(zero_point)))
        clamped = relax.op.maximum(relax.op.minimum(shifted, relax.const(np.float32(limits.max))),
                                   relax.const(np.float32(limits.min)))
        return relax.op.astype(clamped, dtype)


@relax.expr_functor.mutator
class _Packer(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, lanes: int, activation_dtype: str):
        super().__init__(mod)
        self.lanes, self.activation_dtype = lanes, activation_dtype

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not isinstance(call.op, tvm.ir.Op) or call.op.name not in ("relax.nn.conv2d", "relax.matmul"):
            return call
        weight = constant_value(call.args[1])
        kind = _kind(call, self.activation_dtype) if weight is not None else None
        if kind is None:
            return call
        if call.op.name == "relax.matmul":
            return self._dense(call, weight) if kind == "int8" and weight.ndim == 2 else call
        if _depthwise_conv(call, weight):
            return self._conv(call, x86_depthwise.conv2d_nhwc, x86_depthwise.pack_weight(weight),
                              x86_depthwise.PREFIX)
        if not _packable_conv(call):
            return call
        if kind == "fp32":
            return self._conv(call, x86_fp32.conv2d_nhwc, x86_fp32.pack_conv_weight(weight, self.lanes),
                              x86_fp32.PREFIX, out_channels=weight.shape[0])
        return self._conv(call, x86_int8.conv2d_nhwc, x86_int8.pack_conv_weight(weight, self.lanes),
                          x86_int8.PACKED_PREFIX, data=self._channels_padded(call.args[0]),
                          out_channels=weight.shape[0])

    def _conv(self, call: relax.Call, kernel, packed, prefix: str, data=None, **kwargs) -> relax.Expr:
        attrs = call.attrs
        return self.builder_.call_te(
            kernel, call.args[0] if data is None else data, relax.const(packed), strides=_ints(attrs.strides),
            padding=_ints(attrs.padding), dilation=_ints(attrs.dilation), primfunc_name_hint=prefix + "conv2d",
            **kwargs)

    def _dense(self, call: relax.Call, weight) -> relax.Expr:
        return self.builder_.call_te(
            x86_int8.dense, call.args[0], relax.const(x86_int8.pack_dense_weight(weight, self.lanes)),
            out_features=weight.shape[1], primfunc_name_hint=x86_int8.PACKED_PREFIX + "dense")

    def _channels_padded(self, data: relax.Expr) -> relax.Expr:
        """NHWC ``data`` with its channels zero-padded to whole dot-product groups of 4, as a
        Relax op of its own: FuseOps folds it into the producer (the input's quantize and
        transpose, for a 3-channel image) rather than the conv copying its input in the kernel."""
        missing = -int(data.ty.shape[3]) % x86_int8.REDUCE
        if not missing:
            return data
        return self.builder_.emit(relax.op.nn.pad(data, [0, 0, 0, 0, 0, 0, 0, missing]))


def _kind(call: relax.Call, activation_dtype: str) -> str | None:
    """``int8`` for ``activation_dtype`` x int8 -> int32, ``fp32`` for float32 x float32 -> float32, else None."""
    dtypes = tuple(str(getattr(t, "dtype", None)) for t in (call.args[0].ty, call.args[1].ty, call.ty))
    return {(activation_dtype, "int8", "int32"): "int8", ("float32", "float32", "float32"): "fp32"}.get(dtypes)


def _packable_conv(call: relax.Call) -> bool:
    attrs = call.attrs
    return int(attrs.groups) == 1 and attrs.data_layout == "NHWC" and attrs.kernel_layout == "OHWI" \
        and attrs.out_layout == "NHWC"


def _depthwise_conv(call: relax.Call, weight) -> bool:
    """One filter per channel (groups == channels, a multiplier of 1), in NHWC / OHWI."""
    attrs = call.attrs
    channels = int(call.args[0].ty.shape[3]) if attrs.data_layout == "NHWC" else None
    return attrs.data_layout == "NHWC" and attrs.kernel_layout == "OHWI" and attrs.out_layout == "NHWC" \
        and int(attrs.groups) == channels == weight.shape[0] and weight.shape[3] == 1


def _ints(values) -> list[int]:
    return [int(v) for v in values]
