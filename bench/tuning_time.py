"""Tuning wall time: a shape model compiled with ``--tuning-time`` from an empty database, then again
on the warm one (0 new trials expected), each with the machine's load beside it.

    .venv/bin/python bench/tuning_time.py --model mobilenet_v2_224 --tuning-time 8m

Writes ``bench/results/tuning_time-<model>.json``: per run the wall time, the trials measured,
the tuning summary (per task: trials, µs before / after, seconds, why it stopped; what was left
untuned), the artifact's latency and ``os.getloadavg()`` before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"


def compile_once(path: Path, calib: list, seconds: float, db: Path) -> dict:
    """One compile with a time budget into ``db``: wall time, trials, tuning summary, latency, load."""
    import tvmq

    config = tvmq.Config(tuning_time=seconds, tuning_db=db, latency_runs=20, batch_size=8,
                         input_shapes={"input": [1, 3, 224, 224]})
    load_before, start = os.getloadavg(), time.perf_counter()
    report = tvmq.compile(path, calib, config=config).report
    wall = round(time.perf_counter() - start, 1)
    tuning = report["tuning"]
    measured = sum((tuning.get(m) or {}).get("measured", 0) for m in ("fp32", "int8", "int8_rebuild"))
    return {"wall_s": wall, "measured": measured, "latency_ms": report["latency_ms"], "tuning": tuning,
            "artifact_choice": report.get("artifact_choice"), "loadavg_before": load_before,
            "loadavg_after": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenet_v2_224")
    parser.add_argument("--tuning-time", default="8m")
    args = parser.parse_args()
    import shapes

    from tvmq.tune import parse_duration

    path = WORK / f"{args.model}.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_bytes(shapes.MODELS[args.model]().SerializeToString())
    images = np.random.default_rng(0).standard_normal((16, 1, 3, 224, 224)).astype(np.float32)
    calib = [{"input": image} for image in images]
    db = WORK / "tuning_time" / args.model
    shutil.rmtree(db, ignore_errors=True)
    seconds = parse_duration(args.tuning_time)
    runs = {"empty": compile_once(path, calib, seconds, db)}
    print(json.dumps({k: v for k, v in runs["empty"].items() if k != "tuning"}), flush=True)
    runs["warm"] = compile_once(path, calib, seconds, db)
    print(json.dumps({k: v for k, v in runs["warm"].items() if k != "tuning"}), flush=True)
    out = HERE / "results" / f"tuning_time-{args.model}.json"
    out.write_text(json.dumps({"model": args.model, "tuning_time_s": seconds, "cores": os.cpu_count(),
                               **runs}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
