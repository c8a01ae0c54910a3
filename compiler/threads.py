"""How many threads TVM's runtime runs: one per physical core.

TVM sizes its thread pool from ``TVM_NUM_THREADS``, else ``OMP_NUM_THREADS``, else half the
logical CPUs on x86 (to skip hyper-threads). A machine without SMT loses half its cores that
way: on these 2-core machines TVM ran one thread, so tvmq's compile-time latencies, kernel
timings, latency fallback and tuning measurements were single-threaded, while the same
ResNet-50 int8 module ran 1.7x faster with ``TVM_NUM_THREADS=2`` (21.9 vs 12.9 ms, timed by
``bench/latency.py --child``).
:func:`use_physical_cores` sets ``TVM_NUM_THREADS`` to the physical core count unless the
user set either variable; it must run before the pool starts (importing ``tvmq`` does it),
and tuning's runner processes inherit it.
"""

from __future__ import annotations

import os

VARIABLES = ("TVM_NUM_THREADS", "OMP_NUM_THREADS")


def use_physical_cores() -> None:
    if not any(v in os.environ for v in VARIABLES):
        os.environ["TVM_NUM_THREADS"] = str(physical_cores())


def physical_cores() -> int:
    try:
        import psutil
    except ImportError:  # a deployment with TVM's runtime alone
        return os.cpu_count() or 1
    return psutil.cpu_count(logical=False) or os.cpu_count() or 1
