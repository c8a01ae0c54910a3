"""A depthwise conv2d for x86 (int8 and fp32): NHWC data, weights packed channel-innermost.

TVM's generic grouped conv reads an OHWI depthwise weight ``[C, KH, KW, 1]`` with a stride of
``KH*KW`` elements between neighbouring channels, so a loop vectorized over channels gathers its
weights. Packed ``[KH, KW, C]`` at compile time, every tap is one contiguous load of channels
for data and weight alike, and the accumulators vectorize over channels:

    out[n, h, w, c] = sum_{kh, kw} float32(x[n, h*s + kh*d, w*s + kw*d, c]) * float32(wt[kh, kw, c])

8-bit data x 8-bit weights accumulate in float32 too, exactly: every product and partial sum is
an integer of magnitude at most ``KH KW 255 128``, below ``2**24`` (float32's exact integers)
for up to :data:`EXACT_TAPS` taps, so each fused multiply-add rounds nothing and the sum, cast to
int32, is the int32 sum bit for bit. Without a dot-product instruction this is the cheapest
exact int8 depthwise on x86: one FMA per vector of taps, as fp32 has, against a widen
(``vpmovzxbd``), a multiply (``vpmaddwd``) and an add for int32 lanes; the data is widened once
per padded pixel, in the pad each parallel task computes. Larger kernels accumulate in int32.
"""

from __future__ import annotations

import numpy as np

PREFIX = "dw_"  # name prefix of the kernel's tuning tasks
EXACT_TAPS = (2**24 - 1) // (255 * 128)  # 8-bit taps whose float32 sum stays exact: 514


def pack_weight(ohwi: np.ndarray) -> np.ndarray:
    """A depthwise OHWI weight ``[C, KH, KW, 1]`` -> ``[KH, KW, C]``, float32 (exact for 8-bit
    weights) where the kernel accumulates in float32."""
    packed = np.ascontiguousarray(ohwi[..., 0].transpose(1, 2, 0))
    return packed.astype(np.float32) if _float_accumulation(packed.shape, packed.dtype) else packed


def _float_accumulation(kernel_shape, dtype) -> bool:
    return np.dtype(str(dtype)) == np.float32 or int(kernel_shape[0]) * int(kernel_shape[1]) <= EXACT_TAPS


def conv2d_nhwc(data, packed, strides, padding, dilation):
    """TE: NHWC data x packed ``[KH, KW, C]`` weight -> NHWC, 8-bit x 8-bit into int32 (summed in
    float32, exact, when ``packed`` is float32) or float32 x float32 into float32 (zero padding,
    as TVM's generic kernel pads)."""
    from tvm import te

    from .x86_int8 import output_size, pad_nhwc

    integer = data.dtype != "float32"
    acc = "float32" if packed.dtype == "float32" else "int32"
    if integer and acc == "float32":
        data = te.compute(data.shape, lambda *i: data[i].astype(acc), name="widen")  # inlined into the pad
    data = pad_nhwc(data, padding)
    kh, kw = packed.shape[:2]
    out_h, out_w = output_size(data, (kh, kw), strides, dilation)
    rh, rw = te.reduce_axis((0, kh), "rh"), te.reduce_axis((0, kw), "rw")
    out = te.compute(
        (data.shape[0], out_h, out_w, data.shape[3]),
        lambda n, h, w, c: te.sum(
            data[n, h * strides[0] + rh * dilation[0], w * strides[1] + rw * dilation[1], c].astype(acc)
            * packed[rh, rw, c].astype(acc), axis=[rh, rw]),
        name="depthwise_nhwc")
    if integer and acc == "float32":
        return te.compute(out.shape, lambda *i: out[i].astype("int32"), name="exact_int32")
    return out
