"""Per-layer latency from per-kernel measurements, and which layers are slower in int8.

Each fused kernel has a time (``{"kernel", "calls", "us"}`` rows: :mod:`tvmq.profile` times
them inside the built module; tuning's best records give the same rows). A conv / dense
layer's fp32 time is that of the kernel that computes it in the fp32 module; its int8 time
that of the kernel that computes it in the int8 module plus the standalone quantize /
dequantize kernels on its edges (one shared by several layers is split evenly among them).

A layer's kernel is the kernel call that reads its lifted weight (or bias): identical layers
share one fused function, so the bindings inside it cannot tell them apart, but each reads
its own parameter. Kernels are the calls in ``main`` as tuning lowers the module, after
FuseOps and before FuseTIR (a fused Relax function's name is its PrimFunc's and task's).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tvmq.targets import TargetSpec

from .tune import fuse

INJECTIVE = 2  # TIR op patterns up to kInjective: elementwise, broadcast, data movement
INT8_SUFFIXES = ("_int", "_acc")  # realize's names for a layer's integer op and its bias add


@dataclass
class LayerLatency:
    """One layer's kernels (names as in the built module) and their time in µs per run
    (None where a kernel has no measurement)."""

    fp32_kernels: list[str] = field(default_factory=list)
    int8_kernels: list[str] = field(default_factory=list)  # its own, then its edges
    fp32_us: float | None = None
    int8_us: float | None = None


@dataclass
class _Kernel:
    """One kernel call in ``main``: its function, the lifted parameters it reads, whether it
    (de)quantizes (converts between float and 8-bit with injective ops only), its tensor inputs
    and output."""

    function: str
    params: set
    converts: bool
    inputs: list
    output: object
    us: float | None


def attribute(fp32_mod, int8_mod, layers: dict, spec: TargetSpec, fp32_kernels: list[dict],
              int8_kernels: list[dict]) -> dict[str, LayerLatency]:
    """Each layer's fp32 and int8 time.

    ``fp32_mod`` / ``int8_mod`` are the deployable modules as tuning receives them;
    ``layers`` maps each int8 layer's output name to the names of its chain in the fp32 module;
    ``*_kernels`` are each module's per-kernel rows (``{"kernel", "calls", "us"}``).
    """
    fp32, int8 = _kernels(fp32_mod, spec, fp32_kernels), _kernels(int8_mod, spec, int8_kernels)
    own = {name: _reading(int8, _params_of(int8_mod, {name + s for s in INT8_SUFFIXES})) for name in layers}
    edges = _edges(int8, own)
    result = {}
    for name, chain in layers.items():
        mine = _reading(fp32, _params_of(fp32_mod, set(chain)))
        shared = [(k, 1.0 / len(users)) for k, users in edges if name in users]
        result[name] = LayerLatency([k.function for k in mine], [k.function for k in own[name]] +
                                    [k.function for k, _ in shared], _total((k, 1.0) for k in mine),
                                    _total([(k, 1.0) for k in own[name]] + shared))
    return result


MARGIN = 1.1  # int8 must measure this much slower: kernel timings vary by about as much
MARGIN_US = 1.0  # and by this many µs: a 0.1 µs kernel's timing is mostly the timer's


def slower_in_int8(latencies: dict[str, LayerLatency]) -> list[str]:
    """The layers measured slower in int8 (with their edges) than in fp32 by more than
    :data:`MARGIN` and :data:`MARGIN_US`, by name. On MobileNetV2 without a margin two layers
    went fp32 at 4% and 6% over (by tuning records): within what one kernel's time varies on a
    shared machine; MNIST's 10-output classifier went fp32 at 0.1 µs either way."""
    return sorted(name for name, t in latencies.items()
                  if t.fp32_us is not None and t.int8_us is not None
                  and t.int8_us > max(MARGIN * t.fp32_us, t.fp32_us + MARGIN_US))


def _params_of(mod, names: set) -> set:
    """The lifted parameters (weights, biases) that the bindings called ``names`` in ``main`` read."""
    from tvmq.passes.graph import dataflow_bindings, referenced_vars

    main = mod["main"]
    lifted = {p.name for p in main.params[int(main.attrs["num_input"]):]}
    return {v.name for b in dataflow_bindings(main) if b.var.name in names
            for v in referenced_vars(b.value) if v.name in lifted}


def _reading(kernels: list, params: set) -> list:
    return [k for k in kernels if k.params & params] if params else []


def _total(parts) -> float | None:
    parts = list(parts)
    if not parts or any(k.us is None for k, _ in parts):
        return None
    return round(sum(k.us * share for k, share in parts), 2)


def _edges(kernels: list[_Kernel], own: dict) -> list[tuple[_Kernel, set]]:
    """The quantize / dequantize kernels on each layer's edges, with the layers they serve.

    An edge kernel does nothing but (de)quantize and move data (a layer's own kernel converts
    too, but computes); it is a layer's when it reads or feeds that layer's own kernel, directly
    or through single-input kernels that stay in the integer domain (a max pool, a flatten).
    """
    owner = {id(k): name for name, ks in own.items() for k in ks}
    edge = {id(k) for k in kernels if id(k) not in owner and k.converts}
    through = {id(k) for k in kernels if id(k) not in owner.keys() | edge and len(k.inputs) == 1}
    producer = {k.output: k for k in kernels}
    readers = {}
    for kernel in kernels:
        for var in kernel.inputs:
            readers.setdefault(var, []).append(kernel)
    users = {}
    for name, mine in own.items():
        pending, seen = list(mine), set()
        while pending:
            kernel = pending.pop()
            for near in [producer[v] for v in kernel.inputs if v in producer] + readers.get(kernel.output, []):
                if id(near) in seen:
                    continue
                seen.add(id(near))
                if id(near) in edge:
                    users.setdefault(id(near), (near, set()))[1].add(name)
                elif id(near) in through:
                    pending.append(near)
    return list(users.values())


def _kernels(mod, spec: TargetSpec, measured: list[dict]) -> list[_Kernel]:
    """The kernel calls of ``mod``'s ``main`` as tuning lowers it, with their measured µs."""
    from tvm import relax

    from tvmq.passes.graph import dataflow_bindings, tir_op_pattern

    fused = fuse(mod, spec)
    with spec.target:
        us = _measured(relax.transform.FuseTIR()(fused), measured)
    params, kernels = {p.name for p in fused["main"].params}, []
    for binding in dataflow_bindings(fused["main"]):
        call = binding.value
        if isinstance(call, relax.Call) and isinstance(call.op, relax.GlobalVar) \
                and isinstance(fused[call.op], relax.Function):
            function, args = call.op.name_hint, list(call.args)
            prims = [b.value.args[0] for b in dataflow_bindings(fused[call.op]) if _op(b.value)]
        elif _op(call) is not None:
            function, args, prims = _op(call), list(call.args[1].fields), [call.args[0]]
        else:
            continue
        args = [a for a in args if isinstance(a, relax.Var)]
        converts = _converts(args, binding.var) and all(tir_op_pattern(fused[p]) <= INJECTIVE for p in prims)
        kernels.append(_Kernel(function, {a.name for a in args if a.name in params}, converts, args, binding.var,
                               _fused_us(us, function, [p.name_hint for p in prims])))
    return kernels


def _fused_us(us, function: str, prims: list[str]) -> float | None:
    """A kernel's µs: its own row, else the sum of the rows of its PrimFuncs that the built module
    ran unfused (an untuned build keeps each PrimFunc a kernel of its own; one it merged away has
    no row and counts nothing); None when none has a row."""
    own = us(function)
    if own is not None or not prims:
        return own
    parts = [t for t in map(us, prims) if t is not None]
    return round(sum(parts), 2) if parts else None


def _converts(inputs: list, output) -> bool:
    """Whether a kernel reads float and writes 8-bit integers, or the other way round."""
    domains = {_domain(v.ty) for v in inputs}
    return {_domain(output.ty)} | domains >= {"float", "8-bit"} and _domain(output.ty) not in domains


def _domain(ty) -> str | None:
    import tvm

    dtype = tvm.DataType(str(getattr(ty, "dtype", "void")))
    return "float" if dtype.type_code == tvm.runtime.DataTypeCode.FLOAT else "8-bit" if dtype.bits == 8 else None


def _op(value) -> str | None:
    """The PrimFunc a ``call_tir`` binding calls, by name."""
    from tvm import relax

    if isinstance(value, relax.Call) and getattr(value.op, "name", None) == "relax.call_tir":
        return value.args[0].name_hint
    return None


def _measured(lowered, measured: list[dict]):
    """A function's µs by name: its own task's, or that of the task structurally equal to it
    (tuning makes one task of identical kernels and names it after one of them)."""
    import tvm
    import tvm_ffi

    by_name = {row["kernel"]: row["us"] for row in measured}
    functions = {gv.name_hint: f for gv, f in lowered.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}
    known = [(functions[n], us) for n, us in by_name.items() if n in functions]

    def us(name: str) -> float | None:
        if name in by_name:
            return by_name[name]
        return next((t for f, t in known if tvm_ffi.structural_equal(f, functions.get(name))), None)

    return us
