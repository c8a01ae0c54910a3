"""LiftParams: turn the weight constants of ``main`` into trailing function parameters.

The deployable artifact then holds code (the shared library) apart from data (``params.npz``,
plain arrays that cannot execute anything on load). Scalars and tiny constants stay inline.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from .graph import with_main

MIN_ELEMENTS = 2  # constants with fewer elements stay inline


def lift_params(mod: tvm.IRModule) -> tuple[tvm.IRModule, dict[str, np.ndarray]]:
    """Return the module whose ``main`` takes ``(*inputs, *params)`` and the params by name."""
    func = mod["main"]
    lifter = _Lifter(mod)
    body = lifter.visit_expr(func.body)
    params = list(func.params) + lifter.new_params
    lifted = relax.Function(params, body)
    for key, value in (dict(func.attrs) if func.attrs else {}).items():
        lifted = lifted.with_attr(key, value)
    lifted = lifted.with_attr("num_input", len(func.params))
    return with_main(mod, lifted), lifter.values


@relax.expr_functor.mutator
class _Lifter(relax.PyExprMutator):
    def __init__(self, mod):
        super().__init__(mod)
        self.new_params, self.values = [], {}

    def visit_generic_const_(self, const):
        array = const.value.numpy()
        if array.size < MIN_ELEMENTS:
            return const
        name = f"p{len(self.new_params)}"
        var = relax.Var(name, const.ty)
        self.new_params.append(var)
        self.values[name] = array
        return var
