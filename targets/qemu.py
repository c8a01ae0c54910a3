"""An executor that runs aarch64 modules under qemu-user on this (x86) machine.

Each module is exported with the target's cross compiler and loaded by an aarch64 CPython
with the aarch64 ``apache-tvm`` wheel (TVM's runtime only) under ``qemu-aarch64 -cpu MCPU``,
the target's own CPU: an instruction that CPU lacks kills the run with SIGILL, as on the
device. One worker process (:mod:`tvmq.targets.qemu_worker`) serves every module of one
executor, so qemu and TVM start once (~10-20 s). ``make arm-env`` installs the toolchain.

Emulated time says nothing about the device's speed: modules run, but are not timed.
"""

from __future__ import annotations

import itertools
import os
import pickle
import shutil
import signal
import subprocess
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from tvmq.errors import TvmqError

from .base import wall_timer

CROSS_COMPILER = "aarch64-linux-gnu-g++"
QEMU = "qemu-aarch64"
PYTHON = "usr/bin/python3.11"  # the sysroot's aarch64 CPython


def default_sysroot() -> Path:
    """``$TVMQ_ARM_SYSROOT``, else ``<tvmq cache>/arm-sysroot`` (where ``make arm-env`` puts it)."""
    if os.environ.get("TVMQ_ARM_SYSROOT"):
        return Path(os.environ["TVMQ_ARM_SYSROOT"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tvmq" / "arm-sysroot"


def toolchain_missing(sysroot: Path) -> str | None:
    """What of the aarch64 toolchain is missing here (None: all of it is there)."""
    missing = [tool for tool in (CROSS_COMPILER, QEMU) if shutil.which(tool) is None]
    if not (sysroot / PYTHON).is_file() or not (sysroot / "site" / "tvm").is_dir():
        missing.append(f"the aarch64 runtime in {sysroot}")
    return f"{', '.join(missing)} not found (run `make arm-env`)" if missing else None


@dataclass(frozen=True)
class QemuUser:
    """Runs modules under ``qemu-aarch64 -cpu mcpu``; ``timed`` is False: emulated time is no latency."""

    mcpu: str
    sysroot: Path = field(default_factory=default_sysroot)
    timed: bool = False
    why_untimed: str = "not measured (emulated)"
    instrumented: bool = False
    _workers: list = field(default_factory=list, compare=False, repr=False)  # the started worker, once

    def device(self):
        import tvm

        return tvm.cpu()  # the arguments' device on this side; the worker runs on its own CPU

    def vm(self, executable) -> "EmulatedVM":
        """``executable`` loaded in the worker: exported (a cross-compiler link, seconds) and loaded
        once per executable, however many VMs are asked of it."""
        worker = self._worker()
        if executable not in worker.loaded:
            path = worker.scratch / f"module-{next(worker.exported)}.so"
            executable.export_library(str(path))  # with the target's cross compiler (tvmq.build.build)
            worker.loaded[executable] = worker.request({"op": "load", "path": str(path)})
        return EmulatedVM(worker, worker.loaded[executable])

    def runner(self):
        raise TvmqError(f"tuning measures candidates on the device, and an emulated {self.mcpu} has no clock "
                        f"worth tuning on: build with --trials 0")

    def candidate_compiler(self, exporter):
        return exporter  # the device loads a shared library of its own architecture

    def timer(self, vm, args: list, clock):
        return wall_timer(vm, args, clock)  # emulated seconds: never a latency (``timed`` is False)

    def unavailable(self) -> str | None:
        return toolchain_missing(self.sysroot)

    def measured_on(self) -> dict:
        return {"executor": "qemu-user", "cpu": self.mcpu}

    def _worker(self) -> "Worker":
        if not self._workers or self._workers[0].process.poll() is not None:
            why = self.unavailable()
            if why:
                raise TvmqError(f"cannot run aarch64 modules here: {why}")
            self._workers[:] = [Worker(self.sysroot, self.mcpu)]
        return self._workers[0]


class Worker:
    """One aarch64 Python under qemu serving load / run requests (:mod:`tvmq.targets.qemu_worker`)."""

    def __init__(self, sysroot: Path, mcpu: str):
        self.mcpu, self.exported = mcpu, itertools.count()
        self.loaded = weakref.WeakKeyDictionary()  # executable -> its VM's index in the worker
        self.scratch = Path(tempfile.mkdtemp(prefix="tvmq-qemu-"))
        env = {**os.environ, "PYTHONPATH": str(sysroot / "site"), "TVM_USE_RUNTIME_LIB": "1",
               "PYTHONDONTWRITEBYTECODE": "1"}
        script = Path(__file__).with_name("qemu_worker.py")
        self.process = subprocess.Popen([QEMU, "-L", str(sysroot), "-cpu", mcpu, str(sysroot / PYTHON),
                                         str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        weakref.finalize(self, _stop, self.process, self.scratch)
        self._read()  # "ready": TVM imported

    def request(self, message: dict):
        try:
            pickle.dump(message, self.process.stdin, protocol=4)
            self.process.stdin.flush()
        except BrokenPipeError:
            pass  # the worker died: _read says how
        return self._read()

    def _read(self):
        try:
            reply = pickle.load(self.process.stdout)
        except EOFError:
            raise TvmqError(self._death()) from None
        if "error" in reply:
            raise TvmqError(f"the aarch64 module failed under qemu: {reply['error']}")
        return reply["ok"]

    def _death(self) -> str:
        code = self.process.wait()
        name = signal.Signals(-code).name if code < 0 and -code in signal.Signals._value2member_map_ else code
        hint = " (an instruction this CPU lacks)" if code == -signal.SIGILL else ""
        return f"the aarch64 process under qemu -cpu {self.mcpu} died: {name}{hint}"


def _stop(process, scratch: Path) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()
    shutil.rmtree(scratch, ignore_errors=True)


class EmulatedVM:
    """A Relax VM of one module in the worker: ``vm["main"](*tensors)`` returns tvm tensors
    (a tuple of them for a tuple), as ``relax.VirtualMachine`` does."""

    def __init__(self, worker: Worker, index: int):
        self.worker, self.index = worker, index

    def __getitem__(self, func: str):
        def call(*args):
            request = {"op": "run", "vm": self.index, "func": func, "args": [_numpy(a) for a in args]}
            return _tensors(self.worker.request(request))

        return call


def _numpy(value):
    import numpy as np

    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


def _tensors(value):
    import tvm

    return tuple(_tensors(v) for v in value) if isinstance(value, list) else tvm.runtime.tensor(value)


