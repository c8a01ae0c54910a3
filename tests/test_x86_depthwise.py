"""The x86 depthwise kernel, int8 with its requantize epilogue, bit for bit against the numpy
integer reference: each instruction set's rule schedule and sampled ones, strides 1 and 2,
kernels 3 and 5, channels that are no multiple of the vector width. Built for every x86 int8
target; run where this CPU has its instructions (AVX-512 builds are only checked to build here)."""

import numpy as np
import pytest
import tvm

import reference
from tvmq.targets import x86_blocking, x86_depthwise, x86_sketch
from tvmq.targets.x86 import KERNELS, cpu_flags

CASES = [  # (channels, size, kernel, stride, dilation)
    (24, 9, 3, 1, 1),  # 24 channels: vectors of gcd(24, 16) = 8
    (40, 10, 3, 2, 1),
    (12, 11, 5, 1, 1),
    (7, 9, 5, 2, 1),  # 7 channels: one lane
    (48, 8, 3, 1, 2),
]
MULTIPLIER, ZERO_POINT = 0.0021, 3


def _requantized_depthwise(shape, kernel: int, stride: int, dilation: int):
    """TE: uint8 NHWC x packed int8 weight + int32 bias, requantized to uint8 as the fused kernel is:
    ``clip(round(float32(acc + bias) * M) + z, 0, 255)``. Returns the PrimFunc."""
    from tvm import te

    channels = shape[3]
    data = te.placeholder(shape, "uint8", "data")
    packed = te.placeholder((kernel, kernel, channels), "int8", "packed")
    bias = te.placeholder((channels,), "int32", "bias")
    pad = dilation * (kernel - 1) // 2
    acc = x86_depthwise.conv2d_nhwc(data, packed, (stride, stride), (pad,) * 4, (dilation, dilation))

    def requantize(*i):
        scaled = te.round((acc[i] + bias[i[3]]).astype("float32") * np.float32(MULTIPLIER)) + np.float32(ZERO_POINT)
        return te.max(te.min(scaled, np.float32(255)), np.float32(0)).astype("uint8")

    out = te.compute(acc.shape, requantize, name="requantize")
    return te.create_prim_func([data, packed, bias, out]).with_attr("global_symbol", "main")


def _expected(x, weight, bias, stride: int, dilation: int) -> np.ndarray:
    """NHWC uint8 from the NCHW int64 reference conv and requantize."""
    kernel = weight.shape[1]
    acc = reference.conv2d_int(x.transpose(0, 3, 1, 2), weight.transpose(0, 3, 1, 2), 0, stride,
                               dilation * (kernel - 1) // 2, dilation, groups=x.shape[3])
    acc = acc.transpose(0, 2, 3, 1) + bias
    return reference.requantize(acc, np.float32(MULTIPLIER), ZERO_POINT, 0, 255, np.uint8)


def _schedules(cpu):
    """The rule schedule for ``cpu`` and two sampled ones."""
    rule = x86_blocking.depthwise_tiles(cpu)
    return [("rule", 1, lambda sch: x86_sketch.schedule_depthwise(sch, rule))] + \
        [(f"sampled {seed}", seed, x86_sketch.schedule_depthwise) for seed in (2, 3)]


@pytest.mark.parametrize("name", list(KERNELS))
@pytest.mark.parametrize("channels,size,kernel,stride,dilation", CASES)
def test_the_int8_depthwise_kernel_is_exact(rng, name, channels, size, kernel, stride, dilation):
    target = tvm.target.Target({"kind": "llvm", "mcpu": KERNELS[name].mcpu})
    cpu = x86_blocking.CpuModel.of(target)
    x = rng.integers(0, 256, (1, size, size, channels)).astype(np.uint8)
    x.flat[::5] = 255  # the extremes of both operands
    weight = rng.integers(-128, 128, (channels, kernel, kernel, 1)).astype(np.int8)
    weight.flat[::3] = -128
    bias = rng.integers(-3000, 3000, channels).astype(np.int32)
    expected = _expected(x, weight, bias, stride, dilation)
    func = _requantized_depthwise(x.shape, kernel, stride, dilation)
    runs = KERNELS[name].flag in cpu_flags()
    for label, seed, schedule in _schedules(cpu):
        sch = tvm.s_tir.Schedule(tvm.IRModule({"main": func}), seed=seed)
        schedule(sch)
        library = tvm.tirx.build(sch.mod, target=target)
        if cpu.vector_bits == 512 and channels % 16 == 0:  # a full zmm of int32 accumulators
            assert "zmm" in library.inspect_source("asm"), label
        if runs:
            args = [tvm.runtime.tensor(a) for a in (x, x86_depthwise.pack_weight(weight), bias)]
            out = tvm.runtime.tensor(np.zeros(expected.shape, np.uint8))
            library(*args, out)
            np.testing.assert_array_equal(out.numpy(), expected, err_msg=label)


@pytest.mark.parametrize("mcpu,bits,registers", [("haswell", 256, 16), ("znver3", 256, 16),
                                                 ("skylake-avx512", 512, 32), ("cascadelake", 512, 32)])
def test_the_cpu_model_reads_the_vector_width_off_the_features(mcpu, bits, registers):
    """TVM 0.27's ``llvm_get_vector_width`` says 512 for every x86 CPU: AVX2 tiles were sized for
    32 registers of 512 bits."""
    cpu = x86_blocking.CpuModel.of(tvm.target.Target({"kind": "llvm", "mcpu": mcpu, "num-cores": 2}))
    assert (cpu.vector_bits, cpu.registers, cpu.cores) == (bits, registers, 2)
