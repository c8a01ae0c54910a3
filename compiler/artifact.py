"""The artifact a compile writes: one library and params file per shape bucket, a manifest, reports.

Layout (``runtime`` reads it with TVM's runtime alone)::

    model.so  params.npz          the first bucket (the only one for a single shape); each int8 weight
                                  param stored by its layer's codec (``weight_codecs``: int8, int4, lut)
    model-1.so  params-1.npz ...  further buckets
    manifest.json                 inputs, outputs, buckets, target, versions, quantization, sha256 of each file
    plan.json                     the quantization plan: per layer precision, reason, parameters (ONNX names)
    qdq_weights.npz               each int8 layer's int8 weight and int32 bias as realized (tvmq export-qdq)
    report.json  report.md  report.html (the report as one self-contained page)
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import weight_codecs
from .fileio import staged_directory
from .report import to_markdown
from .report_html import to_html
from .runtime import LIBRARY, MANIFEST, PARAMS, sha256

FORMAT_VERSION = 1
PLAN = "plan.json"
QDQ_WEIGHTS = "qdq_weights.npz"


@dataclass
class Module:
    """One deployed module: its executable, params by name, and the inputs it takes."""

    executable: object
    params: dict
    inputs: list[dict]  # {"name", "shape", "dtype"}


def file_names(index: int) -> tuple[str, str]:
    """The library and params file of bucket ``index``."""
    if index == 0:
        return LIBRARY, PARAMS
    return f"model-{index}.so", f"params-{index}.npz"


def write(directory: Path, modules: list[Module], manifest: dict, report: dict, force: bool,
          plan: dict | None = None, qdq_weights: dict | None = None) -> Path:
    """Write the artifact atomically: all of it appears at ``directory``, or nothing does."""
    with staged_directory(Path(directory), force=force) as stage:
        files, buckets, stored = {}, [], []
        for index, module in enumerate(modules):
            library, params = file_names(index)
            module.executable.export_library(str(stage / library))
            arrays, codecs = _encoded(module.params, plan, qdq_weights)
            np.savez(stage / params, **arrays)
            files.update({name: sha256(stage / name) for name in (library, params)})
            buckets.append({"inputs": module.inputs, "library": library, "params_file": params,
                            "params": list(module.params), "codecs": codecs})
            stored += [{**entry, "param": name, "params_file": params} for name, entry in codecs.items()]
        if plan is not None:
            (stage / PLAN).write_text(json.dumps(plan, indent=2))
            files[PLAN] = sha256(stage / PLAN)
        if qdq_weights is not None:
            np.savez(stage / QDQ_WEIGHTS, **qdq_weights)
            files[QDQ_WEIGHTS] = sha256(stage / QDQ_WEIGHTS)
        whole = {**manifest, "inputs": modules[0].inputs, "params": list(modules[0].params), "buckets": buckets,
                 "files": files}
        (stage / MANIFEST).write_text(json.dumps(whole, indent=2))
        storage = weight_codecs.storage_report(stored)
        report = {**report, "weight_storage": storage}
        (stage / "report.json").write_text(json.dumps(report, indent=2))
        (stage / "report.md").write_text(to_markdown(report) + weight_codecs.storage_markdown(storage))
        (stage / "report.html").write_text(to_html(report))
    return Path(directory)


def _encoded(params: dict, plan: dict | None, qdq_weights: dict | None) -> tuple[dict, dict]:
    """The npz arrays of ``params``, each int8 weight param by its layer's codec, and the manifest's
    ``codecs``: per weight param its codec, dtype, shape, layer and bytes (int8 and as stored)."""
    arrays, codecs = dict(params), {}
    for name, (layer, codec) in weight_codecs.weight_params(params, plan, qdq_weights).items():
        encoded, entry = weight_codecs.encode(name, params[name], codec)
        arrays.update(encoded)
        codecs[name] = {**entry, "layer": layer}
    return arrays, codecs


def manifest(model: str, outputs: list[str], spec, config, scheme, record: dict, onnx_names: dict) -> dict:
    """What a deployment needs to know besides the files: target, versions, quantization parameters."""
    from importlib.metadata import version

    return {
        "format_version": FORMAT_VERSION,
        "model": model,
        "outputs": outputs,
        "target": str(spec.target),
        "target_features": list(spec.features),
        "device": str(spec.executor.device()),  # tvm.device(...) of what runs it: "cpu:0", "cuda:0"
        "config": {"calibrator": config.calibrator, "per_channel": config.per_channel, "trials": config.trials,
                   "activation_dtype": scheme.activation_dtype, "latency_fallback": config.latency_fallback,
                   "weight_qmax": scheme.weight_qmax},
        "versions": {pkg: version(pkg) for pkg in ("tvmq", "apache-tvm", "apache-tvm-ffi", "onnx", "numpy")}
        | {"python": platform.python_version()},
        "quantization": _with_onnx_names(record, onnx_names),
    }


def _with_onnx_names(record: dict, onnx_names: dict) -> dict:
    """The realize record keyed (and valued) by ONNX tensor names rather than Relax variables."""
    def name(key):
        return onnx_names.get(key, key)

    out = {}
    for section, value in record.items():
        if isinstance(value, dict):
            renamed = section in ("fused_into", "range_of", "kept_fp32")
            out[section] = {name(k): (name(v) if isinstance(v, str) and renamed else v) for k, v in value.items()}
        else:
            out[section] = [name(v) for v in value]
    return out
