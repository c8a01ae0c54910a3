"""The ``cuda`` target: its int8 kernels compile to PTX with ``dp4a`` on any machine (nvcc, no
GPU needed), ``tvmq compile --target cuda`` writes an artifact whose report says what was and was
not measured, and where there is a GPU, its modules equal numpy's integer reference bit for bit.

Without a GPU the numerical tests skip, saying so; ``scripts/gpu_check.py`` is the same check as
one script for a machine that has one. The kernels' layouts, packing and epilogues are checked
on the host by the target template (``tests/test_target_template.py``: the word product emulated).
"""

import json
import re
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
from tvm import relax

from reference import conv2d_int, requantize
from tvmq.build import build, virtual_machine
from tvmq.cli import main
from tvmq.errors import TvmqError
from tvmq.targets import cuda_int8, get_target
from tvmq.targets.cuda import cuda_arch, cuda_source, gpu_present, ptx

NO_GPU = "no CUDA GPU here (tvm.cuda().exist is False)"
needs_gpu = pytest.mark.skipif(not gpu_present(), reason=NO_GPU)
needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc (the CUDA toolkit) is not installed")
SAMPLES = 256


@pytest.fixture(scope="module")
def spec():
    return get_target("cuda")


def test_cuda_takes_int8_activations_and_analyses_on_the_host(spec):
    assert spec.activation_dtype == "int8" and spec.weight_qmax == 127 and spec.features == ("dp4a",)
    assert str(spec.target.kind.name) == "cuda" and str(spec.target.attrs["arch"]) == cuda_arch()
    assert spec.analysis_spec().target.kind.name == "llvm"
    if gpu_present():
        assert spec.executor.timed
        return
    assert not spec.executor.timed and spec.executor.why_untimed == "not measured (no GPU here)"
    with pytest.raises(TvmqError, match="there is no CUDA GPU here: build with --trials 0"):
        spec.runner()


def test_the_architecture_comes_from_the_environment_else_the_gpu_else_sm_80(monkeypatch):
    monkeypatch.setenv("TVMQ_CUDA_ARCH", "sm_86")
    assert str(get_target("cuda").target.attrs["arch"]) == "sm_86"
    for bad, why in [("ampere", "not a CUDA architecture"), ("sm_52", "need __dp4a, sm_61 or later")]:
        monkeypatch.setenv("TVMQ_CUDA_ARCH", bad)
        with pytest.raises(TvmqError, match=why):
            get_target("cuda")
    monkeypatch.delenv("TVMQ_CUDA_ARCH")
    if not gpu_present():
        assert cuda_arch() == "sm_80"


def test_weight_packing_round_trips(rng):
    conv = rng.integers(-127, 128, (20, 3, 3, 5)).astype(np.int8)
    dense = rng.integers(-127, 128, (38, 24)).astype(np.int8)
    assert cuda_int8.pack_conv_weight(conv).shape == (20, 3, 3, 2)  # 5 channels -> 2 words
    np.testing.assert_array_equal(cuda_int8.unpack_conv_weight(cuda_int8.pack_conv_weight(conv), 5), conv)
    np.testing.assert_array_equal(cuda_int8.unpack_dense_weight(cuda_int8.pack_dense_weight(dense), 38), dense)


def _layers(rng):
    """An int8 NCHW conv (3x3, padding 1, 6 channels: padded to 8) with its requantize epilogue,
    and an int8 dense (K = 38: padded to 40), with numpy's integer results."""
    import tvm

    x = rng.integers(-128, 128, (1, 6, 9, 9)).astype(np.int8)
    w = rng.integers(-127, 128, (16, 6, 3, 3)).astype(np.int8)
    bias = rng.integers(-500, 500, 16).astype(np.int32)
    multiplier = np.full((1, 16, 1, 1), 0.004, np.float32)
    xd = rng.integers(-128, 128, (3, 38)).astype(np.int8)
    wd = rng.integers(-127, 128, (38, 24)).astype(np.int8)
    bb = relax.BlockBuilder()
    xv, xdv = relax.Var("x", relax.TensorType(x.shape, "int8")), relax.Var("xd", relax.TensorType(xd.shape, "int8"))
    with bb.function("main", [xv, xdv]):
        with bb.dataflow():
            acc = bb.emit(relax.op.nn.conv2d(xv, relax.const(w), padding=[1, 1], out_dtype="int32"))
            acc = bb.emit(relax.op.add(acc, relax.const(bias.reshape(1, 16, 1, 1))))
            scaled = bb.emit(relax.op.multiply(relax.op.astype(acc, "float32"), relax.const(multiplier)))
            q = bb.emit(relax.op.astype(relax.op.clip(relax.op.round(scaled), -128, 127), "int8"))
            d = bb.emit(relax.op.matmul(xdv, relax.const(wd), out_dtype="int32"))
            out = bb.emit_output(relax.Tuple([q, d]))
        bb.emit_func_output(out)
    expected_conv = requantize(conv2d_int(x, w, 0, 1, 1, 1, 1) + bias.reshape(1, 16, 1, 1), multiplier, 0,
                               -128, 127, np.int8)
    return tvm.ir.IRModule(bb.get().functions), (x, xd), (expected_conv, xd.astype(np.int64) @ wd.astype(np.int64))


@needs_nvcc
def test_int8_conv_and_dense_compile_to_ptx_with_dp4a_and_a_fused_requantize(rng, spec):
    mod, _, _ = _layers(rng)
    executable = build(spec.legalize(mod), spec)
    source = cuda_source(executable)
    kernels = dict(re.findall(r'extern "C" __global__ void __launch_bounds__\(\d+\) (\w+)\(([^)]*)\) \{', source))
    dp4a = {name for name in kernels if cuda_int8.PREFIX in name and "__dp4a" in _body(source, name)}
    conv = [name for name in dp4a if "conv2d" in name]
    assert conv and any("dense" in name for name in dp4a)
    # the dp4a kernel reads int32 words and weights: an int8 buffer among its arguments is its
    # output, requantized in the same kernel
    assert any("signed char*" in kernels[name] for name in conv)
    code = ptx(executable, spec.target)
    assert re.search(r"\bdp4a\.s32\.s32\b", code), "no dp4a instruction in the PTX"
    assert f".target {spec.target.attrs['arch']}" in code


def _body(source: str, kernel: str) -> str:
    start = source.index(f" {kernel}(", source.index(f" {kernel}(") + 1)  # the definition, after the declaration
    end = source.find('extern "C"', start)
    return source[start:end if end > 0 else None]


def _first(path, directory, n: int = SAMPLES):
    with np.load(path) as data:
        np.savez(directory / path.name, **{key: data[key][:n] for key in data.files})
    return directory / path.name


@needs_nvcc
def test_compile_for_cuda_writes_an_artifact_that_says_what_it_measured_where(tmp_path, bundled):
    from tvmq import runtime

    model, calib, evaluation = bundled
    calib, evaluation = _first(calib, tmp_path), _first(evaluation, tmp_path)
    out = tmp_path / "cuda"
    assert main(["compile", str(model), "--calib", str(calib), "--eval", str(evaluation), "--out", str(out),
                 "--target", "cuda", "--trials", "0"], isolated=False) == 0
    assert (out / "model.so").read_bytes()[:4] == b"\x7fELF"
    manifest = runtime._read_manifest(out)
    runtime._verify_files(out, manifest)
    assert manifest["device"] == "cuda:0" and json.loads(manifest["target"])["arch"] == cuda_arch()
    report = json.loads((out / "report.json").read_text())
    assert report["activation_dtype"] == "int8" and report["weight_bits"] == 8
    assert report["accuracy"]["num_samples"] == SAMPLES and report["accuracy"]["top1_agreement"] > 0.97
    assert report["accuracy_measured_on"].endswith("the host's integer simulation of the int8 model")
    if gpu_present():
        assert all(isinstance(ms, float) for ms in report["latency_ms"].values())
        return
    assert report["latency_ms"] == {m: "not measured (no GPU here)" for m in ("fp32", "int8", "artifact")}
    markdown = (out / "report.md").read_text()
    assert "not measured (no GPU here)" in markdown and "integer simulation" in markdown


@pytest.mark.skipif(gpu_present(), reason="a GPU is here: tuning runs")
def test_tuning_for_cuda_without_a_gpu_is_one_error_line_before_calibration(tmp_path, bundled, capsys):
    model, calib, _ = bundled
    assert main(["compile", str(model), "--calib", str(calib), "--out", str(tmp_path / "o"), "--target", "cuda",
                 "--trials", "4"], isolated=False) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["tvmq: error: --trials 4: tuning times candidates on the cuda device, and there is no CUDA GPU "
                   "here: build with --trials 0"]


@needs_gpu
def test_int8_conv_and_dense_on_the_gpu_equal_numpy(rng, spec):
    mod, inputs, expected = _layers(rng)
    conv, dense = virtual_machine(build(spec.legalize(mod), spec))["main"](*inputs)
    np.testing.assert_array_equal(conv.numpy(), expected[0])
    np.testing.assert_array_equal(dense.numpy(), expected[1])


@needs_gpu
def test_the_bundled_model_on_the_gpu_equals_its_host_integer_simulation(tmp_path, bundled):
    import tvmq
    from tvmq import runtime

    model, calib, evaluation = bundled
    compiled = tvmq.compile(model, _first(calib, tmp_path, 64), target="cuda")
    compiled.save(tmp_path / "a")
    deployed = runtime.load(tmp_path / "a")
    host = tvmq.compile(model, _first(calib, tmp_path, 64), target="host")
    with np.load(evaluation) as data:
        feeds = data["x"][:8]
    for sample in feeds:
        np.testing.assert_array_equal(deployed.run(sample[None]), host.run(sample[None]))


def _conv_module(rng, channels: int = 32, size: int = 14):
    """One int8 3x3 conv (padding 1) with its requantize: a tuning task of a realistic size (on a
    conv with a tiny reduction the CUDA rules' software pipelining fails to lower: TVM's limit)."""
    import tvm

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, channels, size, size), "int8"))
    w = rng.integers(-127, 128, (channels, channels, 3, 3)).astype(np.int8)
    with bb.function("main", [x]):
        with bb.dataflow():
            acc = bb.emit(relax.op.nn.conv2d(x, relax.const(w), padding=[1, 1], out_dtype="int32"))
            scaled = bb.emit(relax.op.multiply(relax.op.astype(acc, "float32"), relax.const(np.float32(0.01))))
            out = bb.emit_output(relax.op.astype(relax.op.clip(relax.op.round(scaled), -128, 127), "int8"))
        bb.emit_func_output(out)
    return tvm.ir.IRModule(bb.get().functions)


@needs_nvcc
def test_metaschedules_cuda_space_schedules_the_dp4a_conv_into_valid_gpu_code_with_dp4a(rng, spec):
    """The tuning space's sketches for the conv task (requantize fused), decisions drawn again as
    the search's replay does and post-processed as a tuning round would: one passes GPU code
    verification and compiles with dp4a. (What tuned kernels compute needs a GPU:
    scripts/gpu_check.py, and the template's tuned case where one is present.)"""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from tvmq.targets.cuda import cuda_space
    from tvmq.tune import fuse

    lowered = relax.transform.FuseTIR()(fuse(spec.legalize(_conv_module(rng)), spec))
    task = next(t for t in ms.relax_integration.extract_tasks(lowered, spec.target) if "dp4a_conv2d" in t.task_name)
    assert type(spec.space(task.task_name)) is type(cuda_space())
    context = ms.TuneContext(mod=task.dispatched[0], target=spec.target, space_generator=cuda_space(),
                             task_name=task.task_name, rand_state=1)
    valid = None
    for seed in range(1, 17):
        for sketch in context.generate_design_space():
            schedule = tvm.s_tir.Schedule(task.dispatched[0], seed=seed)
            tvm.s_tir.schedule.Trace(sketch.trace.insts, {}).apply_to_schedule(schedule, remove_postproc=True)
            if all(postproc.apply(schedule) for postproc in context.space_generator.postprocs):
                valid = valid or schedule
        if valid:
            break
    assert valid is not None, "no schedule drawn from the CUDA space passed the post-processors"
    source = tvm.tirx.build(valid.mod, target=spec.target).imports_[0].inspect_source()
    assert "__dp4a" in source
    executable = SimpleNamespace(mod=SimpleNamespace(kind="cuda", inspect_source=lambda: source, imports_=[]))
    assert re.search(r"\bdp4a\.s32\.s32\b", ptx(executable, spec.target))


def test_the_bundled_models_cuda_legalization_computes_the_same_integers_on_the_host(tmp_path, bundled, spec):
    """Every layer of the bundled CNN on the dp4a kernels (word product emulated, run here) equals
    the unlegalized int8 module bit for bit: packing, word stages, fused epilogues."""
    import tvm

    from tvmq import api
    from tvmq.build import bind_batch
    from tvmq.config import Config
    from tvmq.passes.graph import dataflow_bindings, op_name

    model, calib, evaluation = bundled
    int8 = bind_batch(api.quantize(model, _first(calib, tmp_path, 64), Config(target="cuda")).int8, 1)
    legalized = spec.legalize.on_host()(int8)
    assert not {"relax.nn.conv2d", "relax.matmul"} & {op_name(b.value) for b in dataflow_bindings(legalized["main"])}
    host = spec.analysis_spec()
    run = [virtual_machine(build(m, host)) for m in (legalized, int8)]
    with np.load(evaluation) as data:
        for sample in data["x"][:4]:
            feed = tvm.runtime.tensor(sample[None])
            np.testing.assert_array_equal(run[0]["main"](feed).numpy(), run[1]["main"](feed).numpy())
