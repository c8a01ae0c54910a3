"""TVM's runtime runs one thread per physical core once tvmq is imported; the user's setting wins."""

import os
import subprocess
import sys

from tvmq.threads import physical_cores

PROBE = "import tvmq, tvm; print(tvm.get_global_func('runtime.NumThreads')())"


def _threads(**env):
    clean = {k: v for k, v in os.environ.items() if k not in ("TVM_NUM_THREADS", "OMP_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True,
                         check=True)
    return int(out.stdout.strip().splitlines()[-1])


def test_importing_tvmq_uses_every_physical_core():
    assert _threads() == physical_cores()


def test_the_users_thread_count_wins():
    assert _threads(TVM_NUM_THREADS="1") == 1
