"""CUDA int8 kernels: NHWC conv2d and dense as sums of ``__dp4a`` over 32-bit words of 4 int8.

``__dp4a(a, b, c)`` (sm_61 and later) reads 4 signed bytes from each of two 32-bit words and
adds their 4 products to the int32 ``c``: exact, no saturation, so activations and weights
are both symmetric ``int8`` in the full range. The kernels work on words, 4 input channels
each (byte ``k`` of a word is channel ``4 c + k``, little-endian, as the weights are packed):

    weights (compile time)  OHWI [O, KH, KW, I] -> int32 [O, KH, KW, I/4];  [K, N] -> int32 [N, K/4]
    activations (in the kernel, a stage of its own)
        xw[n, h, w, c] = word(x[n, h - top, w - left, 4c .. 4c + 3])   (0 outside: the zero padding)
    acc[n, h, w, o] = sum_{rh, rw, c} dp4a(xw[n, h*s + rh*d, w*s + rw*d, c], W[o, rh, rw, c])
    acc[m, o]       = sum_{c} dp4a(xw[m, c], W[o, c])

(channels / K zero-padded to a multiple of 4). TE cannot load 4 bytes as one word, so the
activation stage packs them with shifts, once per input element rather than per product.
``dot`` is the word product: :data:`DP4A` (``__dp4a``, CUDA only) or :data:`EMULATED` (the
same sum with shifts, for checking these kernels' layouts on any CPU).
"""

from __future__ import annotations

import numpy as np

from .x86_int8 import round_up

PREFIX = "dp4a_"  # name prefix of the kernels (their tuning tasks and schedules find them by it)
CONV_BLOCK, DENSE_BLOCK, WORDS_BLOCK = "conv2d_dp4a", "dense_dp4a", "int8_words"
REDUCE = 4  # int8 values in one word
DP4A, EMULATED = "dp4a", "emulated"


def pack_conv_weight(ohwi: np.ndarray) -> np.ndarray:
    """OHWI int8 -> int32 words ``[O, KH, KW, I/4]``, input channels zero-padded to a multiple of 4."""
    o, kh, kw, i = ohwi.shape
    padded = np.zeros((o, kh, kw, round_up(i, REDUCE)), np.int8)
    padded[..., :i] = ohwi
    return _words(padded)


def pack_dense_weight(kn: np.ndarray) -> np.ndarray:
    """``[K, N]`` int8 -> int32 words ``[N, K/4]``, K zero-padded to a multiple of 4."""
    k, n = kn.shape
    padded = np.zeros((n, round_up(k, REDUCE)), np.int8)
    padded[:, :k] = kn.T
    return _words(padded)


def unpack_conv_weight(words: np.ndarray, in_channels: int) -> np.ndarray:
    """The inverse of :func:`pack_conv_weight`: OHWI int8."""
    return _bytes(words)[..., :in_channels]


def unpack_dense_weight(words: np.ndarray, in_features: int) -> np.ndarray:
    """The inverse of :func:`pack_dense_weight`: ``[K, N]`` int8."""
    return _bytes(words)[:, :in_features].T


def _words(int8: np.ndarray) -> np.ndarray:
    """Each 4 consecutive bytes of the last axis as one little-endian int32."""
    return np.ascontiguousarray(int8).view("<i4").astype(np.int32)


def _bytes(words: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(words.astype("<i4")).view(np.int8)


def conv2d_nhwc(data, weight, strides, padding, dilation, dot: str = DP4A):
    """TE: int8 NHWC data x int32-word weight ``[O, KH, KW, I/4]`` -> int32 NHWC."""
    from tvm import te

    out_channels, kh, kw, words = (int(d) for d in weight.shape)
    xw = activation_words(data, padding, words)
    out_h, out_w = ((int(xw.shape[1 + i]) - ((kh, kw)[i] - 1) * dilation[i] - 1) // strides[i] + 1 for i in (0, 1))
    rh, rw, rc = te.reduce_axis((0, kh), "rh"), te.reduce_axis((0, kw), "rw"), te.reduce_axis((0, words), "rc")
    product = _DOTS[dot]

    def body(n, h, w, o):
        x = xw[n, h * strides[0] + rh * dilation[0], w * strides[1] + rw * dilation[1], rc]
        return te.sum(product(x, weight[o, rh, rw, rc]), axis=[rh, rw, rc])

    return te.compute((xw.shape[0], out_h, out_w, out_channels), body, name=CONV_BLOCK)


def dense(data, weight, dot: str = DP4A):
    """TE: int8 ``[M, K]`` x int32-word weight ``[N, K/4]`` -> int32 ``[M, N]``."""
    from tvm import te

    out_features, words = (int(d) for d in weight.shape)
    xw = activation_words(data, None, words)
    rc = te.reduce_axis((0, words), "rc")
    product = _DOTS[dot]
    return te.compute((xw.shape[0], out_features), lambda m, o: te.sum(product(xw[m, rc], weight[o, rc]), axis=rc),
                      name=DENSE_BLOCK)


def activation_words(data, padding, words: int):
    """TE: int8 ``data`` (NHWC, or ``[M, K]`` when ``padding`` is None) as int32 words of 4
    channels, zero-padded spatially by ``padding`` (top, left, bottom, right) and to ``words``
    words of channels."""
    from tvm import te, tirx

    channels = int(data.shape[-1])
    top, left, bottom, right = padding or (0, 0, 0, 0)
    shape = list(data.shape[:-1]) + [words]
    if padding is not None:
        shape[1:3] = [data.shape[1] + top + bottom, data.shape[2] + left + right]

    def word(*idx):
        spatial = list(idx[:-1])
        inside = []
        if padding is not None:
            spatial[1:3] = [idx[1] - top, idx[2] - left]
            inside = [idx[1] >= top, idx[1] < data.shape[1] + top, idx[2] >= left, idx[2] < data.shape[2] + left]
        packed = tirx.const(0, "uint32")
        for k in range(REDUCE):
            channel = idx[-1] * REDUCE + k
            byte = data[(*spatial, channel)].astype("uint8").astype("uint32")
            valid = tirx.all(*inside, channel < channels) if inside or channels % REDUCE else None
            byte = tirx.if_then_else(valid, byte, tirx.const(0, "uint32")) if valid is not None else byte
            packed = packed | (byte << tirx.const(8 * k, "uint32"))
        return tirx.reinterpret("int32", packed)

    return te.compute(shape, word, name=WORDS_BLOCK)


def _dp4a(a, b):
    from tvm import tirx

    return tirx.call_pure_extern("int32", "__dp4a", a, b, tirx.const(0, "int32"))


def _emulated(a, b):
    """``dp4a(a, b, 0)`` with shifts: sum over bytes k of sext(byte_k(a)) * sext(byte_k(b))."""
    from tvm import tirx

    def signed_byte(word, k):
        return (word << tirx.const(24 - 8 * k, "int32")) >> tirx.const(24, "int32")

    return sum((signed_byte(a, k) * signed_byte(b, k) for k in range(1, REDUCE)), signed_byte(a, 0) * signed_byte(b, 0))


_DOTS = {DP4A: _dp4a, EMULATED: _emulated}
