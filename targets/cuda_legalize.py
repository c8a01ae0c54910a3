"""LegalizeForCuda: int8 convs and dense layers onto the dp4a kernels of :mod:`tvmq.targets.cuda_int8`.

1. As on x86 (:mod:`tvmq.targets.x86_legalize`): ReLU6 clips and per-tensor quantize /
   dequantize become elementwise ops, ``ConvertLayout`` puts every conv2d in NHWC / OHWI so
   that the requantize chains, pools and residual adds follow and transposes stay at the edges.
2. Each int8 x int8 -> int32 conv2d (groups == 1) and 2-D matmul with a constant weight
   becomes a call to a dp4a kernel, its weight packed here into int32 words of 4 input
   channels. Depthwise / grouped convs and every float op keep TVM's generic kernels, which
   DLight schedules for the GPU.

Integer results are unchanged: ``dot=EMULATED`` builds the same kernels for a CPU, and the
tests compare them bit for bit with the unlegalized module.
"""

from __future__ import annotations

import tvm
from tvm import relax

from tvmq.passes.graph import constant_value, with_main

from . import cuda_int8
from .x86_legalize import _ClipAsMinMax, _convert_layout, _ints, _kind, _packable_conv, _QdqAsElementwise

# TVM's OpPatternKind kOutEWiseFusable: what AnnotateTIROpPattern finds for the conv, but not for the
# dense (its sum of __dp4a calls is no multiply-add), whose requantize then did not fuse into it
OUT_ELEMWISE_FUSABLE = 4


@tvm.transform.module_pass(opt_level=0, name="tvmq.LegalizeForCuda")
class LegalizeForCuda:
    """``dot``: the kernels' word product (:data:`tvmq.targets.cuda_int8.DP4A` on the GPU)."""

    def __init__(self, dot: str = cuda_int8.DP4A):
        self.dot = dot

    def on_host(self) -> "LegalizeForCuda":
        """The same legalization with the word product emulated: kernels a CPU runs, to check
        layouts, packing and epilogues bit for bit where there is no GPU."""
        return LegalizeForCuda(cuda_int8.EMULATED)

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        mod = with_main(mod, _ClipAsMinMax(mod).visit_expr(mod["main"]))
        mod = with_main(mod, _QdqAsElementwise(mod).visit_expr(mod["main"]))
        mod = _convert_layout(mod)
        mod = relax.transform.EliminateCommonSubexpr()(relax.transform.FoldConstant()(mod))
        packer = _Packer(mod, self.dot)
        main = packer.visit_expr(mod["main"])
        return relax.transform.DeadCodeElimination()(with_main(packer.builder_.get(), main))


@relax.expr_functor.mutator
class _Packer(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, dot: str):
        super().__init__(mod)
        self.dot = dot

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not isinstance(call.op, tvm.ir.Op) or call.op.name not in ("relax.nn.conv2d", "relax.matmul"):
            return call
        weight = constant_value(call.args[1])
        if weight is None or _kind(call, "int8") != "int8":
            return call
        if call.op.name == "relax.matmul":
            if weight.ndim != 2 or len(call.args[0].ty.shape) != 2:
                return call
            return self.builder_.call_te(cuda_int8.dense, call.args[0],
                                         relax.const(cuda_int8.pack_dense_weight(weight)), dot=self.dot,
                                         primfunc_name_hint=cuda_int8.PREFIX + "dense",
                                         primfunc_attrs={"op_pattern": OUT_ELEMWISE_FUSABLE})
        if not _packable_conv(call):
            return call
        attrs = call.attrs
        return self.builder_.call_te(
            cuda_int8.conv2d_nhwc, call.args[0], relax.const(cuda_int8.pack_conv_weight(weight)),
            strides=_ints(attrs.strides), padding=_ints(attrs.padding), dilation=_ints(attrs.dilation), dot=self.dot,
            primfunc_name_hint=cuda_int8.PREFIX + "conv2d")
