"""tvmq: int8 quantization compiler on Apache TVM.

``tvmq.load`` needs only TVM's runtime; ``tvmq.compile`` (and the rest of the compiler)
is imported on first use, so a deployment process never loads the compiler. Importing
``tvmq`` gives TVM's runtime one thread per physical core (:mod:`tvmq.threads`).
"""

from .threads import use_physical_cores

use_physical_cores()

from .errors import TvmqError  # noqa: E402  (after the thread count, before anything runs TVM)
from .runtime import DeployedModel, load  # noqa: E402

__all__ = ["TvmqError", "load", "DeployedModel", "compile", "demo", "debug", "Config"]


def __getattr__(name):
    if name in ("compile", "demo", "CompiledModel"):
        from . import api

        return getattr(api, name)
    if name == "debug":  # the PTQ debugging flow; its module is tvmq.debugging
        from .debugging import debug

        return debug
    if name == "Config":
        from .config import Config

        return Config
    raise AttributeError(f"module 'tvmq' has no attribute {name!r}")
