"""LegalizeInt8ForX86: put a realized int8 module into the layout of the packed x86 int8 kernels.

1. ``ConvertLayout`` turns every conv2d to NHWC data / OHWI weights; the requantize chains,
   pads, pools and residual adds follow, so layout transforms remain only at the edges.
2. Each uint8 x int8 conv2d (groups == 1) and matmul with a constant weight becomes a call to
   a packed kernel of :mod:`tvmq.targets.x86_int8`, its weight packed here, at compile time,
   in blocks of ``lanes`` outputs (16 for AVX-512, 8 for AVX2); a conv's input channels are
   zero-padded to a multiple of 4 by a pad op that fuses into the producer (an RGB image's
   quantize and transpose), not inside the conv kernel.
   Depthwise convolutions become :mod:`tvmq.targets.x86_depthwise`'s kernel on a weight packed
   channel-innermost; grouped ones keep TVM's generic kernels.

Integer results are unchanged (the tests compare them bit for bit).
"""

from __future__ import annotations

import tvm
from tvm import relax

from tvmq.passes.graph import constant_value, with_main

from . import x86_depthwise, x86_int8


@tvm.transform.module_pass(opt_level=0, name="tvmq.LegalizeInt8ForX86")
class LegalizeInt8ForX86:
    def __init__(self, lanes: int):
        self.lanes = lanes

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        mod = relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "OHWI"]})(mod)
        mod = relax.transform.FoldConstant()(mod)
        packer = _Packer(mod, self.lanes)
        main = packer.visit_expr(mod["main"])
        return relax.transform.DeadCodeElimination()(with_main(packer.builder_.get(), main))


@relax.expr_functor.mutator
class _Packer(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, lanes: int):
        super().__init__(mod)
        self.lanes = lanes

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not isinstance(call.op, tvm.ir.Op) or not _is_u8_by_s8_constant(call):
            return call
        weight = constant_value(call.args[1])
        if call.op.name == "relax.nn.conv2d" and _depthwise_conv(call, weight):
            attrs = call.attrs
            return self.builder_.call_te(
                x86_depthwise.conv2d_nhwc, call.args[0], relax.const(x86_depthwise.pack_weight(weight)),
                strides=_ints(attrs.strides), padding=_ints(attrs.padding), dilation=_ints(attrs.dilation),
                primfunc_name_hint=x86_depthwise.PREFIX + "conv2d")
        if call.op.name == "relax.nn.conv2d" and _packable_conv(call):
            attrs = call.attrs
            return self.builder_.call_te(
                x86_int8.conv2d_nhwc, self._channels_padded(call.args[0]),
                relax.const(x86_int8.pack_conv_weight(weight, self.lanes)),
                out_channels=weight.shape[0], strides=_ints(attrs.strides), padding=_ints(attrs.padding),
                dilation=_ints(attrs.dilation), primfunc_name_hint=x86_int8.PACKED_PREFIX + "conv2d")
        if call.op.name == "relax.matmul" and weight.ndim == 2:
            return self.builder_.call_te(
                x86_int8.dense, call.args[0], relax.const(x86_int8.pack_dense_weight(weight, self.lanes)),
                out_features=weight.shape[1], primfunc_name_hint=x86_int8.PACKED_PREFIX + "dense")
        return call

    def _channels_padded(self, data: relax.Expr) -> relax.Expr:
        """NHWC ``data`` with its channels zero-padded to whole dot-product groups of 4, as a
        Relax op of its own: FuseOps folds it into the producer (the input's quantize and
        transpose, for a 3-channel image) rather than the conv copying its input in the kernel."""
        missing = -int(data.ty.shape[3]) % x86_int8.REDUCE
        if not missing:
            return data
        return self.builder_.emit(relax.op.nn.pad(data, [0, 0, 0, 0, 0, 0, 0, missing]))


def _is_u8_by_s8_constant(call: relax.Call) -> bool:
    if len(call.args) < 2 or constant_value(call.args[1]) is None:
        return False
    data, weight = call.args[0].ty, call.args[1].ty
    return getattr(data, "dtype", None) == "uint8" and getattr(weight, "dtype", None) == "int8" \
        and getattr(call.ty, "dtype", None) == "int32"


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
