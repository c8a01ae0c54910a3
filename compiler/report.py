"""The accuracy and latency report: ``report.json`` for machines, ``report.md`` for people."""

from __future__ import annotations

import math


def layer_rows(nodes: dict, record: dict, sqnr: dict) -> list[dict]:
    """One row per ONNX node in graph order, keyed by the user's node names.

    A node fused into a layer (a conv followed by its ReLU) shows the SQNR of the fused
    layer's output. A node whose output a pass folded away (a BatchNorm's conv, say) takes
    the precision of the tensor it was folded into, the next node's.
    """
    precision, fused_into = record["precision"], record["fused_into"]
    rows, pending = [], []
    for tensor, (node, op) in nodes.items():
        row = {"name": node, "op": op, "precision": precision.get(tensor),
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


def to_markdown(report: dict) -> str:
    acc, lat = report["accuracy"], report["latency_ms"]
    lines = [f"# tvmq report: {report['model']}", "",
             f"Target: `{report['target']}`  ",
             f"Calibrator: {report['calibrator']} ({report['calibration_seconds']} s); activations "
             f"{report['activation_dtype']}, weights {_weights(report)} "
             f"{'per channel' if report['per_channel'] else 'per tensor'}; "
             f"evaluated on {acc['num_samples']} samples ({report['eval_data']})", "",
             "## Accuracy", "", "| metric | fp32 | int8 |", "|---|---|---|"]
    if acc["fp32_top1"] is not None:
        lines.append(f"| top-1 | {acc['fp32_top1']:.2%} | {acc['int8_top1']:.2%} |")
    lines += [f"| top-1 agreement with fp32 | | {acc['top1_agreement']:.2%} |",
              f"| output cosine similarity | | {acc['output_cosine']:.5f} |", "",
              "## Latency (batch {}, median of {} runs)".format(report["batch"], report["latency_runs"]), "",
              "| module | ms |", "|---|---|",
              f"| fp32 | {lat['fp32']:.3f} |", f"| int8 | {lat['int8']:.3f} |",
              f"| speed-up | {lat['fp32'] / lat['int8']:.2f}x |", "",
              f"Tuning: {_tuning(report['tuning'])}", "", *_kernels(report["tuning"]),
              "## Layers", "", "Lowest SQNR first: the layers that hurt most.", "",
              "| node | op | precision | SQNR dB |", "|---|---|---|---|"]
    for row in sorted(report["layers"], key=_by_sqnr):
        sqnr = "exact" if row["sqnr_db"] is None else f"{row['sqnr_db']:.1f}"
        lines.append(f"| {row['name']} | {row['op']} | {row['precision']} | {sqnr} |")
    return "\n".join(lines) + "\n"


def _weights(report: dict) -> str:
    """``int8``, or ``int8 (7-bit, [-63, 63])`` where the target's kernel needs narrower weights."""
    bits = report.get("weight_bits", 8)
    return "int8" if bits == 8 else f"int8 ({bits}-bit, [{report['weight_range'][0]}, {report['weight_range'][1]}])"


def _tuning(tuning: dict) -> str:
    if not tuning["trials"]:
        return "none (--trials 0)."
    parts = [f"{name}: {s['tuned_now']} of {s['tasks']} tasks tuned now, {s['from_database']} from the database"
             + _rate(s) for name, s in (("fp32", tuning["fp32"]), ("int8", tuning["int8"]))]
    return f"budget {tuning['trials']} trials per module; " + "; ".join(parts) + f" (`{tuning['database']}`)."


def _kernels(tuning: dict, top: int = 8) -> list[str]:
    """The slowest tuned kernels of each module (MetaSchedule's measurements), most time first."""
    lines = []
    for name in ("fp32", "int8"):
        kernels = ((tuning.get(name) or {}).get("kernels") or [])[:top]
        if kernels:
            lines += [f"Slowest {name} kernels (tuned latency):", "", "| kernel | calls | µs each |", "|---|---|---|",
                      *[f"| `{k['kernel'][:60]}` | {k['calls']} | {k['us']:.1f} |" for k in kernels], ""]
    return lines


def _rate(summary: dict) -> str:
    if not summary.get("measured"):
        return ""
    per_minute = 60 * summary["measured"] / max(summary["seconds"], 1e-9)
    return f" ({summary['measured']} candidates measured in {summary['seconds']:.0f} s, {per_minute:.0f} a minute)"


def _by_sqnr(row: dict) -> float:
    return math.inf if row["sqnr_db"] is None else row["sqnr_db"]
