"""x86 fp32 convs on packed weights: NHWC data, weights blocked by output channel.

The direct convolution of oneDNN and TOPI's ``conv2d_NCHWc``: weights are packed at
compile time to

    OHWI [O, KH, KW, I]  ->  [O/lanes, KH, KW, I, lanes]

(output channels zero-padded to whole blocks of ``lanes``, 16 float32 on AVX-512, 8 on
AVX2), so for each input channel and tap one vector load gives ``lanes`` output channels'
weights, which meet one broadcast input value in one FMA per accumulator of the register
tile (``targets/x86_sketch.py``). The tvmq fp32 baseline and the layers the latency
fallback keeps fp32 run on it; TVM's generic NCHW conv, tuned alike, was ~2x slower than
ONNX Runtime's.
"""

from __future__ import annotations

import numpy as np

from .x86_int8 import first_channels, output_size, pad_nhwc, round_up

PREFIX = "f32_"  # name prefix of the kernel's tuning tasks


def pack_conv_weight(ohwi: np.ndarray, lanes: int) -> np.ndarray:
    """OHWI float32 -> ``[O/lanes, KH, KW, I, lanes]``, zero-padded to whole blocks."""
    o, kh, kw, i = ohwi.shape
    padded = np.zeros((round_up(o, lanes), kh, kw, i), np.float32)
    padded[:o] = ohwi
    return np.ascontiguousarray(padded.reshape(-1, lanes, kh, kw, i).transpose(0, 2, 3, 4, 1))


def conv2d_nhwc(data, packed, out_channels: int, strides, padding, dilation):
    """TE: float32 NHWC data x packed weight -> float32 NHWC with ``out_channels`` channels."""
    from tvm import te

    data = pad_nhwc(data, padding)
    blocks, kh, kw, channels, lanes = packed.shape
    out_h, out_w = output_size(data, (kh, kw), strides, dilation)
    rh, rw, rc = te.reduce_axis((0, kh), "rh"), te.reduce_axis((0, kw), "rw"), te.reduce_axis((0, channels), "rc")
    acc = te.compute(
        (data.shape[0], out_h, out_w, blocks * lanes),
        lambda n, h, w, o: te.sum(
            data[n, h * strides[0] + rh * dilation[0], w * strides[1] + rw * dilation[1], rc]
            * packed[o // lanes, rh, rw, rc, o % lanes], axis=[rh, rw, rc]),
        name="conv2d_packed_fp32")
    return first_channels(acc, out_channels)
