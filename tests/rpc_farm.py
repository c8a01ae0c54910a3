"""A bounded device farm on 127.0.0.1 for tests: TVM's RPC tracker and servers, each started in
this process by TVM's own classes (no re-exec of ``sys.executable``, which fails under
qemu-user without binfmt), and each ending itself when its stdin closes (the test process
ended, however) or after ``--seconds``. Runs under the host Python and under the aarch64 one.

    python rpc_farm.py tracker PORT SECONDS            -> prints "port N"
    python rpc_farm.py server PORT SECONDS TRACKER KEY  -> prints "port N"

Imports neither tvmq nor TVM's compiler (the aarch64 side has TVM's runtime only).
"""

import itertools
import os
import sys
import threading


def main() -> None:
    role, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    threading.Timer(seconds, os._exit, [0]).start()
    if role == "tracker":
        from tvm.rpc.tracker import PopenTrackerServerState

        state = PopenTrackerServerState("127.0.0.1", port, port + 200, silent=True)
        print(f"port {state.port}", flush=True)
    else:
        threading.Thread(target=_serve, args=(port, sys.argv[4], sys.argv[5]), daemon=True).start()
    while os.read(0, 4096):  # until the test closes the pipe or dies; not sys.stdin, whose lock a
        pass  # session's forked child would wait for (multiprocessing closes sys.stdin in it)
    os._exit(0)


class Farm:
    """A tracker and servers started from a test (host side); :meth:`stop` kills each one's
    process group (a server forks a child per session). Every process also ends by itself."""

    def __init__(self, seconds: float = 300):
        self.seconds, self.processes = seconds, []
        self.tracker = f"127.0.0.1:{self._start([sys.executable, __file__, 'tracker', _port(), str(seconds)])}"

    def server(self, key: str, qemu: tuple | None = None) -> int:
        """A server under ``key``: this Python, or ``qemu = (sysroot, mcpu)``'s aarch64 one under qemu-user."""
        args = [__file__, "server", _port(), str(self.seconds), self.tracker, key]
        if qemu is None:
            return self._start([sys.executable, *args])
        sysroot, mcpu = qemu
        env = {**os.environ, "PYTHONPATH": os.path.join(sysroot, "site"), "TVM_USE_RUNTIME_LIB": "1",
               "PYTHONDONTWRITEBYTECODE": "1"}
        return self._start(["qemu-aarch64", "-L", str(sysroot), "-cpu", mcpu,
                            os.path.join(sysroot, "usr/bin/python3.11"), *args], env)

    def _start(self, command: list, env: dict | None = None) -> int:
        import subprocess

        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True,
                                   start_new_session=True)
        self.processes.append(process)
        line = process.stdout.readline()
        if not line.startswith("port "):
            self.stop()
            raise RuntimeError(f"{command[-4:]} did not start: {line!r}")
        return int(line.split()[1])

    def stop(self) -> None:
        import signal

        for process in self.processes:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
        self.processes.clear()


def _port() -> str:
    import random

    return str(random.randrange(20000, 50000))


def _serve(port: int, tracker: str, key: str) -> None:
    """TVM's server, started again whenever it ends: its listening thread ends when a session's
    process exits non-zero (a candidate that crashed), as ``python -m tvm.exec.rpc_server`` does."""
    from tvm.rpc.server import PopenRPCServerState

    host, _, tracker_port = tracker.rpartition(":")
    for started in itertools.count():
        state = PopenRPCServerState("127.0.0.1", port, port + 200, tracker_addr=(host, int(tracker_port)), key=key,
                                    silent=True)
        if not started:
            print(f"port {state.port}", flush=True)
        state.thread.join()
        state.sock.close()


if __name__ == "__main__":
    main()
