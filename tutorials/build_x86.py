"""Build an int8 artifact for this x86 machine (AVX-512 VNNI, AVX-512BW or AVX2 kernels), tuned.

    python tutorials/build_x86.py                       # the bundled MNIST CNN, 64 trials, ./build-host
    python tutorials/build_x86.py model.onnx --calib calib.npz --eval eval.npz --trials 400

Latency is measured here (int8 vs fp32, the faster one deployed); raise --trials for a faster module.
"""

import sys

from build import main

if __name__ == "__main__":
    sys.exit(main("host", 64, None, __doc__.splitlines()[0]))
