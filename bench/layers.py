"""Per layer, side by side: where tvmq's int8 wins or loses against ONNX Runtime.

    .venv/bin/python bench/layers.py --model mobilenet_v2_224 --batch 1

Reads what ``bench/latency.py`` left in ``bench/work/<model>-b<batch>``: ONNX Runtime's fp32
and int8 (QDQ) models, profiled node by node here (2 threads, median of ``--runs`` runs after
warm-up), and tvmq's report, whose latency-fallback section gives each conv / dense layer's
fp32 and int8 time (its fused kernel plus, for int8, its quantize / dequantize edges), each
kernel timed inside its built module at compile time (``tvmq.profile``). The saved modules'
kernels are timed again here three ways, for the totals: ``_cached`` (re-run on their own
arguments), ``_cold`` (weights and outputs flushed from the cache before each run) and
``_in_run`` (each call where it runs, in whole runs); the int8 kernels a run slows most
against their cached time are listed after the layers.

    .venv/bin/python bench/layers.py --depthwise [--target host] [--rounds 15]

``--depthwise`` times MobileNetV2-224's depthwise kernels alone instead, int8 against fp32 at
zero trials (the target's rule schedules), each layer's two kernels (their fused epilogues
included: the requantize to uint8, the bias and ReLU6) interleaved for ``--rounds`` rounds,
best of each, with the CPU model the rules read off the target; no ONNX Runtime, no saved work.
ONNX Runtime fuses a QDQ conv into one QLinearConv node named after the conv
(``<conv>_token_<n>``), which is how its rows are matched.

Prints the layers worst first (tvmq int8 minus ONNX Runtime int8) with totals, and writes
``bench/results/<cpu>-layers-<model>-b<batch>.json``. Kernels that are no layer's (input
quantize, pooling, the classifier's edges) show in the totals only.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import statistics
import sys
from pathlib import Path

import numpy as np

from tvmq.profile import total_us

HERE = Path(__file__).resolve().parent
THREADS = 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenet_v2_224")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--top", type=int, default=20, help="layers to print")
    parser.add_argument("--depthwise", action="store_true", help="time MobileNetV2's depthwise kernels, int8 vs fp32")
    parser.add_argument("--target", default="host")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    if args.depthwise:
        return print_depthwise(depthwise_kernels(args.target, args.rounds))
    directory = HERE / "work" / f"{args.model}-b{args.batch}"
    report = json.loads((directory / "tvmq_int8" / "report.json").read_text())
    profiles = {kind: ort_node_us(directory / f"ort_{kind}.onnx", args.batch, args.runs) for kind in ("fp32", "int8")}
    ort = {kind: us for kind, (us, _) in profiles.items()}
    by_op = ort_by_op(*profiles["int8"])
    rows = layer_rows(report, ort, layer_macs(directory / "ort_fp32.onnx", args.batch))
    saved = {m: saved_rows(directory / f"tvmq_{m}") for m in ("fp32", "int8")}
    totals = {"ort_fp32_us": sum(ort["fp32"].values()), "ort_int8_us": sum(ort["int8"].values()),
              **{f"tvmq_{m}_us": total_us(report["kernel_profile"][m]) for m in ("fp32", "int8")},
              **{f"tvmq_{m}_{how}_us": total_us(saved[m][how]) for m in ("fp32", "int8")
                 for how in ("cached", "cold", "in_run")}}
    in_run = {r["kernel"]: r["us"] for r in saved["int8"]["in_run"]}
    for row in rows:
        row["int8_kernel_in_run_us"] = in_run.get((row["int8_kernels"] or [None])[0])
    print_table(rows, totals, args.top)
    slowed = in_run_excess(saved["int8"]["cached"], saved["int8"]["in_run"])
    print_slowed(slowed, args.top)
    print("\nONNX Runtime int8 by operator (µs, all nodes): "
          + ", ".join(f"{op} {us:.0f}" for op, us in by_op.items()))
    from latency import cpu_key

    out = HERE / "results" / f"{cpu_key()}-layers-{args.model}-b{args.batch}.json"
    gmac = round(sum(r["mmac"] for r in rows) / 1e3, 3)
    print(f"{gmac} GMAC in the int8 layers: {gmac / totals['tvmq_int8_in_run_us'] * 1e6:.0f} GMAC/s over the "
          "int8 kernels timed in the run")
    out.write_text(json.dumps({"model": args.model, "batch": args.batch, "layers_gmac": gmac, "totals": totals,
                               "layers": rows,
                               "kept_fp32": report["latency_fallback"].get("kept_fp32", []),
                               "int8_in_run_excess": slowed, "ort_int8_by_op_us": by_op}, indent=1) + "\n")
    print(f"\nwrote {out.relative_to(HERE.parent)}")


def depthwise_kernels(target: str, rounds: int) -> list[dict]:
    """Each MobileNetV2 depthwise layer's int8 and fp32 kernel, scheduled by the target's rules and
    timed interleaved: ``{"layer", "count", "int8_us", "fp32_us"}`` (best of ``rounds`` means of 10 runs)."""
    import tempfile

    from shapes import depthwise_chain, mobilenet_v2_depthwise

    from tvmq.targets import get_target

    spec = get_target(target)
    spec.prepare()
    rows = []
    for (size, channels, stride), count in mobilenet_v2_depthwise().items():
        with tempfile.TemporaryDirectory() as tmp:
            timers = [_depthwise_timer(spec, kind, func, args) for kind, func, args in
                      _depthwise_funcs(spec, depthwise_chain(size, channels, stride), Path(tmp))]
        times = {kind: [] for kind, _ in timers}
        for _ in range(rounds):  # interleaved: int8, fp32, int8, ...
            for kind, run in timers:
                times[kind].append(run())
        best = {kind: min(values) for kind, values in times.items()}
        rows.append({"layer": f"{size}x{size}x{channels} s{stride}", "count": count,
                     **{f"{kind}_us": round(us, 1) for kind, us in best.items()}})
    return rows


def _depthwise_funcs(spec, model, tmp: Path):
    """``(kind, fused PrimFunc, random arguments)`` of the depthwise kernel in the int8 and fp32 modules."""
    import onnx
    from tvm import relax

    from tvmq import api
    from tvmq.build import bind_batch
    from tvmq.passes.graph import dataflow_bindings, op_name
    from tvmq.targets.x86_depthwise import PREFIX
    from tvmq.tune import fuse

    onnx.save(model, str(tmp / "m.onnx"))
    rng = np.random.default_rng(0)
    quantized = api.quantize(str(tmp / "m.onnx"), rng.random((4, 3, 224, 224), np.float32), _config(spec))
    for kind, mod in (("int8", quantized.int8), ("fp32", quantized.program.fp32)):
        with spec.target:
            lowered = relax.transform.FuseTIR()(fuse(spec.legalize(bind_batch(mod, 1)), spec))
        call = next(b.value for b in dataflow_bindings(lowered["main"]) if op_name(b.value) == "relax.call_tir"
                    and PREFIX + "conv2d" in b.value.args[0].name_hint)
        types = [a.ty for a in call.args[1].fields] + [call.ty]
        yield kind, (call.args[0].name_hint, lowered[call.args[0]]), [_random(rng, t) for t in types]


def _config(spec):
    from tvmq.config import Config

    return Config(batch_size=4, target=spec.name)


def _random(rng, ty) -> np.ndarray:
    shape, dtype = [int(d) for d in ty.shape], str(ty.dtype)
    if dtype == "float32":
        return rng.random(shape, np.float32)
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -63), min(info.max, 255) + 1, shape).astype(dtype)


def _depthwise_timer(spec, kind: str, named_func, args: list):
    """``(kind, run)``: ``run()`` -> mean µs of 10 runs of the rule-scheduled kernel."""
    import tvm

    from tvmq.targets.x86_blocking import CpuModel
    from tvmq.targets.x86_default import schedule_kernel

    name, func = named_func
    with spec.target:
        scheduled = schedule_kernel(name, func, CpuModel.of(spec.target), spec.schedule.intrinsic)
    library = tvm.tirx.build(tvm.IRModule({"main": scheduled.with_attr("global_symbol", "main")}), target=spec.target)
    device = tvm.cpu()
    tensors = [tvm.runtime.tensor(a, device) for a in args]
    evaluator = library.time_evaluator("main", device, number=10)
    return kind, lambda: evaluator(*tensors).mean * 1e6


def print_depthwise(rows: list[dict]) -> None:
    print("| layer | count | int8 µs | fp32 µs | int8 / fp32 |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['layer']} | {row['count']} | {row['int8_us']:.1f} | {row['fp32_us']:.1f} | "
              f"{row['int8_us'] / row['fp32_us']:.2f} |")
    totals = {k: sum(r[k] * r["count"] for r in rows) for k in ("int8_us", "fp32_us")}
    print(f"| all {sum(r['count'] for r in rows)} layers | | {totals['int8_us']:.0f} | {totals['fp32_us']:.0f} | "
          f"{totals['int8_us'] / totals['fp32_us']:.2f} |")


def saved_rows(directory: Path) -> dict[str, list[dict]]:
    """A saved tvmq module's kernel rows timed three ways (``tvmq.profile``): ``cached``, each
    kernel re-run on its arguments; ``cold``, each after flushing its weights and outputs from
    the cache (weights from memory); ``in_run``, each call where it runs in whole runs (the
    caches as the run leaves them)."""
    from latency import load_saved

    from tvmq.profile import in_run_rows, kernel_rows, zero_input_args

    library, params, inputs = load_saved(directory)
    args = zero_input_args(params, [(i["shape"], i["dtype"]) for i in inputs])
    return {"cached": kernel_rows(library, args, repeat=20), "cold": kernel_rows(library, args, repeat=20, cold=True),
            "in_run": in_run_rows(library, args, runs=30)}


def in_run_excess(warm: list[dict], in_run: list[dict]) -> list[dict]:
    """Kernels by the µs a run adds to their cached time (all calls), most first: where the
    run waits on memory."""
    cached = {r["kernel"]: r["us"] for r in warm}
    rows = [{"kernel": r["kernel"], "calls": r["calls"], "cached_us": cached[r["kernel"]], "in_run_us": r["us"],
             "excess_us": round((r["us"] - cached[r["kernel"]]) * r["calls"], 1)}
            for r in in_run if r["kernel"] in cached]
    return sorted(rows, key=lambda r: -r["excess_us"])


def ort_node_us(path: Path, batch: int, runs: int) -> tuple[dict[str, float], dict[str, str]]:
    """Median µs of each node over ``runs`` profiled runs, and its operator, keyed by node name."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = THREADS, 1
    options.enable_profiling = True
    options.profile_file_prefix = str(path.parent / f"profile_{path.stem}")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    spec = session.get_inputs()[0]
    shape = [batch if not isinstance(d, int) else d for d in spec.shape]
    feed = {spec.name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    for _ in range(10 + runs):
        session.run(None, feed)
    profile = Path(session.end_profiling())
    events = json.loads(profile.read_text())
    profile.unlink()
    durations, ops = collections.defaultdict(list), {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            name = event["name"][:-len("_kernel_time")]
            durations[name].append(event["dur"])
            ops[name] = event.get("args", {}).get("op_name", "?")
    return {name: statistics.median(values[-runs:]) for name, values in durations.items()}, ops


def ort_by_op(us: dict[str, float], ops: dict[str, str]) -> dict[str, float]:
    """ONNX Runtime's node time summed by operator, most first: a QDQ model's residual adds run
    as QLinearAdd nodes of their own, where tvmq adds in the conv's epilogue."""
    totals = collections.Counter()
    for name, value in us.items():
        totals[ops[name]] += value
    return {op: round(value, 1) for op, value in totals.most_common()}


def layer_macs(path: Path, batch: int) -> dict[str, int]:
    """Multiply-accumulates of each Conv / Gemm / MatMul node at ``batch``, from ONNX's shapes."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*model.graph.value_info, *model.graph.output]}
    weights = {w.name: list(w.dims) for w in model.graph.initializer}
    macs = {}
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm", "MatMul") and node.input[1] in weights and node.output[0] in shapes:
            out, weight = shapes[node.output[0]][1:], weights[node.input[1]]
            reduced = int(np.prod(weight[1:])) if node.op_type == "Conv" else \
                weight[1 if node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute) else 0]
            macs[node.name] = batch * int(np.prod(out)) * reduced
    return macs


def layer_rows(report: dict, ort: dict, macs: dict[str, int]) -> list[dict]:
    """One row per tvmq layer: its ONNX node, millions of MACs, tvmq fp32 / int8 µs, ONNX Runtime
    fp32 / int8 µs, and tvmq int8's GMAC/s."""
    by_layer = {kind: _by_layer(nodes) for kind, nodes in ort.items()}
    rows = []
    for layer in report["latency_fallback"]["layers"]:
        node = layer["layer"]
        mac = macs.get(node, 0)
        rows.append({"layer": node, "mmac": round(mac / 1e6, 2),
                     "int8_gmac_s": round(mac / layer["int8_us"] / 1e3, 1) if layer["int8_us"] else None,
                     "tvmq_fp32_us": layer["fp32_us"], "tvmq_int8_us": layer["int8_us"],
                     "ort_fp32_us": by_layer["fp32"].get(node), "ort_int8_us": by_layer["int8"].get(node),
                     "kept_fp32": layer["kept_fp32"], "int8_kernels": layer["int8_kernels"]})
    return sorted(rows, key=lambda r: -_deficit(r))


def _by_layer(nodes: dict[str, float]) -> dict[str, float]:
    """Node µs keyed by the ONNX node they compute: ONNX Runtime names a fused node after its
    conv plus ``_token_<n>``."""
    out = collections.Counter()
    for name, us in nodes.items():
        out[re.sub(r"_token_\d+$", "", name)] += us
    return dict(out)


def _deficit(row: dict) -> float:
    if row["tvmq_int8_us"] is None or row["ort_int8_us"] is None:
        return 0.0
    return row["tvmq_int8_us"] - row["ort_int8_us"]


def print_table(rows: list[dict], totals: dict, top: int) -> None:
    def us(value):
        return "-" if value is None else f"{value:.1f}"

    print("| layer | MMAC | tvmq int8 µs | GMAC/s | its kernel in the run µs | ORT int8 µs | tvmq int8 / ORT int8 "
          "| tvmq fp32 µs | ORT fp32 µs | int8 kernel |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows[:top]:
        ratio = (f"{row['tvmq_int8_us'] / row['ort_int8_us']:.2f}"
                 if row["tvmq_int8_us"] and row["ort_int8_us"] else "-")
        kernel = (row["int8_kernels"] or ["-"])[0][:48] + (" (kept fp32)" if row["kept_fp32"] else "")
        print(f"| {row['layer']} | {row['mmac']:.1f} | {us(row['tvmq_int8_us'])} | {us(row['int8_gmac_s'])} | "
              f"{us(row['int8_kernel_in_run_us'])} | "
              f"{us(row['ort_int8_us'])} | {ratio} | "
              f"{us(row['tvmq_fp32_us'])} | {us(row['ort_fp32_us'])} | {kernel} |")
    print(f"\nsums over all kernels / nodes (µs): " + ", ".join(f"{k[:-3]} {v:.0f}" for k, v in totals.items()))


def print_slowed(rows: list[dict], top: int) -> None:
    print("\nint8 kernels a whole run slows most against their cached time (µs a call; excess: all calls):")
    print("| kernel | calls | cached | in run | excess |")
    print("|---|---|---|---|---|")
    for row in rows[:top]:
        print(f"| {row['kernel'][:60]} | {row['calls']} | {row['cached_us']:.1f} | {row['in_run_us']:.1f} | "
              f"{row['excess_us']:.1f} |")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
