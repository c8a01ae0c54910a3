"""The one configuration object, frozen and validated, passed down explicitly."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .errors import TvmqError

BIAS_CORRECTIONS = ("none", "empirical", "analytic")
LAYER_PRECISIONS = ("int8", "dynamic", "fp32")
MODES = ("static", "dynamic")
DYNAMIC_GRANULARITIES = ("tensor", "row")
ROUNDINGS = ("nearest", "adaround")
WEIGHT_BITS = (8, 7, 6, 5, 4)
NON_UNIFORM = (16, 32, 64, "auto")  # tvmq.nonuniform_search


@dataclass(frozen=True)
class Config:
    """How to quantize, build and measure a model.

    Attributes
    ----------
    target : ``"host"`` (the x86 machine running tvmq) or another registered target name.
    calibrator : activation range estimator (``tvmq.passes.calibrators.calibrator_names()``).
    per_channel : per-output-channel weight scales (else one scale per weight tensor).
    symmetric : activations as symmetric int8 (True), asymmetric uint8 (False), or whatever
        the target's int8 instructions want (None, the default).
    cle : cross-layer equalization of conv / dense pairs joined by ReLU (ReLU6 becomes ReLU).
    absorb_high_bias : move the always-positive part of biases before a ReLU into the next
        layer (needs folded BatchNorm statistics; DFQ pairs it with ``cle``).
    bias_correction : ``"none"``, ``"empirical"`` (subtract each layer's mean int8 output error
        on calibration data from its bias) or ``"analytic"`` (subtract the expected weight
        quantization error from folded BatchNorm statistics, DFQ sec. 4.2; data-free).
    trials : MetaSchedule trials across all tasks (split evenly: each task's share); 0: no trial budget.
    tuning_time : wall-clock tuning budget in seconds (or ``"90s"``, ``"10m"``, ``"1h"``) for the
        whole compile, split over its modules and their tasks by measured cost
        (:mod:`tvmq.tune`); 0: none. With ``trials`` too, a task stops at its share or the
        deadline, whichever comes first. Nothing is tuned when both are 0 (the default).
    batch_size : samples per run of the calibration / evaluation module when the model's
        batch dimension is free.
    deploy_batch : batch size baked into the deployable module when it is free.
    input_shapes : ``{input name: shape}`` fixing free dimensions (named, unknown or ``-1``); a
        list of shapes for an input builds one module per shape (shape buckets, zipped by
        position across inputs).
    tuning_db : tuning-record directory; default ``<cache>/tuning/<target>``, shared by every model
        and batch size (records are keyed by the kernel's structure, so identical kernels reuse them).
    latency_runs : timed runs per module for the latency report (median reported).
    latency_fallback : after tuning, keep fp32 every conv / dense layer whose int8 kernel plus its
        quantize / dequantize edges measured slower than its tuned fp32 kernel, and rebuild the
        int8 module once without them (needs ``trials`` > 0: nothing is measured otherwise).
    mode : ``"static"`` (activation ranges from calibration) or ``"dynamic"``: every dense / MatMul
        layer with a constant weight quantizes its input at run time from the tensor itself
        (int8 weights; convs stay static), as ONNX Runtime's ``quantize_dynamic``.
    dynamic_granularity : a dynamic dense layer's input scale and zero point: one per ``"tensor"``
        (ONNX Runtime's) or one per ``"row"`` (per token of a ``[B, S, K]`` activation); convs: per tensor.
    layers : per-layer precision overrides, ``{name or glob pattern: "fp32" | "int8" | "dynamic"}``
        ("dynamic" works on convs too: the input is zero-padded in fp32, then quantized); a name is
        an ONNX node name (``/encoder/layer.0/attention/MatMul``) or the name of one of the layer's
        tensors; later patterns win. The quantization plan records them as "user override".
    onnxruntime_baseline : also time ONNX Runtime fp32 and int8 (its ``quantize_static`` on the same
        calibration data) beside the artifact, each in processes of their own (report's
        ``onnxruntime``; :mod:`tvmq.onnxruntime_baseline`). Off by default: it adds seconds (fresh
        processes): `--onnxruntime` on the CLI, `make demo` turn it on.
    weight_bits : weight bits, 8 to 4: integers in ``[-(2^(b-1) - 1), 2^(b-1) - 1]`` stored in int8, run
        by the same int8 kernels (a target's narrower range, AVX2's 7 bits, wins).
    layer_weight_bits : per-layer weight bits, ``{name or glob pattern: bits}`` (names as ``layers``).
    rounding : ``"nearest"`` or ``"adaround"``: each weight rounded down or up as learned per layer
        from the layer's output error (Nagel et al. 2020, :mod:`tvmq.passes.adaround`).
    adaround_iterations, adaround_samples, adaround_reg_weight : AdaRound's Adam steps per layer
        (AIMET: 10000), calibration samples it learns from (at least the refinement's 64) and its
        regulariser's weight (AIMET: 0.01).
    non_uniform : None, or k in 16 / 32 / 64 int8 levels per conv (groups 1) / dense layer by weighted
        k-means (:mod:`tvmq.passes.nonuniform`; the artifact stores log2(k)-bit indices and a table),
        or ``"auto"``: the smallest k per layer meeting the accuracy budget (:mod:`tvmq.nonuniform_search`).
    rpc_tracker, rpc_key : ``"HOST:PORT"`` of a TVM RPC tracker and the key its devices registered
        under: tune, run and time on those devices (:mod:`tvmq.targets.rpc`) instead of here.
    max_accuracy_drop, max_relative_drop : an accuracy budget (in the metric's units; as a share of
        fp32's metric): deploy the fastest measured build whose metric meets it, layers kept fp32
        by metric recovered per µs lost (:mod:`tvmq.mixed_precision`). None: no budget.
    metric : what the budget is measured in: ``"top1"``, ``"agreement"``, ``"cosine"``
        (:data:`tvmq.metric.BUILTIN`, on the evaluation data) or ``"module:function"`` taking a
        ``run``; None: top1 with labels, else cosine. ``tvmq.compile(metric=fn)`` wins.
    debug : also run :mod:`tvmq.debugging`'s steps on the compile's own calibration and evaluation
        data (report.json's ``debug``; ``--debug-steps``).
    """

    target: str = "host"
    calibrator: str = "minmax"
    per_channel: bool = True
    symmetric: bool | None = None
    cle: bool = False
    absorb_high_bias: bool = False
    bias_correction: str = "none"
    trials: int = 0
    tuning_time: float = 0.0
    batch_size: int = 64
    deploy_batch: int = 1
    input_shapes: dict = field(default_factory=dict)
    tuning_db: Path | None = None
    latency_runs: int = 50
    latency_fallback: bool = True
    mode: str = "static"
    dynamic_granularity: str = "tensor"
    layers: dict = field(default_factory=dict)
    onnxruntime_baseline: bool = False
    weight_bits: int = 8
    layer_weight_bits: dict = field(default_factory=dict)
    rounding: str = "nearest"
    adaround_iterations: int = 10000
    adaround_samples: int = 64
    adaround_reg_weight: float = 0.01
    non_uniform: int | str | None = None
    rpc_tracker: str | None = None
    rpc_key: str | None = None
    max_accuracy_drop: float | None = None
    max_relative_drop: float | None = None
    metric: str | None = None
    debug: bool = False

    def budget(self):
        """The accuracy budget (:class:`tvmq.mixed_precision.Budget`), or None without one."""
        from .mixed_precision import Budget

        if self.max_accuracy_drop is None and self.max_relative_drop is None:
            return None
        return Budget(self.max_accuracy_drop, self.max_relative_drop)

    def activation_dtype(self, target_default: str) -> str:
        return target_default if self.symmetric is None else ("int8" if self.symmetric else "uint8")

    @property
    def tunes(self) -> bool:
        """Whether the compile tunes: a trial or a time budget is given."""
        return self.trials > 0 or self.tuning_time > 0

    def __post_init__(self):
        from tvmq.passes.calibrators import calibrator_names
        from tvmq.targets import target_names
        from tvmq.tune import parse_duration

        object.__setattr__(self, "tuning_time", parse_duration(self.tuning_time))

        if self.target not in target_names():
            raise TvmqError(f"unknown target {self.target!r}; choose one of: {', '.join(target_names())}")
        if self.calibrator not in calibrator_names():
            raise TvmqError(f"unknown calibrator {self.calibrator!r}; choose one of: {', '.join(calibrator_names())}")
        if self.bias_correction not in BIAS_CORRECTIONS:
            raise TvmqError(f"unknown bias correction {self.bias_correction!r}; "
                            f"choose one of: {', '.join(BIAS_CORRECTIONS)}")
        if self.mode not in MODES:
            raise TvmqError(f"unknown mode {self.mode!r}; choose one of: {', '.join(MODES)}")
        if self.dynamic_granularity not in DYNAMIC_GRANULARITIES:
            raise TvmqError(f"unknown dynamic granularity {self.dynamic_granularity!r}; choose one of: "
                            f"{', '.join(DYNAMIC_GRANULARITIES)}")
        for pattern, precision in self.layers.items():
            if precision not in LAYER_PRECISIONS:
                raise TvmqError(f"layer {pattern!r}: unknown precision {precision!r}; choose one of: "
                                f"{', '.join(LAYER_PRECISIONS)}")
        self._check_weights()
        for name in ("trials", "latency_runs"):
            if getattr(self, name) < 0:
                raise TvmqError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.rpc_tracker or self.rpc_key:
            from tvmq.targets.rpc import check_tracker_options

            check_tracker_options(self.rpc_tracker, self.rpc_key)
        from .program import shape_buckets

        shape_buckets(self.input_shapes)  # one clear error for buckets that do not line up
        from .metric import check_name

        self.budget()  # one clear error for a negative or relative >= 1 budget
        check_name(self.metric)
        for name in ("batch_size", "deploy_batch"):
            if getattr(self, name) < 1:
                raise TvmqError(f"{name} must be >= 1, got {getattr(self, name)}")

    def _check_weights(self):
        for where, bits in [("weight_bits", self.weight_bits),
                            *((f"layer_weight_bits[{p!r}]", b) for p, b in self.layer_weight_bits.items())]:
            if isinstance(bits, bool) or bits not in WEIGHT_BITS:
                raise TvmqError(f"{where}: unsupported weight bits {bits!r}; choose one of: "
                                f"{', '.join(map(str, WEIGHT_BITS))}")
        if self.rounding not in ROUNDINGS:
            raise TvmqError(f"unknown rounding {self.rounding!r}; choose one of: {', '.join(ROUNDINGS)}")
        for name in ("adaround_iterations", "adaround_samples"):
            if getattr(self, name) < 1:
                raise TvmqError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.non_uniform is not None and (isinstance(self.non_uniform, bool) or self.non_uniform not in NON_UNIFORM):
            raise TvmqError(f"unknown non-uniform levels {self.non_uniform!r}; choose one of: "
                            f"{', '.join(map(str, NON_UNIFORM))}")
        if self.non_uniform == "auto" and self.budget() is None:
            raise TvmqError("--non-uniform auto searches under an accuracy budget: give --max-accuracy-drop "
                            "or --max-relative-drop")
        if not self.adaround_reg_weight >= 0:
            raise TvmqError(f"adaround_reg_weight must be >= 0, got {self.adaround_reg_weight}")
