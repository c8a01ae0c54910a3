"""Load and run a saved tvmq artifact with TVM's runtime only (no compiler, no Relax)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from . import weight_codecs
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
    model's order, when it has several), as ONNX Runtime's ``session.run`` would. An artifact
    with several shape buckets runs each feed on the module whose input shapes equal it.

    Attributes
    ----------
    directory : the artifact's directory.
    manifest : its ``manifest.json`` (inputs, outputs, target, quantization, checksums).
    inputs : the first bucket's inputs, ``[{"name", "shape", "dtype"}]`` in the model's order.
    """

    def __init__(self, directory: str | Path):
        import tvm

        self.directory = Path(directory)
        self.manifest = _read_manifest(self.directory)
        _verify_files(self.directory, self.manifest)
        self._device = tvm.device(self.manifest.get("device", "cpu"))  # where the artifact's target runs
        buckets = self.manifest.get("buckets") or [{"inputs": self.manifest["inputs"], "library": LIBRARY,
                                                     "params_file": PARAMS, "params": self.manifest["params"]}]
        self._modules = [self._load_bucket(bucket) for bucket in buckets]
        self.inputs = self.manifest["inputs"]

    def _load_bucket(self, bucket: dict) -> tuple:
        import tvm
        from tvm.runtime.vm import VirtualMachine

        vm = VirtualMachine(tvm.runtime.load_module(str(self.directory / bucket["library"])), self._device)
        with np.load(self.directory / bucket["params_file"], allow_pickle=False) as archive:
            missing = sorted(set(bucket["params"]) - set(archive.files))
            if missing:
                raise TvmqError(f"{bucket['params_file']} lacks the parameter(s) {', '.join(missing[:5])} "
                                f"named in the manifest")
            codecs = bucket.get("codecs", {})  # none in artifacts before weight codecs: every param as stored
            params = [tvm.runtime.tensor(weight_codecs.decode(name, archive, codecs[name]) if name in codecs
                                         else archive[name], self._device) for name in bucket["params"]]
        return bucket["inputs"], vm, params

    def run(self, *inputs):
        """Run on a feed dict keyed by input name, or on the input arrays in the model's order."""
        import tvm

        specs, vm, params = self._modules[pick_bucket([m[0] for m in self._modules], inputs)]
        arrays = input_arrays(inputs, specs)
        result = vm["main"](*[tvm.runtime.tensor(a, self._device) for a in arrays], *params)
        return outputs(result)

    def benchmark(self, runs: int = 50, bucket: int = 0) -> float:
        """Median latency in ms of one run of bucket ``bucket`` on zero inputs of its shapes."""
        import tvm

        specs, vm, params = self._modules[bucket]
        timer = vm.time_evaluator("main", self._device, number=1, repeat=runs)
        args = [tvm.runtime.tensor(np.zeros(s["shape"], s["dtype"]), self._device) for s in specs]
        return float(np.median(timer(*args, *params).results) * 1e3)


def pick_bucket(buckets: list[list[dict]], inputs: tuple) -> int:
    """The index of the bucket (its input specs) whose shapes equal the feed's; with one bucket, 0
    (the run then checks the feed against it)."""
    if len(buckets) == 1:
        return 0
    names = [spec["name"] for spec in buckets[0]]
    feed = inputs[0] if len(inputs) == 1 and isinstance(inputs[0], dict) else dict(zip(names, inputs))
    shapes = [list(np.shape(feed[n])) if n in feed else None for n in names]
    for index, specs in enumerate(buckets):
        if [list(spec["shape"]) for spec in specs] == shapes:
            return index
    have = "; ".join(" ".join(f"{s['name']}:{','.join(map(str, s['shape']))}" for s in specs) for specs in buckets)
    got = " ".join(f"{n}:{','.join(map(str, s))}" for n, s in zip(names, shapes) if s is not None)
    raise TvmqError(f"no module of this artifact takes input shapes {got}; it has: {have}")


def load(directory: str | Path) -> DeployedModel:
    """Load an artifact written by ``tvmq compile`` / ``CompiledModel.save``, with TVM's runtime only.

    Parameters
    ----------
    directory : the artifact's directory (``manifest.json``, ``model.so``, ``params.npz``, ...).

    Returns
    -------
    DeployedModel
        ``run(feeds)`` returns the model's output, as ONNX Runtime's ``session.run`` would.

    Raises
    ------
    TvmqError
        Not an artifact, a file missing, or a checksum that does not match the manifest.
    """
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
    buckets = manifest.get("buckets", [])
    return (isinstance(files, dict) and {LIBRARY, PARAMS} <= set(files)
            and all(isinstance(v, str) for v in files.values())
            and isinstance(params, list) and all(isinstance(p, str) for p in params)
            and isinstance(inputs, list) and all(isinstance(i, dict) and {"name", "shape", "dtype"} <= set(i)
                                                 for i in inputs)
            and isinstance(buckets, list) and all(_well_formed_bucket(b, files) for b in buckets))


def _well_formed_bucket(bucket, files: dict) -> bool:
    return (isinstance(bucket, dict) and all(isinstance(bucket.get(k), str) and bucket[k] in files
                                             for k in ("library", "params_file"))
            and isinstance(bucket.get("params"), list) and isinstance(bucket.get("inputs"), list))


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
    return x if x.flags.c_contiguous else x.copy(order="C")  # a 0-d input stays 0-d
