"""Bad input gives one clear error line, a non-zero exit, no traceback and no output directory."""

import subprocess
import sys

import numpy as np
import pytest


def _write_calib(path, array):
    np.save(path, array)
    return path


CASES = {
    "truncated model": (lambda t, m: _truncated(t, m), "calib", [], r"not a valid ONNX model"),
    "not an onnx file": (lambda t, m: _text(t), "calib", [], r"not (a valid ONNX model|an ONNX model)"),
    "missing model": (lambda t, m: t / "absent.onnx", "calib", [], r"model file not found"),
    "wrong calib shape": (None, "shape", [], r"samples of shape \(1, 14, 14\).*takes \(N, 1, 28, 28\)"),
    "wrong calib dtype": (None, "dtype", [], r"dtype float64.*takes float32"),
    "nan in calib": (None, "nan", [], r"NaN or Inf"),
    "empty calib": (None, "empty", [], r"empty"),
    "pickled calib": (None, "pickle", [], r"pickled objects"),
    "unknown target": (None, "calib", ["--target", "z80"], r"unknown target 'z80'; choose one of: arm, arm-neon, cuda, host"),
    "unknown calibrator": (None, "calib", ["--calibrator", "magic"], r"unknown calibrator 'magic'"),
    "negative trials": (None, "calib", ["--trials", "-3"], r"trials must be >= 0"),
    "bad input shape flag": (None, "calib", ["--input-shape", "input:1,x"], r"--input-shape"),
}


def _truncated(tmp, model):
    data = open(model, "rb").read()
    (tmp / "cut.onnx").write_bytes(data[: len(data) // 3])
    return tmp / "cut.onnx"


def _text(tmp):
    (tmp / "notes.onnx").write_text("this is not a model\n" * 20)
    return tmp / "notes.onnx"


def _calib(tmp, kind, bundled_calib):
    good = np.load(bundled_calib)["x"][:8]
    if kind == "calib":
        return _write_calib(tmp / "c.npy", good)
    if kind == "shape":
        return _write_calib(tmp / "c.npy", good[:, :, :14, :14].copy())
    if kind == "dtype":
        return _write_calib(tmp / "c.npy", good.astype(np.float64))
    if kind == "nan":
        bad = good.copy()
        bad[3, 0, 5, 5] = np.nan
        return _write_calib(tmp / "c.npy", bad)
    if kind == "empty":
        return _write_calib(tmp / "c.npy", good[:0])
    if kind == "pickle":
        np.savez(tmp / "c.npz", x=np.array([{"a": 1}], dtype=object))
        return tmp / "c.npz"
    raise ValueError(kind)


def _run_cli(args):
    return subprocess.run([sys.executable, "-m", "tvmq", *map(str, args)], capture_output=True, text=True,
                          timeout=600)


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_fails_cleanly(case, tmp_path, bundled):
    make_model, calib_kind, extra, message = CASES[case]
    model = make_model(tmp_path, bundled[0]) if make_model else bundled[0]
    out = tmp_path / "out"
    done = _run_cli(["compile", model, "--calib", _calib(tmp_path, calib_kind, bundled[1]), "--out", out, "--trials", "0", *extra])
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("tvmq: error:")]
    assert len(errors) == 1, done.stderr
    assert __import__("re").search(message, errors[0]), errors[0]
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")], "staging directory left behind"


def test_existing_output_directory_is_refused(tmp_path, bundled):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    done = _run_cli(["compile", bundled[0], "--calib", _calib(tmp_path, "calib", bundled[1]), "--out", out, "--trials", "0"])
    assert done.returncode != 0 and "already exists" in done.stderr and "Traceback" not in done.stderr
    assert (out / "keep.txt").read_text() == "mine"


def test_eval_labels_of_the_wrong_length_are_refused(tmp_path, bundled):
    x = np.load(bundled[2])["x"][:10]
    np.savez(tmp_path / "e.npz", x=x, y=np.zeros(7, np.int64))
    out = tmp_path / "out"
    done = _run_cli(["compile", bundled[0], "--calib", _calib(tmp_path, "calib", bundled[1]),
                     "--eval", tmp_path / "e.npz", "--out", out, "--trials", "0"])
    assert done.returncode != 0 and "labels 'y' must be 10 integers" in done.stderr
    assert "Traceback" not in done.stderr and not out.exists()
