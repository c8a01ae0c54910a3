"""``tvmq.compile`` as declared stages (NNCF's ``Pipeline``: declare, run once, share).

A stage is a function registered with :func:`stage`; its parameters name what it needs: the
pipeline's inputs (:data:`INPUTS`) or earlier stages, whose results it receives. A
:class:`Pipeline` runs each stage at most once, on demand, and keeps its result (a frozen
dataclass); :meth:`Pipeline.variant` changes some inputs and keeps every result that does not
depend on them, so a variant re-runs only the stages downstream of what changed: many plans
from one calibration, one set of statistics and one set of tuned kernels.

    target -> programs -> evaluation -> budget -> calibration -> calibrate -> refine_layers -> refine
      -> builds (per bucket: fp32 + int8 lowered, tuned, kernels timed) -> deploy (fallback /
         budget / end-to-end choice) -> deployed_plan -> evaluate -> baseline -> debug

:mod:`tvmq.report` renders the results into report.json; :mod:`tvmq.artifact` writes them.
"""

from __future__ import annotations

import collections
import inspect
import logging
import time
from dataclasses import dataclass
from typing import Callable

logger = logging.getLogger(__name__)

INPUTS = ("model", "calib", "eval_data", "config", "metric")  # what a caller gives


@dataclass(frozen=True)
class Stage:
    name: str
    needs: tuple[str, ...]
    run: Callable


STAGES: dict[str, Stage] = {}  # in registration order, which is an order the needs allow


def stage(fn: Callable) -> Callable:
    """Register ``fn`` as the stage named after it; its parameters are its needs, each an input or
    an earlier stage (a need that is neither is an error at import, not at run time)."""
    needs = tuple(inspect.signature(fn).parameters)
    unmet = [need for need in needs if need not in INPUTS and need not in STAGES]
    if unmet:
        raise TypeError(f"stage {fn.__name__} needs {unmet[0]!r}: neither an input nor an earlier stage")
    STAGES[fn.__name__] = Stage(fn.__name__, needs, fn)
    return fn


def downstream(changed) -> set[str]:
    """The stages whose result depends on any of ``changed`` (inputs or stages), transitively."""
    stale = set(changed)
    for entry in STAGES.values():
        if stale.intersection(entry.needs):
            stale.add(entry.name)
    return stale - set(changed)


class Pipeline:
    """The stages' results for one set of inputs, each stage run once on demand (``pipeline[name]``);
    ``runs`` counts every stage run, shared with the variants made from this pipeline."""

    def __init__(self, results: dict | None = None, runs: collections.Counter | None = None,
                 previous: dict | None = None, **inputs):
        unknown = set(inputs) - set(INPUTS)
        if unknown:
            raise TypeError(f"no pipeline input {sorted(unknown)[0]!r}; inputs: {', '.join(INPUTS)}")
        self.inputs = {name: inputs.get(name) for name in INPUTS}
        self.results = dict(results or {})
        self.runs = runs if runs is not None else collections.Counter()
        self.used = {}  # stage -> the values of its needs it ran on
        self.previous = dict(previous or {})  # stage -> (result, needs' values) before a variant

    def __getitem__(self, name: str):
        if name in self.inputs:
            return self.inputs[name]
        if name not in self.results:
            if name not in STAGES:
                raise KeyError(f"no stage or input {name!r}; stages: {', '.join(STAGES)}")
            entry = STAGES[name]
            needs = {need: self[need] for need in entry.needs}
            before = self.previous.get(name)
            if before is not None and all(before[1].get(k) is v for k, v in needs.items()):
                self.results[name] = before[0]  # early cutoff: every need is what it was, so is the result
            else:
                start = time.perf_counter()
                self.results[name] = entry.run(**needs)
                self.runs[name] += 1
                logger.debug("stage %s: %.2f s", name, time.perf_counter() - start)
            self.used[name] = needs
        return self.results[name]

    def run(self, *names: str) -> Pipeline:
        """Run the stages ``names`` (and what they need) now, in this order."""
        for name in names:
            self[name]
        return self

    def variant(self, **changed) -> Pipeline:
        """This pipeline with ``changed`` inputs: the results upstream of them are kept, the rest re-run,
        except that a stage whose needs come back identical (``is``) keeps its result (early cutoff,
        as build systems do): a stage that passes its input through stops the re-runs there."""
        stale = downstream(changed)
        kept = {name: result for name, result in self.results.items() if name not in stale}
        previous = {name: (self.results[name], self.used[name]) for name in stale if name in self.used}
        variant = Pipeline(kept, self.runs, previous, **{**self.inputs, **changed})
        variant.used.update({name: used for name, used in self.used.items() if name in kept})
        return variant


from . import prepare, quantize, lower, deploy, outcome  # noqa: E402,F401  (each registers its stages, in order)
