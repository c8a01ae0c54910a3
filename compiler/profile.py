"""Each kernel's time inside a built module, on the arguments it gets in a real run.

TVM 0.27's Relax VM has no profiler, but it calls an instrument around every call it makes.
Before each kernel call (a PrimFunc of the module's library, not a ``vm.builtin``) the
instrument times that kernel with TVM's own timer (``time_evaluator``: repeats of at least
``MIN_REPEAT_MS``, the fastest of ``repeat``: another process on the machine only ever adds
time, and the latency fallback compares kernels, not the machine's load) on exactly those
arguments, so the numbers need no tuning record and come from the kernels as deployed; the VM
then runs the call as usual.

A kernel re-run on its own arguments finds them in cache where the full run may not, so the
per-kernel sum can be under the end-to-end time; ``total_us`` says how close it is. With
``cold=True`` the cache is flushed of every argument but the first (weights, outputs, a
residual input) before each repeat: the time a kernel takes on weights fetched from memory.
:func:`in_run_rows` instead reads the clock on either side of each call of whole runs: each
kernel as the run before it leaves the caches.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from .build import executor_of

REPEAT, MIN_REPEAT_MS = 5, 1


def kernel_rows(executable, args: list, repeat: int = REPEAT, cold: bool = False) -> list[dict]:
    """``{"kernel", "calls", "us"}`` per kernel of ``executable``'s ``main`` run on ``args``
    (tvm tensors: inputs, then params), µs per call (fastest repeat, median over its calls), most time first:
    the rows of the tuning summary's ``kernels``, measured in the module (``cold``: each
    repeat after flushing the cache of all arguments but the first). Empty for a target whose
    clock says nothing of its speed (an emulator) or whose VM cannot call an instrument here
    (a remote device)."""
    executor = executor_of(executable)
    if not (executor.timed and executor.instrumented):
        return []
    device, vm = executor.device(), executor.vm(executable)
    library = _library(executable)
    timers, times = {}, {}

    def instrument(func, symbol, before_run, ret_value, *call_args):
        if before_run and _is_kernel(library, symbol):
            if symbol not in timers:
                timers[symbol] = library.time_evaluator(
                    symbol, device, number=1, repeat=repeat, min_repeat_ms=0 if cold else MIN_REPEAT_MS,
                    f_preproc="cache_flush_cpu_non_first_arg" if cold else "")
            times.setdefault(symbol, []).append(min(timers[symbol](*call_args).results) * 1e6)
        return 0  # run the call as usual

    vm.set_instrument(instrument)
    vm["main"](*args)
    rows = [{"kernel": name, "calls": len(us), "us": round(statistics.median(us), 2)} for name, us in times.items()]
    return sorted(rows, key=lambda r: -r["us"] * r["calls"])


def in_run_rows(executable, args: list, runs: int = 20) -> list[dict]:
    """:func:`kernel_rows` with each call timed where it runs, in ``runs`` whole runs of
    ``main`` after two warm-ups: the median of each call site, averaged over a kernel's calls.
    The instrument's own return to the VM (about a microsecond) is inside each time."""
    executor = executor_of(executable)
    if not (executor.timed and executor.instrumented):
        return []
    vm = executor.vm(executable)
    library = _library(executable)
    run_times, started = [], []

    def instrument(func, symbol, before_run, ret_value, *call_args):
        if _is_kernel(library, symbol):
            if before_run:
                started.append(time.perf_counter())
            else:
                run_times[-1].append((symbol, time.perf_counter() - started.pop()))
        return 0

    vm.set_instrument(instrument)
    for _ in range(2 + runs):
        run_times.append([])
        vm["main"](*args)
    sites = list(zip(*run_times[2:]))  # per call site, its (symbol, seconds) in each run
    by_kernel = {}
    for site in sites:
        by_kernel.setdefault(site[0][0], []).append(statistics.median(t for _, t in site) * 1e6)
    rows = [{"kernel": k, "calls": len(us), "us": round(sum(us) / len(us), 2)} for k, us in by_kernel.items()]
    return sorted(rows, key=lambda r: -r["us"] * r["calls"])


def total_us(rows: list[dict]) -> float:
    """The sum of every kernel call's time, µs per run."""
    return round(sum(r["us"] * r["calls"] for r in rows), 1)


def profile(executable, params: dict, inputs, repeat: int = REPEAT) -> list[dict]:
    """:func:`kernel_rows` on zero inputs (``inputs``: see :func:`zero_input_args`) with ``params``."""
    executor = executor_of(executable)
    if not (executor.timed and executor.instrumented):  # kernel_rows' own test, before making arguments
        return []
    return kernel_rows(executable, zero_input_args(params, inputs, executor.device()), repeat)


def zero_input_args(params: dict, inputs, device=None) -> list:
    """``main``'s arguments: a zero array per input, then ``params``, on ``device`` (None: the CPU).

    ``inputs`` is a list of ``(shape, dtype)``, one per model input.
    """
    import tvm

    zeros = [tvm.runtime.tensor(np.zeros(shape, dtype), device) for shape, dtype in inputs]
    return zeros + [tvm.runtime.tensor(v, device) for v in params.values()]


def _is_kernel(library, symbol: str) -> bool:
    """Whether the VM's call of ``symbol`` runs a compiled kernel (not a ``vm.builtin``)."""
    return not symbol.startswith("vm.builtin.") and library.implements_function(symbol)


def _library(executable):
    """The compiled kernels' module under a VM executable (in memory or loaded from a file)."""
    module = getattr(executable, "mod", executable)
    pending = [module]
    while pending:
        current = pending.pop()
        if current.kind != "relax.VMExecutable":
            return current
        pending.extend(current.imports_)
    raise ValueError("the executable has no kernel library (nothing was compiled into it)")
