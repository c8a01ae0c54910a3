"""Targets: one file per family behind one interface (:mod:`tvmq.targets.base`), each
registering how to make its TVM target, its int8 scheme, and how its modules run.

A target adds a file here, not an ``if target == ...`` branch elsewhere: each family module
(a name without an underscore: ``x86.py``, ``arm.py``; its helpers are ``x86_*.py``) is
imported once and registers its targets with :func:`register_target`.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Callable

from .base import Executor, LocalCpu, TargetSpec, generic_space  # noqa: F401  (the interface)

_INTERFACE = ("base", "builder", "qemu", "rpc")  # shared by the families, registering nothing
_TARGETS: dict[str, Callable[[], "TargetSpec"]] = {}


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
    for module in pkgutil.iter_modules(__path__):
        if "_" not in module.name and module.name not in _INTERFACE:
            importlib.import_module(f"{__name__}.{module.name}")
