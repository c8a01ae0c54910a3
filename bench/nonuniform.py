"""Artifact size and load time: plain int8 (W8), W4 (two weights a byte) and non-uniform weights
(``--non-uniform auto`` under a budget, or a fixed k) on real models.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/nonuniform.py --model ppocr_cls --model mnist_mobilenet

Each model is compiled with ``tvmq.compile`` (``--trials 0``, per channel, MinMax, the zoo's calibration
feeds; ``bench/adaround.py``'s models and metric) once per recipe and saved; the metric is measured on
the artifact as ``tvmq.load`` runs it, on the evaluation feeds. ``auto`` searches with the zoo's metric
(``metric=fn(run)``) and ``--max-accuracy-drop`` (default 0.01: one point). Sizes: ``params.npz`` on
disk, and the weight params' int8 vs stored bytes (the report's ``weight_storage``; with a budget the
mixed-precision search may deploy fp32, which has none: the row's ``deployed`` says so, and
``search`` keeps the non-uniform layers' own bytes). Load time:
``tvmq.load`` of every artifact, round robin, ``--loads`` times each (median), and the part of it that
reads and decodes ``params.npz``.

Writes ``bench/results/nonuniform.json`` (rows merged by model and recipe) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
RESULTS = HERE / "results" / "nonuniform.json"
RECIPES = {"W8": {}, "W4": {"weight_bits": 4}, "non-uniform 16": {"non_uniform": 16},
           "non-uniform auto": {"non_uniform": "auto"}}


def task_metric(model, evaluation, reference):
    """``metric(run)``: the model's metric on the evaluation feeds, run as one batch."""
    from coverage import _as_list

    names = list(evaluation[0])

    def metric(run) -> float:
        outputs = _as_list(run({n: np.concatenate([feed[n] for feed in evaluation]) for n in names}))
        per_feed = [[o[i:i + 1] for o in outputs] for i in range(len(evaluation))]
        return model.metric(reference, per_feed, "eval")

    metric.__name__ = model.metric_name
    return metric


def compile_recipe(model, recipe: str, calib, evaluation, reference, drop: float, out: Path) -> dict:
    import tvmq
    from adaround import cosine
    from coverage import _as_list

    budget = {"max_accuracy_drop": drop} if RECIPES[recipe].get("non_uniform") == "auto" else {}
    config = tvmq.Config(trials=0, latency_runs=1, latency_fallback=False, input_shapes=model.input_shapes,
                         **RECIPES[recipe], **budget)
    started = time.perf_counter()
    compiled = tvmq.compile(model.fetch(), calib, config=config, eval_data=evaluation if budget else None,
                            metric=task_metric(model, evaluation, reference) if budget else None)
    seconds = round(time.perf_counter() - started, 1)
    compiled.save(out, force=True)
    deployed = tvmq.load(out)
    outputs = [_as_list(deployed.run(feed)) for feed in evaluation]
    report = json.loads((out / "report.json").read_text())
    storage = report["weight_storage"]
    searched = report.get("non_uniform", {})
    return {"model": model.name, "recipe": recipe, "metric_name": model.metric_name,
            "metric": model.metric(reference, outputs, "eval"), "cosine": cosine(reference, outputs),
            "deployed": report["artifact_choice"]["artifact"], "params_npz_bytes": (out / "params.npz").stat().st_size,
            "weight_int8_bytes": storage["int8_bytes"], "weight_stored_bytes": storage["stored_bytes"],
            "weight_ratio": storage["ratio"],
            **({"levels": {row["layer"]: row["levels"] for row in searched["layers"]},
                "search": {k: searched.get(k) for k in ("threshold", "metric", "int8_metric", "fp32_metric",
                                                        "evaluations", "seconds", "int8_bytes", "stored_bytes",
                                                        "ratio")}} if searched else {}),
            "compile_seconds": seconds}


def load_times(folders: dict, loads: int) -> dict:
    """``{recipe: (median ms of tvmq.load, median ms reading + decoding params.npz)}``, round robin."""
    import tvmq
    from tvmq import weight_codecs

    whole, params = {name: [] for name in folders}, {name: [] for name in folders}
    for _ in range(loads):
        for name, folder in folders.items():
            began = time.perf_counter()
            tvmq.load(folder)
            whole[name].append(time.perf_counter() - began)
            bucket = json.loads((folder / "manifest.json").read_text())["buckets"][0]
            began = time.perf_counter()
            with np.load(folder / "params.npz") as archive:
                for key in bucket["params"]:
                    entry = bucket.get("codecs", {}).get(key)
                    weight_codecs.decode(key, archive, entry) if entry else archive[key]
            params[name].append(time.perf_counter() - began)
    return {name: (round(statistics.median(whole[name]) * 1e3, 2), round(statistics.median(params[name]) * 1e3, 2))
            for name in folders}


def decode_times(megabytes: float, loads: int) -> dict:
    """Reading + decoding one ``megabytes`` int8 weight param from an npz on disk, per codec (its values
    in [-7, 7] on 16 levels, so every codec holds it): ``{codec: (median ms, stored bytes)}``, round robin."""
    from tvmq import weight_codecs

    rng = np.random.default_rng(0)
    param = rng.choice(np.arange(-7, 9), size=int(megabytes * 2 ** 20)).astype(np.int8).clip(-7, 7)
    times, sizes = {codec: [] for codec in weight_codecs.CODECS}, {}
    with tempfile.TemporaryDirectory() as scratch:
        for codec in times:
            arrays, entry = weight_codecs.encode("w", param, codec)
            np.savez(Path(scratch) / f"{codec}.npz", **arrays)
            sizes[codec] = (entry, (Path(scratch) / f"{codec}.npz").stat().st_size)
        for _ in range(loads):
            for codec in times:
                began = time.perf_counter()
                with np.load(Path(scratch) / f"{codec}.npz") as archive:
                    weight_codecs.decode("w", archive, sizes[codec][0])
                times[codec].append(time.perf_counter() - began)
    return {codec: (round(statistics.median(times[codec]) * 1e3, 2), sizes[codec][1]) for codec in times}


def main() -> None:
    from adaround import model_data

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=[], help="a zoo model or mnist_mobilenet (repeatable)")
    parser.add_argument("--recipe", action="append", choices=list(RECIPES), help="default: all")
    parser.add_argument("--max-accuracy-drop", type=float, default=0.01, help="auto's budget (default one point)")
    parser.add_argument("--loads", type=int, default=5, help="tvmq.load runs per artifact for the load time")
    parser.add_argument("--decode-mb", type=float, help="also time reading + decoding one param of this many MB")
    parser.add_argument("--mobilenet-samples", type=int, nargs=2, default=(256, 500), metavar=("CALIB", "EVAL"))
    args = parser.parse_args()
    rows = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    for name in args.model:
        model, calib, evaluation, reference, fp32 = model_data(name, args.mobilenet_samples)
        with tempfile.TemporaryDirectory() as scratch:
            folders, measured = {}, []
            for recipe in args.recipe or list(RECIPES):
                folders[recipe] = Path(scratch) / recipe.replace(" ", "_")
                row = compile_recipe(model, recipe, calib, evaluation, reference, args.max_accuracy_drop,
                                     folders[recipe]) | {"fp32": fp32}
                if "auto" in recipe:
                    row["budget"] = args.max_accuracy_drop
                print(json.dumps(row), flush=True)
                measured.append(row)
            for row, (whole, params) in zip(measured, load_times(folders, args.loads).values()):
                row |= {"load_ms": whole, "params_load_ms": params, "loads": args.loads}
        rows = [r for r in rows if (r["model"], r["recipe"]) not in {(m["model"], m["recipe"]) for m in measured}]
        rows += measured
        RESULTS.write_text(json.dumps(rows, indent=1) + "\n")
    print(table(rows))
    if args.decode_mb:
        print(json.dumps({"decode_mb": args.decode_mb, "loads": args.loads,
                          "ms_and_file_bytes": decode_times(args.decode_mb, args.loads)}))


def table(rows: list[dict]) -> str:
    lines = ["| model | recipe | metric (fp32) | output cosine | params.npz bytes | weights int8 -> stored bytes (x) "
             "| tvmq.load ms (params read + decode) | per-layer k |", "|---|---|---|---|---|---|---|---|"]
    for row in sorted(rows, key=lambda r: (r["model"], list(RECIPES).index(r["recipe"]))):
        levels = ", ".join(f"{k}" if k else "8-bit" for k in row["levels"].values()) if row.get("levels") else ""
        lines.append(f"| {row['model']} | {row['recipe']} | {row['metric_name']} {row['metric']:.4f} ({row['fp32']:.4f}) "
                     f"| {row['cosine']:.4f} | {row['params_npz_bytes']:,} | {row['weight_int8_bytes']:,} -> "
                     f"{row['weight_stored_bytes']:,} ({row['weight_ratio']}) | {row.get('load_ms')} "
                     f"({row.get('params_load_ms')}) | {levels} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
