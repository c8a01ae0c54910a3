"""``tvmq.debug(...)`` (this module is ``tvmq.debugging``): AIMET's PTQ debugging flow (its guide, section 4.8) as one run, one section per step.

One calibration serves every step; each step is a function registered with :func:`step` (adding
one is one decorated function) and reports its own seconds:

1. ``sanity``: every quantizer bypassed reproduces fp32 bit for bit, both the simulation
   (:class:`~tvmq.passes.simulate.SimulateQuantization` with both sides off) and realize (the plan
   with every layer fp32 and no activation parameters), on the same analysis module build;
2. ``sides``: the simulation with int8 weights only, int8 activations only, both, and each side
   widened to 16 bits, to show which side hurts; and the simulation with both sides at 8 bits
   against the integer module it simulates (each tensor within a quantization step);
3. ``per_layer``: SQNR and cosine to fp32 of each quantized tensor in the simulation, the integer
   analysis module and the **deployed** module (legalized for the target, packed kernels, lifted
   params: :func:`tvmq.stages.lower.build_deployable` of the exposed realization); the integer two must be
   bit-identical;
4. ``sensitivity``: the task metric with one layer kept fp32 and with one layer alone int8, ranked
   (:mod:`tvmq.sensitivity`, the ranking the accuracy budget uses).

Rows are keyed by ONNX node names. The metric of steps 1-2 is :func:`task_metric`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import tvm

from tvmq.passes.expose import ExposeTensors, named_vars
from tvmq.passes.realize import RealizePlan, quantization_record
from tvmq.passes.simulate import SimulateQuantization

from . import assets
from .calibrate import batch_args, call_outputs, run_batches
from .config import Config
from .debugging_markdown import to_markdown
from .data import Dataset
from .errors import TvmqError
from .evaluate import Comparison
from .fileio import staged_directory
from .report import layer_node
from .stages import Pipeline
from .stages.deploy import int8_chains
from .stages.lower import build_deployable, target_key

logger = logging.getLogger(__name__)

LAYER_SAMPLES = 256  # samples per-layer figures are taken over (the deployed module runs its deploy batch)


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    run: Callable


STEPS: dict[str, Step] = {}


def step(name: str, title: str):
    """Register a debugging step ``fn(session) -> dict`` under ``name`` (run in registration order)."""
    def register(fn):
        STEPS[name] = Step(name, title, fn)
        return fn
    return register


def task_metric(accuracy: dict) -> dict:
    """The figure steps 1-3 rank by (higher is better): int8 top-1 with labels, else the output cosine
    to fp32 (continuous, and meaningful for encoders, whose argmax agreement is not); top-1 agreement
    beside it. One place, for :mod:`tvmq.metric` to replace."""
    labelled = accuracy.get("int8_top1") is not None
    return {"name": "top-1" if labelled else "output cosine",
            "value": accuracy["int8_top1"] if labelled else accuracy["output_cosine"],
            "fp32": accuracy["fp32_top1"] if labelled else 1.0, "output_cosine": accuracy["output_cosine"],
            "top1_agreement": accuracy["top1_agreement"]}


@dataclass
class Session:
    """What the steps share: one calibration (``quantized``), the evaluation sets, the first bucket."""

    config: Config
    spec: object
    quantized: object  # tvmq.stages.quantize.Quantized: the refine stage's result
    eval_sets: list  # [(Program, Dataset)]
    bucket: object  # tvmq.program.Bucket: the program and batch deployed
    layer_samples: int = LAYER_SAMPLES
    cache: dict = field(default_factory=dict)

    @property
    def program(self):
        return self.bucket.program

    def nodes(self) -> dict:
        return self.program.imported.nodes

    def onnx_name(self, tensor: str) -> str:
        return self.program.imported.onnx_names.get(tensor, tensor)

    def node_of(self, tensor: str) -> str:
        return self.nodes().get(tensor, (self.onnx_name(tensor), None))[0]


def debug(model: str | Path, calib, eval_data=None, config: Config | None = None, out: str | Path | None = None,
          steps=None, force: bool = False, layer_samples: int = LAYER_SAMPLES) -> dict:
    """Run the debugging steps (default all of :data:`STEPS`) on ``model``; write ``debug.json`` and
    ``debug.md`` to ``out`` when given. Returns the report's ``debug`` section.

    Parameters
    ----------
    model, calib, eval_data, config : as :func:`tvmq.compile`'s.
    out : directory for ``debug.json`` / ``debug.md`` (None: write nothing).
    steps : names of the steps to run, in order (default: all).
    force : replace an existing ``out``.
    layer_samples : evaluation samples of the per-layer step.
    """
    if calib is None:
        raise TvmqError("calibration data is needed (--calib): the debugging flow calibrates the model")
    unknown = [name for name in steps or () if name not in STEPS]
    if unknown:
        raise TvmqError(f"no debugging step {unknown[0]!r}; steps: {', '.join(STEPS)}")
    if out is not None and Path(out).exists() and not force:
        raise TvmqError(f"output directory {out} already exists (pass --force to replace it)")
    config = config or Config()
    session = _session(model, calib, eval_data, config, layer_samples)
    report = {"model": session.program.imported.name, "target": str(session.spec.target),
              "eval_data": "evaluation split" if eval_data is not None else "calibration data (no --eval given)",
              "steps": run_steps(session, steps)}
    if out is not None:
        write(report, Path(out), force)
    return report


def _session(model, calib, eval_data, config: Config, layer_samples: int) -> Session:
    """The steps' session from the compile's stages: its target, programs, one calibration and data."""
    results = Pipeline(model=model, calib=calib, eval_data=eval_data, config=config)
    if results["programs"].qdq is not None:
        raise TvmqError("tvmq debug calibrates a float model: this is a QDQ model, whose own scales are the plan")
    eval_sets = results["evaluation"].sets if results["evaluation"].given else results["calibration"].sets
    return Session(config, results["target"], results["refine"], list(eval_sets), results["programs"].buckets[0],
                   layer_samples)


def run_steps(session: Session, steps=None) -> list[dict]:
    """Each step's section (default: all of :data:`STEPS`, in order), with its seconds."""
    return [_run_step(STEPS[name], session) for name in (steps or STEPS)]


def _run_step(entry: Step, session: Session) -> dict:
    logger.info("debug step %s: %s", entry.name, entry.title)
    start = time.perf_counter()
    result = entry.run(session)
    return {"name": entry.name, "title": entry.title, **result, "seconds": round(time.perf_counter() - start, 2)}


# ---- step 1: sanity --------------------------------------------------------------------------

@step("sanity", "every quantizer bypassed reproduces fp32")
def sanity(session: Session) -> dict:
    """Both bypasses, each against fp32 on the same build, every output element compared exactly."""
    plan = session.quantized.plan
    bypassed = dataclasses.replace(plan.with_precision(plan.layers, "fp32", "debug: bypassed"), activations={})
    checks = {"simulation_bypassed": lambda p: SimulateQuantization(plan, weights=False, activations=False)(p.fp32),
              "realize_bypassed": lambda p: RealizePlan(bypassed)(p.fp32)}
    results = {name: _identical_outputs(session, make) for name, make in checks.items()}
    return {"passed": all(r["identical"] for r in results.values()), **results}


def _identical_outputs(session: Session, make_module) -> dict:
    """Whether ``make_module(program)`` returns fp32's outputs exactly, over every evaluation set."""
    largest, samples = 0.0, 0
    for program, data in session.eval_sets:
        reference = session.cache.setdefault((id(program), "fp32"), None) or _vm(program, program.fp32)
        session.cache[(id(program), "fp32")] = reference
        runs = zip(run_batches(reference, data, program.batch, program.size, None),
                   run_batches(_vm(program, make_module(program)), data, program.batch, program.size, None))
        for ref, got in runs:
            largest = max(largest, float(np.abs(ref[0].astype(np.float64) - got[0]).max(initial=0.0)))
            samples += len(ref[0])
    return {"identical": largest == 0.0, "max_abs_diff": largest, "samples": samples}


# ---- step 2: which side hurts ----------------------------------------------------------------

SIDES = (  # (name, weights on, activations on, weight bits, activation bits)
    ("int8 weights + int8 activations", True, True, 8, 8),
    ("int8 weights only (fp32 activations)", True, False, 8, 8),
    ("int8 activations only (fp32 weights)", False, True, 8, 8),
    ("16-bit weights + int8 activations", True, True, 16, 8),
    ("int8 weights + 16-bit activations", True, True, 8, 16),
)


@step("sides", "weights only vs activations only (simulated), and the simulation against the int8 module")
def sides(session: Session) -> dict:
    variants = []
    for name, weights, activations, w_bits, a_bits in SIDES:
        sides = {} if (weights, activations, w_bits, a_bits) == (True, True, 8, 8) else \
            {"weights": weights, "activations": activations, "weight_bits": w_bits, "activation_bits": a_bits}
        accuracy = _accuracy(session, lambda p, s=sides: _simulated(session, p, **s))
        variants.append({"name": name, "weights": weights, "activations": activations, "weight_bits": w_bits,
                         "activation_bits": a_bits, "metric": task_metric(accuracy), "accuracy": accuracy})
    int8 = _accuracy(session, lambda p: _int8_exposed(session, p)[1])
    drop = {v["name"]: v["metric"]["fp32"] - v["metric"]["value"] for v in variants}
    weights_drop, acts_drop = drop[SIDES[1][0]], drop[SIDES[2][0]]
    return {"variants": variants, "int8_module": {"metric": task_metric(int8), "accuracy": int8},
            "hurts": "weights" if weights_drop > acts_drop else "activations" if acts_drop > weights_drop else
            "neither more", "simulation_vs_int8": simulation_vs_int8(session)}


def _accuracy(session: Session, make_vm) -> dict:
    """:class:`Comparison` of ``make_vm(program)`` against fp32 over every evaluation set (outputs only)."""
    comparison = Comparison()
    for program, data in session.eval_sets:
        comparison.add(_fp32_vm(session, program), make_vm(program), [], data, program.batch, program.size)
    return comparison.result()["accuracy"]


def _vm(program, mod):
    """``mod`` on ``program``'s analysis VM, returning ``(result,)`` as :func:`run_batches` reads it."""
    return program.vm(ExposeTensors([])(mod))


def _fp32_vm(session: Session, program):
    """fp32 on ``program``'s analysis VM, returning ``(result, *tensors the int8 module exposes)``:
    the one reference of every step, built once per program."""
    key = (id(program), "fp32 exposed")
    if key not in session.cache:
        names, _ = _int8_exposed(session, program)
        session.cache[key] = program.vm(ExposeTensors(names)(program.fp32))
    return session.cache[key]


def _int8_exposed(session: Session, program) -> tuple[list, object]:
    """The integer analysis module returning every quantized tensor: ``(names, vm)``, built once."""
    key = (id(program), "int8 exposed")
    if key not in session.cache:
        int8 = session.quantized.realize(program, expose=True)
        session.cache[key] = quantization_record(int8)["exposed"], program.vm(int8)
    return session.cache[key]


def _simulated(session: Session, program, forced: bool = False, **sides):
    """The simulation on ``program``'s analysis VM, exposing what the int8 module exposes, each as the
    int8 module exposes it (fake-quantized where it computes the tensor in int8); ``forced``: its readers
    read those tensors from extra inputs (teacher forcing); built once per variant."""
    key = (id(program), "simulated", forced, tuple(sorted(sides.items())))
    if key not in session.cache:
        names, _ = _int8_exposed(session, program)
        session.cache[key] = program.vm(SimulateQuantization(session.quantized.plan, expose=names,
                                                             forced=names if forced else (), **sides)(program.fp32))
    return session.cache[key]


def simulation_vs_int8(session: Session) -> dict:
    """Each quantized tensor of the 8-bit simulation against the integer module's, in quantization
    steps of that tensor, ``|sim - int8| / s``, in graph order, two ways:

    - local (the check): the simulation teacher-forced with the int8 module's own tensors, so each
      tensor differs only by what its own op computes (fp32 arithmetic on fake-quantized values
      against int32 accumulation: one step where a value falls on a rounding tie). Agrees when no
      element of any tensor is more than one step apart;
    - drift (``drift_*``): both run freely; the differences that start at rounding ties are carried
      and amplified downstream (by softmax, GELU), so they say how far the simulation's bits can
      wander from the module's, not whether it simulates the module.
    """
    program, data = _layer_data(session)
    names, int8 = _int8_exposed(session, program)
    free, forced = _simulated(session, program), _simulated(session, program, forced=True)
    scales = {name: float(qp.scale) for name, qp in session.quantized.plan.activations.items()}
    local, drift = _StepStats(), _StepStats()
    for args, _ in batch_args(data, program.batch, program.size):
        ref = call_outputs(int8, args)
        drift.add(names, call_outputs(free, args)[1:], ref[1:], scales)
        local.add(names, call_outputs(forced, args + [tvm.runtime.tensor(t) for t in ref[1:]])[1:], ref[1:], scales)
    order = {name: i for i, name in enumerate(named_vars(program.fp32["main"]))}
    rows = [{"node": session.node_of(n), "tensor": session.onnx_name(n), **local.row(n),
             **{f"drift_{k}": v for k, v in drift.row(n).items()}}
            for n in sorted(names, key=lambda n: order.get(n, len(order)))]
    first = next((row["node"] for row in rows if row["max_steps"] > 1.001), None)
    return {"agree": first is None, "first_beyond_one_step": first, "tensors": rows}


class _StepStats:
    """Per tensor: the mean (over batches) of the mean distance in steps, and the largest."""

    def __init__(self):
        self.mean, self.worst, self.batches = {}, {}, 0

    def add(self, names, got, ref, scales) -> None:
        for name, s, q in zip(names, got, ref):
            steps = np.abs(s.astype(np.float64) - q) / scales[name]
            self.worst[name] = max(self.worst.get(name, 0.0), float(steps.max(initial=0.0)))
            self.mean[name] = self.mean.get(name, 0.0) + float(steps.sum()) / max(steps.size, 1)
        self.batches += 1

    def row(self, name) -> dict:
        return {"mean_steps": self.mean[name] / max(self.batches, 1), "max_steps": self.worst[name]}


def _layer_data(session: Session) -> tuple:
    """The first bucket's program and up to ``layer_samples`` evaluation samples of its shape."""
    for program, data in session.eval_sets:
        if program is session.program:
            return program, data.head(session.layer_samples)
    program, data = session.eval_sets[0]
    return program, data.head(session.layer_samples)


# ---- step 3: per layer, simulated, integer and deployed ----------------------------------------

@step("per_layer", "per-tensor SQNR and cosine: simulation, int8 module, deployed module")
def per_layer(session: Session) -> dict:
    program, data = _layer_data(session)
    names, int8 = _int8_exposed(session, program)
    modules = {"simulated": _simulated(session, program), "int8": int8,
               "deployed": deployed_exposed(session, program)}
    batch = session.bucket.batch if program is session.program else program.batch or program.size
    stats = {key: _TensorStats() for key in modules}
    exact = _TensorStats()
    reference = _fp32_vm(session, program)
    runs = [run_batches(reference, data, batch, batch, None)] + \
        [run_batches(vm, data, batch, batch, None) for vm in modules.values()]
    for ref, *got in zip(*runs):
        for key, values in zip(modules, got):
            stats[key].add(names, ref[1:], values[1:])
        exact.add(names, got[1][1:], got[2][1:])  # integer module as reference for the deployed one
    rows = [_layer_row(session, name, stats, exact) for name in names]
    mismatched = [row["node"] for row in rows if not row["deployed_identical"]]
    return {"samples": len(data), "batch": batch, "deployed_matches_int8": not mismatched,
            "mismatched": mismatched, "layers": rows}


def _layer_row(session: Session, name: str, stats: dict, exact: _TensorStats) -> dict:
    row = {"node": session.node_of(name), "tensor": session.onnx_name(name)}
    for key, tensor_stats in stats.items():
        row[f"sqnr_db_{key}"], row[f"cosine_{key}"] = tensor_stats.sqnr(name), tensor_stats.cosine(name)
    row["deployed_max_abs_diff"] = exact.largest[name]
    row["deployed_identical"] = exact.largest[name] == 0.0
    return row


class _TensorStats:
    """Per tensor over batches: ``SQNR = 10 log10(sum ref^2 / sum (ref - x)^2)``, cosine
    ``sum ref x / sqrt(sum ref^2 sum x^2)`` (over all samples), and the largest ``|ref - x|``."""

    def __init__(self):
        self.sums: dict = {}
        self.largest: dict = {}

    def add(self, names, refs, values) -> None:
        for name, ref, x in zip(names, refs, values):
            ref, x = ref.astype(np.float64), x.astype(np.float64)
            sums = self.sums.setdefault(name, np.zeros(4))
            sums += [np.square(ref).sum(), np.square(ref - x).sum(), (ref * x).sum(), np.square(x).sum()]
            self.largest[name] = max(self.largest.get(name, 0.0), float(np.abs(ref - x).max(initial=0.0)))

    def sqnr(self, name: str) -> float | None:
        signal, noise = self.sums[name][:2]
        return None if signal == 0.0 or noise == 0.0 else float(10.0 * np.log10(signal / noise))

    def cosine(self, name: str) -> float:
        ref_sq, _, dot, x_sq = self.sums[name]
        return float(dot / max(np.sqrt(ref_sq * x_sq), 1e-30))


def deployed_exposed(session: Session, program) -> _Deployed:
    """The int8 module exactly as ``tvmq compile`` deploys it for the target (legalized, packed
    kernels, lifted params, tuned from the same database when ``--trials`` > 0), but returning
    every quantized tensor too: :func:`tvmq.stages.lower.build_deployable` of ``realize(expose=True)``."""
    config, spec = session.config, session.spec
    batch = session.bucket.batch if program is session.program else program.batch or program.size
    db = Path(config.tuning_db or assets.cache_dir() / "tuning" / f"{program.imported.name}-{target_key(spec)}")
    built = build_deployable(session.quantized.realize(program, expose=True), model_batch=program.batch,
                             deploy_batch=batch, spec=spec, trials=config.trials, db=db)
    return _Deployed(built)


class _Deployed:
    """A deployed build called like an analysis VM: ``vm["main"](*inputs)`` appends its params."""

    def __init__(self, built):
        import tvm

        from .build import virtual_machine

        self.vm = virtual_machine(built.executable)
        self.params = [tvm.runtime.tensor(v) for v in built.params.values()]

    def __getitem__(self, name: str):
        return lambda *inputs: self.vm[name](*inputs, *self.params)


# ---- step 4: sensitivity ---------------------------------------------------------------------

@step("sensitivity", "the task metric with one layer quantized at a time, ranked")
def sensitivity(session: Session) -> dict:
    """:func:`tvmq.sensitivity.measure` on the first evaluation set, with the metric the accuracy
    budget would use (``Config.metric``; default top-1 with labels, else cosine to fp32): per int8
    layer, the metric with it kept fp32 (the rest int8) and with it alone int8 (the rest fp32)."""
    from . import metric as metrics
    from .sensitivity import measure, program_evaluator, program_run

    program, data = session.eval_sets[0]
    name, metric = metrics.resolve(session.config.metric, data, program_run(program, program.fp32))
    chains = int8_chains(program, session.quantized.realize(program))
    nodes = {name: layer_node(session.nodes(), chain) for name, chain in chains.items()}
    result = measure(program_evaluator(session.quantized, program, metric), list(nodes), nodes, alone=True)
    return {"metric": name, "fp32": result.fp32, "int8": result.int8, "variants": 2 * len(nodes) + 2,
            "ranking": result.to_json()}


# ---- output ----------------------------------------------------------------------------------

def write(report: dict, out: Path, force: bool = False) -> Path:
    """``debug.json`` and ``debug.md`` in ``out``, all or nothing."""
    with staged_directory(out, force) as stage:
        (stage / "debug.json").write_text(json.dumps(report, indent=1) + "\n")
        (stage / "debug.md").write_text(to_markdown(report))
    return out
