"""Build an int8 artifact for ARM aarch64 Linux (Raspberry Pi 5, Graviton: `sdot`), cross-compiled here.

    python tutorials/build_arm.py                       # the bundled MNIST CNN, 256 samples, ./build-arm
    python tutorials/build_arm.py --target arm-neon     # a CPU without dotprod (Pi 3 / Pi 4)

Needs `make arm-env` (cross compiler, qemu-user, an aarch64 TVM runtime). Accuracy is measured by
running the aarch64 code under qemu (each sample runs twice: keep --samples small); latency is not
measured (emulated time says nothing about the board). On the board, load model.so with TVM's runtime.
"""

import sys

from build import main

if __name__ == "__main__":
    sys.exit(main("arm", 0, 256, __doc__.splitlines()[0]))
