"""FoldBatchNorm: fold inference-mode BatchNorm into the preceding conv2d's weight and bias.

    y = gamma * (conv(x, W) + b - mean) / sqrt(var + eps) + beta
      = conv(x, W * s) + (b - mean) * s + beta,        s = gamma / sqrt(var + eps)

Unlike TVM's ``FoldBatchnormToConv2D`` the folded result keeps the BatchNorm output's
variable name (the ONNX tensor name), so calibration statistics stay keyed by the user's
names. Convolutions whose output is used elsewhere too are left alone.

The BatchNorm's output statistics (mean beta, standard deviation |gamma|) are kept in the
function attribute ``tvmq.batchnorm_stats`` for high-bias absorption.
"""

from __future__ import annotations

import json

import numpy as np
import tvm
from tvm import relax

from .graph import BN_STATS_ATTR, append_note, constant_value, dataflow_bindings, op_name, use_counts, with_main


@tvm.transform.module_pass(opt_level=0, name="tvmq.FoldBatchNorm")
class FoldBatchNorm:
    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        func = mod["main"]
        folder = _Folder(mod, func)
        folded = folder.visit_expr(func)
        if folder.folded:
            folded = append_note(folded, {"pass": "FoldBatchNorm", "folded": folder.folded})
            folded = folded.with_attr(BN_STATS_ATTR, json.dumps(folder.statistics))
        return relax.transform.DeadCodeElimination()(with_main(mod, folded))


@relax.expr_functor.mutator
class _Folder(relax.PyExprMutator):
    def __init__(self, mod, func):
        super().__init__(mod)
        self.values = {b.var: b.value for b in dataflow_bindings(func)}
        self.uses = use_counts(func)
        self.folded, self.statistics = [], {}

    def visit_var_binding_(self, binding):
        folded = self._fold(binding)
        if folded is None:
            super().visit_var_binding_(binding)
            return
        conv_call, weight, bias = folded
        conv = self.builder_.emit(relax.Call(conv_call.op, [self.visit_expr(conv_call.args[0]),
                                                            relax.const(weight)], conv_call.attrs))
        out = self.builder_.emit(relax.op.add(conv, relax.const(bias.reshape(1, -1, 1, 1))), binding.var.name)
        self.set_var_remap(binding.var, out)
        self.folded.append(binding.var.name)
        bn = self.values[binding.value.tuple_value]
        gamma, beta = constant_value(bn.args[1]), constant_value(bn.args[2])
        self.statistics[binding.var.name] = {"mean": beta.tolist(), "std": np.abs(gamma).tolist()}

    def _fold(self, binding):
        """``(conv call, folded weight, folded bias)`` when ``binding`` is ``batch_norm(...)[0]``."""
        value = binding.value
        if not isinstance(value, relax.TupleGetItem) or value.index != 0:
            return None
        bn = self.values.get(value.tuple_value)
        if op_name(bn) != "relax.nn.batch_norm" or int(bn.attrs.axis) != 1:
            return None
        gamma, beta, mean, var = (constant_value(a) for a in bn.args[1:5])
        conv_call, bias = self._conv_with_bias(bn.args[0])
        if conv_call is None or any(v is None for v in (gamma, beta, mean, var)):
            return None
        scale = gamma / np.sqrt(var + float(bn.attrs.epsilon))
        weight = constant_value(conv_call.args[1])
        weight = (weight * scale.reshape(-1, 1, 1, 1)).astype(np.float32)
        bias = ((bias - mean) * scale + beta).astype(np.float32)
        return conv_call, weight, bias

    def _conv_with_bias(self, var):
        """The conv2d call behind ``var`` (directly or through a constant bias add) and its bias."""
        if self.uses[var] != 1:
            return None, None
        value = self.values.get(var)
        bias = None
        if op_name(value) == "relax.add" and constant_value(value.args[1]) is not None:
            bias, var = constant_value(value.args[1]).reshape(-1), value.args[0]
            if self.uses[var] != 1:
                return None, None
            value = self.values.get(var)
        if op_name(value) != "relax.nn.conv2d" or constant_value(value.args[1]) is None:
            return None, None
        if value.attrs.data_layout != "NCHW" or value.attrs.kernel_layout != "OIHW":
            return None, None
        channels = constant_value(value.args[1]).shape[0]
        return value, (np.zeros(channels, np.float32) if bias is None else np.broadcast_to(bias, (channels,)))
