"""This CPU's int8 peak: AVX-512 VNNI multiply-accumulates a second, on 1 and 2 threads.

    .venv/bin/python bench/peak.py

Compiles (gcc, OpenMP) and runs a loop of 24 independent ``vpdpbusd zmm`` per iteration,
each 64 u8 x s8 products summed into 16 int32 lanes, with no loads: the most a kernel can do.
``bench/layers.py`` prints each int8 layer's GMAC/s; this says how far that is from the top.
Prints the best of 5 runs per thread count, in GMAC/s.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ACCUMULATORS = 24
SOURCE = r"""
#include <stdio.h>
#include <time.h>
#include <omp.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
int main(void) {
  long iterations = 20000000;
  double best = 0;
  for (int run = 0; run < 5; run++) {
    double start = now();
    #pragma omp parallel
    { long i = iterations; __asm__ volatile("vpxord %%zmm30, %%zmm30, %%zmm30\n\t1:\n\t" BODY "dec %0\n\tjnz 1b"
                                            : "+r"(i) :: "memory"); }
    double macs = (double)iterations * ACCUMULATORS * 64 * omp_get_max_threads() / (now() - start);
    if (macs > best) best = macs;
  }
  printf("%.1f\n", best / 1e9);
  return 0;
}
"""


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from latency import cpu_key

    flags = open("/proc/cpuinfo").read().split()
    if "avx512_vnni" not in flags:
        sys.exit("no AVX-512 VNNI on this CPU: nothing to measure")
    body = "".join(f'"vpdpbusd %%zmm30, %%zmm31, %%zmm{i}\\n\\t"' for i in range(ACCUMULATORS))
    with tempfile.TemporaryDirectory() as scratch:
        source, binary = Path(scratch) / "peak.c", Path(scratch) / "peak"
        source.write_text(SOURCE.replace("BODY", body).replace("ACCUMULATORS", str(ACCUMULATORS)))
        subprocess.run(["gcc", "-O2", "-mavx512f", "-mavx512vnni", "-fopenmp", str(source), "-o", str(binary)],
                       check=True)
        print(f"{cpu_key()}: AVX-512 VNNI peak")
        for threads in (1, 2):
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            gmacs = float(subprocess.run([str(binary)], env=env, capture_output=True, text=True, check=True).stdout)
            print(f"  {threads} thread{'s' if threads > 1 else ''}: {gmacs:.0f} GMAC/s")


if __name__ == "__main__":
    main()
