"""report.html rendered in a real headless browser (Debian's chromium; ``make browser-env``), the
figures it draws from hand-made report dicts, the worst layers' histograms, and ONNX Runtime's
times in the report (:mod:`tvmq.onnxruntime_baseline`), including where they cannot be measured.

The browser check: a copy of the page gets a script that, once the page has loaded, writes each
``<img>``'s ``naturalWidth`` (0 for an image that did not decode) into an attribute; chromium's
``--dump-dom`` returns the DOM after that, and ``--screenshot`` takes a picture of the page.
"""

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import onnx_models
from tvmq import histograms, onnxruntime_baseline
from tvmq.report import to_markdown
from tvmq.report_html import FIGURES, to_html

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make browser-env)")
MARK_IMAGES = """<script>window.addEventListener("load", () => {
  for (const img of document.images) img.setAttribute("data-natural-width", img.complete ? img.naturalWidth : -1);
  document.body.setAttribute("data-images-checked", document.images.length);
});</script>"""
BROWSER = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=10000",
           "--host-resolver-rules=MAP * ~NOTFOUND"]  # nothing may come from the network


def rendered_images(page: Path, screenshot: Path) -> list[int]:
    """Every image's ``naturalWidth`` once ``page`` has loaded in chromium; a screenshot beside."""
    probe = page.with_name(page.stem + ".probe.html")
    probe.write_text(page.read_text().replace("</body>", MARK_IMAGES + "</body>"))
    dom = subprocess.run([CHROMIUM, *BROWSER, "--dump-dom", probe.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    shot = subprocess.run([CHROMIUM, *BROWSER, f"--screenshot={screenshot}", "--window-size=1200,2400",
                           page.as_uri()], capture_output=True, text=True, timeout=120)
    assert screenshot.is_file() and screenshot.stat().st_size > 10_000, shot.stderr[-2000:]
    checked = re.search(r'data-images-checked="(\d+)"', dom)
    assert checked, f"the page did not finish loading in chromium: {dom[:500]}"
    widths = [int(w) for w in re.findall(r'<img [^>]*data-natural-width="(-?\d+)"', dom)]
    assert len(widths) == int(checked.group(1))
    return widths


def self_contained(page: str) -> bool:
    """No reference that would leave the file: every src / href is a data URI or an anchor."""
    refs = re.findall(r'(?:src|href)="([^"]*)"', page)
    return all(ref.startswith(("data:", "#")) for ref in refs) and "@import" not in page and "url(" not in page


@needs_chromium
def test_the_bundled_artifacts_page_renders_every_image_in_chromium(demo, tmp_path):
    out, compiled = demo
    page = out / "report.html"
    text = page.read_text()
    assert self_contained(text)
    copy = tmp_path / "report.html"
    shutil.copy(page, copy)
    widths = rendered_images(copy, tmp_path / "report.png")
    # the untuned bundled model: SQNR bars, the slowest kernels and the worst layers' histograms
    assert len(widths) >= 3 and all(w > 0 for w in widths), widths
    assert {"sqnr", "kernels", "histograms"} <= set(re.findall(r'<figure id="(\w+)"', text))
    for row in compiled.report["layers"]:  # the tables of report.md are on the page
        assert f"<td>{row['name']}</td>" in text


@needs_chromium
def test_a_broken_image_is_caught(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text(to_html(_hand_made()).replace("base64,iVBOR", "base64,AAAA", 1))
    widths = rendered_images(page, tmp_path / "broken.png")
    assert 0 in widths and sum(w > 0 for w in widths) == len(widths) - 1


@needs_chromium
def test_every_figure_of_a_full_report_renders(tmp_path):
    report = _hand_made()
    page = tmp_path / "full.html"
    page.write_text(to_html(report))
    assert self_contained(page.read_text())
    ids = re.findall(r'<figure id="(\w+)"', page.read_text())
    assert set(ids) == set(FIGURES) - {"kernels"}  # kernels stand in only where the fallback did not run
    widths = rendered_images(page, tmp_path / "full.png")
    assert len(widths) == len(ids) and all(w > 0 for w in widths), widths


def test_figures_are_drawn_only_for_keys_present():
    report = _hand_made()
    for key in ("sensitivity", "mixed_precision", "debug", "onnxruntime", "histograms"):
        report.pop(key)
    report["latency_fallback"] = {"status": "not run: no tuning (--trials 0)", "layers": [], "kept_fp32": []}
    ids = re.findall(r'<figure id="(\w+)"', to_html(report))
    assert ids == ["sqnr", "kernels"]


def test_a_section_of_an_unexpected_shape_costs_its_figure_not_the_page():
    report = _hand_made()
    report["sensitivity"] = [{"layer": "conv2", "metric_drop": 0.01}]  # no "name"
    page = to_html(report)
    assert '<p class=note id="sensitivity">Figure sensitivity not drawn' in page
    assert '<figure id="sqnr">' in page and "<td>conv1</td>" in page


def test_without_matplotlib_the_page_keeps_the_tables(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "matplotlib.figure", None)
    page = to_html(_hand_made())
    assert "<img" not in page and "pip install matplotlib" in page and "<td>conv1</td>" in page


def test_debug_rows_draw_simulated_and_deployed_side_by_side():
    from tvmq.report_html import _sqnr_series

    names, series = _sqnr_series(_hand_made())
    assert names == ["conv1", "conv2", "fc"] and list(series) == ["simulated", "int8", "deployed"]
    assert series["deployed"] == [31.0, 18.5, 24.0]


def test_activation_histogram_counts_every_value_once_with_clipped_ones_outside():
    collector = histograms.ActivationHistograms({"t": (0.0, 4.0)})
    values = np.array([-3.0, -0.5, 0.0, 1.0, 3.9, 4.5, 9.0], np.float32)
    collector.add("t", values)
    collector.add("t", values)
    collector.add("no range", values)  # ignored
    h = collector.to_json("t")
    assert h["edges"][0] == -1.0 and h["edges"][-1] == 5.0  # [lo, hi] widened by a quarter each side
    assert (h["below"], h["above"]) == (2, 2) and sum(h["counts"]) == 10
    assert collector.to_json("no range") is None


def test_weight_histogram_is_in_steps_of_each_channels_scale():
    weight = np.array([[1.0, -2.0], [30.0, 10.0]], np.float32)  # channel axis 0
    h = histograms.weight_histogram(weight, np.array([1 / 127, 10 / 127]), 0, -127, 127)
    steps = [127.0, -254.0, 381.0, 127.0]
    assert (h["below"], h["above"]) == (1, 1) and sum(h["counts"]) == 4
    assert h["edges"][0] == pytest.approx(min(steps)) and h["edges"][-1] == pytest.approx(max(steps))


# ---- ONNX Runtime beside tvmq -----------------------------------------------------------------

@needs_chromium
def test_a_compile_times_onnxruntime_beside_the_artifact(tmp_path, rng):
    import tvmq

    path = onnx_models.save(onnx_models.conv_chain(), tmp_path / "m.onnx")
    calib = rng.standard_normal((16, 8, 12, 12)).astype(np.float32)
    compiled = tvmq.compile(path, calib, config=tvmq.Config(onnxruntime_baseline=True, latency_runs=5))
    section = compiled.report["onnxruntime"]
    assert section["status"] == "ran", section
    assert all(section[k] > 0 for k in ("fp32_ms", "int8_ms", "tvmq_ms"))
    assert all(len(v) == 3 and None not in v for v in section["rounds_ms"].values())
    assert "on 1 calibration feeds" in section["int8_recipe"]  # the 16 samples in one batch, as tvmq ran them
    assert "speed-up over ONNX Runtime fp32" in to_markdown(compiled.report)
    out = compiled.save(tmp_path / "artifact")
    assert '<figure id="onnxruntime">' in (out / "report.html").read_text()
    assert all(w > 0 for w in rendered_images(out / "report.html", tmp_path / "report.png"))


def test_onnxruntime_that_cannot_quantize_or_run_says_why_and_never_raises(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    section = onnxruntime_baseline.measure(broken, iter([]), {"x": np.zeros((1, 2), np.float32)}, None,
                                           onnxruntime_baseline.Timing(rounds=1, runs=1))
    assert section["fp32_ms"] is None and section["int8_ms"] is None and section["status"] == "ran in part"
    lines = "\n".join(to_markdown_line(section))
    assert "fp32 not measured (its process failed)" in lines


def test_onnxruntime_missing_or_a_qdq_model_is_one_line(monkeypatch):
    monkeypatch.setattr(onnxruntime_baseline, "unavailable", lambda: "onnxruntime is not installed (onnxruntime)")
    section = onnxruntime_baseline.measure(Path("m.onnx"), [], {}, None)
    assert to_markdown_line(section) == ["ONNX Runtime: not run: onnxruntime is not installed (onnxruntime).", ""]
    qdq = onnxruntime_baseline.for_compile(Path("m.onnx"), [], [], 1, None, onnxruntime_baseline.Timing(), qdq=True)
    assert qdq["status"].startswith("not run: the model is already quantized (QDQ)")


def test_onnxruntime_is_timed_only_beside_targets_that_run_on_this_cpu():
    from tvmq.targets import get_target

    assert [onnxruntime_baseline.runs_on_this_cpu(get_target(t).executor) for t in ("host", "arm", "cuda")] == \
        [True, False, False]


def test_the_cli_turns_the_baseline_on():
    from tvmq.cli import _config, _parser

    assert _config(_parser().parse_args(["compile", "m.onnx", "--out", "o"])).onnxruntime_baseline is False
    assert _config(_parser().parse_args(["compile", "m.onnx", "--out", "o", "--onnxruntime"])).onnxruntime_baseline


def to_markdown_line(section: dict) -> list[str]:
    from tvmq.report import _onnxruntime

    return _onnxruntime(section)


def _hand_made() -> dict:
    """A report with every section report.html draws (mixed / debug / sensitivity as issue 23 item 6
    shapes them), read from nothing but this dict."""
    layers = [{"name": "conv1", "op": "Conv", "precision": "int8", "sqnr_db": 32.0},
              {"name": "relu1", "op": "Relu", "precision": "int8", "sqnr_db": 32.0},
              {"name": "conv2", "op": "Conv", "precision": "int8", "sqnr_db": 19.0},
              {"name": "fc", "op": "Gemm", "precision": "fp32 (slower in int8)", "sqnr_db": None}]
    hist = {"range": [0.0, 4.0], "edges": list(np.linspace(-1, 5, 9)), "counts": [0, 3, 9, 12, 7, 4, 1, 0],
            "below": 0, "above": 2}
    return {
        "model": "hand-made", "target": "llvm -mcpu=x", "calibrator": "minmax", "calibration_seconds": 0.1,
        "activation_dtype": "uint8", "weight_bits": 8, "per_channel": True, "eval_data": "evaluation split",
        "accuracy": {"fp32_top1": 0.99, "int8_top1": 0.98, "top1_agreement": 0.985, "output_cosine": 0.9991,
                     "num_samples": 100},
        "batch": 1, "latency_runs": 5, "latency_ms": {"fp32": 2.0, "int8": 1.0, "artifact": 1.0},
        "tuning": {"trials": 0}, "artifact_choice": None,
        "kernel_profile": {"fp32": [{"kernel": "fused_conv2d", "calls": 1, "us": 300.0}],
                           "int8": [{"kernel": "packed_conv2d_int8", "calls": 2, "us": 90.0},
                                    {"kernel": "quantize", "calls": 1, "us": 20.0}]},
        "latency_fallback": {"status": "ran", "kept_fp32": ["fc"], "rebuilt": True, "layers": [
            {"layer": "conv1", "fp32_us": 300.0, "int8_us": 110.0, "int8_kernels": ["packed_conv2d_int8", "quantize"],
             "kept_fp32": False},
            {"layer": "fc", "fp32_us": 10.0, "int8_us": 25.0, "int8_kernels": ["dense_int8"], "kept_fp32": True}]},
        "layers": layers,
        "onnxruntime": {"status": "ran", "fp32_ms": 1.8, "int8_ms": 1.2, "tvmq_ms": 1.0, "int8_recipe": "quantize_static",
                        "measured": "each engine in its own process"},
        "sensitivity": [{"name": "conv2", "metric_drop": 0.012}, {"name": "conv1", "metric_drop": 0.002}],
        "mixed_precision": {"budget": {"max_accuracy_drop": 0.005, "threshold": 0.985}, "metric": 0.986,
                            "fp32_layers": ["conv2"], "latency_ms": 1.1, "curve": [
                                {"latency_ms": 1.0, "metric": 0.98, "fp32_layers": 0},
                                {"latency_ms": 1.1, "metric": 0.986, "fp32_layers": ["conv2"]},
                                {"latency_ms": 2.0, "metric": 0.99, "fp32_layers": 3}]},
        "debug": {"per_layer": {"layers": [
            {"node": n, "tensor": n, "sqnr_db_simulated": s, "sqnr_db_int8": s - 0.5, "sqnr_db_deployed": s - 1}
            for n, s in (("conv1", 32.0), ("conv2", 19.5), ("fc", 25.0))]}},
        "histograms": [{"layer": "conv2", "tensor": "conv2_out", "sqnr_db": 19.0, "activation": hist,
                        "weight": {**hist, "range": [-127, 127], "edges": list(np.linspace(-160, 160, 9))}}],
    }
