"""Peak memory and wall time of calibration: bundled MNIST CNN, 100 vs 1,000 samples, per calibrator.

Every configuration runs ``tvmq.compile`` in a fresh subprocess, so peaks do not mix. The
child samples its RSS every 2 ms with psutil and splits the samples by phase using
tvmq's own log lines ("calibrating ..." and "evaluating ..."): *RSS before* is the
process just before calibration starts (model imported and folded), *calibration peak*
the highest sample while calibrating (the streaming fp32 run, including its build, and
realize), *process peak* ``getrusage``'s ``ru_maxrss`` over the whole compile
(evaluation on 100 fixed samples and the untuned builds included). Calibration state is
per tensor and must not grow with the number of samples: the two sample counts should
show the same calibration peak.

    .venv/bin/python bench/calibration_memory.py            # prints the table, updates docs/calibration.md
    .venv/bin/python bench/calibration_memory.py --no-write

The bundled splits are sorted by label, so both sample counts take the same number of
digits of every class (10 and 100 per class).
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SAMPLES = (100, 1000)
EVAL_SAMPLES = 100


def child(calibrator: str, samples: int) -> dict:
    """Compile once with ``samples`` calibration digits; return the measurements as a dict."""
    import numpy as np
    import psutil

    import tvmq
    from tvmq.assets import bundled_mnist
    from tvmq.data import Dataset

    model, calib_path, eval_path = bundled_mnist()
    with np.load(calib_path) as c, np.load(eval_path) as e:  # both sorted by label: take every class
        calib = Dataset(c["x"], c["y"])
        calib = _per_class(calib, samples // len(np.unique(calib.y)))
        evaluation = _per_class(Dataset(e["x"], e["y"]), EVAL_SAMPLES // 10)
    process = psutil.Process()
    phase = {"name": "setup"}
    peaks: dict[str, int] = {}
    first: dict[str, int] = {}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            rss = process.memory_info().rss
            name = phase["name"]
            first.setdefault(name, rss)
            peaks[name] = max(peaks.get(name, 0), rss)
            time.sleep(0.002)

    class PhaseMarker(logging.Handler):
        def emit(self, record):
            message = record.getMessage()
            if message.startswith("calibrating"):
                phase["name"] = "calibration"
            elif message.startswith("evaluating"):
                phase["name"] = "evaluation"

    api_logger = logging.getLogger("tvmq")  # the stages log calibrating / evaluating (tvmq.stages.*)
    api_logger.setLevel(logging.INFO)
    api_logger.addHandler(PhaseMarker())
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    compiled = tvmq.compile(model, calib, config=tvmq.Config(calibrator=calibrator, latency_runs=1),
                            eval_data=evaluation)
    total = time.perf_counter() - start
    stop.set()
    thread.join()
    return {
        "calibrator": calibrator, "samples": len(calib),
        "calibration_seconds": compiled.report["calibration_seconds"], "compile_seconds": round(total, 1),
        "rss_before_mb": first.get("calibration", 0) / 2**20,
        "calibration_peak_mb": peaks.get("calibration", 0) / 2**20,
        "process_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "int8_top1": compiled.report["accuracy"]["int8_top1"],
    }


def _per_class(data, k: int):
    import numpy as np

    from tvmq.data import Dataset

    keep = np.concatenate([np.flatnonzero(data.y == label)[:k] for label in np.unique(data.y)])
    return Dataset(data.x[keep].copy(), data.y[keep].copy())


def measure(calibrator: str, samples: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", calibrator, str(samples)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = [line for line in done.stderr.splitlines() if line.strip()][-1:] or ["no output"]
        return {"calibrator": calibrator, "samples": samples, "error": tail[0][:200]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    head = ("| calibrator | calibration samples | calibration s | RSS before calibration MiB "
            "| calibration peak RSS MiB | process peak RSS MiB | int8 top-1 (100 digits) |\n|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['calibrator']} | {r['samples']} | **failed**: {r['error']} | | | | |")
            continue
        lines.append(f"| {r['calibrator']} | {r['samples']:,} | {r['calibration_seconds']:.2f} | {r['rss_before_mb']:.0f} "
                     f"| {r['calibration_peak_mb']:.0f} | {r['process_peak_mb']:.0f} | {r['int8_top1']:.0%} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=2, metavar=("CALIBRATOR", "SAMPLES"), help=argparse.SUPPRESS)
    parser.add_argument("--calibrators", nargs="+", default=None, help="default: every registered calibrator")
    parser.add_argument("--no-write", action="store_true", help="print only; do not update docs/calibration.md")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]))))
        return 0

    from tvmq.passes.calibrators import calibrator_names

    rows = []
    started = time.perf_counter()
    for calibrator in args.calibrators or calibrator_names():
        for samples in SAMPLES:
            row = measure(calibrator, samples)
            print(f"{calibrator:>10} {samples:>5}: {row}", file=sys.stderr, flush=True)
            rows.append(row)
    text = table(rows)
    print(text)
    if not args.no_write:
        sys.path.insert(0, str(HERE))
        import datetime

        from calibration_table import DOC, commit, write_doc

        date = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        command = "python bench/calibration_memory.py " + " ".join(argv or sys.argv[1:])
        body = (f"## Memory and time of calibration (bundled MNIST CNN)\n\n"
                f"One fresh process per row, the same number of digits of every class, {EVAL_SAMPLES} "
                "evaluation digits, untuned. *RSS before*: just before calibration starts; *calibration "
                "peak*: sampled every 2 ms from then until evaluation starts (the fp32 streaming run with its "
                "build, then realize); *process peak*: `ru_maxrss` of the whole compile.\n\n" + text + "\n\n"
                f"_Measured {date} in {(time.perf_counter() - started) / 60:.1f} min by `{command.strip()}` at "
                f"tvmq commit {commit()}._\n")
        write_doc({"memory": body})
        print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
