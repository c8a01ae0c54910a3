"""Calibrators on known distributions, against independent references."""

from collections import Counter

import numpy as np
import pytest
from scipy.stats import entropy

from tvmq.passes.calibrators import calibrator_names, make_observer
from tvmq.passes.histogram import Histogram, quantization_mse
from tvmq.passes.kld import kl_threshold_bin

EPS = 1e-4


def _smooth_reference(counts):
    """Empty bins get EPS of probability, taken evenly from the non-empty ones."""
    p = np.array(counts, np.float64) / np.sum(counts)
    zeros = [k for k, v in enumerate(p) if v == 0]
    nonzeros = [k for k, v in enumerate(p) if v != 0]
    taken = EPS * len(zeros) / len(nonzeros)
    if taken >= min(p[k] for k in nonzeros):
        return None
    for k in zeros:
        p[k] = EPS
    for k in nonzeros:
        p[k] -= taken
    return p


def _kl_reference(hist, levels):
    """TensorRT's loop (digitize into levels, spread over non-empty bins) with scipy's KL."""
    best, best_kl = None, np.inf
    for i in range(levels, len(hist) + 1):
        space = np.linspace(0, i, num=levels + 1)
        digitized = np.digitize(np.arange(i), space) - 1
        digitized[np.asarray(hist[:i]) == 0] = -1
        merged = np.zeros(levels)
        for idx, d in enumerate(digitized):
            if d != -1:
                merged[d] += hist[idx]
        for key, count in Counter(digitized).items():
            if key != -1:
                merged[key] /= count
        candidate = np.array([merged[d] if d != -1 else 0.0 for d in digitized])
        reference = np.array(hist[:i], np.float64)
        reference[-1] += np.sum(hist[i:])
        p, q = _smooth_reference(reference), _smooth_reference(candidate)
        kl = np.inf if p is None or q is None else entropy(p, q)
        if kl < best_kl:
            best, best_kl = i, kl
    return best


DISTRIBUTIONS = {
    "gaussian": lambda r: np.abs(r.standard_normal(200_000)),
    "laplace": lambda r: np.abs(r.laplace(size=200_000)),
    "heavy tail with outliers": lambda r: np.abs(np.concatenate([r.standard_t(3, 200_000), [60.0, -80.0]])),
}


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_kl_threshold_matches_independent_reference(name, rng):
    values = DISTRIBUTIONS[name](rng)
    counts, _ = np.histogram(values, bins=256, range=(0, values.max()))
    assert kl_threshold_bin(counts, levels=32) == _kl_reference(counts, levels=32)


def test_kld_clips_outliers_but_keeps_the_bulk(rng):
    values = np.concatenate([rng.standard_normal(100_000), [40.0, -50.0]]).astype(np.float32)
    observer = make_observer("kld", "int8")
    for batch in np.array_split(values, 10):
        observer.observe(batch)
    lo, hi = observer.range()
    assert 2.5 < hi < 10.0 and -10.0 < lo < -2.5  # the outliers are clipped, the Gaussian bulk kept


def test_percentile_matches_numpy(rng):
    values = rng.laplace(size=100_000).astype(np.float32)
    observer = make_observer("percentile")
    for batch in np.array_split(values, 7):
        observer.observe(batch)
    lo, hi = observer.range()
    width = (values.max() - values.min()) / 2048
    assert abs(hi - np.percentile(values, 99.99)) < 2 * width
    assert abs(lo - np.percentile(values, 0.01)) < 2 * width


def test_mse_range_minimises_the_error(rng):
    values = np.concatenate([rng.standard_normal(50_000), [30.0]]).astype(np.float32)
    mse, reference = make_observer("mse", "int8"), Histogram()
    for batch in np.array_split(values, 5):
        mse.observe(batch)
        reference.add(batch)
    lo, hi = mse.range()
    best = quantization_mse(reference, lo, hi, "int8")
    vmin, vmax = float(values.min()), float(values.max())
    assert hi < vmax
    for factor in (0.1, 0.3, 0.5, 0.9, 1.0):
        assert best <= quantization_mse(reference, vmin * factor, vmax * factor, "int8")


def test_auto_picks_the_candidate_with_the_least_error(rng):
    values = np.concatenate([rng.standard_normal(50_000), [25.0]]).astype(np.float32)
    auto = make_observer("auto", "uint8")
    auto.observe(values)
    chosen = auto.range()
    errors = {name: quantization_mse(auto.hist, *obs.range(), "uint8") for name, obs in auto.candidates.items()}
    assert chosen == auto.candidates[auto.chosen].range()
    assert errors[auto.chosen] == min(errors.values())


def test_histogram_state_stays_bounded_and_keeps_its_mass(rng):
    hist = Histogram()
    total = 0
    for scale in (0.1, 1.0, 5.0, 0.5, 20.0):
        batch = rng.standard_normal(10_000) * scale
        hist.add(batch)
        total += batch.size
    assert hist.counts.shape == (2048,) and hist.counts.sum() == pytest.approx(total)
    assert hist.lo <= hist.min and hist.hi >= hist.max


def test_every_calibrator_is_registered():
    assert calibrator_names() == ["auto", "eq", "kld", "minmax", "mse", "percentile"]
