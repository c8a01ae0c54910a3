"""Load and run a saved tvmq artifact with TVM's runtime only (no compiler, no Relax)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from .errors import TvmqError

MANIFEST = "manifest.json"
LIBRARY = "model.so"
PARAMS = "params.npz"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class DeployedModel:
    """A compiled int8 model: ``run(feeds)`` returns the model's output (a list of them, in the
    model's order, when it has several), as ONNX Runtime's ``session.run`` would."""

    def __init__(self, directory: str | Path):
        import tvm
        from tvm.runtime.vm import VirtualMachine

        self.directory = Path(directory)
        self.manifest = _read_manifest(self.directory)
        _verify_files(self.directory, self.manifest)
        self._device = tvm.cpu()
        self._vm = VirtualMachine(tvm.runtime.load_module(str(self.directory / LIBRARY)), self._device)
        with np.load(self.directory / PARAMS, allow_pickle=False) as archive:
            missing = sorted(set(self.manifest["params"]) - set(archive.files))
            if missing:
                raise TvmqError(f"{PARAMS} lacks the parameter(s) {', '.join(missing[:5])} named in the manifest")
            self._params = [tvm.runtime.tensor(archive[name], self._device) for name in self.manifest["params"]]
        self.inputs = self.manifest["inputs"]

    def run(self, *inputs):
        """Run on a feed dict keyed by input name, or on the input arrays in the model's order."""
        import tvm

        arrays = input_arrays(inputs, self.inputs)
        result = self._vm["main"](*[tvm.runtime.tensor(a, self._device) for a in arrays], *self._params)
        return outputs(result)

    def benchmark(self, runs: int = 50) -> float:
        """Median latency in ms of one run on zero inputs of the model's shape."""
        import tvm

        timer = self._vm.time_evaluator("main", self._device, number=1, repeat=runs)
        args = [tvm.runtime.tensor(np.zeros(s["shape"], s["dtype"]), self._device) for s in self.inputs]
        return float(np.median(timer(*args, *self._params).results) * 1e3)


def load(directory: str | Path) -> DeployedModel:
    """Load an artifact written by ``tvmq compile`` / ``CompiledModel.save``."""
    return DeployedModel(directory)


def _read_manifest(directory: Path) -> dict:
    path = directory / MANIFEST
    if not path.is_file():
        raise TvmqError(f"{directory} is not a tvmq artifact (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TvmqError(f"{path} is corrupt: {err}") from None
    if not isinstance(manifest, dict) or not _well_formed(manifest):
        raise TvmqError(f"{path} is not a valid tvmq manifest (missing or malformed files, params or inputs)")
    return manifest


def _well_formed(manifest: dict) -> bool:
    """The fields ``load`` relies on: a sha256 for the library and the params, params and inputs lists."""
    files, params, inputs = manifest.get("files"), manifest.get("params"), manifest.get("inputs")
    return (isinstance(files, dict) and {LIBRARY, PARAMS} <= set(files)
            and all(isinstance(v, str) for v in files.values())
            and isinstance(params, list) and all(isinstance(p, str) for p in params)
            and isinstance(inputs, list) and all(isinstance(i, dict) and {"name", "shape", "dtype"} <= set(i)
                                                 for i in inputs))


def _verify_files(directory: Path, manifest: dict) -> None:
    for name, digest in manifest["files"].items():
        path = directory / name
        if Path(name).name != name or not path.is_file():
            raise TvmqError(f"artifact file {name!r} listed in the manifest is missing")
        if sha256(path) != digest:
            raise TvmqError(f"artifact file {name} does not match its sha256 in the manifest (tampered or truncated)")


def input_arrays(inputs: tuple, specs: list[dict]) -> list[np.ndarray]:
    """The arrays for ``main`` in the model's input order, from ``(feed dict,)`` or ``(array, ...)``.

    ``specs`` are the manifest's inputs (``name``, ``shape``, ``dtype``); each array is checked.
    """
    names = [spec["name"] for spec in specs]
    if len(inputs) == 1 and isinstance(inputs[0], dict):
        feed = inputs[0]
        missing, extra = [n for n in names if n not in feed], sorted(set(feed) - set(names))
        if missing or extra:
            raise TvmqError(f"the feed has {sorted(feed)}; the model's inputs are {names}")
        inputs = tuple(feed[n] for n in names)
    if len(inputs) != len(specs):
        raise TvmqError(f"the model takes {len(specs)} input(s) ({', '.join(names)}), got {len(inputs)}")
    return [_check_input(x, spec) for x, spec in zip(inputs, specs)]


def outputs(result):
    """A VM result as numpy: one array, or a list of them in the model's output order."""
    return result.numpy() if hasattr(result, "numpy") else [r.numpy() for r in result]


def _check_input(x, spec: dict) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.dtype(spec["dtype"]) or list(x.shape) != list(spec["shape"]):
        raise TvmqError(f"input {spec['name']!r} must be {spec['dtype']} of shape {tuple(spec['shape'])}, "
                        f"got {x.dtype} {tuple(x.shape)}")
    return np.ascontiguousarray(x)
