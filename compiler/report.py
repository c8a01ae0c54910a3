"""The accuracy and latency report: ``report.json`` for machines, ``report.md`` for people.

report.json is rendered from a compile's stage results (:mod:`tvmq.stages`) by the functions
registered with :func:`section`, in registration order: one more section is one more function.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

from .profile import total_us

LAYER_OPS = ("Conv", "Gemm", "MatMul")
KEPT_FP32 = "fp32 (slower in int8)"


def layer_rows(nodes: dict, record: dict, sqnr: dict) -> list[dict]:
    """One row per ONNX node in graph order, keyed by the user's node names.

    A node fused into a layer (a conv followed by its ReLU) shows the SQNR of the fused
    layer's output. A node whose output a pass folded away (a BatchNorm's conv, say) takes
    the precision of the tensor it was folded into, the next node's. A layer the latency
    fallback kept fp32 shows as ``fp32 (slower in int8)``.
    """
    precision, fused_into, kept = record["precision"], record["fused_into"], record.get("kept_fp32", {})
    rows, pending = [], []
    for tensor, (node, op) in nodes.items():
        row = {"name": node, "op": op, "precision": KEPT_FP32 if tensor in kept else precision.get(tensor),
               "sqnr_db": sqnr.get(fused_into.get(tensor, tensor))}
        if row["precision"] is None:
            pending.append(row)
        else:
            for waiting in pending:
                waiting["precision"] = row["precision"]
            pending = []
        rows.append(row)
    for row in pending:
        row["precision"] = "fp32"
    return rows


def layer_node(nodes: dict, chain: list[str]) -> str:
    """The ONNX node a layer (its chain of tensors) is reported under: its conv / dense node."""
    named = [nodes[tensor] for tensor in chain if tensor in nodes]
    return next((node for node, op in named if op in LAYER_OPS), named[0][0] if named else chain[-1])


SECTIONS: dict[str, Callable] = {}


def section(fn: Callable) -> Callable:
    """Register ``fn(results) -> dict`` (``results[stage]``: a stage's result) as a report section."""
    SECTIONS[fn.__name__] = fn
    return fn


def render(results) -> dict:
    """report.json from the stage results: every section's keys, in registration order."""
    report = {}
    for render_section in SECTIONS.values():
        report.update(render_section(results))
    return report


@section
def target(results) -> dict:
    main, spec = results["deploy"][0], results["target"]
    measured_on = spec.executor.measured_on()
    return {"model": main.program.imported.name, "target": str(spec.target), "target_description": spec.description,
            "measured_on": measured_on}


@section
def quantization(results) -> dict:
    """How the model was quantized: calibrator, granularity, dtypes, weight bits, dynamic layers."""
    from tvmq.passes.qparams import weight_bits

    config, quantized, qdq = results["config"], results["refine"], results["programs"].qdq
    scheme = quantized.scheme
    dynamic = len(results["deployed_plan"].plan.dynamic_layers())
    return {"calibrator": config.calibrator if qdq is None else "imported (QDQ model)",
            "per_channel": config.per_channel, "activation_dtype": scheme.activation_dtype,
            "calibration_seconds": quantized.seconds, "weight_bits": weight_bits(scheme.weight_qmax),
            "weight_range": [-scheme.weight_qmax, scheme.weight_qmax],
            **({"calibrator_per_tensor": quantized.chosen} if quantized.chosen else {}),
            **({"dynamic": {"layers": dynamic, "granularity": scheme.dynamic_granularity}} if dynamic else {})}


@section
def data(results) -> dict:
    qdq = results["programs"].qdq
    return {"eval_data": "evaluation split" if results["evaluation"].given else
            "calibration data (no --eval given)" if results["calibration"].sets else "none given: not evaluated",
            **({"qdq_import": qdq.summary()} if qdq is not None else {})}


@section
def accuracy(results) -> dict:
    """fp32 against int8 as deployed, and where it was measured when not on the target's own code."""
    spec = results["target"]
    analysis = spec.analysis_spec()
    where = {} if analysis is spec else \
        {"accuracy_measured_on": f"{analysis.description}: the host's integer simulation of the int8 model"}
    return {"accuracy": results["evaluate"].accuracy, **where}


@section
def deployment(results) -> dict:
    """The first bucket's latency, kernels, tuning and artifact choice; every bucket's when several."""
    deployments = results["deploy"]
    buckets = [d.summary() | {"inputs": d.inputs()} for d in deployments] if len(deployments) > 1 else []
    return {**deployments[0].summary(), "buckets": buckets, "latency_runs": results["config"].latency_runs}


@section
def latency_fallback(results) -> dict:
    """Whether the fallback ran, each int8 layer's tuned µs, the layers kept fp32."""
    config, main = results["config"], results["deploy"][0]
    fallback, nodes = main.fallback, main.program.imported.nodes
    if fallback is None:
        why = "off (--no-latency-fallback)" if not config.latency_fallback else "not run: no tuning (--trials 0)"
        return {"latency_fallback": {"status": why, "layers": [], "kept_fp32": []}}
    layers = [{"layer": layer_node(nodes, fallback.chains[name]), "tensor": name, **dataclasses.asdict(timing),
               "kept_fp32": name in fallback.kept} for name, timing in fallback.timings.items()]
    return {"latency_fallback": {"status": "ran", "layers": layers,
                                 "kept_fp32": [row["layer"] for row in layers if row["kept_fp32"]],
                                 "rebuilt": fallback.rebuilt}}


@section
def onnxruntime(results) -> dict:
    found = results["baseline"].onnxruntime
    return {"onnxruntime": found} if found is not None else {}


@section
def accuracy_budget(results) -> dict:
    """``mixed_precision`` and ``sensitivity``, when an accuracy budget chose the build."""
    return dict(results["deploy"][0].budget_report)


@section
def layers(results) -> dict:
    main = results["deploy"][0]
    return {"layers": layer_rows(main.program.imported.nodes, results["deployed_plan"].record,
                                 results["evaluate"].sqnr_db)}


@section
def histograms(results) -> dict:
    """The worst layers' activation and weight histograms with their clipping ranges."""
    from .histograms import worst_layers

    main, evaluated = results["deploy"][0], results["evaluate"]
    imported = main.program.imported
    return {"histograms": worst_layers(results["deployed_plan"].plan, evaluated.sqnr_db, evaluated.activations,
                                       main.program.fp32["main"], imported.nodes, imported.onnx_names)}


@section
def passes(results) -> dict:
    from tvmq.passes.graph import pass_notes

    return {"passes": pass_notes(results["deploy"][0].program.fp32) + results["refine"].notes}


@section
def non_uniform(results) -> dict:
    """Non-uniform weights (``--non-uniform``): per-layer levels, stored bytes, the search's metric."""
    found = results["refine"].non_uniform
    return {"non_uniform": found} if found else {}


@section
def plan(results) -> dict:
    return {"plan": results["deployed_plan"].json}


@section
def debug(results) -> dict:
    """The debugging steps (sanity, sides, per_layer, sensitivity) when the compile ran them, as
    debug.json holds them (``{"steps": [...]}``, which report.html draws too)."""
    steps = results["debug"].steps
    return {"debug": {"steps": steps}} if steps is not None else {}


def _measured_on(where: dict | None) -> list[str]:
    """The report line naming the remote devices that measured (none for this machine's own runs)."""
    if not where or where.get("executor") != "rpc":
        return []
    return [f"Measured on: RPC key `{where['key']}` at tracker {where['tracker']} "
            f"(servers {', '.join(where['servers'])}; kernels: {where['kernel_times']})  "]


def to_markdown(report: dict) -> str:
    acc, lat = report["accuracy"], report["latency_ms"]
    lines = [f"# tvmq report: {report['model']}", "",
             f"Target: `{report['target']}`  ",
             *_measured_on(report.get("measured_on")),
             f"Calibrator: {report['calibrator']} ({report['calibration_seconds']} s); activations "
             f"{report['activation_dtype']}, weights {_weights(report)} "
             f"{'per channel' if report['per_channel'] else 'per tensor'}; {_dynamic(report)}"
             f"evaluated on {acc['num_samples']} samples ({report['eval_data']})", "",
             "## Accuracy", "",
             *([f"Measured on {report['accuracy_measured_on']}.", ""] if report.get("accuracy_measured_on") else []),
             "| metric | fp32 | int8 |", "|---|---|---|"]
    if acc["fp32_top1"] is not None:
        lines.append(f"| top-1 | {acc['fp32_top1']:.2%} | {acc['int8_top1']:.2%} |")
    if acc["num_samples"]:
        lines += [f"| top-1 agreement with fp32 | | {acc['top1_agreement']:.2%} |",
                  f"| output cosine similarity | | {acc['output_cosine']:.5f} |"]
    lines += ["",
              "## Latency (batch {}, median of {} runs)".format(report["batch"], report["latency_runs"]), "",
              "| module | ms |", "|---|---|", *_latency_rows(lat),
              f"| speed-up of the artifact | {_speedup(lat)} |", "",
              *_onnxruntime(report.get("onnxruntime")),
              *_choice(report.get("artifact_choice")),
              *_buckets(report.get("buckets")),
              f"Tuning: {_tuning(report['tuning'])}", "", *_kernels(report),
              *_fallback(report.get("latency_fallback")),
              "## Layers", "", "Lowest SQNR first: the layers that hurt most.", "",
              "| node | op | precision | SQNR dB |", "|---|---|---|---|"]
    for row in sorted(report["layers"], key=_by_sqnr):
        sqnr = "exact" if row["sqnr_db"] is None else f"{row['sqnr_db']:.1f}"
        lines.append(f"| {row['name']} | {row['op']} | {row['precision']} | {sqnr} |")
    return "\n".join(lines) + "\n"


def _buckets(buckets: list | None) -> list[str]:
    """Latency per shape bucket, when the artifact holds more than one module (the tables above
    and below are the first bucket's)."""
    if not buckets:
        return []
    lines = ["Shape buckets (one module each; the rest of this report is the first one's):", "",
             "| inputs | fp32 ms | artifact ms | speed-up |", "|---|---|---|---|"]
    for bucket in buckets:
        shapes = ", ".join(f"{i['name']} {'x'.join(map(str, i['shape']))}" for i in bucket["inputs"])
        lat = bucket["latency_ms"]
        lines.append(f"| {shapes} | {_ms(lat['fp32'])} | {_ms(_artifact_ms(lat))} | {_speedup(lat)} |")
    return lines + [""]


MODULES = {"fp32": "fp32", "int8": "int8", "int8_rebuild": "int8 rebuilt by the latency fallback",
           "artifact": "the artifact"}


def _latency_rows(lat: dict) -> list[str]:
    """One row per module timed end to end (the builds compared, then the one deployed)."""
    return [f"| {label} | {_ms(lat[key])} |" for key, label in MODULES.items() if key in lat]


def _artifact_ms(lat: dict):
    """The deployed module's ms (reports before the end-to-end choice deployed the int8 one)."""
    return lat.get("artifact", lat["int8"])


def _ms(value) -> str:
    """A latency in ms, or the target's reason it has none (``not measured (emulated)``)."""
    return f"{value:.3f}" if isinstance(value, (int, float)) else str(value)


def _speedup(lat: dict) -> str:
    """fp32's time over the artifact's, where both were measured."""
    fp32, artifact = lat["fp32"], _artifact_ms(lat)
    numbers = all(isinstance(v, (int, float)) for v in (fp32, artifact))
    return f"{fp32 / artifact:.2f}x" if numbers else "not measured"


def _onnxruntime(section: dict | None) -> list[str]:
    """ONNX Runtime's fp32 / int8 times and the artifact's speed-up over each (their ms over its ms,
    from the same rounds), or the one line saying why they were not measured."""
    if not section:
        return []
    if section["status"].startswith("not run"):
        return [f"ONNX Runtime: {section['status']}.", ""]
    ours = section.get("tvmq_ms")
    times = [f"{label} {_ms_or(section[key], section.get(why))}" for label, key, why in
             (("fp32", "fp32_ms", None), ("int8", "int8_ms", "int8_status"))]
    line = f"ONNX Runtime on this machine: {', '.join(times)}"
    if ours is not None:
        ratios = [f"{label} {_ratio(section[key], ours)}" for label, key in (("fp32", "fp32_ms"), ("int8", "int8_ms"))]
        line += f"; the artifact {ours:.3f} ms in the same rounds, speed-up over ONNX Runtime {', '.join(ratios)}"
    return [line + ".  ", f"({section['measured']}; int8: {section['int8_recipe']}.)", ""]


def _ms_or(value, why: str | None) -> str:
    return f"{value:.3f} ms" if value is not None else f"not measured ({why or 'its process failed'})"


def _ratio(theirs, ours) -> str:
    """Their time over ours: above 1 the artifact is faster."""
    return f"{theirs / ours:.2f}x" if theirs is not None and ours else "n/a"


def _choice(choice: dict | None) -> list[str]:
    """Which build the artifact is and why: the fastest measured end to end (``tvmq.choose``)."""
    if not choice:
        return []
    chosen = "the fastest build timed end to end, " if choice["timed"] else ""
    return [f"Artifact: {chosen}**{choice['reason']}**.", ""]


def _dynamic(report: dict) -> str:
    """``9 layers dynamic (input scale per tensor at run time); `` when some are."""
    dynamic = report.get("dynamic")
    return f"{dynamic['layers']} layers dynamic (input scale per {dynamic['granularity']} at run time); " \
        if dynamic else ""


def _weights(report: dict) -> str:
    """``int8``, or ``int8 (7-bit, [-63, 63])`` where the target's kernel needs narrower weights."""
    bits = report.get("weight_bits", 8)
    return "int8" if bits == 8 else f"int8 ({bits}-bit, [{report['weight_range'][0]}, {report['weight_range'][1]}])"


def _tuning(tuning: dict) -> str:
    if not tuning["trials"]:
        return "none (--trials 0)."
    parts = [f"{name}: {s['tuned_now']} of {s['tasks']} tasks tuned now{_share(s)}, {s['from_database']} from the "
             "database" + _rate(s) for name, s in (("fp32", tuning["fp32"]), ("int8", tuning["int8"]),
                                        ("int8 rebuilt by the latency fallback", tuning.get("int8_rebuild")))
             if s is not None]
    return f"budget {tuning['trials']} trials per module; " + "; ".join(parts) + f" (`{tuning['database']}`)."


def _kernels(report: dict, top: int = 8) -> list[str]:
    """Each module's kernels that take the most time, as timed inside the built module."""
    lines = []
    for name, rows in (report.get("kernel_profile") or {}).items():
        if not rows:  # a target whose clock is not its speed (emulated) times no kernel
            continue
        total = max(total_us(rows), 1e-9)
        lines += [f"Slowest {name} kernels, each timed in the module ({len(rows)} kernels, "
                  f"{total / 1e3:.3f} ms a run in all):", "", "| kernel | calls | µs each | share |",
                  "|---|---|---|---|",
                  *[f"| `{k['kernel'][:60]}` | {k['calls']} | {k['us']:.1f} | {k['us'] * k['calls'] / total:.0%} |"
                    for k in rows[:top]], ""]
    return lines


def _fallback(section: dict | None) -> list[str]:
    """Which layers stay fp32 because their int8 kernel and edges measured slower than fp32."""
    if not section:
        return []
    lines = ["## Latency fallback", ""]
    if section["status"] != "ran":
        return lines + [f"Latency fallback: {section['status']}.", ""]
    kept = [row for row in section["layers"] if row["kept_fp32"]]
    if not kept:
        compared = [row for row in section["layers"] if row["fp32_us"] is not None and row["int8_us"] is not None]
        unmeasured = len(section["layers"]) - len(compared)
        return lines + [f"Every int8 layer ({len(compared)} compared) was faster than its tuned fp32 kernel "
                        "(int8 kernel plus its quantize / dequantize edges, each timed in its module)"
                        + (f"; {unmeasured} without measurements stay int8." if unmeasured else "."), ""]
    return lines + ["Kept fp32: these layers' int8 kernel plus quantize / dequantize edges measured slower "
                    "than their tuned fp32 kernel (the int8 module was rebuilt without them).", "",
                    "| layer | fp32 µs | int8 µs |", "|---|---|---|",
                    *[f"| {row['layer']} | {row['fp32_us']:.1f} | {row['int8_us']:.1f} |" for row in kept], ""]


def _share(summary: dict) -> str:
    """The trials each task was owed, and how many tasks had no record before this build."""
    if "share" not in summary:
        return ""
    return f" ({summary['share']} trials each; {summary['no_record']} had no record)"


def _rate(summary: dict) -> str:
    if not summary.get("measured"):
        return ""
    per_minute = 60 * summary["measured"] / max(summary["seconds"], 1e-9)
    return f" ({summary['measured']} candidates measured in {summary['seconds']:.0f} s, {per_minute:.0f} a minute)"


def _by_sqnr(row: dict) -> float:
    return math.inf if row["sqnr_db"] is None else row["sqnr_db"]
