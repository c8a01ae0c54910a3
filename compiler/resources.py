"""Memory bounds checked before any work: a model or data file that cannot fit fails early.

The estimate is deliberately coarse, from static shapes only (nothing is allocated):

    need = WEIGHT_COPIES * weights + ACTIVATION_COPIES * activations

``weights`` is the bytes of every initializer and Constant; ``activations`` is the bytes of
every tensor of one calibration run (per-sample sizes times the batch, which
``calibrate.bounded_batch`` caps at its budget, but never below one sample). The weights
live as the fp32 import, the folded copy, the int8 copy and the built modules' constants;
the activations as the exposed outputs and their numpy copies.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper

from .errors import TvmqError

WEIGHT_COPIES = 4
ACTIVATION_COPIES = 2
EXPOSED_BYTES_BUDGET = 512 << 20  # the same budget as calibrate.bounded_batch


def available_memory() -> int:
    """Bytes of memory the system can give this process now (psutil's ``available``)."""
    import psutil

    return int(psutil.virtual_memory().available)


def model_bytes(model: onnx.ModelProto, batch_size: int) -> tuple[int, int]:
    """``(weights, activations)`` in bytes for one calibration run of a shape-inferred model."""
    weights = sum(_tensor_bytes(t) for t in model.graph.initializer)
    weights += sum(_tensor_bytes(a.t) for node in model.graph.node if node.op_type == "Constant"
                   for a in node.attribute if a.HasField("t"))
    values = list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output)
    per_sample = sum(_value_bytes(v) for v in values)
    activations = max(per_sample, min(per_sample * batch_size, EXPOSED_BYTES_BUDGET))
    return weights, activations


def check_model_fits(model: onnx.ModelProto, name: str, batch_size: int) -> None:
    """Refuse a model whose quantization needs more memory than is available (estimate above)."""
    weights, activations = model_bytes(model, batch_size)
    need = WEIGHT_COPIES * weights + ACTIVATION_COPIES * activations
    available = available_memory()
    if need > available:
        raise TvmqError(f"quantizing {name} needs about {_size(need)} of memory (weights {_size(weights)}, "
                        f"activations {_size(activations)} per calibration run), but only {_size(available)} "
                        f"is available")


def check_array_fits(shape: tuple, dtype: np.dtype, what: str) -> None:
    """Refuse to load an array whose declared size exceeds the memory available."""
    need = math.prod(int(d) for d in shape) * np.dtype(dtype).itemsize
    available = available_memory()
    if need > available:
        raise TvmqError(f"{what} declares an array of shape {tuple(shape)} {np.dtype(dtype)} ({_size(need)}), "
                        f"more than the {_size(available)} of memory available")


def _tensor_bytes(tensor: onnx.TensorProto) -> int:
    return math.prod(int(d) for d in tensor.dims) * _itemsize(tensor.data_type)


def _value_bytes(value: onnx.ValueInfoProto) -> int:
    """Bytes of one sample of ``value``: a symbolic (batch) dimension counts as 1."""
    tensor = value.type.tensor_type
    if not tensor.HasField("shape"):
        return 0
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in tensor.shape.dim]
    return math.prod(dims) * _itemsize(tensor.elem_type)


def _itemsize(elem_type: int) -> int:
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).itemsize
    except Exception:  # undefined or exotic element types: count a float
        return 4


def _size(nbytes: int) -> str:
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} B"
