"""Saved artifacts are all-or-nothing, and ``tvmq.load`` refuses any that was damaged.

    x[N,8,12,12] --conv_a--> a --relu_a--> r --conv_b--> y      (onnx_models.conv_chain)
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil

import numpy as np
import pytest

import onnx_models
import tvmq
from tvmq.cli import main


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("artifact")
    path = onnx_models.save(onnx_models.conv_chain(), tmp / "m.onnx")
    calib = np.random.default_rng(0).standard_normal((8, 8, 12, 12)).astype(np.float32)
    compiled = tvmq.compile(path, calib, config=tvmq.Config(latency_runs=1))
    compiled.save(tmp / "out")
    return tmp / "out", compiled, calib[:1]


def _rehash(folder, name):
    """Keep the manifest's sha256 in step with a changed file (a consistent but lying artifact)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"][name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _truncate(folder, name):
    data = (folder / name).read_bytes()
    (folder / name).write_bytes(data[: len(data) // 2])


def _flip(folder, name):
    data = bytearray((folder / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (folder / name).write_bytes(bytes(data))


def _edit_manifest(folder, edit):
    manifest = json.loads((folder / "manifest.json").read_text())
    edit(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _drop_param(folder):
    with np.load(folder / "params.npz") as archive:
        params = {k: archive[k] for k in archive.files[1:]}
    buffer = io.BytesIO()
    np.savez(buffer, **params)
    (folder / "params.npz").write_bytes(buffer.getvalue())
    _rehash(folder, "params.npz")


DAMAGE = {
    "truncated params": (lambda f: _truncate(f, "params.npz"), r"params\.npz does not match its sha256"),
    "truncated library": (lambda f: _truncate(f, "model.so"), r"model\.so does not match its sha256"),
    "one flipped bit in the library": (lambda f: _flip(f, "model.so"), r"model\.so does not match its sha256"),
    "missing library": (lambda f: (f / "model.so").unlink(), r"'model\.so' listed in the manifest is missing"),
    "missing params": (lambda f: (f / "params.npz").unlink(), r"'params\.npz' listed in the manifest is missing"),
    "missing manifest": (lambda f: (f / "manifest.json").unlink(), r"not a tvmq artifact \(no manifest\.json\)"),
    "manifest not JSON": (lambda f: (f / "manifest.json").write_text("{oops"), r"manifest\.json is corrupt"),
    "manifest without hashes": (lambda f: _edit_manifest(f, lambda m: m.pop("files")), r"not a valid tvmq manifest"),
    "manifest that is a list": (lambda f: (f / "manifest.json").write_text("[]"), r"not a valid tvmq manifest"),
    "manifest naming a file outside": (lambda f: _edit_manifest(f, lambda m: m["files"].update({"../m.onnx": "0"})),
                                       r"'\.\./m\.onnx' listed in the manifest is missing"),
    "params lacking a weight (hash updated)": (_drop_param, r"params\.npz lacks the parameter"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_artifact_is_refused(artifact, tmp_path, damage, capsys):
    out, _, x = artifact
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    apply, message = DAMAGE[damage]
    apply(copy)
    with pytest.raises(tvmq.TvmqError, match=message):
        tvmq.load(copy)
    np.save(tmp_path / "x.npy", x)
    assert main(["run", copy, "--input", tmp_path / "x.npy", "--output", tmp_path / "y.npy"], isolated=False) == 1
    err = capsys.readouterr().err
    assert len([line for line in err.splitlines() if line.startswith("tvmq: error:")]) == 1, err
    assert not (tmp_path / "y.npy").exists()


def test_intact_artifact_loads_and_matches(artifact):
    out, compiled, x = artifact
    np.testing.assert_array_equal(tvmq.load(out).run(x), compiled.run(x))


def test_failure_while_saving_leaves_nothing(artifact, tmp_path, monkeypatch):
    _, compiled, _ = artifact

    def broken_savez(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError):
        compiled.save(tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
