"""tvmq: int8 quantization compiler on Apache TVM.

``tvmq.load`` needs only TVM's runtime; ``tvmq.compile`` (and the rest of the compiler)
is imported on first use, so a deployment process never loads the compiler.
"""

from .errors import TvmqError
from .runtime import DeployedModel, load

__all__ = ["TvmqError", "load", "DeployedModel", "compile", "demo", "Config"]


def __getattr__(name):
    if name in ("compile", "demo", "CompiledModel"):
        from . import api

        return getattr(api, name)
    if name == "Config":
        from .config import Config

        return Config
    raise AttributeError(f"module 'tvmq' has no attribute {name!r}")
