"""The target build scripts (``tutorials/build_*.py``): --help, a build of the bundled model with its
final summary, and one error line with a non-zero exit on bad input (nothing written)."""

import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).parent.parent / "tutorials"
SCRIPTS = ["build_x86.py", "build_arm.py", "build_cuda.py"]


def _run(script: str, *args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TUTORIALS / script), *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=900)


@pytest.mark.parametrize("script,target", list(zip(SCRIPTS, ["host", "arm", "cuda"])))
def test_help_names_the_target_default(script, target, tmp_path):
    done = _run(script, "--help", cwd=tmp_path)
    assert done.returncode == 0 and f"(default: {target})" in done.stdout


def test_x86_build_of_the_bundled_model_ends_with_a_summary(tmp_path):
    done = _run("build_x86.py", "--trials", "0", "--out", tmp_path / "x86", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = done.stdout.strip().splitlines()[-4:]
    assert summary[0].startswith(f"artifact   {tmp_path / 'x86'} (") and "MB) for x86" in summary[0]
    assert summary[1].startswith("accuracy   top-1 fp32 0.99") and "on 4000 samples" in summary[1]
    assert summary[2].startswith("latency    int8 ") and " ms" in summary[2]
    assert summary[3] == "deployed   int8 (not chosen by time: no tuning, --trials 0)"
    assert (tmp_path / "x86" / "model.so").is_file()


def test_a_missing_model_is_one_error_line_and_writes_nothing(tmp_path):
    done = _run("build_cuda.py", tmp_path / "missing.onnx", "--calib", tmp_path / "c.npz", "--out", tmp_path / "o",
                cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and done.stderr.startswith("tvmq: error:"), done.stderr
    assert "missing.onnx" in done.stderr and not (tmp_path / "o").exists()
