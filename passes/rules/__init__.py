"""Realize rules: how each Relax op is carried into the integer domain, one op family per file.

A rule is registered for one or more ops with :func:`realize_rule` and called by realize as
``rule(ctx, var, value) -> bool`` for a binding ``var = value``; it returns True when it
emitted the integer form (``ctx.q[var] = (expr, qparams)``), False to leave the op in fp32
behind dequantize / quantize edges. ``ctx`` is realize's :class:`~tvmq.passes.realize.Context`.

Files: ``conv`` and ``matmul`` (layer kinds and their int8 x int8 -> int32 kernels),
``linear`` (the shared layer rule: bias, requantize), ``dynamic`` (a dense layer whose input is
quantized at run time), ``attention`` (a matmul of two activations), ``elementwise`` (ReLU, residual add),
``pool`` (max / average pooling, spatial mean), ``layout`` (reshape, transpose, concat ...).
"""

from __future__ import annotations

from typing import Callable

_RULES: dict[str, Callable] = {}


def realize_rule(*ops: str):
    """Register the decorated ``rule(ctx, var, value) -> bool`` for each op in ``ops``."""
    def register(rule):
        for op in ops:
            if op in _RULES:
                raise ValueError(f"realize rule for {op!r} registered twice")
            _RULES[op] = rule
        return rule
    return register


def rule_for(op: str | None) -> Callable | None:
    """The rule registered for ``op``, or None (the op stays fp32)."""
    return _RULES.get(op)


def rule_ops() -> list[str]:
    return sorted(_RULES)


from . import conv, elementwise, layout, matmul, pool  # noqa: E402,F401  (register the rules)
