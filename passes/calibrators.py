"""The calibrator registry: one streaming observer class per file, looked up by name.

An observer sees the batches of one tensor (``observe``) and then says which real range
``(lo, hi)`` to quantize (``range``). Its state must not grow with the number of batches.
A calibrator that also sets weight ranges says how in its class's ``weight_scale(weight,
axis, qmax) -> scales`` (the others leave weights at their absmax scales).
"""

from __future__ import annotations

from typing import Callable, Protocol

import numpy as np

_CALIBRATORS: dict[str, Callable[[], "Observer"]] = {}


class Observer(Protocol):
    """Constructed with the activation dtype it calibrates for (``"uint8"`` or ``"int8"``)."""

    def observe(self, values: np.ndarray) -> None: ...

    def range(self) -> tuple[float, float]: ...


def register_calibrator(name: str):
    """Class decorator: make an observer available as ``--calibrator name``."""

    def wrap(cls):
        _CALIBRATORS[name] = cls
        return cls

    return wrap


def calibrator_names() -> list[str]:
    _load_builtin()
    return sorted(_CALIBRATORS)


def make_observer(name: str, dtype: str = "uint8") -> Observer:
    _load_builtin()
    if name not in _CALIBRATORS:
        raise KeyError(f"unknown calibrator {name!r}; choose one of: {', '.join(sorted(_CALIBRATORS))}")
    return _CALIBRATORS[name](dtype)


def weight_scale_of(name: str) -> Callable | None:
    """Calibrator ``name``'s weight range setter, ``(weight, axis, qmax) -> symmetric scales``
    (None: the absmax scales of :func:`tvmq.passes.qparams.weight_scale`)."""
    _load_builtin()
    return getattr(_CALIBRATORS[name], "weight_scale", None)


def _load_builtin() -> None:
    from . import admm, auto, eq, kld, minmax, mse, percentile  # noqa: F401  (each registers itself)
