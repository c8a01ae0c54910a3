"""Which build to deploy: the int8 module, the latency fallback's rebuild or the fp32 module,
by their end-to-end times measured side by side.

Per-layer timings can add up well while the whole module is slow: a MobileNetV3's rebuild
summed to 0.61 ms in its chosen kernels and ran 7.05 ms against its fp32 module's 0.93 ms
(kernels of new fusions tuned with a few trials each). So every candidate is timed whole, in
rounds that run each once (the order rotated each round), and the fastest is deployed; when
that is the fp32 module, the artifact is the model realized with every layer kept fp32.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

FP32, INT8, REBUILD = "fp32", "int8", "int8_rebuild"
ORDER = (INT8, REBUILD, FP32)  # on equal times the earlier wins: int8 before fp32


@dataclass(frozen=True)
class Choice:
    """The build to deploy (``FP32``, ``INT8`` or ``REBUILD``), why, each candidate's ms, and
    whether those times chose it (``timed``: False where nothing was compared)."""

    name: str
    reason: str
    latency_ms: dict
    timed: bool = True

    def to_json(self) -> dict:
        return {"artifact": self.name, "reason": self.reason, "timed": self.timed}


def time_modules(modules: dict, inputs, runs: int, clock=time.perf_counter, vm_of=None) -> dict[str, float | str]:
    """Median ms of one run of each module's ``main`` on zero inputs, over ``runs`` interleaved rounds
    (for a target whose executor cannot time, each module's value is its reason instead).

    ``modules``: name -> a build with ``executable`` and ``params``; ``inputs``: ``(shape,
    dtype)`` per model input (:func:`tvmq.profile.zero_input_args`). Each run is timed by its
    executor (``timer``: ``clock`` around the call here, the device's own clock remotely). One VM per module, one
    untimed warm-up run each; then each round runs every module once, starting one module
    further each round, so the machine's load drifts (other processes, frequency) hit all
    alike and none always runs after the same neighbour.
    """
    from .build import executor_of, virtual_machine
    from .profile import zero_input_args

    untimed = next((e for e in map(executor_of, (m.executable for m in modules.values())) if not e.timed), None)
    if untimed is not None:  # an emulator's clock says nothing of the target's speed
        return {name: untimed.why_untimed for name in modules}
    vm_of = vm_of or virtual_machine
    executors = {name: executor_of(m.executable) for name, m in modules.items()}
    calls = {name: executors[name].timer(vm_of(m.executable), zero_input_args(m.params, inputs, executors[name].device()),
                                         clock) for name, m in modules.items()}
    for call in calls.values():
        call()
    names, times = list(calls), {name: [] for name in calls}
    for round_ in range(max(runs, 1)):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            times[name].append(calls[name]())
    return {name: round(statistics.median(t) * 1e3, 4) for name, t in times.items()}


def pick_artifact(fp32, int8, rebuild=None, kept_fp32: int = 0, *, inputs, runs: int,
                  timer=time_modules) -> Choice:
    """The fastest of the fp32 build, the first int8 build and the latency fallback's rebuild
    (``None`` when it kept nothing; ``kept_fp32`` layers when it ran), timed whole by ``timer``
    (:func:`time_modules`'s signature: tests pass their own)."""
    candidates = {INT8: int8, REBUILD: rebuild, FP32: fp32}
    measured = timer({name: candidates[name] for name in ORDER if candidates[name] is not None}, inputs, runs)
    if not all(isinstance(ms, (int, float)) for ms in measured.values()):
        return Choice(INT8, f"int8 (not chosen by time: {measured[INT8]})", measured, timed=False)
    best = min(measured, key=lambda name: (measured[name], ORDER.index(name)))
    return Choice(best, _reason(best, measured, kept_fp32), measured)


def _reason(best: str, measured: dict, kept_fp32: int) -> str:
    if best == INT8:
        return INT8
    if best == REBUILD:
        return f"int8 with {kept_fp32} layer(s) kept fp32 (latency fallback)"
    fastest_int8 = min(ms for name, ms in measured.items() if name != FP32)
    return f"fp32: int8 measured {fastest_int8:.3f} ms vs fp32 {measured[FP32]:.3f} ms"


def same_program(realized, fp32) -> bool:
    """Whether ``realized`` (a module realized with every layer kept fp32) is ``fp32``'s program
    but for realize's record, so that ``fp32``'s build deploys it as it is."""
    import tvm_ffi

    from tvmq.passes.realize import RECORD_ATTR

    return tvm_ffi.structural_equal(realized["main"].without_attr(RECORD_ATTR), fp32["main"])
