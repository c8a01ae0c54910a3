"""Calibration and evaluation data: ``.npy`` (inputs) or ``.npz`` (``x`` and optional ``y``).

Arrays are checked against the model's input before any work starts; pickled objects are
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


@dataclass
class Dataset:
    """Samples ``x`` (N, ...) for one model input and optional integer labels ``y`` (N,)."""

    x: np.ndarray
    y: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.x)

    def batches(self, size: int) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """Consecutive batches of exactly ``size`` samples except possibly the last."""
        for start in range(0, len(self.x), size):
            labels = None if self.y is None else self.y[start:start + size]
            yield np.ascontiguousarray(self.x[start:start + size]), labels


def load_dataset(path: str | Path, spec: InputSpec, role: str) -> Dataset:
    """Load and check a data file for input ``spec``; ``role`` names it in errors."""
    path = Path(path)
    x, y = _read_arrays(path, role)
    return check_dataset(Dataset(x, y), spec, f"{role} data {path.name}")


def check_dataset(data: Dataset, spec: InputSpec, what: str) -> Dataset:
    x, y = data.x, data.y
    if x.ndim == 0 or len(x) == 0:
        raise TvmqError(f"{what} is empty: at least one sample is needed")
    if x.dtype != np.dtype(spec.dtype):
        raise TvmqError(f"{what} has dtype {x.dtype}, but input {spec.name!r} takes {spec.dtype}")
    if tuple(x.shape[1:]) != tuple(spec.shape[1:]):
        want = ", ".join(str(d) for d in spec.shape[1:])
        raise TvmqError(f"{what} has samples of shape {tuple(x.shape[1:])}, but input {spec.name!r} "
                        f"takes (N, {want})")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        raise TvmqError(f"{what} contains NaN or Inf values")
    if y is not None:
        if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
            raise TvmqError(f"{what} labels 'y' must be {len(x)} integers, got shape {y.shape} {y.dtype}")
    return data


def _read_arrays(path: Path, role: str) -> tuple[np.ndarray, np.ndarray | None]:
    if not path.is_file():
        raise TvmqError(f"{role} data file not found: {path}")
    try:
        if path.suffix == ".npy":
            with open(path, "rb") as handle:
                _check_header(handle, path.stat().st_size, f"{role} data {path.name}")
            return np.load(path, allow_pickle=False), None
        if path.suffix == ".npz":
            _check_members(path, f"{role} data {path.name}")
            with np.load(path, allow_pickle=False) as archive:
                if "x" not in archive.files:
                    raise TvmqError(f"{role} data {path.name} has no array 'x' (found: {', '.join(archive.files)})")
                return archive["x"], (archive["y"] if "y" in archive.files else None)
    except TvmqError:
        raise
    except ValueError as err:
        if "pickle" in str(err):
            raise TvmqError(f"{role} data {path.name} holds pickled objects; only plain arrays are accepted") from None
        raise TvmqError(f"{role} data {path.name} is not a readable numpy file: {err}") from None
    except Exception as err:
        raise TvmqError(f"{role} data {path.name} is not a readable numpy file: {err}") from None
    raise TvmqError(f"{role} data must be a .npy or .npz file, got {path.name}")


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
