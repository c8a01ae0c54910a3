"""A depthwise conv2d for x86 (int8 and fp32): NHWC data, weights packed channel-innermost.

TVM's generic grouped conv reads an OHWI depthwise weight ``[C, KH, KW, 1]`` with a stride of
``KH*KW`` elements between neighbouring channels, so a loop vectorized over channels gathers its
weights. Packed ``[KH, KW, C]`` at compile time, every tap is one contiguous load of channels
for data and weight alike, and the accumulators vectorize over channels:

    out[n, h, w, c] = sum_{kh, kw} acc(x[n, h*s + kh*d, w*s + kw*d, c]) * acc(wt[kh, kw, c])

with ``acc`` int32 for uint8 x int8 and float32 for float32.
"""

from __future__ import annotations

import numpy as np

PREFIX = "dw_"  # name prefix of the kernel's tuning tasks


def pack_weight(ohwi: np.ndarray) -> np.ndarray:
    """A depthwise OHWI weight ``[C, KH, KW, 1]`` -> ``[KH, KW, C]``."""
    return np.ascontiguousarray(ohwi[..., 0].transpose(1, 2, 0))


def conv2d_nhwc(data, packed, strides, padding, dilation):
    """TE: NHWC data x packed ``[KH, KW, C]`` weight -> NHWC, uint8 x int8 into int32 or
    float32 x float32 into float32 (zero padding, as TVM's generic kernel pads)."""
    from tvm import te

    from .x86_int8 import output_size, pad_nhwc

    data = pad_nhwc(data, padding)
    kh, kw = packed.shape[:2]
    out_h, out_w = output_size(data, (kh, kw), strides, dilation)
    acc = "float32" if data.dtype == "float32" else "int32"
    rh, rw = te.reduce_axis((0, kh), "rh"), te.reduce_axis((0, kw), "rw")
    return te.compute(
        (data.shape[0], out_h, out_w, data.shape[3]),
        lambda n, h, w, c: te.sum(
            data[n, h * strides[0] + rh * dilation[0], w * strides[1] + rw * dilation[1], c].astype(acc)
            * packed[rh, rw, c].astype(acc), axis=[rh, rw]),
        name="depthwise_nhwc")
