"""The task metric a candidate build is judged by: ``metric(run) -> float``, higher is better.

``run(feeds) -> outputs`` runs one candidate (a built module) on a feed dict keyed by input
name, any number of samples along the batch axis (split into the module's own batches and
joined again), and returns every output of the model, in its order, as numpy arrays. The
user's metric evaluates on the user's own data through it, as AMCT's ``eval_model`` and
NNCF's ``validation_fn`` do.

Built-in metrics over an evaluation :class:`~tvmq.data.Dataset` (:data:`BUILTIN`):

    top1:      mean(argmax(y_hat_i) == label_i)                          (needs labels)
    agreement: mean(argmax(y_hat_i) == argmax(y_i))                      (y: fp32's outputs)
    cosine:    mean_i cos(y_hat_i, y_i), each sample's first output flattened

:func:`resolve` picks one by name or imports ``module:function``; :func:`zoo_metric` makes a
zoo model's task scorer (:attr:`tvmq.zoo.ZooModel.scorer`) a metric.
"""

from __future__ import annotations

import importlib
from typing import Callable

import numpy as np

from .data import Dataset
from .errors import TvmqError

Run = Callable[[dict], list]
Metric = Callable[[Run], float]


def top1(data: Dataset) -> Metric:
    """Share of samples whose arg-max class (of the first output) equals the label."""
    if data.y is None:
        raise TvmqError("metric top1 needs labels (y) in the evaluation data; use agreement or cosine without them")
    labels = np.asarray(data.y).ravel()

    def metric(run: Run) -> float:
        return float(np.mean(_rows(run(data.feeds())[0], len(labels)).argmax(1) == labels))

    return metric


def agreement(data: Dataset, reference: Run) -> Metric:
    """Share of samples whose arg-max class is fp32's (``reference``: the fp32 build's run)."""
    expected = _rows(reference(data.feeds())[0], len(data)).argmax(1)

    def metric(run: Run) -> float:
        return float(np.mean(_rows(run(data.feeds())[0], len(data)).argmax(1) == expected))

    return metric


def cosine(data: Dataset, reference: Run) -> Metric:
    """Mean over samples of the cosine between a sample's first output and fp32's."""
    expected = _rows(reference(data.feeds())[0], len(data)).astype(np.float64)

    def metric(run: Run) -> float:
        got = _rows(run(data.feeds())[0], len(data)).astype(np.float64)
        norms = np.maximum(np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1), 1e-30)
        return float(np.mean((got * expected).sum(1) / norms))

    return metric


BUILTIN = {"top1": top1, "agreement": agreement, "cosine": cosine}
NEEDS_REFERENCE = ("agreement", "cosine")


def default_name(data: Dataset) -> str:
    """top1 where the evaluation data has labels, else cosine to fp32."""
    return "top1" if data.y is not None else "cosine"


def resolve(name: str | None, data: Dataset | None, reference: Run | None,
            check_only: bool = False) -> tuple[str, Metric | None]:
    """``(name, metric)`` for a built-in ``name`` on ``data`` (None: :func:`default_name`) or a
    ``module:function`` taking ``run``; ``reference`` is the fp32 build's run. ``check_only``:
    fail on what cannot work (an unknown name, missing data or labels), make nothing."""
    if name and ":" in name:
        return name, _imported(name)
    if data is None:
        raise TvmqError("a built-in metric evaluates on evaluation data: pass --eval (or eval_data=)")
    name = name or default_name(data)
    if name not in BUILTIN:
        raise TvmqError(f"unknown metric {name!r}; choose one of: {', '.join(BUILTIN)}, or module:function")
    if name == "top1" and data.y is None:
        raise TvmqError("metric top1 needs labels (y) in the evaluation data; use agreement or cosine without them")
    if check_only:
        return name, None
    return name, BUILTIN[name](data, reference) if name in NEEDS_REFERENCE else BUILTIN[name](data)


def check_name(name: str | None) -> None:
    """Fail early on a metric name that is neither built in nor ``module:function``."""
    if name is None:
        return
    module, _, function = name.partition(":")
    if ":" in name and not (module and function):
        raise TvmqError(f"metric {name!r} is not module:function")
    if ":" not in name and name not in BUILTIN:
        raise TvmqError(f"unknown metric {name!r}; choose one of: {', '.join(BUILTIN)}, or module:function")


def zoo_metric(model, split: str, reference: Run, root=None) -> Metric:
    """A zoo model's task metric on its ``split`` feeds (:meth:`tvmq.zoo.ZooModel.metric`): each
    feed run alone; ``reference`` (the fp32 build's run) gives the scorer its reference outputs."""
    feeds = model.samples(split, root)
    expected = [reference(feed) for feed in feeds]

    def metric(run: Run) -> float:
        return model.metric(expected, [run(feed) for feed in feeds], split, root)

    return metric


def evaluate(metric: Metric, run: Run, what: str) -> float:
    """``metric(run)`` as a float; anything else, or a NaN, is one clear error naming ``what``."""
    value = metric(run)
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TvmqError(f"the metric returned {type(value).__name__} for {what}, not a number") from None
    if not np.isfinite(value):
        raise TvmqError(f"the metric returned {value} for {what}: it must be a finite number")
    return value


def module_run(vm, params: list, inputs: list[tuple[str, tuple | None]], chunk: int = 64, device=None) -> Run:
    """A :data:`Run` of ``vm["main"]`` with ``params`` after the inputs.

    ``inputs``: ``(name, static shape or None)`` per model input in its order (None: the batch is
    free, so feeds run ``chunk`` samples at a time). A feed of exactly the static shapes runs
    once; otherwise it is split along the batch axis into the module's batch (the last part
    zero-padded, its padding cut from the outputs) and the outputs joined. Arrays go to ``device``
    (None: the CPU).
    """
    import tvm

    names, shapes = [n for n, _ in inputs], [s for _, s in inputs]
    tensors = [tvm.runtime.tensor(p, device) for p in params]

    def call(arrays):
        result = vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(a), device) for a in arrays], *tensors)
        return [result.numpy()] if hasattr(result, "numpy") else [r.numpy() for r in result]

    def run(feeds: dict) -> list:
        missing = [n for n in names if n not in feeds]
        if missing:
            raise TvmqError(f"the metric's feed lacks input(s) {', '.join(missing)}; the model takes {names}")
        arrays = [np.asarray(feeds[n]) for n in names]
        if all(s is not None and tuple(a.shape) == tuple(s) for a, s in zip(arrays, shapes)):
            return call(arrays)
        size = shapes[0][0] if shapes and shapes[0] is not None and len(shapes[0]) else chunk
        parts = []
        for start in range(0, len(arrays[0]), size):
            piece = [a[start:start + size] for a in arrays]
            short = size - len(piece[0]) if shapes[0] is not None else 0
            piece = [np.concatenate([p, np.zeros((short, *p.shape[1:]), p.dtype)]) if short else p for p in piece]
            parts.append([o[:len(o) - short] for o in call(piece)])
        return [np.concatenate(column) for column in zip(*parts)]

    return run


def _imported(name: str) -> Metric:
    module_name, _, function = name.partition(":")
    check_name(name)
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise TvmqError(f"--metric {name}: cannot import {module_name!r} ({err})") from None
    metric = getattr(module, function, None)
    if not callable(metric):
        raise TvmqError(f"--metric {name}: {module_name} has no function {function!r}")
    return metric


def _rows(output: np.ndarray, samples: int) -> np.ndarray:
    """An output as one row per sample."""
    return np.asarray(output).reshape(samples, -1)
