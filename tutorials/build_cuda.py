"""Build an int8 artifact for an NVIDIA GPU (`__dp4a` kernels, requantize fused); no GPU needed to build.

    python tutorials/build_cuda.py                      # the bundled MNIST CNN, ./build-cuda
    TVMQ_CUDA_ARCH=sm_86 python tutorials/build_cuda.py

Without a GPU the accuracy comes from the host's integer simulation and latency is not measured;
on a GPU machine, scripts/gpu_check.py runs the artifact on the GPU bit for bit against the host.
"""

import sys

from build import main

if __name__ == "__main__":
    sys.exit(main("cuda", 0, None, __doc__.splitlines()[0]))
