"""What every target build script does: ``tvmq compile`` with the target's defaults, then a summary.

``build_x86.py``, ``build_arm.py`` and ``build_cuda.py`` are this with their target's defaults:
the bundled pretrained MNIST CNN and its data when no model is given, as many tuning trials as
the target can time here (``--trials``), and for emulated targets a subset of the data
(``--samples``: every sample of an emulated target runs as aarch64 code under qemu). The compile
itself is the CLI's (one error line, non-zero exit, nothing half-written, progress bars on
tuning); the summary is read back from the artifact's ``report.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np


def main(target: str, trials: int, samples: int | None, about: str, argv: list[str] | None = None) -> int:
    """Parse ``argv``, compile for ``target``, print the summary; the exit status of the compile."""
    args = _parser(target, trials, samples, about).parse_args(argv)
    from tvmq.cli import main as tvmq_main

    with tempfile.TemporaryDirectory(prefix="tvmq-build-") as scratch:
        model, calib, evaluation = _inputs(args, Path(scratch))
        argv = ["compile", model, "--calib", calib, "--out", args.out, "--target", args.target,
                "--trials", args.trials, *(["--eval", evaluation] if evaluation else []),
                *(["--force"] if args.force else []), *args.extra]
        status = tvmq_main([str(a) for a in argv])
    if status == 0:
        print(summary(Path(args.out)))
    return status


def summary(out: Path) -> str:
    """Artifact path and size, accuracy, latency (or why it was not measured here)."""
    report = json.loads((out / "report.json").read_text())
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    accuracy = report["accuracy"]
    latency = report["latency_ms"]
    lines = [f"artifact   {out} ({size / 1e6:.2f} MB) for {report['target_description']}",
             f"accuracy   {_accuracy(accuracy)}" + (f" [{report['accuracy_measured_on']}]"
                                                      if report.get("accuracy_measured_on") else ""),
             "latency    " + ", ".join(f"{k} {_ms(v)}" for k, v in latency.items()),
             f"deployed   {report['artifact_choice']['reason']}"]
    return "\n".join(lines)


def _accuracy(acc: dict) -> str:
    if not acc.get("num_samples"):
        return "not evaluated (no data)"
    top1 = (f"top-1 fp32 {acc['fp32_top1']:.4f}, int8 {acc['int8_top1']:.4f}; "
            if acc.get("int8_top1") is not None else "")
    return (f"{top1}agreement {acc['top1_agreement']:.4f}, output cosine {acc['output_cosine']:.5f} "
            f"on {acc['num_samples']} samples")


def _ms(value) -> str:
    return f"{value:.3f} ms" if isinstance(value, (int, float)) else str(value)


def _inputs(args, scratch: Path) -> tuple:
    """``(model, calib, eval)``: the user's, or the bundled MNIST CNN's; cut to ``--samples``."""
    if args.model is None:
        from tvmq.assets import bundled_mnist

        model, calib, evaluation = bundled_mnist()
    else:
        model, calib, evaluation = args.model, args.calib, args.eval
        if calib is None:
            return model, None, evaluation  # the CLI says what is missing (or takes a QDQ model)
    if args.samples:
        calib, evaluation = (_first(path, scratch, args.samples) if path else None for path in (calib, evaluation))
    return model, calib, evaluation


def _first(path: Path, scratch: Path, n: int) -> Path:
    """The first ``n`` samples of every array of an ``.npz`` (anything else is passed on as it is)."""
    path = Path(path)
    if path.suffix != ".npz":
        return path
    with np.load(path, allow_pickle=False) as data:
        np.savez(scratch / path.name, **{key: data[key][:n] for key in data.files})
    return scratch / path.name


def _parser(target: str, trials: int, samples: int | None, about: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=about, epilog="Options after `--` go to `tvmq compile` "
                                     "(e.g. -- --calibrator kld --cle); `tvmq compile --help` lists them.")
    parser.add_argument("model", nargs="?", type=Path, help="float or QDQ ONNX model (default: the bundled MNIST CNN)")
    parser.add_argument("--calib", type=Path, help="calibration data (default: the bundled model's)")
    parser.add_argument("--eval", type=Path, help="evaluation data (default: the bundled model's)")
    parser.add_argument("--out", type=Path, default=Path(f"build-{target}"), help="artifact directory (default: %(default)s)")
    parser.add_argument("--target", default=target, help="target (default: %(default)s)")
    parser.add_argument("--trials", type=int, default=trials, help="MetaSchedule trials (default: %(default)s)")
    parser.add_argument("--samples", type=int, default=samples,
                        help="use the first N calibration / evaluation samples of .npz data (default: %(default)s = all)")
    parser.add_argument("--force", action="store_true", help="replace an existing artifact directory")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


if __name__ == "__main__":
    sys.exit(main("host", 0, None, __doc__.splitlines()[0]))
