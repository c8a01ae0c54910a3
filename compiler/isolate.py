"""Run a CLI command in a child process, so a native crash becomes one clear error line.

Why a child process and not only ``faulthandler``: the compiler hands strangers' models
to TVM's C++ importer, passes and LLVM. A segfault or abort in there kills the Python
process before any ``except`` runs; ``faulthandler`` can print where it happened, but
cannot turn the signal into an error message, an exit status or a cleanup. So the
``tvmq`` command is a small supervisor that never imports TVM: it starts
``python -m tvmq ...`` again as a worker (environment ``TVMQ_WORKER=1``), waits for it,
and when the worker dies by a signal prints ``tvmq: error: ...`` naming the signal and
removes the staging directory the worker left. The cost is one Python start-up
(~0.1 s, numpy only) per command. With ``--debug`` the worker also enables
``faulthandler``, so a native crash prints the Python stack that led into it.

Signals: the worker runs in its own process group; the supervisor forwards SIGINT,
SIGTERM and SIGHUP to it exactly once (a Ctrl-C reaches only the supervisor's group).
The worker turns them into ``KeyboardInterrupt``, so staged outputs are removed. If the supervisor itself is killed, Linux sends the worker SIGTERM
(``PR_SET_PDEATHSIG``), so no orphan keeps running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

WORKER_ENV = "TVMQ_WORKER"
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
CRASHES = {signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT}


def in_worker() -> bool:
    return os.environ.get(WORKER_ENV) == "1"


def supervise(argv: list[str], out: Path | None) -> int:
    """Run ``tvmq argv`` in a worker process; translate a death by signal into one error line."""
    before = _staging_dirs(out)
    parent = os.getpid()
    worker = subprocess.Popen([sys.executable, "-m", "tvmq", *argv], env={**os.environ, WORKER_ENV: "1"},
                              preexec_fn=lambda: _worker_setup(parent))
    previous = {sig: signal.signal(sig, lambda s, _frame: _forward(worker, s)) for sig in FORWARDED}
    try:
        code = worker.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code >= 0:
        return code
    removed = [_remove(d) for d in _staging_dirs(out) - before]
    # a new line first: the worker may have died in the middle of a progress bar's line
    print(f"\ntvmq: error: {_death(-code)}; {_outcome(out, removed)}", file=sys.stderr)
    return 128 - code


def worker_signals(debug: bool) -> None:
    """In the worker: SIGTERM / SIGHUP interrupt like Ctrl-C; a fatal signal kills at once.

    ``tvm_ffi`` installs a SIGSEGV handler that prints a C++ backtrace under a mutex; a
    fault while a backtrace is being taken (TVM takes one for every exception it builds)
    deadlocks in that handler - measured: the worker hung instead of dying. So the default
    action is restored once the library is loaded; ``--debug`` adds ``faulthandler``'s
    Python stack dump, which then re-raises into the default action.
    """
    def interrupt(signum, _frame):
        global _interrupted
        _interrupted = signal.Signals(signum)
        raise KeyboardInterrupt(_interrupted.name)

    for sig in FORWARDED:
        signal.signal(sig, interrupt)
    import tvm_ffi  # noqa: F401  (installs its handler on load; replace it now, not later)

    for sig in CRASHES:
        signal.signal(sig, signal.SIG_DFL)
    if debug:
        import faulthandler

        faulthandler.enable()


def interruption() -> signal.Signals | None:
    """The signal that interrupted this worker, if any.

    Raised inside a TVM call (TVM polls for signals in long loops), the ``KeyboardInterrupt``
    comes back out of the FFI as a ``RuntimeError``; this says what it really was.
    """
    return _interrupted


_interrupted: signal.Signals | None = None


def _worker_setup(parent: int) -> None:
    """Between fork and exec: own process group; SIGTERM when the supervisor dies."""
    os.setpgid(0, 0)
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the supervisor died before prctl took effect
            os._exit(1)


def _forward(worker: subprocess.Popen, signum: int) -> None:
    if worker.poll() is None:
        worker.send_signal(signum)


def _death(signum: int) -> str:
    name = signal.Signals(signum).name
    if signum in CRASHES:
        return (f"the compiler crashed with {name} inside native code (TVM / LLVM); this is a bug or an input "
                f"TVM cannot handle (rerun with --debug for the native stack)")
    if signum == signal.SIGKILL:
        return "the compiler process was killed (SIGKILL; out of memory, or killed by another process)"
    return f"the compiler process was terminated by {name}"


def _outcome(out: Path | None, removed: list[Path]) -> str:
    if out is None:
        return "nothing was written"
    if removed:
        return f"nothing was written (removed the partial output {removed[0].name})"
    return "nothing was written" if not out.exists() else f"{out} is unchanged or complete"


def _staging_dirs(out: Path | None) -> set[Path]:
    """Staging directories of ``out`` (see ``fileio.staged_directory``) that exist now."""
    if out is None:
        return set()
    out = out.absolute()
    if not out.parent.is_dir():
        return set()
    return set(out.parent.glob(f".{out.name}.*.partial"))


def _remove(path: Path) -> Path:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
    return path
