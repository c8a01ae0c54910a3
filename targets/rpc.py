"""An executor that tunes, runs and times a target's modules on remote devices through TVM's
RPC tracker (``python -m tvm.exec.rpc_tracker``; each device runs ``python -m
tvm.exec.rpc_server --tracker HOST:PORT --key KEY``).

:func:`with_tracker` turns any target into one measured on the devices registered under a
key: candidates are built here (the target's exporter: the cross compiler for ARM) and timed
on the devices by MetaSchedule's ``RPCRunner``, one connection per device, so several devices
on one key tune in parallel. Modules (calibration, evaluation, the deployed builds) run on a
device of the key; whole-module times are the device's own clock (``time_evaluator``), not a
round trip. The Relax VM's instrument cannot call back across RPC, so per-kernel times are the
tuning records', measured on the devices by the runner.
"""

from __future__ import annotations

import dataclasses
import itertools
import shutil
import socket
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from tvmq.errors import TvmqError

WAIT_SECONDS = 60  # for a server to register under the key
CANDIDATE_SECONDS = 60  # one candidate's session: upload, 10 timed runs, cleanup
SAVED = "tvmq_main_timed"  # the VM closure timed by time_evaluator


def parse_tracker(value: str) -> tuple[str, int]:
    """``"HOST:PORT"`` -> ``(host, port)``."""
    host, _, port = str(value).rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise TvmqError(f"RPC tracker {value!r} is not HOST:PORT (--rpc-tracker, e.g. 127.0.0.1:9190)")
    return host, int(port)


def check_tracker_options(tracker: str | None, key: str | None) -> None:
    """A tracker needs a key and a key a tracker; the tracker is ``HOST:PORT``."""
    if not tracker:
        raise TvmqError("an RPC key needs the tracker its devices registered at (--rpc-tracker HOST:PORT)")
    parse_tracker(tracker)
    if not key:
        raise TvmqError("an RPC tracker needs the key its devices registered under (--rpc-key)")


def unreachable(tracker: tuple[str, int], seconds: float = 5.0) -> str | None:
    """Why the tracker at ``tracker`` cannot be reached (None: it answers)."""
    try:
        socket.create_connection(tracker, timeout=seconds).close()
    except OSError as err:
        return f"cannot reach the RPC tracker at {tracker[0]}:{tracker[1]} ({err.strerror or err})"
    return None


def servers(tracker: tuple[str, int], key: str, wait: float = WAIT_SECONDS) -> list[str]:
    """The addresses (``host:port``) of the servers registered under ``key``, waiting up to ``wait``
    seconds for the first; a clear error when the tracker is unreachable or none comes."""
    from tvm import rpc

    why = unreachable(tracker)
    if why:
        raise TvmqError(why)
    deadline = time.monotonic() + wait
    while True:
        summary = rpc.connect_tracker(*tracker).summary()
        found = [":".join(map(str, s["addr"])) for s in summary["server_info"] if s["key"] == f"server:{key}"]
        if found or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    if not found:
        keys = sorted({s["key"].split(":", 1)[1] for s in summary["server_info"]})
        raise TvmqError(f"no RPC server registered under key {key!r} at {tracker[0]}:{tracker[1]} within {wait:.0f} s "
                        f"(keys there: {', '.join(keys) or 'none'})")
    return found


@dataclass(frozen=True)
class RpcDevice:
    """Runs and times modules on a device registered under ``key`` at ``tracker``."""

    tracker: tuple[str, int]
    key: str
    device_type: int = 1  # DLPack's device type (the target's ``get_target_device_type()``): 1 is the CPU
    wait: float = WAIT_SECONDS
    timed: bool = True
    why_untimed: str = ""
    instrumented: bool = False  # the VM's instrument cannot call back across RPC
    _session: list = field(default_factory=list, compare=False, repr=False)  # a weak reference, once opened

    @property
    def address(self) -> str:
        return f"{self.tracker[0]}:{self.tracker[1]}"

    def device(self):
        """Where arguments are made: here (:class:`RemoteVM` copies them to the device, as the qemu
        executor's worker does), not a device of a session that may close before they are used."""
        import tvm

        return tvm.cpu()

    def vm(self, executable) -> "RemoteVM":
        """``executable`` exported with the target's compiler, uploaded and loaded on the device."""
        from tvm import relax

        session = self.session()
        scratch = Path(tempfile.mkdtemp(prefix="tvmq-rpc-"))
        try:
            path = scratch / f"module-{next(_exported)}.so"
            executable.export_library(str(path))  # the target's exporter (tvmq.build.build)
            session.upload(str(path))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        device = session.device(self.device_type, 0)
        return RemoteVM(session, device, relax.VirtualMachine(session.load_module(path.name), device))

    def session(self):
        """The session every VM of this executor shares while one is alive: one device measures
        the modules compared with each other, and tuning finds the devices free once they are gone."""
        from tvm import rpc

        live = self._session[0]() if self._session else None
        if live is None:
            servers(self.tracker, self.key, self.wait)
            live = rpc.connect_tracker(*self.tracker).request(self.key, priority=1, session_timeout=0)
            self._session[:] = [weakref.ref(live)]
        return live

    def runner(self):
        """MetaSchedule's ``RPCRunner``: one worker per server on the key, each candidate timed as
        :meth:`tvmq.targets.LocalCpu.runner` times it (10 runs, caches flushed of all but the first argument)."""
        from tvm.s_tir import meta_schedule as ms

        found = servers(self.tracker, self.key, self.wait)
        config = ms.runner.RPCConfig(self.tracker[0], self.tracker[1], self.key, session_priority=1,
                                     session_timeout_sec=CANDIDATE_SECONDS)
        evaluator = ms.runner.EvaluatorConfig(number=1, repeat=10, min_repeat_ms=0, enable_cpu_cache_flush=True)
        return ms.runner.RPCRunner(config, evaluator, f_create_session=create_session, f_alloc_argument=alloc_from_host,
                                   max_workers=len(found))

    def candidate_compiler(self, exporter):
        return exporter  # a shared library the device loads: the target's compiler (None: the host's)

    def timer(self, vm: "RemoteVM", args: list, clock=None):
        """A function that runs ``vm["main"](*args)`` once on the device and returns its seconds by
        the device's clock (``clock`` is this machine's, unused: it would add the round trip)."""
        return vm.timer(args)

    def unavailable(self) -> str | None:
        return unreachable(self.tracker)

    def measured_on(self) -> dict:
        """Where this executor measures: the tracker, the key and the servers registered under it."""
        return {"executor": "rpc", "tracker": self.address, "key": self.key,
                "servers": servers(self.tracker, self.key, self.wait),
                "kernel_times": "tuning records, measured on the devices by MetaSchedule's RPCRunner",
                "module_times": "time_evaluator on one device of the key"}


_exported = itertools.count()


def create_session(rpc_config):
    """MetaSchedule's session for a candidate, once a server is registered under the key: the
    tracker queues a request for a key without servers for ever (a server that died), and tuning
    would wait with it; this fails the candidate instead, after :data:`WAIT_SECONDS`."""
    servers((rpc_config.tracker_host, rpc_config.tracker_port), rpc_config.tracker_key)
    return rpc_config.connect_server()


def alloc_from_host(session, device, args_info, alloc_repeat: int) -> list:
    """MetaSchedule's argument allocation for a candidate, with the random values drawn here and
    copied to the device: its default draws them on the device with ``tvm.contrib.random``,
    which a device with TVM's runtime library alone lacks. Integers uniform over their dtype,
    floats uniform in [-1, 1)."""
    import numpy as np
    from tvm.s_tir.meta_schedule.runner.utils import alloc_argument_common

    rng = np.random.default_rng(0)

    def fill(tensor) -> None:
        dtype, shape = np.dtype(str(tensor.dtype)), tuple(tensor.shape)
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            tensor.copyfrom(rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True))
        else:
            tensor.copyfrom(rng.uniform(-1.0, 1.0, shape).astype(dtype))

    return alloc_argument_common(fill, device, args_info, alloc_repeat)


class RemoteVM:
    """A Relax VM on the device: ``vm["main"](*tensors)`` takes local tensors or arrays and returns
    local tvm tensors (a tuple of them for a tuple), as ``relax.VirtualMachine`` does."""

    def __init__(self, session, device, vm):
        self.session, self.device, self.remote = session, device, vm

    def __getitem__(self, func: str):
        def call(*args):
            self.remote.set_input(func, *self._on_device(args))
            self.remote.invoke_stateful(func)
            return _local(self.remote.get_outputs(func))

        return call

    def timer(self, args: list):
        """Seconds of one run of ``main`` on ``args``, by the device's clock (TVM's ``time_evaluator``
        on a saved closure, one untimed run before it)."""
        self.remote.save_function("main", SAVED, *self._on_device(args), include_return=False)
        evaluate = self.remote.time_evaluator(SAVED, self.device, number=1, repeat=1)
        return lambda: evaluate().mean

    def _on_device(self, args) -> list:
        import numpy as np
        import tvm

        return [tvm.runtime.tensor(a.numpy() if hasattr(a, "numpy") else np.asarray(a), self.device) for a in args]


def _local(value):
    import tvm

    if isinstance(value, (tuple, list)) or type(value).__name__ == "Array":
        return tuple(_local(v) for v in value)
    return tvm.runtime.tensor(value.numpy())


def with_tracker(spec, tracker: str, key: str, wait: float = WAIT_SECONDS):
    """``spec`` measured on the devices registered under ``key`` at ``tracker`` (``HOST:PORT``),
    named ``<target>@<key>`` (so its default tuning database is the key's own)."""
    check_tracker_options(tracker, key)
    executor = RpcDevice(parse_tracker(tracker), key, spec.target.get_target_device_type(), wait)
    return dataclasses.replace(spec, name=f"{spec.name}@{key}", executor=executor)
