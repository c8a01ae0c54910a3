"""The target interface (``tvmq.targets.base``), for every registered target: what the compiler
asks of it, and that the compiler itself names no device, runner, rule set or compiler. What each
target's kernels compute is the template of ``tests/test_target_template.py``."""

import dataclasses
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tvmq import profile
from tvmq.build import build, executor_of, virtual_machine
from tvmq.choose import time_modules
from tvmq.targets import LocalCpu, TargetSpec, get_target, target_names

COMPILER = Path(__file__).parent.parent / "compiler"


def test_the_compiler_names_no_device_runner_rules_or_compiler():
    """Those belong to the targets: ``grep -rn 'tvm.cpu()\\|LocalRunner\\|"llvm"' compiler/`` finds nothing."""
    pattern = re.compile(r'tvm\.cpu\(\)|LocalRunner|"llvm"')
    hits = [f"{path.name}:{n}" for path in COMPILER.rglob("*.py")
            for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []


def test_family_modules_register_themselves():
    assert {"host", "x86", "x86-vnni", "arm", "arm-neon"} <= set(target_names())


@pytest.mark.parametrize("name", target_names())
def test_every_target_implements_the_interface(name):
    from tvm.s_tir import meta_schedule as ms

    spec = get_target(name)
    assert isinstance(spec, TargetSpec) and spec.activation_dtype in ("uint8", "int8")
    assert isinstance(spec.space("fused_add_relu"), ms.space_generator.PostOrderApply)  # generic rules
    if spec.search_space is not None and spec.target.kind.name == "llvm":  # CPUs: own spaces for packed kernels
        assert not isinstance(spec.space("fused_packed_conv2d_add"), ms.space_generator.PostOrderApply)
    assert spec.builder() is not None
    assert spec.executor.unavailable() is None or isinstance(spec.executor.unavailable(), str)
    assert isinstance(spec.executor.timed, bool)


def _add_one():
    import tvm
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((4,), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.add(x, relax.const(1.0, "float32")))
        bb.emit_func_output(y)
    return tvm.ir.IRModule(bb.get().functions)


def test_a_built_module_runs_and_is_timed_through_its_target():
    import tvm

    host = get_target("host")
    executable = build(_add_one(), host)
    assert executor_of(executable) is host.executor
    x = tvm.runtime.tensor(np.arange(4, dtype=np.float32))
    np.testing.assert_array_equal(virtual_machine(executable)["main"](x).numpy(), np.arange(4) + 1)
    timed = time_modules({"m": SimpleNamespace(executable=executable, params={})}, [((4,), "float32")], 3)
    assert isinstance(timed["m"], float)
    assert [row["calls"] for row in profile.kernel_rows(executable, [x], repeat=1)] == [1]


def test_an_untimed_target_reports_why_instead_of_a_latency():
    import tvm

    untimed = dataclasses.replace(get_target("host"), executor=LocalCpu(timed=False, why_untimed="not measured (x)"))
    executable = build(_add_one(), untimed)
    x = tvm.runtime.tensor(np.zeros(4, np.float32))
    module = SimpleNamespace(executable=executable, params={})
    assert time_modules({"m": module}, [((4,), "float32")], 3) == {"m": "not measured (x)"}
    assert profile.kernel_rows(executable, [x]) == [] and profile.in_run_rows(executable, [x], runs=1) == []


def test_an_explicit_x86_target_this_cpu_lacks_builds_but_runs_nothing_here(monkeypatch):
    """x86-vnni's code on a CPU without AVX-512 would stop at its first AVX-512 instruction: the executor
    says so, and calibration / evaluation run on the host's generic code in the target's scheme."""
    from tvmq.targets import x86

    monkeypatch.setattr(x86, "cpu_flags", lambda: {"avx2", "fma"})
    spec = get_target("x86-vnni")
    why = spec.executor.unavailable()
    assert why == "this CPU lacks avx512_vnni, avx512bw, which x86-vnni's code needs"
    assert not spec.executor.timed and why in spec.executor.why_untimed
    analysis = spec.analysis_spec()
    assert analysis is not spec and analysis.legalize is None
    assert (analysis.activation_dtype, analysis.weight_qmax) == (spec.activation_dtype, spec.weight_qmax)
    monkeypatch.setattr(x86, "cpu_flags", lambda: {"avx512_vnni", "avx512bw", "avx2"})
    assert get_target("x86-vnni").executor.unavailable() is None
