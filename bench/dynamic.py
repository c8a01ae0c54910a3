"""Static against dynamic quantization on zoo models: the zoo metric of each recipe vs fp32.

    .venv/bin/python bench/dynamic.py --model minilm_l6
    .venv/bin/python bench/dynamic.py --model silero_vad_lstm --recipe "dynamic:*Conv"
    .venv/bin/python bench/dynamic.py --model minilm_l6 --recipe static --recipe "static:*.scores_*=int8,*.context_*=int8"

Each recipe is ``static``, ``dynamic`` (``Config(mode="dynamic")``: every MatMul / Gemm with a
constant weight dynamic, convs static), ``dynamic-row`` (the same, one scale per row / token) or
``MODE:PATTERN,...`` (that mode plus those layers dynamic, e.g. ``dynamic:*Conv``; ``PATTERN=PRECISION``
sets another precision, e.g. ``static:*.scores_*=int8`` makes MiniLM's ``Q K^T`` matmuls int8). Every one is
compiled with ``tvmq.compile`` (``--trials 0``, the zoo's calibration feeds) and run on the
evaluation feeds; the reference is ONNX Runtime fp32 on the same feeds (``bench/coverage.py``'s).
Prints a markdown table: the metric, nearest-neighbour agreement (for an encoder: each evaluation
embedding's nearest other one by cosine, the same as fp32's), the layers per precision and the
report's int8 / fp32 latency ratio (both timed in the same compile, interleaved; untuned: rough).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from coverage import _as_list, ort_outputs  # noqa: E402

DEFAULT_RECIPES = ("static", "dynamic", "dynamic-row")


def config_for(recipe: str, model):
    """The ``tvmq.Config`` a recipe names (see the module docstring)."""
    from tvmq.config import Config

    mode, _, patterns = recipe.partition(":")
    granularity = "row" if mode.endswith("-row") else "tensor"
    pairs = [p.strip().partition("=") for p in patterns.split(",") if p.strip()]
    layers = {pattern: precision or "dynamic" for pattern, _, precision in pairs}
    return Config(mode=mode.removesuffix("-row"), dynamic_granularity=granularity, trials=0, latency_runs=3,
                  latency_fallback=False, input_shapes=dict(model.input_shapes), layers=layers)


def measure(model, recipe: str, calib, evaluation, reference) -> dict:
    import tvmq

    started = time.perf_counter()
    compiled = tvmq.compile(model.fetch(), calib, config=config_for(recipe, model))
    outputs = [_as_list(compiled.run(feed)) for feed in evaluation]
    latency = compiled.report["latency_ms"]
    return {"recipe": recipe, "metric": model.metric(reference, outputs, "eval"),
            "neighbours": neighbour_agreement([r[0] for r in reference], [o[0] for o in outputs]),
            "layers": dict(Counter(entry["precision"] for entry in compiled.plan["layers"])),
            "ratio": latency["int8"] / latency["fp32"], "seconds": time.perf_counter() - started}


def neighbour_agreement(reference: list, candidate: list) -> float:
    """The fraction of samples whose nearest other sample (cosine of the flattened first outputs)
    is the same in ``candidate`` as in ``reference``."""
    import numpy as np

    def nearest(outputs):
        rows = np.stack([np.asarray(o, np.float64).ravel() for o in outputs])
        rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
        similarity = rows @ rows.T
        np.fill_diagonal(similarity, -np.inf)
        return similarity.argmax(axis=1)

    return float(np.mean(nearest(reference) == nearest(candidate)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="a zoo model (repeatable)")
    parser.add_argument("--recipe", action="append", help=f"default: {', '.join(DEFAULT_RECIPES)}")
    args = parser.parse_args()
    from tvmq import zoo

    print("| model | recipe | metric vs fp32 | nearest neighbour | layers | int8 / fp32 latency | s |\n"
          "|---|---|---|---|---|---|---|")
    for name in args.model:
        model = zoo.get(name)
        calib, evaluation = model.samples("calib"), model.samples("eval")
        reference = ort_outputs(model.fetch(), evaluation)
        for recipe in args.recipe or DEFAULT_RECIPES:
            row = measure(model, recipe, calib, evaluation, reference)
            layers = ", ".join(f"{n} {p}" for p, n in sorted(row["layers"].items()))
            print(f"| {name} | `{recipe}` | {row['metric']:.4f} | {row['neighbours']:.1%} | {layers} | {row['ratio']:.2f} | "
                  f"{row['seconds']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
