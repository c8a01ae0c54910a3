"""Weight bit widths (``Config.weight_bits``, ``Config.layer_weight_bits``, ``--weight-bits``): b-bit
weights are integers in ``[-(2^(b-1) - 1), 2^(b-1) - 1]`` stored in int8 and run by the int8 kernels;
a target's narrower range (x86-avx2's 7 bits) wins.

    x[1,8,12,12] --conv_a 3x3 + bias + relu--> r --conv_b 1x1 + bias--> y      (onnx_models.conv_chain)
"""

import subprocess
import sys

import numpy as np
import pytest

import tvmq
from tvmq.api import quantize
from tvmq.data import Dataset
from tvmq.errors import TvmqError
from tvmq.passes.plan import bits_qmax
from tvmq.passes.qparams import weight_bits

from onnx_models import conv_chain, save


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    path = save(conv_chain(), tmp_path_factory.mktemp("bits") / "chain.onnx")
    return path, Dataset(np.random.default_rng(0).normal(size=(16, 8, 12, 12)).astype(np.float32))


@pytest.mark.parametrize("bits", [4, 5, 6, 7, 8])
def test_bits_and_their_symmetric_range(bits):
    assert bits_qmax(bits) == 2 ** (bits - 1) - 1 and weight_bits(bits_qmax(bits)) == bits


def test_4_bit_weights_deploy_in_their_range_and_the_report_says_so(chain):
    compiled = tvmq.compile(chain[0], chain[1], config=tvmq.Config(weight_bits=4, latency_runs=1))
    integers = [compiled.qdq_weights[f"weight_{i}"] for i in range(2)]
    assert all(w.dtype == np.int8 and np.abs(w).max() == 7 for w in integers)  # the whole range, no more
    assert [(e["weight_bits"], e["weight_range"]) for e in compiled.plan["layers"]] == [(4, [-7, 7])] * 2
    assert compiled.report["weight_bits"] == 4 and compiled.report["weight_range"] == [-7, 7]


@pytest.mark.parametrize("target, bits, layer_bits, want", [
    # x86-vnni's kernels take 8-bit weights on any CPU (where it cannot run, it analyses on the host's code)
    ("x86-vnni", 4, {"conv_b": 8}, {"conv_a": 7, "conv_b": 127}),  # a layer override widens back to 8 bits
    ("x86-vnni", 8, {"conv_a": 5}, {"conv_a": 15, "conv_b": 127}),
    ("x86-avx2", 8, {"conv_b": 8}, {"conv_a": 63, "conv_b": 63}),  # AVX2's 7-bit kernels win
    ("x86-avx2", 4, {}, {"conv_a": 7, "conv_b": 7}),  # 4 bits are narrower than AVX2's 7
])
def test_the_narrower_of_target_and_requested_bits_wins(chain, target, bits, layer_bits, want):
    from tvmq.targets.x86 import cpu_flags

    if target == "x86-avx2" and "avx2" not in cpu_flags():
        pytest.skip("CPU without AVX2")
    quantized = quantize(chain[0], chain[1], tvmq.Config(target=target, weight_bits=bits,
                                                              layer_weight_bits=layer_bits))
    got = {entry["node"]: entry["weight_range"][1] for entry in quantized.plan.to_json(
        quantized.program.imported.onnx_names, quantized.program.imported.nodes)["layers"]}
    assert got == want


@pytest.mark.parametrize("config, message", [
    ({"weight_bits": 3}, r"weight_bits: unsupported weight bits 3; choose one of: 8, 7, 6, 5, 4"),
    ({"weight_bits": True}, r"unsupported weight bits True"),
    ({"layer_weight_bits": {"conv_a": 16}}, r"layer_weight_bits\['conv_a'\]: unsupported weight bits 16"),
    ({"rounding": "stochastic"}, r"unknown rounding 'stochastic'; choose one of: nearest, adaround"),
    ({"adaround_iterations": 0}, r"adaround_iterations must be >= 1"),
    ({"adaround_reg_weight": -1.0}, r"adaround_reg_weight must be >= 0"),
])
def test_bad_weight_options_are_one_line_errors(config, message):
    with pytest.raises(TvmqError, match=message) as err:
        tvmq.Config(**config)
    assert "\n" not in str(err.value)


def test_a_layer_bits_pattern_naming_no_layer_is_an_error(chain):
    with pytest.raises(TvmqError, match=r"no layer is named 'conv_z'"):
        quantize(chain[0], chain[1], tvmq.Config(layer_weight_bits={"conv_z": 4}))


@pytest.mark.parametrize("flags, message", [
    (["--weight-bits", "3"], r"unsupported weight bits 3"),
    (["--layer-weight-bits", "conv_a"], r"--layer-weight-bits: expected NAME=BITS, got 'conv_a'"),
])
def test_cli_rejects_bad_weight_bits_in_one_line(chain, tmp_path, flags, message):
    np.save(tmp_path / "c.npy", np.zeros((4, 8, 12, 12), np.float32))
    done = subprocess.run([sys.executable, "-m", "tvmq", "compile", str(chain[0]), "--calib", str(tmp_path / "c.npy"),
                           "--out", str(tmp_path / "out"), *flags], capture_output=True, text=True, timeout=600)
    errors = [line for line in done.stderr.splitlines() if line.startswith("tvmq: error:")]
    assert done.returncode != 0 and "Traceback" not in done.stderr and len(errors) == 1, done.stderr
    assert __import__("re").search(message, errors[0]) and not (tmp_path / "out").exists()
