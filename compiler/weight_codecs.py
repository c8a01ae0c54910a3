"""Weight codecs: how an artifact stores an int8 weight parameter, and how ``tvmq.load`` gets it back.

A codec turns the int8 array a kernel takes (whatever layout the target packed it into,
zero padding included) into a few smaller arrays and back, exactly:

    int8:  the bytes as they are                                   n bytes
    int4:  two signed nibbles a byte, q = ((b >> 4*j) & 15) - 16 [nibble >= 8]
           (every value in [-8, 7])                                ceil(n / 2) bytes
    lut:   a table T of k int8 levels and b = ceil(log2 k) bit indices i, q = T[i]
           (at most 2^b distinct values: non-uniform weights)      ceil(n b / 8) + k bytes

A param that is not int8 (the CUDA target's int32 words of 4 weights) is coded as its bytes
viewed as int8 and viewed back on decode. Decoding is numpy only, once at load, so the
deployed module receives the very arrays it was built with (:mod:`tvmq.runtime`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .errors import TvmqError

INT8, INT4, LUT = "int8", "int4", "lut"
TABLE = ".table"  # the npz key suffix of a lut param's table


@dataclass(frozen=True)
class Codec:
    """On a param's values ``q`` as flat int8 (:func:`as_int8`): ``encode(q) -> {suffix: array}`` (suffix
    ``""`` is the param's own key), ``decode(arrays, n) -> q`` (``n`` values), ``fits(q)`` whether
    ``encode`` is exact for ``q``."""

    fits: Callable[[np.ndarray], bool]
    encode: Callable[[np.ndarray], dict]
    decode: Callable[[dict, int], np.ndarray]


def _int4_encode(q: np.ndarray) -> dict:
    nibbles = (q.astype(np.int16) & 15).astype(np.uint8)
    if nibbles.size % 2:
        nibbles = np.append(nibbles, np.uint8(0))
    return {"": nibbles[0::2] | (nibbles[1::2] << 4)}


def _int4_decode(arrays: dict, n: int) -> np.ndarray:
    packed = arrays[""]
    values = np.empty(packed.size * 2, np.int8)
    values[0::2] = (packed << 4).view(np.int8) >> 4  # arithmetic shifts sign-extend each nibble
    values[1::2] = packed.view(np.int8) >> 4
    return values[:n]


def index_bits(levels: int) -> int:
    """``b = ceil(log2 k)`` bits per index, at least 1."""
    return max(1, int(levels - 1).bit_length())


def _lut_encode(q: np.ndarray) -> dict:
    """Index ``i`` in bits ``i b .. i b + b - 1`` of a little-endian bit stream."""
    table, indices = np.unique(q, return_inverse=True)
    bits = index_bits(table.size)
    planes = (indices.astype(np.uint16)[:, None] >> np.arange(bits, dtype=np.uint16)) & 1
    return {"": np.packbits(planes.astype(np.uint8).ravel(), bitorder="little"), TABLE: table.astype(np.int8)}


def _lut_decode(arrays: dict, n: int) -> np.ndarray:
    """Every 8 indices fill ``b`` whole bytes; index ``j`` of a group starts at bit ``o = j b`` of it and
    is read from the 16-bit window of its bytes ``o // 8`` and ``o // 8 + 1``: ``(w >> o mod 8) & (2^b - 1)``."""
    table = arrays[TABLE]
    bits = index_bits(table.size)
    groups = -(-n // 8)
    stream = np.zeros((groups, bits + 1), np.uint8)  # one spare byte for the last window
    flat = np.zeros(groups * bits, np.uint8)
    flat[:arrays[""].size] = arrays[""]
    stream[:, :bits] = flat.reshape(groups, bits)
    columns = np.ascontiguousarray(stream.T).astype(np.uint16)  # byte c of every group, contiguous
    out = np.empty((8, groups), np.int8)
    for j in range(8):
        first, shift = divmod(j * bits, 8)
        np.take(table, ((columns[first] | (columns[first + 1] << 8)) >> shift) & ((1 << bits) - 1), out=out[j])
    return out.T.ravel()[:n]


CODECS: dict[str, Codec] = {
    INT8: Codec(lambda q: True, lambda q: {"": q}, lambda arrays, n: as_int8(arrays[""])),
    INT4: Codec(lambda q: q.size == 0 or (int(q.min()) >= -8 and int(q.max()) <= 7), _int4_encode, _int4_decode),
    LUT: Codec(lambda q: np.unique(q).size <= 128, _lut_encode, _lut_decode),
}


def get(name: str) -> Codec:
    if name not in CODECS:
        raise TvmqError(f"unknown weight codec {name!r}; choose one of: {', '.join(CODECS)}")
    return CODECS[name]


def as_int8(param: np.ndarray) -> np.ndarray:
    """The param's values as a flat int8 array (its bytes, for a param of another integer dtype)."""
    flat = np.ascontiguousarray(param).ravel()
    return flat if flat.dtype == np.int8 else flat.view(np.int8)


def encode(name: str, param: np.ndarray, codec: str) -> tuple[dict, dict]:
    """``({npz key: array}, manifest entry)`` for ``param`` stored as ``codec``; the entry says how
    to decode it (codec, dtype, shape) and what it costs (``int8_bytes``, ``stored_bytes``)."""
    values = as_int8(param)
    chosen = get(codec)
    if not chosen.fits(values):
        raise TvmqError(f"param {name}: its values do not fit the {codec} weight codec")
    stored = {"": param} if codec == INT8 else chosen.encode(values)  # int8: the param as it is, shape and dtype
    arrays = {name + suffix: array for suffix, array in stored.items()}
    entry = {"codec": codec, "dtype": str(param.dtype), "shape": list(param.shape), "int8_bytes": int(values.size),
             "stored_bytes": int(sum(a.nbytes for a in arrays.values()))}
    if not np.array_equal(decode(name, arrays, entry), param):
        raise TvmqError(f"param {name}: the {codec} weight codec does not give it back exactly")
    return arrays, entry


def decode(name: str, archive, entry: dict) -> np.ndarray:
    """The param ``name`` as the kernel takes it, from ``archive`` (npz or dict) and its manifest ``entry``."""
    codec = get(entry["codec"])
    shape, dtype = tuple(entry["shape"]), np.dtype(entry["dtype"])
    count = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    arrays = {suffix: archive[name + suffix] for suffix in ("", TABLE) if name + suffix in _keys(archive)}
    return codec.decode(arrays, count).view(dtype).reshape(shape)


def _keys(archive) -> set:
    return set(archive.files) if hasattr(archive, "files") else set(archive)


# ---- which codec each param of an artifact gets -------------------------------------------------
def layer_codec(entry: dict) -> str:
    """A plan layer's codec (``plan.json``'s entry): ``lut`` for non-uniform weights (``weight_levels``),
    ``int4`` for weights of 4 bits or fewer, else ``int8``."""
    if entry.get("weight_levels"):
        return LUT
    return INT4 if entry.get("weight_bits", 8) <= 4 else INT8


def weight_params(params: dict, plan: dict | None, qdq_weights: dict | None) -> dict:
    """``{param: (layer, codec)}`` for the params that hold an int8 layer's weight (the layer by its
    ONNX node, else its output tensor).

    The targets pack weights into their kernels' layouts (blocks, zero padding, int32 words), so a
    param is matched to the layer whose integers (``qdq_weights``: ``weight_i`` by ``tensors[i]``)
    have the same count of every non-zero value: packing moves and pads values, never changes one.
    """
    if not plan or qdq_weights is None:
        return {}
    entries = {entry["tensor"]: entry for entry in plan["layers"]}
    layers = {_signature(qdq_weights[f"weight_{i}"]): str(tensor) for i, tensor in enumerate(qdq_weights["tensors"])}
    found = {}
    for name, param in params.items():
        if param.dtype.kind not in "iu" or param.size == 0:
            continue
        tensor = layers.get(_signature(param))
        if tensor is not None:
            entry = entries.get(tensor, {})
            found[name] = (entry.get("node") or tensor, layer_codec(entry))
    return found


def _signature(values: np.ndarray) -> bytes:
    counts = np.bincount(as_int8(values).astype(np.int16) + 128, minlength=256)
    counts[128] = 0  # zero: the packed layouts pad with it
    return counts.tobytes()


def storage_report(entries: list[dict]) -> dict:
    """report.json's ``weight_storage``: per weight param (``entries``: its manifest entry, ``layer``,
    ``param``, ``params_file``) int8 vs stored bytes, and the totals; ``ratio = int8 / stored``."""
    int8, stored = sum(e["int8_bytes"] for e in entries), sum(e["stored_bytes"] for e in entries)
    rows = [{key: e[key] for key in ("layer", "param", "params_file", "codec", "int8_bytes", "stored_bytes")}
            | {"ratio": round(e["int8_bytes"] / max(e["stored_bytes"], 1), 3)} for e in entries]
    return {"layers": rows, "int8_bytes": int8, "stored_bytes": stored,
            "ratio": round(int8 / stored, 3) if stored else None}


def storage_markdown(storage: dict) -> str:
    """report.md's ``Weight storage`` section (none without int8 weight params)."""
    if not storage["layers"]:
        return ""
    lines = ["", "## Weight storage", "",
             f"Weights stored in {storage['stored_bytes']:,} bytes for {storage['int8_bytes']:,} int8 bytes "
             f"({storage['ratio']:g}x smaller); decoded to int8 once at load.", "",
             "| layer | param | codec | int8 bytes | stored bytes | ratio |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['layer']} | {r['param']} | {r['codec']} | {r['int8_bytes']:,} | {r['stored_bytes']:,} | "
              f"{r['ratio']:g} |" for r in storage["layers"]]
    return "\n".join(lines) + "\n"
