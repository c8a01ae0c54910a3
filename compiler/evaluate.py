"""Accuracy of the int8 module against fp32: top-1, agreement, output cosine, per-tensor SQNR."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from .calibrate import run_batches
from .data import Dataset


class Comparison:
    """fp32 against int8 over one or more data sets (each on its own pair of modules).

    SQNR of a tensor is ``10 log10(sum(ref^2) / sum((ref - int8)^2))`` over all samples: the
    error the int8 module has accumulated up to that tensor.

    Output cosine is the mean over samples of ``cos(ref_i, int8_i)``, each sample's output
    flattened (a row of a batch; a whole run's output when feeds are stacked, one run each).
    Where every sample's output is a single value (a speech probability), a per-sample cosine
    is its sign and always 1; the cosine is then taken over the vector of all samples' values.
    """

    def __init__(self, observe=None):
        self.observe = observe  # called with (tensor name, fp32 values) of every batch, when given
        self.signal, self.noise = defaultdict(float), defaultdict(float)
        self.counts = {"n": 0, "agree": 0, "fp32_hit": 0, "int8_hit": 0, "cosine": 0.0, "dot": 0.0,
                       "ref_sq": 0.0, "int8_sq": 0.0, "values": 0}
        self.labelled = True

    def add(self, fp32_vm, int8_vm, names: list[str], data: Dataset, batch: int | None, batch_size: int) -> None:
        """Run both modules (each returning ``(output, *tensors named names)``) over ``data``."""
        self.labelled = self.labelled and data.y is not None
        fp32_runs = run_batches(fp32_vm, data, batch, batch_size, "evaluate fp32 vs int8", labels=True)
        int8_runs = run_batches(int8_vm, data, batch, batch_size, None)
        for (ref, labels), quant in zip(fp32_runs, int8_runs):
            _accumulate_outputs(self.counts, ref[0], quant[0], labels, data.stacked)
            for name, r, q in zip(names, ref[1:], quant[1:]):
                self.signal[name] += float(np.square(r, dtype=np.float64).sum())
                self.noise[name] += float(np.square(r.astype(np.float64) - q).sum())
                if self.observe is not None:
                    self.observe(name, r)

    def result(self) -> dict:
        n = self.counts["n"]
        accuracy = {
            "fp32_top1": self.counts["fp32_hit"] / n if self.labelled else None,
            "int8_top1": self.counts["int8_hit"] / n if self.labelled else None,
            "top1_agreement": self.counts["agree"] / n,
            "output_cosine": self._cosine(),
            "num_samples": n,
        }
        return {"accuracy": accuracy, "sqnr_db": {k: _sqnr_db(self.signal[k], self.noise[k]) for k in self.signal}}


    def _cosine(self) -> float:
        counts = self.counts
        if counts["values"] > counts["n"]:  # several values per sample
            return counts["cosine"] / counts["n"]
        return counts["dot"] / max(np.sqrt(counts["ref_sq"] * counts["int8_sq"]), 1e-30)


def compare(fp32_vm, int8_vm, names: list[str], data: Dataset, batch: int | None, batch_size: int) -> dict:
    """:class:`Comparison` over one data set: ``{"accuracy": {...}, "sqnr_db": {name: dB}}``."""
    comparison = Comparison()
    comparison.add(fp32_vm, int8_vm, names, data, batch, batch_size)
    return comparison.result()


def _accumulate_outputs(counts: dict, ref: np.ndarray, quant: np.ndarray, labels, stacked: bool = False) -> None:
    """Add one batch's first output: ``rows`` samples (one when the feed is a stacked run)."""
    rows = 1 if stacked or not ref.ndim else ref.shape[0]
    ref2, quant2 = ref.reshape(rows, -1), quant.reshape(rows, -1)
    counts["values"] += ref2.size
    counts["dot"] += float((ref2.astype(np.float64) * quant2).sum())
    counts["ref_sq"] += float(np.square(ref2, dtype=np.float64).sum())
    counts["int8_sq"] += float(np.square(quant2, dtype=np.float64).sum())
    ref_top, quant_top = ref2.argmax(1), quant2.argmax(1)
    counts["n"] += len(ref2)
    counts["agree"] += int((ref_top == quant_top).sum())
    norms = np.linalg.norm(ref2, axis=1) * np.linalg.norm(quant2, axis=1)
    counts["cosine"] += float(((ref2 * quant2).sum(1) / np.maximum(norms, 1e-30)).sum())
    if labels is not None:
        counts["fp32_hit"] += int((ref_top == labels).sum())
        counts["int8_hit"] += int((quant_top == labels).sum())


def _sqnr_db(signal: float, noise: float) -> float | None:
    """SQNR in dB; None where it is undefined (an all-zero reference or no error at all)."""
    if signal == 0.0:
        return None
    return None if noise == 0.0 else float(10.0 * np.log10(signal / noise))
