"""The bad-input matrix: every hostile or broken input is refused with one clear line.

Each case builds its files in a fresh folder and runs the CLI's command function in this
process (``main(argv, isolated=False)``: the same code the worker process runs, without
paying a TVM import per case; ``test_cli_errors.py`` and ``test_isolation.py`` go through
real processes). Every case must exit non-zero, print exactly one ``tvmq: error:`` line
that matches its pattern (never an internal error or a traceback), and leave no output
directory and no staging directory behind.

The tiny model (``onnx_models.conv_chain``):

    x[N,8,12,12] --conv_a--> a --relu_a--> r --conv_b--> y[N,6,12,12]
"""

from __future__ import annotations

import re
import zipfile

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnx_models
from tvmq.cli import main

CASES = {}


def case(name: str, pattern: str):
    """Register a case: ``build(tmp, monkeypatch) -> argv`` and the pattern its error line must match."""
    def register(build):
        CASES[name] = (build, pattern)
        return build
    return register


def _save(tmp, model: onnx.ModelProto, name="m.onnx"):
    path = tmp / name
    path.write_bytes(model.SerializeToString())  # no checker: many of these models are broken on purpose
    return path


def _samples(n=8, shape=(8, 12, 12), dtype=np.float32):
    return np.random.default_rng(0).standard_normal((n, *shape)).astype(dtype)


def _npy(tmp, array, name="c.npy"):
    np.save(tmp / name, array, allow_pickle=True)
    return tmp / name


def compile_argv(tmp, model=None, calib=None, extra=()):
    model = model if model is not None else _save(tmp, onnx_models.conv_chain())
    calib = calib if calib is not None else _npy(tmp, _samples())
    return ["compile", model, "--calib", calib, "--out", tmp / "out", "--trials", "0", *extra]


def _mutated(mutate):
    model = onnx_models.conv_chain()
    mutate(model)
    return model


def _node(model, name):
    return next(n for n in model.graph.node if n.name == name)


# ---- models -------------------------------------------------------------------------------

@case("model: empty file", r"is empty, not an ONNX model")
def _(tmp, mp):
    (tmp / "m.onnx").write_bytes(b"")
    return compile_argv(tmp, tmp / "m.onnx")


@case("model: truncated protobuf", r"not (a valid ONNX model|an ONNX model)|fails the ONNX checker")
def _(tmp, mp):
    data = onnx_models.conv_chain().SerializeToString()
    (tmp / "m.onnx").write_bytes(data[: len(data) // 3])
    return compile_argv(tmp, tmp / "m.onnx")


@case("model: random bytes", r"not (a valid ONNX model|an ONNX model)")
def _(tmp, mp):
    (tmp / "m.onnx").write_bytes(np.random.default_rng(1).bytes(4096))
    return compile_argv(tmp, tmp / "m.onnx")


@case("model: protobuf that is a tensor, not a model", r"not (a valid ONNX model|an ONNX model)")
def _(tmp, mp):
    (tmp / "m.onnx").write_bytes(numpy_helper.from_array(np.arange(64, dtype=np.float32), "t").SerializeToString())
    return compile_argv(tmp, tmp / "m.onnx")


@case("model: no graph", r"not an ONNX model with a graph")
def _(tmp, mp):
    return compile_argv(tmp, _save(tmp, helper.make_model(helper.make_graph([], "g", [], []))))


@case("model: a directory", r"model file not found")
def _(tmp, mp):
    (tmp / "m.onnx").mkdir()
    return compile_argv(tmp, tmp / "m.onnx")


@case("model: cyclic graph", r"fails the ONNX checker: .*topologically sorted")
def _(tmp, mp):
    return compile_argv(tmp, _save(tmp, _mutated(lambda m: _node(m, "conv_a").input.__setitem__(0, "r"))))


@case("model: dangling node input", r"fails the ONNX checker: .*'ghost'|fails the ONNX checker: .*ghost")
def _(tmp, mp):
    return compile_argv(tmp, _save(tmp, _mutated(lambda m: _node(m, "conv_b").input.__setitem__(0, "ghost"))))


@case("model: missing initializer", r"fails the ONNX checker: .*wb")
def _(tmp, mp):
    def drop(model):
        keep = [t for t in model.graph.initializer if t.name != "wb"]
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)
    return compile_argv(tmp, _save(tmp, _mutated(drop)))


@case("model: duplicate node outputs", r"fails the ONNX checker: .*(SSA|single static assignment)")
def _(tmp, mp):
    return compile_argv(tmp, _save(tmp, _mutated(lambda m: _node(m, "relu_a").output.__setitem__(0, "a"))))


@case("model: unknown opset version", r"imports opset 999 of the ONNX domain; this onnx .* knows opsets 1 to \d+")
def _(tmp, mp):
    return compile_argv(tmp, _save(tmp, _mutated(lambda m: setattr(m.opset_import[0], "version", 999))))


@case("model: unknown operator domain", r"unsupported operator Backdoor \(node 'evil'\)|Backdoor")
def _(tmp, mp):
    def add(model):
        model.opset_import.append(helper.make_opsetid("com.evil", 1))
        model.graph.node.append(helper.make_node("Backdoor", ["y"], ["z"], name="evil", domain="com.evil"))
        model.graph.output[0].name = "z"
    return compile_argv(tmp, _save(tmp, _mutated(add)))


@case("model: unsupported operator", r"unsupported operator Celu \(node 'odd_activation'\)")
def _(tmp, mp):
    def add(model):
        model.graph.node.append(helper.make_node("Celu", ["y"], ["z"], name="odd_activation"))
        model.graph.output[0].name = "z"
    return compile_argv(tmp, _save(tmp, _mutated(add)))


@case("model: symbolic input dims, no shape given", r"free dimensions .*--input-shape x:")
def _(tmp, mp):
    return compile_argv(tmp, _save(tmp, _mutated(
        lambda m: setattr(m.graph.input[0].type.tensor_type.shape.dim[2], "dim_param", "H"))))


@case("model: absurd input dims (2^40 elements)", r"absurdly large")
def _(tmp, mp):
    def huge(model):
        dims = model.graph.input[0].type.tensor_type.shape.dim
        for dim, size in zip(dims, (1, 1 << 20, 1 << 10, 1 << 10)):
            dim.Clear()
            dim.dim_value = size
    return compile_argv(tmp, _save(tmp, _mutated(huge)))


@case("model: absurd intermediate tensor (2^40 elements)", r"needs about 8\.0 TiB of memory \(weights 2\.5 KiB, activations 4\.0 TiB")
def _(tmp, mp):
    def huge(model):
        model.graph.initializer.append(numpy_helper.from_array(np.array([1 << 20, 1 << 20], np.int64), "big_shape"))
        model.graph.node.extend([
            helper.make_node("ConstantOfShape", ["big_shape"], ["big"], name="make_big"),
            helper.make_node("ReduceMax", ["big"], ["big_max"], name="reduce_big", keepdims=0),
            helper.make_node("Add", ["y", "big_max"], ["z"], name="add_big"),
        ])
        model.graph.output[0].name = "z"
    return compile_argv(tmp, _save(tmp, _mutated(huge)))


@case("model: attributes that give a negative shape (found by fuzzing)",
      r"tensor 'a' is given the empty or negative shape \(\?, 8, -2097138, 12\) by node 'conv_a' \(Conv\)")
def _(tmp, mp):
    def dilate(model):
        next(a for a in _node(model, "conv_a").attribute if a.name == "dilations").ints[0] = 1 << 20
    return compile_argv(tmp, _save(tmp, _mutated(dilate)))


@case("model: input of an unknown element type (found by fuzzing)", r"input 'x' has an unknown element type \(99\)")
def _(tmp, mp):
    return compile_argv(tmp, _save(tmp, _mutated(lambda m: setattr(m.graph.input[0].type.tensor_type, "elem_type", 99))))


@case("model: initializer dims claim 2^40 elements", r"needs about .* TiB of memory|fails the ONNX checker|"
                                                      r"shape inference failed")
def _(tmp, mp):
    def lie(model):
        weight = next(t for t in model.graph.initializer if t.name == "wb")
        weight.dims[:] = [6, 8, 1 << 19, 1 << 19]
    return compile_argv(tmp, _save(tmp, _mutated(lie)))


@case("model: more memory than available", r"needs about .* of memory .* but only 64\.0 KiB is available")
def _(tmp, mp):
    mp.setattr("tvmq.resources.available_memory", lambda: 64 << 10)
    return compile_argv(tmp)


def _external(tmp, location):
    model = onnx_models.conv_chain()
    weight = model.graph.initializer[0]
    weight.ClearField("raw_data")
    del weight.float_data[:]
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(8 * 8 * 9 * 4))):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    (tmp / "models").mkdir()
    return compile_argv(tmp, _save(tmp / "models", model))


@case("model: external data at ../../etc/passwd", r"'\.\./\.\./etc/passwd', outside the model's folder")
def _(tmp, mp):
    return _external(tmp, "../../etc/passwd")


@case("model: external data at an absolute path", r"'/etc/passwd', outside the model's folder")
def _(tmp, mp):
    return _external(tmp, "/etc/passwd")


@case("model: external data through a symlink out of the folder", r"'weights\.bin', outside the model's folder")
def _(tmp, mp):
    argv = _external(tmp, "weights.bin")
    (tmp / "models" / "weights.bin").symlink_to("/etc/passwd")
    return argv


# ---- calibration and evaluation data -------------------------------------------------------

@case("data: wrong rank", r"samples of shape \(8, 12\), but input 'x' takes \(N, 8, 12, 12\)")
def _(tmp, mp):
    return compile_argv(tmp, calib=_npy(tmp, _samples(shape=(8, 12))))


@case("data: wrong shape", r"samples of shape \(8, 10, 10\), but input 'x' takes \(N, 8, 12, 12\)")
def _(tmp, mp):
    return compile_argv(tmp, calib=_npy(tmp, _samples(shape=(8, 10, 10))))


@case("data: float64 dtype", r"has dtype float64, but input 'x' takes float32")
def _(tmp, mp):
    return compile_argv(tmp, calib=_npy(tmp, _samples(dtype=np.float64)))


@case("data: uint8 dtype", r"has dtype uint8, but input 'x' takes float32")
def _(tmp, mp):
    return compile_argv(tmp, calib=_npy(tmp, _samples().astype(np.uint8)))


@case("data: NaN", r"contains NaN or Inf")
def _(tmp, mp):
    x = _samples()
    x[2, 1, 3, 4] = np.nan
    return compile_argv(tmp, calib=_npy(tmp, x))


@case("data: Inf", r"contains NaN or Inf")
def _(tmp, mp):
    x = _samples()
    x[7, 0, 0, 0] = -np.inf
    return compile_argv(tmp, calib=_npy(tmp, x))


@case("data: empty", r"is empty: at least one sample is needed")
def _(tmp, mp):
    return compile_argv(tmp, calib=_npy(tmp, _samples(n=0)))


@case("data: a 0-d array", r"is empty: at least one sample is needed")
def _(tmp, mp):
    return compile_argv(tmp, calib=_npy(tmp, np.float32(1.0)))


@case("data: .npz that needs pickle", r"holds pickled objects")
def _(tmp, mp):
    np.savez(tmp / "c.npz", x=np.array([{"a": 1}], dtype=object))
    return compile_argv(tmp, calib=tmp / "c.npz")


@case("data: .npy that needs pickle", r"holds pickled objects")
def _(tmp, mp):
    return compile_argv(tmp, calib=_npy(tmp, np.array([{"a": 1}, None], dtype=object)))


@case("data: .npz without the input's array", r"has arrays \['inputs'\]; the model's inputs are \['x'\] "
                                                r"\(missing: x\) \(unknown: inputs\)")
def _(tmp, mp):
    np.savez(tmp / "c.npz", inputs=_samples())
    return compile_argv(tmp, calib=tmp / "c.npz")


@case("data: truncated .npy", r"is truncated: its header declares 36864 bytes of data, the file holds 4608")
def _(tmp, mp):
    data = _npy(tmp, _samples()).read_bytes()
    (tmp / "c.npy").write_bytes(data[: len(data) - 7 * 4608])
    return compile_argv(tmp, calib=tmp / "c.npy")


@case("data: .npz member declaring 2^40 floats (zip bomb)", r"declares an array of shape \(1099511627776,\) "
                                                           r"float32 \(4\.0 TiB\)")
def _(tmp, mp):
    header = {"descr": "<f4", "fortran_order": False, "shape": (1 << 40,)}
    member = _npy_header(header) + b"\0" * 64
    with zipfile.ZipFile(tmp / "c.npz", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", member)
    return compile_argv(tmp, calib=tmp / "c.npz")


def _npy_header(header: dict) -> bytes:
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()  # magic string and header, as np.save writes them


@case("data: random bytes named .npy", r"is not a readable numpy file")
def _(tmp, mp):
    (tmp / "c.npy").write_bytes(np.random.default_rng(2).bytes(1000))
    return compile_argv(tmp, calib=tmp / "c.npy")


@case("data: unknown file type", r"must be a \.npy or \.npz file or a directory of \.npz files, got c\.csv")
def _(tmp, mp):
    (tmp / "c.csv").write_text("1,2,3\n")
    return compile_argv(tmp, calib=tmp / "c.csv")


@case("data: missing file", r"calibration data file not found")
def _(tmp, mp):
    return compile_argv(tmp, calib=tmp / "absent.npy")


@case("data: eval labels of the wrong length", r"evaluation data e\.npz labels 'y' must be 8 integers, got shape \(5,\)")
def _(tmp, mp):
    np.savez(tmp / "e.npz", x=_samples(), y=np.zeros(5, np.int64))
    return compile_argv(tmp, extra=["--eval", tmp / "e.npz"])


@case("data: eval labels that are floats", r"labels 'y' must be 8 integers, got shape \(8,\) float32")
def _(tmp, mp):
    np.savez(tmp / "e.npz", x=_samples(), y=np.zeros(8, np.float32))
    return compile_argv(tmp, extra=["--eval", tmp / "e.npz"])


@case("data: eval samples of the wrong shape", r"evaluation data e\.npy has samples of shape \(8, 12, 13\)")
def _(tmp, mp):
    return compile_argv(tmp, extra=["--eval", _npy(tmp, _samples(shape=(8, 12, 13)), "e.npy")])


# ---- command line --------------------------------------------------------------------------

@case("cli: unknown target", r"unknown target 'z80'; choose one of: arm, arm-neon, cuda, host")
def _(tmp, mp):
    return compile_argv(tmp, extra=["--target", "z80"])


@case("cli: unknown calibrator", r"unknown calibrator 'magic'; choose one of: .*minmax")
def _(tmp, mp):
    return compile_argv(tmp, extra=["--calibrator", "magic"])


@case("cli: negative trials", r"trials must be >= 0, got -3")
def _(tmp, mp):
    return compile_argv(tmp, extra=["--trials", "-3"])


@case("cli: zero batch size", r"batch_size must be >= 1, got 0")
def _(tmp, mp):
    return compile_argv(tmp, extra=["--batch-size", "0"])


@case("cli: unknown bias correction", r"unknown bias correction 'magic'")
def _(tmp, mp):
    return compile_argv(tmp, extra=["--bias-correction", "magic"])


@case("cli: malformed --input-shape", r"--input-shape 'x:1,a' is not NAME:D0,D1")
def _(tmp, mp):
    return compile_argv(tmp, extra=["--input-shape", "x:1,a"])


@case("cli: --input-shape for an unknown input", r"--input-shape names unknown input\(s\) \['image'\]")
def _(tmp, mp):
    return compile_argv(tmp, extra=["--input-shape", "image:1,8,12,12"])


@case("cli: --input-shape that contradicts the model", r"cannot set it to \(1, 3, 12, 12\)")
def _(tmp, mp):
    return compile_argv(tmp, extra=["--input-shape", "x:1,3,12,12"])


@case("cli: output directory exists", r"already exists \(pass --force to replace it\)")
def _(tmp, mp):
    (tmp / "out").mkdir()
    (tmp / "out" / "keep.txt").write_text("mine")
    return compile_argv(tmp)


@case("cli: output path is a file", r"exists and is not a directory")
def _(tmp, mp):
    (tmp / "out").write_text("mine")
    return compile_argv(tmp, extra=["--force"])


@case("cli: output parent is a file", r"cannot write output directory .*: .*parent is not a directory")
def _(tmp, mp):
    (tmp / "parent").write_text("a file")
    argv = compile_argv(tmp)
    argv[argv.index("--out") + 1] = tmp / "parent" / "out"
    return argv


@case("cli: unwritable output directory", r"cannot write output directory /proc/tvmq-out: /proc is not writable")
def _(tmp, mp):
    argv = compile_argv(tmp)
    argv[argv.index("--out") + 1] = "/proc/tvmq-out"
    return argv


@case("cli: run on a folder that is not an artifact", r"is not a tvmq artifact \(no manifest\.json\)")
def _(tmp, mp):
    (tmp / "art").mkdir()
    return ["run", tmp / "art", "--input", _npy(tmp, _samples(n=1)), "--output", tmp / "out"]


# ---- the test ------------------------------------------------------------------------------

def test_the_matrix_is_large_enough():
    assert len(CASES) >= 30
    assert len({name.split(":")[0] for name in CASES}) == 3


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_refused_in_one_line(name, tmp_path, monkeypatch, capsys):
    build, pattern = CASES[name]
    argv = build(tmp_path, monkeypatch)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and not p.is_symlink()}

    code = main(argv, isolated=False)

    err = capsys.readouterr().err
    assert code != 0
    errors = [line for line in err.splitlines() if line.startswith("tvmq: error:")]
    assert len(errors) == 1, err
    assert "internal error" not in err and "Traceback" not in err, err
    assert re.search(pattern, errors[0]), errors[0]
    after = {p for p in tmp_path.rglob("*") if p.is_file() and not p.is_symlink()}
    assert after == set(before), f"files appeared or vanished: {sorted(map(str, after ^ set(before)))}"
    assert all(p.read_bytes() == data for p, data in before.items()), "an input file was modified"
    assert not [p for p in tmp_path.rglob(".*partial")], "a staging directory was left behind"
    assert not (tmp_path / "out").exists() or (tmp_path / "out").is_file() or \
        [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]
