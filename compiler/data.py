"""Calibration and evaluation data for models with any number of inputs.

What a user may hand over (``load_data``):

* an array, a ``.npy`` file, or a ``.npz`` with ``x`` (and optional labels ``y``): the samples
  of a single-input model, leading axis the samples;
* a dict of arrays or a ``.npz`` keyed by input names (plus optional ``y``);
* a directory of such ``.npz`` files, one feed each (sorted by name);
* an iterable of feed dicts ``{input name: array}``, or an object with ONNX Runtime's
  ``CalibrationDataReader`` protocol (``get_next()`` returns a feed dict, ``None`` at the end).

Every array is a whole input tensor, as ONNX Runtime's feeds are. When each input's leading
axis is the batch (``batched``), feeds are samples along it and may be re-batched; otherwise
(a scalar input, an LSTM state ``[directions, batch, hidden]``) each feed is one run, stacked
along a new leading axis. Feeds may differ in shape (sentences of different lengths):
consecutive feeds of one shape are joined into one :class:`Dataset`, so the data is a list of
same-shape groups, and nothing is padded.
Arrays are checked against the model's inputs before any work starts; pickled objects are
never loaded (``allow_pickle=False``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import TvmqError
from .frontend import InputSpec
from .resources import check_array_fits

LABELS = "y"


@dataclass
class Dataset:
    """Same-shape samples for a model's inputs and optional integer labels ``y`` (N,).

    ``x`` is one array (N, ...) for a single-input model, or ``{input name: (N, ...)}``. With
    ``stacked`` the leading axis counts feeds, each one whole run of the model.
    """

    x: np.ndarray | dict
    y: np.ndarray | None = None
    stacked: bool = False

    def __len__(self) -> int:
        first = next(iter(self.x.values())) if isinstance(self.x, dict) else self.x
        return len(first) if np.ndim(first) else 0

    def feeds(self) -> dict[str, np.ndarray]:
        """``x`` as a dict keyed by input name (:func:`check_dataset` names a single array after
        the model's input; until then it is ``"x"``)."""
        return self.x if isinstance(self.x, dict) else {"x": self.x}

    def signature(self) -> tuple:
        """``((input name, per-sample shape), ...)``: what a module for these samples must take."""
        return tuple((name, tuple(value.shape[1:])) for name, value in self.feeds().items())

    def head(self, n: int) -> Dataset:
        return Dataset({k: v[:n] for k, v in self.feeds().items()}, None if self.y is None else self.y[:n],
                       self.stacked)

    def batches(self, size: int) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray | None]]:
        """Consecutive feeds of exactly ``size`` samples except possibly the last, with their labels
        (one stacked feed at a time)."""
        if self.stacked:
            for i in range(len(self)):
                labels = None if self.y is None else self.y[i:i + 1]
                yield {k: c_contiguous(v[i]) for k, v in self.feeds().items()}, labels
            return
        for start in range(0, len(self), size):
            labels = None if self.y is None else self.y[start:start + size]
            yield {k: c_contiguous(v[start:start + size]) for k, v in self.feeds().items()}, labels


def c_contiguous(x) -> np.ndarray:
    """``x`` as a C-contiguous array of the same shape: a 0-d input (a sample rate) stays 0-d, where
    ``np.ascontiguousarray`` would make it 1-d."""
    x = np.asarray(x)
    return x if x.flags.c_contiguous else x.copy(order="C")


def load_data(value, specs: list[InputSpec], role: str, batched: bool = True) -> list[Dataset]:
    """Read and check data for a model's inputs ``specs``; ``role`` names it in errors.

    ``batched``: every input's leading axis is the batch, so a feed may hold many samples;
    otherwise each feed is one run of exactly the inputs' shapes. Returns the samples as
    same-shape groups, in the order given.
    """
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, Dataset) for v in value):
        parts = [(v, f"{role} data") for v in value]
    elif isinstance(value, Dataset):
        parts = [(value, f"{role} data")]
    elif isinstance(value, np.ndarray):
        parts = [(Dataset(value), f"{role} data")]
    elif isinstance(value, (str, Path)):
        parts = _read_path(Path(value), role)
    elif isinstance(value, dict):
        parts = [(_from_feed(value), f"{role} data")]
    elif hasattr(value, "get_next"):
        parts = [(_from_feed(f), f"{role} data (feed {i})") for i, f in enumerate(iter(value.get_next, None))]
    elif hasattr(value, "__iter__"):
        parts = [(_from_feed(f), f"{role} data (feed {i})") for i, f in enumerate(value)]
    else:
        raise TvmqError(f"{role} data must be a path, an array, a dict of arrays, an iterable of feed dicts or "
                        f"a CalibrationDataReader, got {type(value).__name__}")
    if not parts:
        raise TvmqError(f"{role} data is empty: at least one sample is needed")
    return _grouped([check_dataset(data, specs, what, batched) for data, what in parts])


def check_dataset(data: Dataset, specs: list[InputSpec], what: str, batched: bool = True) -> Dataset:
    """``data`` with ``x`` keyed by input name, after checking names, dtypes, shapes and labels
    (unless ``batched``, a feed not yet ``stacked`` becomes one)."""
    feeds = _named(data.x, specs, what)
    if not batched and not data.stacked:
        feeds, data = {k: v[None] for k, v in feeds.items()}, Dataset(feeds, _one_label(data.y), True)
    if any(np.ndim(v) == 0 or len(v) == 0 for v in feeds.values()):
        raise TvmqError(f"{what} is empty: at least one sample is needed")
    counts = {name: len(v) for name, v in feeds.items()}
    if len(set(counts.values())) > 1:
        raise TvmqError(f"{what} has different sample counts per input: {counts}")
    for spec in specs:
        _check_input(feeds[spec.name], spec, what, data.stacked)
    n, y = len(feeds[specs[0].name]), data.y
    if y is not None and (y.ndim != 1 or len(y) != n or not np.issubdtype(y.dtype, np.integer)):
        raise TvmqError(f"{what} labels 'y' must be {n} integers, got shape {y.shape} {y.dtype}")
    return Dataset(feeds, y, data.stacked)


def _one_label(y):
    return None if y is None else np.asarray(y).reshape(1)


def _named(x, specs: list[InputSpec], what: str) -> dict[str, np.ndarray]:
    names = [s.name for s in specs]
    if not isinstance(x, dict):
        if len(specs) != 1:
            raise TvmqError(f"{what} is one array, but the model has {len(specs)} inputs ({', '.join(names)}): "
                            f"give a dict or .npz keyed by input name")
        return {names[0]: np.asarray(x)}
    if len(specs) == 1 and set(x) == {"x"} and names[0] != "x":
        return {names[0]: np.asarray(x["x"])}
    missing, extra = [n for n in names if n not in x], sorted(set(x) - set(names))
    if missing or extra:
        raise TvmqError(f"{what} has arrays {sorted(x)}; the model's inputs are {names}"
                        + (f" (missing: {', '.join(missing)})" if missing else "")
                        + (f" (unknown: {', '.join(extra)})" if extra else ""))
    return {n: np.asarray(x[n]) for n in names}


def _check_input(x: np.ndarray, spec: InputSpec, what: str, stacked: bool) -> None:
    if x.dtype != np.dtype(spec.dtype):
        raise TvmqError(f"{what} has dtype {x.dtype}, but input {spec.name!r} takes {spec.dtype}")
    declared = spec.shape if stacked else spec.shape[1:]
    if x.ndim != len(declared) + 1 or any(d is not None and d != s for d, s in zip(declared, x.shape[1:])):
        want = ", ".join("?" if d is None else str(d) for d in declared)
        got, want = (x.shape[1:], f"({want})") if stacked else (x.shape[1:], f"(N, {want})")
        raise TvmqError(f"{what} has {'feeds' if stacked else 'samples'} of shape {tuple(got)}, but input "
                        f"{spec.name!r} takes {want}")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        raise TvmqError(f"{what} contains NaN or Inf values")


def _from_feed(feed) -> Dataset:
    if not isinstance(feed, dict):
        raise TvmqError(f"a feed must be a dict of arrays keyed by input name, got {type(feed).__name__}")
    arrays = {k: np.asarray(v) for k, v in feed.items() if k != LABELS}
    return Dataset(arrays, np.asarray(feed[LABELS]) if LABELS in feed else None)


def _grouped(parts: list[Dataset]) -> list[Dataset]:
    """Join consecutive same-shape datasets into one (labels only where every part has them)."""
    groups: list[list[Dataset]] = []
    for part in parts:
        if groups and groups[-1][-1].signature() == part.signature():
            groups[-1].append(part)
        else:
            groups.append([part])
    return [group[0] if len(group) == 1 else _joined(group) for group in groups]


def _joined(parts: list[Dataset]) -> Dataset:
    names = parts[0].feeds().keys()
    x = {n: np.concatenate([p.feeds()[n] for p in parts]) for n in names}
    labelled = all(p.y is not None for p in parts)
    return Dataset(x, np.concatenate([p.y for p in parts]) if labelled else None, parts[0].stacked)


def _read_path(path: Path, role: str) -> list[tuple[Dataset, str]]:
    if path.is_dir():
        files = sorted(path.glob("*.npz"))
        if not files:
            raise TvmqError(f"{role} data directory {path} holds no .npz feeds")
        return [(_read_file(f, role), f"{role} data {path.name}/{f.name}") for f in files]
    return [(_read_file(path, role), f"{role} data {path.name}")]


def _read_file(path: Path, role: str) -> Dataset:
    if not path.is_file():
        raise TvmqError(f"{role} data file not found: {path}")
    what = f"{role} data {path.name}"
    try:
        if path.suffix == ".npy":
            with open(path, "rb") as handle:
                _check_header(handle, path.stat().st_size, what)
            return Dataset(np.load(path, allow_pickle=False))
        if path.suffix == ".npz":
            _check_members(path, what)
            with np.load(path, allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
            if len(arrays) == (LABELS in arrays):
                raise TvmqError(f"{what} has no input arrays (found: {', '.join(arrays) or 'nothing'})")
            return _from_feed(arrays)
    except TvmqError:
        raise
    except ValueError as err:
        if "pickle" in str(err):
            raise TvmqError(f"{what} holds pickled objects; only plain arrays are accepted") from None
        raise TvmqError(f"{what} is not a readable numpy file: {err}") from None
    except Exception as err:
        raise TvmqError(f"{what} is not a readable numpy file: {err}") from None
    raise TvmqError(f"{role} data must be a .npy or .npz file or a directory of .npz files, got {path.name}")


def _check_header(handle, size: int, what: str) -> None:
    """Read a ``.npy`` header; refuse pickled, truncated or too-large arrays before loading them.

    ``size`` is the bytes from the start of ``handle`` to the end of the array's file.
    """
    from numpy.lib import format as npy

    version = npy.read_magic(handle)
    if version not in ((1, 0), (2, 0)):
        raise TvmqError(f"{what} uses .npy format version {version}; only 1.0 and 2.0 are read")
    reader = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
    shape, _fortran, dtype = reader(handle)
    if dtype.hasobject:
        raise TvmqError(f"{what} holds pickled objects; only plain arrays are accepted")
    check_array_fits(shape, dtype, what)
    declared = math.prod(shape) * dtype.itemsize
    if size - handle.tell() < declared:
        raise TvmqError(f"{what} is truncated: its header declares {declared} bytes of data, "
                        f"the file holds {size - handle.tell()}")


def _check_members(path: Path, what: str) -> None:
    """Check the header of every ``.npy`` member of an ``.npz`` (a zip bomb declares huge arrays)."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            with archive.open(info) as member:
                _check_header(member, info.file_size, f"{what} (array {info.filename!r})")
