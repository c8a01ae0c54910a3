"""Targets: one file per family, each registering how to make its TVM target and int8 scheme.

A target adds a file here, not an ``if target == ...`` branch elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

_TARGETS: dict[str, Callable[[], "TargetSpec"]] = {}


@dataclass(frozen=True)
class TargetSpec:
    """What the compiler needs to know about one target.

    ``activation_dtype`` is the int8 flavour the target's dot-product instructions want for
    activations. Weights are always symmetric int8 in ``[-weight_qmax, weight_qmax]``: 127, or
    63 (7-bit) where the target's kernel would saturate int16 with 8-bit weights.
    """

    name: str
    target: object  # tvm.target.Target
    activation_dtype: str
    features: tuple[str, ...] = field(default_factory=tuple)
    prepare: Callable[[], None] = lambda: None  # per-process setup before building or tuning
    legalize: Callable | None = None  # IRModule -> IRModule: conv / dense in the target's kernels and layouts
    search_space: Callable[[str], object] | None = None  # tuning task name -> space (None: generic)
    weight_qmax: int = 127

    @property
    def description(self) -> str:
        bits = "" if self.weight_qmax == 127 else f"; {self.weight_bits}-bit weights"
        return (f"{self.name} ({self.target.attrs.get('mcpu', 'generic')}; "
                f"{', '.join(self.features) or 'no int8 dot product'}{bits})")

    @property
    def weight_bits(self) -> int:
        """Bits of the symmetric weight range: 8 for [-127, 127], 7 for [-63, 63]."""
        from tvmq.passes.qparams import weight_bits

        return weight_bits(self.weight_qmax)


def register_target(*names: str):
    """Decorator for a zero-argument function that returns a :class:`TargetSpec`."""

    def wrap(factory):
        for name in names:
            _TARGETS[name] = factory
        return factory

    return wrap


def target_names() -> list[str]:
    _load_builtin()
    return sorted(_TARGETS)


def get_target(name: str) -> TargetSpec:
    _load_builtin()
    if name not in _TARGETS:
        raise KeyError(f"unknown target {name!r}; choose one of: {', '.join(sorted(_TARGETS))}")
    return _TARGETS[name]()


def _load_builtin() -> None:
    from . import x86  # noqa: F401  (registers itself)
