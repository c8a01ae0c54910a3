"""The ``builds`` stage: per shape bucket, the fp32 and int8 modules lowered for the target
(legalized, weights lifted into params), tuned alike and built; each kernel timed in its module."""

from __future__ import annotations

import functools
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from tvmq.passes.lift_params import lift_params
from tvmq.targets import TargetSpec

from .. import assets, profile
from ..build import bind_batch, build, executor_of
from ..program import Bucket
from ..tune import TIME_SPLIT, TuningClock, tune
from . import stage

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Built:
    """A deployable module built for the target: what tuning received (``module``), its tuning summary."""

    executable: object
    params: dict
    tuning: dict | None
    module: object


@dataclass(frozen=True)
class Builds:
    """One bucket's first builds: the realized int8 module, fp32 and int8 built and tuned alike,
    each module's kernels timed in it, the tuning summary and ``deployable(mod, share=, part=)``
    to build more modules the same way (from the same clock and database)."""

    bucket: Bucket
    int8: object
    fp32_built: Built
    int8_built: Built
    kernels: dict
    tuning: dict
    deployable: functools.partial

    @property
    def inputs(self) -> list[tuple]:
        return [(s.static_shape(self.bucket.batch), s.dtype) for s in self.bucket.program.imported.inputs]


@stage
def builds(programs, refine, config, target) -> tuple[Builds, ...]:
    """Each bucket's fp32 and int8 builds; the tuning time is split evenly over the buckets, then over
    each bucket's modules by :data:`tvmq.tune.TIME_SPLIT` (int8 takes the rebuild's part without a
    latency fallback)."""
    seconds = config.tuning_time / len(programs.buckets)
    return tuple(bucket_builds(bucket, refine, config, target, seconds) for bucket in programs.buckets)


def bucket_builds(bucket: Bucket, quantized, config, spec: TargetSpec, seconds: float) -> Builds:
    program = bucket.program
    db = Path(config.tuning_db or default_tuning_db(spec))
    clock = TuningClock(seconds) if seconds else None
    deployable = functools.partial(build_deployable, model_batch=program.batch, deploy_batch=bucket.batch,
                                   spec=spec, trials=config.trials, db=db, clock=clock)
    int8 = quantized.realize(program)
    int8_part = TIME_SPLIT["int8"] + (0.0 if config.latency_fallback else TIME_SPLIT["int8_rebuild"])
    fp32_built, int8_built = deployable(program.fp32, part=TIME_SPLIT["fp32"]), deployable(int8, part=int8_part)
    inputs = [(s.static_shape(bucket.batch), s.dtype) for s in program.imported.inputs]
    kernels = {"fp32": kernel_profile(fp32_built, inputs), "int8": kernel_profile(int8_built, inputs)}
    tuning = {"trials": config.trials, "tuning_time_s": seconds, "database": str(db), "fp32": fp32_built.tuning,
              "int8": int8_built.tuning,
              **({"time_split": {"fp32": TIME_SPLIT["fp32"], "int8": int8_part, "int8_rebuild": 1 - TIME_SPLIT["fp32"]
                                 - int8_part}} if clock else {})}
    return Builds(bucket, int8, fp32_built, int8_built, kernels, tuning, deployable)


def build_deployable(mod, model_batch: int | None, deploy_batch: int, spec: TargetSpec, trials: int,
                     db: Path, share: int | None = None, clock: TuningClock | None = None,
                     part: float = 0.0) -> Built:
    """Bind a free batch dimension, put it in the target's kernels, lift the weights into params,
    tune (``share`` trials per task when given, ``part`` of ``clock``'s time: see
    :func:`tvmq.tune.tune`) and build."""
    mod = mod if model_batch else bind_batch(mod, deploy_batch)
    lifted, params = lift_params(spec.legalize(mod) if spec.legalize else mod)
    tuned, summary = lifted, None
    if clock is not None:  # tasks ranked by FLOPs: an untuned build to profile took minutes (docs/tuning.md)
        tuned, summary = tune(lifted, spec, trials, db, share=share, budget=clock.phase(part))
    elif trials > 0:
        tuned, summary = tune(lifted, spec, trials, db, share=share)
    return Built(build(tuned, spec), params, summary, lifted)


def kernel_profile(built: Built, inputs) -> list[dict]:
    """Each kernel's µs in ``built``, timed inside the module (:mod:`tvmq.profile`); on a device whose
    VM cannot call an instrument back (RPC), the tuning records', measured there."""
    executor = executor_of(built.executable)
    if executor.timed and not executor.instrumented:
        return list((built.tuning or {}).get("kernels", []))
    return profile.profile(built.executable, built.params, inputs)


def default_tuning_db(spec: TargetSpec) -> Path:
    """``<cache>/tuning/<target key>``: one database per target for every model and batch size."""
    return assets.cache_dir() / "tuning" / target_key(spec)


def target_key(spec: TargetSpec) -> str:
    """The default tuning database's name for ``spec``: per target and tvmq version, since a
    record replays only on the kernels it was tuned for (a block renamed between versions made
    a shared database unreadable). Not per model: MetaSchedule keys records by the kernel's
    structure, so every model and batch size with an identical kernel reuses its records."""
    from importlib.metadata import version

    return f"{spec.name}-" + hashlib.sha256(f"{spec.target} tvmq {version('tvmq')}".encode()).hexdigest()[:10]
