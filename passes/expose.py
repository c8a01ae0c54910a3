"""ExposeTensors: make ``main`` also return named intermediate tensors (for calibration)."""

from __future__ import annotations

import tvm
from tvm import relax

from .graph import dataflow_bindings, with_main


@tvm.transform.module_pass(opt_level=0, name="tvmq.ExposeTensors")
class ExposeTensors:
    """Return ``(original result, *tensors)`` with the named tensors in the given order.

    Names that are not bound in ``main`` (folded away by a pass) are skipped; use
    :func:`exposed_names` to learn which ones the module returns.
    """

    def __init__(self, names: list[str]):
        self.names = list(names)

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        func = mod["main"]
        named = named_vars(func)
        probes = [named[n] for n in self.names if n in named]
        builder = relax.BlockBuilder()
        attrs = dict(func.attrs) if func.attrs else None
        with builder.function("main", list(func.params), attrs=attrs):
            with builder.dataflow():
                for binding in dataflow_bindings(func):
                    builder.emit_normalized(binding)
                out = builder.emit_output(relax.Tuple([func.body.body, *probes]))
            builder.emit_func_output(out)
        return with_main(mod, builder.get()["main"])


def exposed_names(mod: tvm.IRModule, names: list[str]) -> list[str]:
    named = named_vars(mod["main"])
    return [n for n in names if n in named]


def named_vars(func: relax.Function) -> dict:
    """Parameters and bound variables of ``func`` by name."""
    named = {p.name: p for p in func.params}
    named.update({b.var.name: b.var for b in dataflow_bindings(func)})
    return named
