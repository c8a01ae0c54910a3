"""Calibrators on known distributions, against independent references."""

from collections import Counter

import numpy as np
import pytest
from scipy.stats import entropy

from tvmq.passes.calibrators import calibrator_names, make_observer
from tvmq.passes.histogram import Histogram, quantization_mse
from tvmq.passes.kld import divergence, kl_symmetric_half_width, kl_threshold_bin, screening_divergences

EPS = 1e-4


def _smooth_reference(counts):
    """Empty bins get EPS counts, taken evenly from the non-empty ones (MXNet's / ORT's smoothing)."""
    p = np.array(counts, np.float64)
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


def _quantized_reference(window, levels):
    """TensorRT's Q: digitize the window into ``levels``, spread each level over its non-empty bins."""
    n = len(window)
    digitized = np.digitize(np.arange(n), np.linspace(0, n, num=levels + 1)) - 1
    digitized[np.asarray(window) == 0] = -1
    merged = np.zeros(levels)
    for idx, d in enumerate(digitized):
        if d != -1:
            merged[d] += window[idx]
    for key, count in Counter(digitized).items():
        if key != -1:
            merged[key] /= count
    return np.array([merged[d] if d != -1 else 0.0 for d in digitized])


def _scipy_kl(reference, window, levels):
    p, q = _smooth_reference(reference), _smooth_reference(_quantized_reference(window, levels))
    return np.inf if p is None or q is None else entropy(p, q)  # scipy normalises both


def _kl_reference(hist, levels):
    """TensorRT's loop over thresholds ``i`` with scipy's KL: outliers onto the last kept bin."""
    best, best_kl = None, np.inf
    for i in range(levels, len(hist) + 1):
        reference = np.array(hist[:i], np.float64)
        reference[-1] += np.sum(hist[i:])
        kl = _scipy_kl(reference, hist[:i], levels)
        if kl < best_kl:
            best, best_kl = i, kl
    return best


def _kl_symmetric_reference(hist, levels):
    """ONNX Runtime's loop over windows ``[-i, i)`` around the middle, outliers onto both ends."""
    middle, best, best_kl = len(hist) // 2, None, np.inf
    for i in range(levels // 2, middle + 1):
        window = np.array(hist[middle - i:middle + i], np.float64)
        reference = window.copy()
        reference[0] += np.sum(hist[:middle - i])
        reference[-1] += np.sum(hist[middle + i:])
        kl = _scipy_kl(reference, window, levels)
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


SIGNED = {
    "gaussian": lambda r: r.standard_normal(200_000),
    "skewed": lambda r: np.concatenate([r.standard_normal(150_000), r.exponential(2.0, 50_000)]),
    "heavy tail with outliers": lambda r: np.concatenate([r.standard_t(3, 200_000), [60.0, -80.0]]),
}


@pytest.mark.parametrize("name", sorted(SIGNED))
def test_symmetric_kl_window_matches_independent_reference(name, rng):
    values = SIGNED[name](rng)
    bound = np.abs(values).max()
    counts, _ = np.histogram(values, bins=256, range=(-bound, bound))
    assert kl_symmetric_half_width(counts, levels=32) == _kl_symmetric_reference(counts, levels=32)


def test_closed_form_screening_equals_the_smoothed_kl_up_to_eps(rng):
    """The O(levels) screening differs from the binwise KL only by the eps of smoothing."""
    counts, _ = np.histogram(rng.laplace(size=50_000), bins=512, range=(-8, 8))
    counts = counts.astype(np.float64)
    half = np.arange(32, 257)
    screen = screening_divergences(counts, 256 - half, 256 + half, 64)
    exact = [divergence(counts, 256 - i, 256 + i, 64) for i in half]
    np.testing.assert_allclose(screen, exact, rtol=1e-3, atol=1e-6)


def _kld_range(values, dtype):
    observer = make_observer("kld", dtype)
    for batch in np.array_split(values.astype(np.float32), 10):
        observer.observe(batch)
    return observer.range()


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_kld_keeps_the_range_of_a_relu_output(dtype, rng):
    """Half the values are ReLU zeros: the spike at 0 must not pull the threshold down.

    Before the zero bin was discounted, this clipped at 1.96 of 4.7 (2.5% of the positives).
    """
    values = np.maximum(rng.standard_normal(200_000), 0.0)
    lo, hi = _kld_range(values, dtype)
    assert lo == 0.0 and 3.5 < hi <= values.max()


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_kld_keeps_both_sides_of_a_signed_tensor(dtype, rng):
    """A Gaussian has nothing to clip but its far tails; in uint8 the range once came out as
    ``(-4.27, -4.26)``, a threshold below zero, which quantized every positive value to 0."""
    values = rng.standard_normal(200_000) + 0.3
    lo, hi = _kld_range(values, dtype)
    assert lo < -3.0 and hi > 3.0


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_kld_keeps_the_strokes_of_an_image_on_a_flat_background(dtype, rng):
    """A normalised MNIST-like input: 80% background at -0.42, strokes up to 2.82.

    Folding signs (a |x| histogram) puts the background spike on the bin that absorbs the
    clipped strokes, and KL then clips at 0.42; the window around 0 keeps the strokes.
    """
    strokes = np.minimum(rng.uniform(-0.4242, 3.2, 200_000), 2.8215)
    values = np.where(rng.random(200_000) < 0.8, -0.4242, strokes)
    lo, hi = _kld_range(values, dtype)
    assert lo == pytest.approx(-0.4242) and hi > 0.9 * values.max()


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_kld_clips_outliers_but_keeps_the_bulk(dtype, rng):
    values = np.concatenate([rng.standard_normal(100_000), [40.0, -50.0]])
    lo, hi = _kld_range(values, dtype)
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


@pytest.mark.parametrize("name", ["kld", "percentile", "mse", "auto"])
def test_histogram_calibrators_take_a_constant_tensor_of_large_magnitude(name):
    """A constant 1e4 (MiniLM has such tensors) gave a histogram range narrower than float64 can
    split into 2,048 bins: numpy refused it ('Too many bins for data range')."""
    observer = make_observer(name, "uint8")
    for _ in range(2):
        observer.observe(np.full(64, 1e4, np.float32))
    lo, hi = observer.range()
    assert lo <= 1e4 * (1 + 1e-3) and hi >= 1e4 * (1 - 1e-3)


def test_every_calibrator_is_registered():
    assert calibrator_names() == ["admm", "auto", "eq", "kld", "minmax", "mse", "percentile"]
