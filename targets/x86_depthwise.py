"""An int8 depthwise conv2d for x86: NHWC data, weights packed channel-innermost.

TVM's generic grouped conv reads an OHWI depthwise weight ``[C, KH, KW, 1]`` with a stride of
``KH*KW`` bytes between neighbouring channels, so a loop vectorized over channels gathers its
weights. Packed ``[KH, KW, C]`` at compile time, every tap is one contiguous load of channels
for data and weight alike, and the int32 accumulators vectorize over channels:

    out[n, h, w, c] = sum_{kh, kw} int32(x[n, h*s + kh*d, w*s + kw*d, c]) * int32(wt[kh, kw, c])
"""

from __future__ import annotations

import numpy as np

PREFIX = "dw_"  # name prefix of the kernel's tuning tasks


def pack_weight(ohwi: np.ndarray) -> np.ndarray:
    """A depthwise OHWI weight ``[C, KH, KW, 1]`` -> ``[KH, KW, C]``."""
    return np.ascontiguousarray(ohwi[..., 0].transpose(1, 2, 0))


def conv2d_nhwc(data, packed, strides, padding, dilation):
    """TE: uint8 NHWC data x packed int8 ``[KH, KW, C]`` weight -> int32 NHWC (zero padding,
    as TVM's generic kernel pads)."""
    from tvm import te, topi

    top, left, bottom, right = padding
    if any((top, left, bottom, right)):
        data = topi.nn.pad(data, [0, top, left, 0], [0, bottom, right, 0], name="pad")
    batch, height, width, channels = data.shape
    kh, kw = packed.shape[:2]
    out_h = (height - (kh - 1) * dilation[0] - 1) // strides[0] + 1
    out_w = (width - (kw - 1) * dilation[1] - 1) // strides[1] + 1
    rh, rw = te.reduce_axis((0, kh), "rh"), te.reduce_axis((0, kw), "rw")
    return te.compute(
        (batch, out_h, out_w, channels),
        lambda n, h, w, c: te.sum(
            data[n, h * strides[0] + rh * dilation[0], w * strides[1] + rw * dilation[1], c].astype("int32")
            * packed[rh, rw, c].astype("int32"), axis=[rh, rw]),
        name="depthwise_nhwc")
