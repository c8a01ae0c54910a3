"""Silero VAD v5 (an STFT front end, convolutions, an LSTM inside ``If`` branches) from
``silero-vad==5.1.2``.

The wheel ships ``silero_vad/data/silero_vad.onnx``: inputs ``input`` ``(1, 576)`` float32
(the 512-sample 16 kHz chunk after the previous chunk's last 64 samples, as the package's
``OnnxWrapper`` builds it), ``state`` ``(2, 1, 128)`` float32 (the LSTM state the previous
call returned) and ``sr`` (a scalar int64, 16000); outputs the speech probability ``(1, 1)``
and the next state. The graph branches on ``sr`` with ``If`` and runs its LSTM inside those
branches.

Data: audio synthesized here (16 kHz): vowel-like syllables (harmonics of a gliding pitch
shaped by vowel formants, 120-300 ms each) in runs, separated by faint noise, silence and
tone / noise bursts. A stateful model is fed one chunk a call, so each sample carries the
state the fp32 model itself reached after the previous chunks of its stream (computed once
with ONNX Runtime and cached): every engine then scores the same chunk in the same context.
The metric is decision agreement (probability > 0.5) with the fp32 reference.

``silero_vad_lstm`` is the If-free 16 kHz *sequence* export that ``silero-vad==6.2.3`` ships
beside it, ``silero_vad/data/silero_vad_16k_sequence.onnx``: inputs ``input``
``(sequence_length, 576)`` (consecutive chunks, each after its 64 context samples, fixed here
to 8: a quarter second), ``h`` and ``c`` ``(1, 1, 128)`` (the LSTM state); outputs one speech
probability per chunk ``(8,)`` and the next ``h``, ``c``. Its six convolutions are 1-D and its
LSTM runs over the 8 chunks. The same synthesized audio is cut into runs of 8 chunks, each
carrying the state the fp32 model reached on the runs before it; the metric is decision
agreement over every chunk.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..assets import _npz_bytes
from ..errors import TvmqError
from ..fileio import atomic_write_bytes
from .fetch import cached_member
from .registry import ZooModel, register

PACKAGE = "silero-vad==5.1.2"
MEMBER = "silero_vad/data/silero_vad.onnx"
RATE, CHUNK, CONTEXT = 16000, 512, 64
SECONDS = {"calib": 3.0, "eval": 6.0}
SEEDS = {"calib": 30, "eval": 31}
# (F1, F2, F3) in Hz of five vowels
FORMANTS = ((730, 1090, 2440), (530, 1840, 2480), (270, 2290, 3010), (570, 840, 2410), (300, 870, 2240))
THRESHOLD = 0.5
SEQUENCE_PACKAGE = "silero-vad==6.2.3"
SEQUENCE_MEMBER = "silero_vad/data/silero_vad_16k_sequence.onnx"
SEQUENCE = 8  # chunks per call of the sequence model
SEQUENCE_SECONDS = {"calib": 6.0, "eval": 12.0}
HIDDEN = 128


def syllable(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """One voiced syllable: harmonics of a gliding pitch weighted by a vowel's formants, Hann-shaped."""
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = rng.uniform(100, 220) * (1 + rng.uniform(-0.15, 0.15) * t / seconds)
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    formants = np.array(FORMANTS[rng.integers(len(FORMANTS))], float)
    wave = np.zeros_like(t)
    for k in range(1, int(4000 / f0.max())):
        gain = np.exp(-(((k * f0[:, None] - formants) / 120.0) ** 2)).sum(axis=1) + 0.02
        wave += gain / k * np.sin(k * phase)
    return wave * np.hanning(len(t))


def synth(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """``seconds`` of float32 audio in [-1, 1]: runs of syllables, pauses, tone and noise bursts."""
    parts, total = [], 0
    while total < seconds * RATE:
        kind = rng.choice(["speech", "pause", "burst"])
        if kind == "speech":
            part = np.concatenate([syllable(rng, rng.uniform(0.12, 0.3)) for _ in range(rng.integers(2, 6))])
            part *= rng.uniform(0.2, 0.6) / max(np.abs(part).max(), 1e-9)
        elif kind == "pause":
            part = rng.normal(0, rng.uniform(1e-4, 3e-3), int(rng.uniform(0.2, 0.6) * RATE))
        else:
            n = int(rng.uniform(0.1, 0.4) * RATE)
            tone = np.sin(2 * np.pi * rng.uniform(300, 3000) * np.arange(n) / RATE)
            part = rng.uniform(0.05, 0.3) * (tone if rng.random() < 0.5 else rng.normal(0, 0.5, n))
        parts.append(part)
        total += len(part)
    audio = np.concatenate(parts)[:int(seconds * RATE)]
    return np.clip(audio, -1, 1).astype(np.float32)


def chunks(audio: np.ndarray) -> np.ndarray:
    """``(N, 576)``: each 512-sample chunk after the previous chunk's last 64 samples (zeros first)."""
    n = len(audio) // CHUNK
    padded = np.concatenate([np.zeros(CONTEXT, np.float32), audio[:n * CHUNK]])
    return np.stack([padded[i * CHUNK:i * CHUNK + CHUNK + CONTEXT] for i in range(n)])


def stream_states(model: Path, frames: np.ndarray) -> np.ndarray:
    """``(N, 2, 1, 128)``: the state fed with each frame when the fp32 model streams them in order."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise TvmqError("the Silero VAD samples need onnxruntime once, to stream the fp32 states") from None
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    state, states = np.zeros((2, 1, 128), np.float32), []
    for frame in frames:
        states.append(state)
        _, state = session.run(None, {"input": frame[None], "state": state, "sr": np.array(RATE, np.int64)})
    return np.stack(states)


def _fetch(root: Path) -> Path:
    return cached_member(PACKAGE, MEMBER, root)


def _samples(root: Path, split: str) -> list[dict]:
    path = Path(root) / f"vad_{split}.npz"
    if not path.exists():
        frames = chunks(synth(SECONDS[split], np.random.default_rng(SEEDS[split])))
        atomic_write_bytes(path, _npz_bytes(x=frames, state=stream_states(_fetch(root), frames)))
    with np.load(path, allow_pickle=False) as data:
        frames, states = data["x"], data["state"]
    return [{"input": f[None], "state": s, "sr": np.array(RATE, np.int64)} for f, s in zip(frames, states)]


def _agreement(root: Path, reference, candidate, split: str) -> float:
    ref = np.array([r[0].item() > THRESHOLD for r in reference])
    got = np.array([c[0].item() > THRESHOLD for c in candidate])
    return float(np.mean(ref == got))


def stream_sequence_states(model: Path, runs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(h, c)``, each ``(N, 1, 1, 128)``: the LSTM state fed with each run of chunks when the fp32
    sequence model streams them in order."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise TvmqError("the Silero VAD samples need onnxruntime once, to stream the fp32 states") from None
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    h = c = np.zeros((1, 1, HIDDEN), np.float32)
    hs, cs = [], []
    for run in runs:
        hs.append(h)
        cs.append(c)
        _, h, c = session.run(None, {"input": run, "h": h, "c": c})
    return np.stack(hs), np.stack(cs)


def _fetch_sequence(root: Path) -> Path:
    return cached_member(SEQUENCE_PACKAGE, SEQUENCE_MEMBER, root)


def _sequence_samples(root: Path, split: str) -> list[dict]:
    path = Path(root) / f"vad_sequence_{split}.npz"
    if not path.exists():
        frames = chunks(synth(SEQUENCE_SECONDS[split], np.random.default_rng(SEEDS[split])))
        runs = frames[:len(frames) // SEQUENCE * SEQUENCE].reshape(-1, SEQUENCE, CHUNK + CONTEXT)
        h, c = stream_sequence_states(_fetch_sequence(root), runs)
        atomic_write_bytes(path, _npz_bytes(x=runs, h=h, c=c))
    with np.load(path, allow_pickle=False) as data:
        runs, hs, cs = data["x"], data["h"], data["c"]
    return [{"input": r, "h": h, "c": c} for r, h, c in zip(runs, hs, cs)]


def _sequence_agreement(root: Path, reference, candidate, split: str) -> float:
    ref = np.concatenate([np.ravel(r[0]) for r in reference]) > THRESHOLD
    got = np.concatenate([np.ravel(c[0]) for c in candidate]) > THRESHOLD
    return float(np.mean(ref == got))


register(ZooModel(
    name="silero_vad", kind="speech", requirement=PACKAGE, member=MEMBER,
    input_shapes={"input": (1, CHUNK + CONTEXT), "state": (2, 1, 128), "sr": ()},
    fetcher=_fetch, sampler=_samples, scorer=_agreement, metric_name="decision agree", licence="MIT",
    notes="synthesized audio; state streamed by the fp32 model; If + LSTM inside the branches"))


register(ZooModel(
    name="silero_vad_lstm", kind="speech", requirement=SEQUENCE_PACKAGE, member=SEQUENCE_MEMBER,
    input_shapes={"input": (SEQUENCE, CHUNK + CONTEXT), "h": (1, 1, HIDDEN), "c": (1, 1, HIDDEN)},
    fetcher=_fetch_sequence, sampler=_sequence_samples, scorer=_sequence_agreement, metric_name="decision agree",
    licence="MIT", notes="synthesized audio; 8 chunks a call, LSTM state streamed by the fp32 model; 1-D convs, LSTM"))
