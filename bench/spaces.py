"""The conv design spaces against MetaSchedule's generic ones, layer by layer, at one budget.

    .venv/bin/python bench/spaces.py --layers stem pw dw dw2 r3 --trials 32
    .venv/bin/python bench/spaces.py --precision fp32 --trials 32

Each layer is a one-conv ONNX model (random weights, ``bench/shapes.py``'s helpers), compiled
by ``tvmq.compile`` twice: with tvmq's sketches (``targets/x86_sketch.py``) and with what
tvmq did before them. For int8 that is the generic tensorizing space for packed convs and
TVM's generic rules for depthwise; for fp32 the conv as imported (NCHW, no packed weight)
with TVM's generic rules. Prints the conv kernel's µs as timed in the built module. Each
run tunes into its own fresh database under ``bench/work/spaces``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

HERE = Path(__file__).resolve().parent
LAYERS = {  # name: (c_in, c_out, kernel, stride, groups, input size, activation)
    "stem": (3, 32, 3, 2, 1, 224, "relu6"),       # MobileNetV2's first conv
    "pw": (24, 144, 1, 1, 1, 56, "relu6"),        # a 1x1 expansion at 56x56
    "dw": (144, 144, 3, 1, 144, 56, "relu6"),     # depthwise 56x56x144
    "dw2": (96, 96, 3, 2, 96, 112, "relu6"),      # depthwise 112x112x96, stride 2
    "r3": (64, 64, 3, 1, 1, 56, "relu"),          # ResNet-50's 3x3 at 56x56
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", nargs="+", default=list(LAYERS), choices=list(LAYERS))
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--precision", choices=("int8", "fp32"), default="int8")
    args = parser.parse_args()
    print(f"{args.precision}, {args.trials} trials\n\n| layer | sketch µs | generic µs |\n|---|---|---|")
    for name in args.layers:
        path, shape = layer_model(name)
        print(f"| {name} | {conv_us(path, shape, args.trials, 'sketch', args.precision):.1f} | "
              f"{conv_us(path, shape, args.trials, 'generic', args.precision):.1f} |", flush=True)


def layer_model(name: str) -> tuple[Path, list[int]]:
    sys.path.insert(0, str(HERE))
    from shapes import _Graph

    c_in, c_out, k, stride, groups, size, act = LAYERS[name]
    graph = _Graph(0)
    conv = graph.conv("x", c_in, c_out, k, stride, groups)
    y = graph.relu6(conv) if act == "relu6" else graph.unary("Relu", conv)
    out = size // stride
    model = helper.make_model(helper.make_graph(
        graph.nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c_in, size, size])],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, c_out, out, out])], graph.inits),
        opset_imports=[helper.make_opsetid("", 17)])
    path = HERE / "work" / "spaces" / f"{name}.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path, [1, c_in, size, size]


def conv_us(path: Path, shape: list[int], trials: int, spaces: str, precision: str = "int8") -> float:
    """The ``precision`` conv kernel's µs after tuning with ``spaces`` ("sketch" or "generic")."""
    import tvmq
    from tvmq.passes.realize import RECORD_ATTR
    from tvmq.targets import x86, x86_int8, x86_legalize

    originals = x86.packed_space, x86_legalize.LegalizeForX86
    if spaces == "generic" and precision == "int8":
        x86.packed_space = lambda intrinsic, task: (x86_int8.search_space(intrinsic.name)
                                                     if x86_int8.PACKED_PREFIX in task else None)
    if spaces == "generic" and precision == "fp32":  # legalize the int8 module only
        x86_legalize.LegalizeForX86 = lambda lanes: (
            lambda mod: originals[1](lanes)(mod) if RECORD_ATTR in mod["main"].attrs else mod)
    database = path.parent / f"{path.stem}-{precision}-{spaces}-{trials}"
    shutil.rmtree(database, ignore_errors=True)
    try:
        calib = np.abs(np.random.default_rng(0).standard_normal([8, *shape[1:]])).astype(np.float32)
        compiled = tvmq.compile(str(path), calib, config=tvmq.Config(
            trials=trials, tuning_db=database, latency_fallback=False, latency_runs=1))
    finally:
        x86.packed_space, x86_legalize.LegalizeForX86 = originals
    rows = compiled.report["kernel_profile"][precision]
    return next(r["us"] for r in rows if "conv2d" in r["kernel"])


if __name__ == "__main__":
    main()
