"""The stages before calibration: the target, the programs (import + fp32 passes), the data and
the accuracy budget's metric (checked before calibration, so a bad budget fails first)."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

from tvmq.passes.absorb_high_bias import AbsorbHighBias
from tvmq.passes.equalize_cross_layer import EqualizeCrossLayer
from tvmq.passes.fold_batchnorm import FoldBatchNorm
from tvmq.targets import TargetSpec, get_target
from tvmq.targets.rpc import with_tracker

from ..config import Config
from ..errors import TvmqError
from ..program import Bucket, Programs
from . import stage

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Imported:
    """The model imported per shape (``programs``), the deployed buckets, the QDQ parameters (or None)."""

    programs: Programs
    buckets: tuple[Bucket, ...]
    qdq: object


@dataclass(frozen=True)
class DataSets:
    """Samples grouped by shape, each with the program that runs it; ``given``: the caller gave data."""

    sets: tuple
    given: bool


@dataclass(frozen=True)
class BudgetMetric:
    """The accuracy budget's metric: its name and ``make(fp32 run) -> metric``."""

    name: str
    make: object


def target_of(config: Config) -> TargetSpec:
    """The target ``config`` names, measured on the devices of its RPC tracker when it gives one."""
    spec = get_target(config.target)
    return with_tracker(spec, config.rpc_tracker, config.rpc_key) if config.rpc_tracker else spec


@stage
def target(config) -> TargetSpec:
    """The target; tuning times candidates on its executor, so one that cannot run here fails before
    calibration, not after it."""
    spec = target_of(config)
    executor = spec.executor
    why = (executor.unavailable() or (None if executor.timed else f"its modules are {executor.why_untimed}")) \
        if config.tunes else None
    if why:
        flag = f"--trials {config.trials}" if config.trials else f"--tuning-time {config.tuning_time:g}s"
        raise TvmqError(f"{flag}: tuning times candidates on the {spec.name} device, and {why}: "
                        f"build with --trials 0")
    return spec


def programs_of(model, config: Config, spec: TargetSpec) -> Programs:
    prepare = functools.partial(prepare_fp32, cle=config.cle, absorb_high_bias=config.absorb_high_bias)
    return Programs(model, config, spec.analysis_spec(), prepare)  # calibration and evaluation run there


@stage
def programs(model, config, target) -> Imported:
    found = programs_of(model, config, target)
    buckets = tuple(found.buckets())
    return Imported(found, buckets, buckets[0].program.imported.qdq)


@stage
def evaluation(programs, eval_data) -> DataSets:
    sets = programs.programs.data(eval_data, "evaluation") if eval_data is not None else []
    return DataSets(tuple(sets), eval_data is not None)


@stage
def budget(config, metric, evaluation, programs) -> BudgetMetric | None:
    """The accuracy budget's metric when ``config`` has a budget, else None."""
    from .. import metric as metrics

    if config.budget() is None:
        if metric is not None:
            logger.warning("a metric was given without an accuracy budget (--max-accuracy-drop): it is not used")
        return None
    if len(programs.buckets) > 1:
        raise TvmqError("an accuracy budget (--max-accuracy-drop) builds one shape bucket, not several")
    if len(evaluation.sets) > 1:
        raise TvmqError("an accuracy budget's metric runs on evaluation data of one shape; it has several")
    data = evaluation.sets[0][1] if evaluation.sets else None
    if metric is not None:
        if not callable(metric):
            raise TvmqError(f"metric must be a function of run, got {type(metric).__name__}")
        return BudgetMetric(getattr(metric, "__name__", "user metric"), lambda reference: metric)
    name, _ = metrics.resolve(config.metric, data, None, check_only=True)  # bad names and data fail now
    return BudgetMetric(name, lambda reference: metrics.resolve(config.metric, data, reference)[1])


@stage
def calibration(programs, calib) -> DataSets:
    """The calibration sets (none for a QDQ model: its parameters are the plan)."""
    if programs.qdq is not None:
        return DataSets((), False)
    if calib is None:
        raise TvmqError("calibration data is needed (--calib): the model is float, not a QDQ model")
    return DataSets(tuple(programs.programs.data(calib, "calibration")), True)


def prepare_fp32(mod, cle: bool = False, absorb_high_bias: bool = False, qdq: bool = False):
    """The fp32 -> fp32 passes: constant and BatchNorm folding, optionally CLE and high-bias absorption;
    a QDQ model's float graph (``qdq``) only folds constants: its weights are the model's int8 values."""
    import tvm
    from tvm import relax

    if qdq:
        return relax.transform.FoldConstant()(mod)
    passes = [relax.transform.FoldConstant(), FoldBatchNorm(), relax.transform.FoldConstant()]
    if cle:
        passes.append(EqualizeCrossLayer())
    if absorb_high_bias:
        passes.append(AbsorbHighBias())
    return tvm.transform.Sequential(passes)(mod)
