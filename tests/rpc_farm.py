"""A bounded device farm on 127.0.0.1 for tests: TVM's RPC tracker and servers, each started in
this process by TVM's own classes (no re-exec of ``sys.executable``, which fails under
qemu-user without binfmt), and each ending itself when its stdin closes (the test process
ended, however) or after ``--seconds``. Runs under the host Python and under the aarch64 one.

    python rpc_farm.py tracker PORT SECONDS            -> prints "port N"
    python rpc_farm.py server PORT SECONDS TRACKER KEY  -> prints "port N"

Imports neither tvmq nor TVM's compiler (the aarch64 side has TVM's runtime only).
"""

import os
import sys
import threading


def main() -> None:
    role, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    if role == "tracker":
        from tvm.rpc.tracker import PopenTrackerServerState

        state = PopenTrackerServerState("127.0.0.1", port, port + 200, silent=True)
    else:
        from tvm.rpc.server import PopenRPCServerState

        host, _, tracker_port = sys.argv[4].rpartition(":")
        state = PopenRPCServerState("127.0.0.1", port, port + 200, tracker_addr=(host, int(tracker_port)),
                                    key=sys.argv[5], silent=True)
    print(f"port {state.port}", flush=True)
    threading.Timer(seconds, os._exit, [0]).start()
    while os.read(0, 4096):  # until the test closes the pipe or dies; not sys.stdin, whose lock a
        pass  # session's forked child would wait for (multiprocessing closes sys.stdin in it)
    os._exit(0)


if __name__ == "__main__":
    main()
