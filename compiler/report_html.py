"""``report.html``: the report as one self-contained page, written next to ``report.md``.

No network: every figure is a PNG embedded as a ``data:`` URI, the style sheet is inline, the
page has no script. Each figure is a function of ``report.json``'s dict registered with
:func:`figure`, drawn only when its keys are present: per-layer SQNR (simulated / int8 /
deployed side by side when ``debug`` has per-layer rows), per-layer latency fp32 vs int8 with
the quantize / dequantize edges (the latency fallback's timings, else the slowest kernels),
ONNX Runtime's times, the ``mixed_precision`` curve, the ``sensitivity`` ranking and the
histograms of the worst layers. The tables of ``report.md`` follow, converted to HTML.

Figures are drawn with matplotlib's object API (``Figure``, no pyplot state). matplotlib is not a
dependency of the compiler: without it the page says so and keeps the tables.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import re
from typing import Callable

from .report import to_markdown

logger = logging.getLogger(__name__)
FIGURES: dict[str, tuple[str, Callable]] = {}  # key -> (caption, draw(report, Figure class) -> Figure | None)
MOST_BARS = 40
INT8, FP32, EDGE, OTHER = "#1f77b4", "#ff7f0e", "#9467bd", "#7f7f7f"


def figure(key: str, caption: str):
    """Register ``draw(report, Figure) -> Figure | None`` as one figure of the page."""
    def register(draw):
        FIGURES[key] = (caption, draw)
        return draw
    return register


def to_html(report: dict) -> str:
    """The whole page for ``report`` (report.json's dict)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        figures = "<p class=note>Figures need matplotlib (<code>pip install matplotlib</code>); the tables follow.</p>"
    else:
        figures = "\n".join(_drawn(key, caption, draw, report, Figure)
                            for key, (caption, draw) in FIGURES.items() if _has_data(draw, report))
    title = html.escape(f"tvmq report: {report.get('model', '')}")
    text = to_markdown(report)
    text = text.split("\n", 1)[1] if text.startswith("# ") else text  # its title is the page's
    return PAGE.format(title=title, figures=figures, tables=markdown_html(text))


def _drawn(key: str, caption: str, draw, report: dict, Figure) -> str:
    """One figure's HTML; a figure that cannot be drawn from a report section of an unexpected shape
    becomes a line saying so (logged), never a failed artifact."""
    try:
        return _figure_html(key, caption, draw(report, Figure))
    except Exception as err:  # noqa: BLE001
        logger.warning("report.html: figure %r not drawn: %s", key, err)
        return f'<p class=note id="{key}">Figure {html.escape(key)} not drawn: {html.escape(str(err)[:200])}</p>'


def _has_data(draw, report: dict) -> bool:
    return getattr(draw, "needs", lambda r: True)(report)


def needs(test: Callable[[dict], bool]):
    """Mark a draw function with the test of whether ``report`` has its data."""
    def mark(draw):
        draw.needs = test
        return draw
    return mark


def _figure_html(key: str, caption: str, fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (f'<figure id="{key}"><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _new(Figure, rows: int, width: float = 7.0, per_row: float = 0.22, least: float = 2.4, left: float = 0.3):
    """A figure tall enough for ``rows`` bars, with room for their labels on the left (margins set by
    hand: matplotlib's layout engines doubled the time a page took)."""
    height = max(least, 0.9 + per_row * rows)
    fig = Figure(figsize=(width, height), dpi=80)
    fig.subplots_adjust(left=left, right=0.97, top=1 - 0.2 / height, bottom=0.55 / height)
    return fig


# ---- per-layer SQNR ---------------------------------------------------------------------------

def _debug_layers(report: dict) -> list[dict]:
    """The per-layer rows of ``debug`` (a dict by step name, or ``{"steps": [...]}``) with
    ``sqnr_db_<variant>`` keys, if any."""
    debug = report.get("debug") or {}
    steps = debug.get("steps", []) if isinstance(debug.get("steps"), list) else list(debug.values())
    for step in steps:
        rows = step.get("layers") if isinstance(step, dict) else None
        if rows and any(k.startswith("sqnr_db_") for k in rows[0]):
            return rows
    return []


def _sqnr_series(report: dict) -> tuple[list[str], dict[str, list]]:
    """Layer names (graph order, the ``MOST_BARS`` lowest) and their SQNR per variant."""
    rows = _debug_layers(report)
    if rows:
        variants = [k[len("sqnr_db_"):] for k in rows[0] if k.startswith("sqnr_db_")]
        named = [(r.get("node") or r.get("name") or r.get("tensor"), {v: r.get(f"sqnr_db_{v}") for v in variants})
                 for r in rows]
    else:
        seen = {}
        for r in report.get("layers", []):
            if r.get("sqnr_db") is not None:
                seen.setdefault(r["name"], {"int8 module": r["sqnr_db"]})
        named = list(seen.items())
    lowest = sorted(named, key=lambda item: min((v for v in item[1].values() if v is not None), default=1e9))
    keep = {name for name, _ in lowest[:MOST_BARS]}
    named = [(name, values) for name, values in named if name in keep]
    variants = list(named[0][1]) if named else []
    return [n for n, _ in named], {v: [values[v] for _, values in named] for v in variants}


@figure("sqnr", "Per-layer SQNR of each layer's output against fp32 (dB, higher is better), in graph order")
@needs(lambda r: bool(_sqnr_series(r)[0]))
def draw_sqnr(report: dict, Figure):
    names, series = _sqnr_series(report)
    fig = _new(Figure, len(names) * max(1, len(series) // 2 + 1))
    ax = fig.subplots()
    height = 0.8 / len(series)
    for i, (variant, values) in enumerate(series.items()):
        ys = [k + (i - (len(series) - 1) / 2) * height for k in range(len(names))]
        ax.barh(ys, [0 if v is None else v for v in values], height=height, label=variant)
    ax.set_yticks(range(len(names)), [_short(n) for n in names], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("SQNR dB")
    ax.legend(fontsize=7, loc="lower right")
    return fig


# ---- per-layer latency ------------------------------------------------------------------------

def _fallback_rows(report: dict) -> list[dict]:
    section = report.get("latency_fallback") or {}
    return [r for r in section.get("layers", []) if r.get("fp32_us") is not None and r.get("int8_us") is not None]


@figure("layer_latency", "Per-layer latency, each kernel timed in its built module: fp32 kernel vs int8 kernel "
        "plus its quantize / dequantize edges (µs; kept fp32 marked *)")
@needs(lambda r: bool(_fallback_rows(r)))
def draw_layer_latency(report: dict, Figure):
    rows = _fallback_rows(report)[:MOST_BARS]
    own = {k["kernel"]: k["us"] for k in (report.get("kernel_profile") or {}).get("int8", [])}
    fig = _new(Figure, 2 * len(rows))
    ax = fig.subplots()
    ys = range(len(rows))
    kernel = [min(own.get((r.get("int8_kernels") or [""])[0], r["int8_us"]), r["int8_us"]) for r in rows]
    ax.barh([y - 0.2 for y in ys], [r["fp32_us"] for r in rows], height=0.4, color=FP32, label="fp32 kernel")
    ax.barh([y + 0.2 for y in ys], kernel, height=0.4, color=INT8, label="int8 kernel")
    ax.barh([y + 0.2 for y in ys], [r["int8_us"] - k for r, k in zip(rows, kernel)], left=kernel, height=0.4,
            color=EDGE, label="int8 edges (quantize / dequantize)")
    ax.set_yticks(list(ys), [_short(r["layer"]) + (" *" if r.get("kept_fp32") else "") for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("µs per run")
    ax.legend(fontsize=7, loc="lower right")
    return fig


@figure("kernels", "The slowest kernels of each module, timed inside the built module (µs per run, all calls)")
@needs(lambda r: not _fallback_rows(r) and any((r.get("kernel_profile") or {}).values()))
def draw_kernels(report: dict, Figure):
    profiles = {name: rows[:12] for name, rows in report["kernel_profile"].items() if rows}
    fig = _new(Figure, 12 * len(profiles) // 2 + 4, left=0.42)
    fig.subplots_adjust(hspace=0.35)
    for ax, (name, rows) in zip(fig.subplots(len(profiles), 1, squeeze=False)[:, 0], profiles.items()):
        ax.barh(range(len(rows)), [k["us"] * k["calls"] for k in rows], color=INT8 if "int8" in name else FP32)
        ax.set_yticks(range(len(rows)), [_short(k["kernel"], 36) for k in rows], fontsize=7)
        ax.invert_yaxis()
        ax.set_title(name, fontsize=9)
    ax.set_xlabel("µs per run")
    return fig


# ---- ONNX Runtime -----------------------------------------------------------------------------

def _engine_times(report: dict) -> dict:
    section = report.get("onnxruntime") or {}
    times = {"ONNX Runtime fp32": section.get("fp32_ms"), "ONNX Runtime int8": section.get("int8_ms"),
             "tvmq artifact": section.get("tvmq_ms")}
    return {k: v for k, v in times.items() if isinstance(v, (int, float))}


@figure("onnxruntime", "ONNX Runtime fp32 / int8 and the tvmq artifact, timed in the same rounds "
        "(each engine in its own process; ms per run, lower is better)")
@needs(lambda r: bool(_engine_times(r)))
def draw_onnxruntime(report: dict, Figure):
    times = _engine_times(report)
    fig = _new(Figure, 3, width=6, per_row=0.4, left=0.27)
    ax = fig.subplots()
    colors = [FP32 if "fp32" in k else EDGE if "ONNX" in k else INT8 for k in times]
    ax.barh(list(times), list(times.values()), color=colors)
    for y, value in enumerate(times.values()):
        ax.annotate(f"{value:.3f} ms", (value, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ms per run")
    return fig


# ---- mixed precision and sensitivity ----------------------------------------------------------

def _curve(report: dict) -> list[dict]:
    curve = (report.get("mixed_precision") or {}).get("curve") or []
    return [p for p in curve if isinstance(p.get("latency_ms"), (int, float)) and p.get("metric") is not None]


@figure("mixed_precision", "Accuracy vs latency: one point per configuration tried (label: layers kept fp32); "
        "the chosen one ringed, the budget's threshold dashed")
@needs(lambda r: bool(_curve(r)))
def draw_mixed_precision(report: dict, Figure):
    section, points = report["mixed_precision"], _curve(report)
    fig = _new(Figure, 0, width=6.5, least=4, left=0.12)
    ax = fig.subplots()
    ax.scatter([p["latency_ms"] for p in points], [p["metric"] for p in points], color=INT8, zorder=2)
    for p in points:
        count = p["fp32_layers"] if isinstance(p["fp32_layers"], int) else len(p["fp32_layers"])
        ax.annotate(str(count), (p["latency_ms"], p["metric"]), xytext=(4, 4), textcoords="offset points", fontsize=7)
    if isinstance(section.get("latency_ms"), (int, float)) and isinstance(section.get("metric"), (int, float)):
        ax.scatter([section["latency_ms"]], [section["metric"]], s=160, facecolors="none", edgecolors="red", zorder=3,
                   label="chosen")
    threshold = _threshold(section.get("budget"))
    if threshold is not None:
        ax.axhline(threshold, color="red", linestyle="--", linewidth=1, label="budget")
    ax.set_xlabel("ms per run")
    ax.set_ylabel(str(section.get("metric_name") or "metric"))
    ax.legend(fontsize=7)
    return fig


def _threshold(budget) -> float | None:
    if isinstance(budget, (int, float)):
        return float(budget)
    value = budget.get("threshold") if isinstance(budget, dict) else None
    return float(value) if isinstance(value, (int, float)) else None


@figure("sensitivity", "Sensitivity: the metric each layer costs when quantized (its drop), most sensitive first")
@needs(lambda r: bool(r.get("sensitivity")))
def draw_sensitivity(report: dict, Figure):
    rows = report["sensitivity"][:MOST_BARS]
    fig = _new(Figure, len(rows))
    ax = fig.subplots()
    ax.barh(range(len(rows)), [r.get("metric_drop") or 0.0 for r in rows], color=INT8)
    ax.set_yticks(range(len(rows)), [_short(r["name"]) for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("metric drop")
    return fig


# ---- histograms -------------------------------------------------------------------------------

@figure("histograms", "The lowest-SQNR layers: fp32 output activation (evaluation data) and weights "
        "(in steps of their channel's scale), with the clipping range (red); counts beyond it in the titles")
@needs(lambda r: bool(r.get("histograms")))
def draw_histograms(report: dict, Figure):
    layers = report["histograms"]
    fig = _new(Figure, 0, width=9, least=2.3 * len(layers), left=0.08)
    fig.subplots_adjust(hspace=0.55, wspace=0.2)
    axes = fig.subplots(len(layers), 2, squeeze=False)
    for (left, right), layer in zip(axes, layers):
        for ax, kind in ((left, "activation"), (right, "weight")):
            _histogram(ax, layer.get(kind), f"{_short(layer['layer'], 30)} {kind}")
        left.set_ylabel(f"{layer['sqnr_db']:.1f} dB", fontsize=8)
    return fig


def _histogram(ax, data: dict | None, title: str) -> None:
    if not data:
        ax.set_title(f"{title}: no data", fontsize=8)
        ax.axis("off")
        return
    edges = data["edges"]
    ax.stairs(data["counts"], edges, fill=True, color=INT8)
    for bound in data["range"]:
        ax.axvline(bound, color="red", linewidth=1)
    ax.set_yscale("symlog")
    ax.set_title(f"{title} (clipped: {data['below']} below, {data['above']} above)", fontsize=8)
    ax.tick_params(labelsize=7)


def _short(name: str, most: int = 28) -> str:
    name = str(name)
    return name if len(name) <= most else "…" + name[-(most - 1):]


# ---- report.md's tables as HTML ---------------------------------------------------------------

def markdown_html(text: str) -> str:
    """The subset of Markdown ``report.md`` uses (headings, tables, paragraphs, ``code``,
    **bold**, two-space line breaks) as HTML."""
    out, table, paragraph = [], [], []

    def flush():
        if table:
            out.append(_table_html(table))
            table.clear()
        if paragraph:
            out.append("<p>" + "<br>".join(paragraph) + "</p>")
            paragraph.clear()

    for line in text.splitlines():
        heading = re.match(r"^(#{1,4}) (.*)$", line)
        if line.startswith("|"):
            if paragraph:
                flush()
            table.append(line)
        elif heading:
            flush()
            level = len(heading.group(1)) + 1  # the page's own title is the h1
            out.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif not line.strip():
            flush()
        else:
            if table:
                flush()
            paragraph.append(_inline(line.rstrip()))
    flush()
    return "\n".join(out)


def _table_html(lines: list[str]) -> str:
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]
    body = [r for r in rows[1:] if not all(re.fullmatch(r":?-+:?", c) for c in r if c)]
    head = "".join(f"<th>{_inline(c)}</th>" for c in rows[0])
    cells = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>"


def _inline(text: str) -> str:
    text = html.escape(text, quote=False)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 1100px; padding: 0 1em; color: #222; }}
h1 {{ font-size: 1.5em; }} h2 {{ font-size: 1.25em; margin-top: 1.6em; }} h3 {{ font-size: 1.1em; }}
.figures {{ display: flex; flex-wrap: wrap; gap: 1em; }}
figure {{ margin: 0; flex: 1 1 480px; border: 1px solid #ddd; padding: .5em; }}
figure img {{ max-width: 100%; display: block; }}
figcaption {{ font-size: .85em; color: #555; }}
table {{ border-collapse: collapse; margin: .5em 0; font-size: .9em; }}
td, th {{ border: 1px solid #ccc; padding: .2em .5em; text-align: left; }}
code {{ background: #f3f3f3; padding: 0 .2em; }}
.note {{ color: #a00; }}
</style></head>
<body><h1>{title}</h1>
<section class="figures">
{figures}
</section>
<section class="tables">
{tables}
</section>
</body></html>
"""
