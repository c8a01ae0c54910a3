"""Per-tensor int8 accuracy with no graph passes / +CLE / +CLE+absorption / +CLE+absorption+bias
correction (empirical or analytic), and per-channel for reference, each against fp32, on the
project's real models.

    .venv/bin/python bench/passes_table.py [--models mobilenet,mnist] [--out docs/passes.md]

Evaluates on the 4,000 held-out MNIST digits (top-1 with labels); calibrates on 500 of the
1,000 calibration digits (every other one: 50 per class). The hand-written part of the output
file, from its ``## Reading it`` heading on, is kept.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time
from pathlib import Path

import numpy as np

import tvmq
from tvmq.assets import bundled_mnist
from tvmq.data import Dataset

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"mobilenet": ROOT / "models" / "mnist_mobilenet.onnx", "mnist": None}
SETTINGS = [  # (label, per_channel, cle, absorb, bias correction)
    ("per-tensor, no passes", False, False, False, "none"),
    ("per-tensor, +CLE", False, True, False, "none"),
    ("per-tensor, +CLE +absorption", False, True, True, "none"),
    ("per-tensor, +CLE +absorption +bias correction (empirical)", False, True, True, "empirical"),
    ("per-tensor, +CLE +absorption +bias correction (analytic)", False, True, True, "analytic"),
    ("per-tensor, bias correction (empirical) only", False, False, False, "empirical"),
    ("per-tensor, bias correction (analytic) only", False, False, False, "analytic"),
    ("per-channel, no passes", True, False, False, "none"),
    ("per-channel, +CLE +absorption +bias correction (empirical)", True, True, True, "empirical"),
]


def table(name: str, model: Path, calib: Dataset, evaluation: Dataset) -> list[str]:
    lines = [f"### {name} (`{model.name}`)", "",
             "| setting | fp32 top-1 | int8 top-1 | agreement | cosine | ReLU6 replaced | bias-corrected layers "
             "| seconds |",
             "|---|---|---|---|---|---|---|---|"]
    for label, per_channel, cle, absorb, bias in SETTINGS:
        config = tvmq.Config(per_channel=per_channel, cle=cle, absorb_high_bias=absorb, bias_correction=bias,
                             latency_runs=1)
        start = time.perf_counter()
        report = tvmq.compile(model, calib, config=config, eval_data=evaluation).report
        acc = report["accuracy"]
        replaced = sum(len(p.get("relu6_replaced_by_relu", [])) for p in report["passes"])
        lines.append(f"| {label} | {acc['fp32_top1']:.2%} | {acc['int8_top1']:.2%} | {acc['top1_agreement']:.2%} "
                     f"| {acc['output_cosine']:.4f} | {replaced if cle else '-'} | {_corrected(report, bias)} "
                     f"| {time.perf_counter() - start:.0f} |")
        print(lines[-1], flush=True)
    return lines + [""]


def _corrected(report: dict, method: str) -> str:
    """``corrected / all`` conv-dense layers, or ``-`` without bias correction."""
    note = next((p for p in report["passes"] if p["pass"] == "CorrectBias"), None)
    if method == "none":
        return "-"
    layers = sum(row["op"] in ("Conv", "Gemm", "MatMul") for row in report["layers"])
    return f"{len(note['layers']) if note else 0} / {layers}"


def _kept_notes(path: Path) -> list[str]:
    """The hand-written tail of ``path``, from its ``## Reading it`` heading on."""
    text = path.read_text() if path.exists() else ""
    return text[text.index("## Reading it"):].splitlines() if "## Reading it" in text else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "passes.md")
    args = parser.parse_args()
    bundled, calib_path, eval_path = bundled_mnist()
    c, e = np.load(calib_path), np.load(eval_path)
    calib, evaluation = Dataset(c["x"][::2]), Dataset(e["x"], e["y"])
    lines = ["# Graph passes and per-tensor int8", "",
             f"Measured {datetime.date.today()} on {platform.processor() or platform.machine()} with "
             f"`.venv/bin/python bench/passes_table.py --models {args.models}`.", ""]
    for name in args.models.split(","):
        lines += table(name, MODELS[name] or bundled, calib, evaluation)
    args.out.write_text("\n".join(lines + _kept_notes(args.out)) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
