"""Run the fp32 module over calibration data once, streaming every tensor into its observer."""

from __future__ import annotations

import logging
import math
from typing import Iterator

import numpy as np
from tqdm import tqdm

from tvmq.passes.calibrators import make_observer
from tvmq.passes.expose import ExposeTensors, exposed_names, named_vars

from .data import Dataset
from .errors import TvmqError
from .resources import EXPOSED_BYTES_BUDGET  # all tensors of one calibration / evaluation run, alive at once

logger = logging.getLogger(__name__)


def bounded_batch(mod, names: list[str], batch_size: int) -> int:
    """The largest batch (<= ``batch_size``) whose exposed tensors fit in the memory budget.

    Exposing every tensor keeps a whole run's activations alive together: 64 samples of a
    ResNet-50 would hold gigabytes. The bound is computed from the static per-sample shapes.
    """
    named = named_vars(mod["main"])
    per_sample = 0
    for name in names:
        ty = named[name].ty if name in named else None
        if ty is not None and getattr(ty, "shape", None) is not None:
            dims = [int(d) for d in list(ty.shape)[1:]]
            per_sample += int(np.prod(dims, dtype=np.int64)) * np.dtype(str(ty.dtype)).itemsize
    return int(max(1, min(batch_size, EXPOSED_BYTES_BUDGET // max(per_sample, 1))))


def collect_ranges(mod, names: list[str], data: Dataset, batch: int | None, vm_factory,
                   calibrator: str, dtype: str, batch_size: int) -> tuple[dict, dict]:
    """Observe every named tensor of ``mod`` over ``data``.

    Returns ``({name: (lo, hi)}, {name: calibrator chosen})``; the second is filled only by
    calibrators that choose per tensor (``auto``).

    ``batch`` is the model's fixed batch size (None when free, then ``batch_size`` is used).
    Only the observers' state is kept between batches, never the activations themselves.
    """
    observers: dict = {}
    observe(mod, names, data, batch, vm_factory, batch_size, observers, lambda: make_observer(calibrator, dtype))
    return ranges_of(observers)


def observe(mod, names: list[str], data: Dataset, batch: int | None, vm_factory, batch_size: int,
            observers: dict, new_observer) -> None:
    """Stream ``data`` through ``mod``, updating ``observers`` (one per tensor name, made by
    ``new_observer`` when first seen): data of several shapes, each on its own module, feeds
    the same observers."""
    names = exposed_names(mod, names)
    vm = vm_factory(ExposeTensors(names)(mod))
    for outputs in run_batches(vm, data, batch, batch_size, "calibrate"):
        for name, value in zip(names, outputs[1:]):
            if not np.isfinite(value).all():
                raise TvmqError(f"tensor {name!r} became NaN or Inf during calibration")
            if name not in observers:
                observers[name] = new_observer()
            observers[name].observe(value)


def ranges_of(observers: dict) -> tuple[dict, dict]:
    """``({name: (lo, hi)}, {name: calibrator chosen})`` from the observers' state."""
    ranges = {name: observer.range() for name, observer in observers.items()}
    chosen = {name: obs.chosen for name, obs in observers.items() if getattr(obs, "chosen", None)}
    return ranges, chosen


def run_batches(vm, data: Dataset, batch: int | None, batch_size: int, desc: str | None,
                labels: bool = False) -> Iterator[list[np.ndarray]]:
    """Run ``vm["main"]`` over ``data`` (inputs in the model's order), yielding each batch's outputs
    as numpy arrays: the model's first output, then the exposed tensors.

    With a fixed model batch, a last partial batch is dropped. With ``labels`` the batch's
    labels are yielded after the outputs, as ``(outputs, labels)``. ``desc`` labels the
    progress bar (shown on a terminal only); None shows none.
    """
    for args, y in batch_args(data, batch, batch_size, desc):
        outputs = call_outputs(vm, args)
        yield (outputs, y) if labels else outputs


def batch_args(data: Dataset, batch: int | None, batch_size: int, desc: str | None = None):
    """The batches :func:`run_batches` runs: ``(runtime tensors in the model's input order, labels)``."""
    import tvm

    size = batch or batch_size
    total = len(data) // size if batch else math.ceil(len(data) / size)
    if total == 0:
        raise TvmqError(f"the model takes batches of {size} but only {len(data)} samples were given")
    bar = tqdm(data.batches(size), total=total, desc=desc, unit="batch", leave=False,
               disable=True if desc is None else None)
    for i, (feed, y) in enumerate(bar):
        if i == total:
            break
        yield [tvm.runtime.tensor(value) for value in feed.values()], y


def call_outputs(vm, args: list) -> list[np.ndarray]:
    """One call of ``vm["main"](*args)``: the model's first output, then the exposed tensors, in numpy."""
    result = vm["main"](*args)
    return [_flatten(result[0])] + [r.numpy() for r in list(result)[1:]]


def _flatten(result) -> np.ndarray:
    """The model's first output: a tensor, or the first field of a tuple of tensors."""
    return result.numpy() if hasattr(result, "numpy") else result[0].numpy()
