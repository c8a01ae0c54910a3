"""Runs inside the emulated machine (an aarch64 CPython under qemu-user, TVM's runtime only):
loads modules and runs their ``main`` for :mod:`tvmq.targets.qemu`, one pickled request and
reply at a time over stdin / stdout. Imports neither tvmq nor TVM's compiler.

Requests: ``{"op": "load", "path"}`` -> a VM's index; ``{"op": "run", "vm", "func", "args"}``
(numpy arrays) -> the result as numpy (nested lists for tuples). Replies: ``{"ok": value}`` or
``{"error": "Type: message"}``; ``{"ok": "ready"}`` once TVM is imported.
"""

import pickle
import sys


def _numpy(value):
    return value.numpy() if hasattr(value, "numpy") else [_numpy(v) for v in value]


def main() -> None:
    channel_in, channel_out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # anything printed stays off the channel
    import tvm
    from tvm.runtime.vm import VirtualMachine

    device, vms = tvm.cpu(), []

    def reply(message: dict) -> None:
        pickle.dump(message, channel_out, protocol=4)
        channel_out.flush()

    reply({"ok": "ready"})
    while True:
        try:
            request = pickle.load(channel_in)
        except EOFError:
            return
        try:
            if request["op"] == "load":
                vms.append(VirtualMachine(tvm.runtime.load_module(request["path"]), device))
                reply({"ok": len(vms) - 1})
            else:
                args = [tvm.runtime.tensor(a, device) for a in request["args"]]
                reply({"ok": _numpy(vms[request["vm"]][request["func"]](*args))})
        except Exception as err:  # the module's error, reported to the host
            reply({"error": f"{type(err).__name__}: {err}"})


if __name__ == "__main__":
    main()
