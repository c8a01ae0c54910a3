"""Task metrics of the zoo models, pure numpy: top-1, CTC decoding, character accuracy,
cosine similarity, box matching (IoU, hmean) and connected components of a mask."""

from __future__ import annotations

import numpy as np


def top1(logits: list[np.ndarray], labels: np.ndarray) -> float:
    """Share of samples whose arg-max class equals the label."""
    predicted = np.array([int(np.argmax(x)) for x in logits])
    return float(np.mean(predicted == np.asarray(labels)))


def agreement(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """Share of samples whose arg-max class is the same in ``a`` and ``b``."""
    return float(np.mean([int(np.argmax(x)) == int(np.argmax(y)) for x, y in zip(a, b)]))


def ctc_greedy(probs: np.ndarray, charset: list[str]) -> str:
    """Greedy CTC decoding of ``(T, C)`` scores: arg-max per step, merge repeats, drop blank (0)."""
    best = np.argmax(probs, axis=-1)
    keep = np.ones(len(best), bool)
    keep[1:] = best[1:] != best[:-1]
    return "".join(charset[i] for i in best[keep] if i != 0)


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions all cost 1)."""
    row = np.arange(len(b) + 1)
    for i, ca in enumerate(a, 1):
        prev, row = row, np.empty_like(row)
        row[0] = i
        for j, cb in enumerate(b, 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (ca != cb))
    return int(row[-1])


def char_accuracy(predicted: list[str], truth: list[str]) -> float:
    """``1 - sum(edit distance) / sum(len(truth))`` over all lines (PaddleOCR's norm_edit_dis)."""
    errors = sum(edit_distance(p, t) for p, t in zip(predicted, truth))
    return max(0.0, 1.0 - errors / max(1, sum(len(t) for t in truth)))


def mean_cosine(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """Mean cosine similarity of paired vectors (each flattened)."""
    values = []
    for x, y in zip(a, b):
        x, y = np.ravel(x).astype(np.float64), np.ravel(y).astype(np.float64)
        values.append(float(x @ y / max(np.linalg.norm(x) * np.linalg.norm(y), 1e-12)))
    return float(np.mean(values))


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes ``a`` (N, 4) and ``b`` (M, 4) given as ``x0, y0, x1, y1``."""
    a, b = np.asarray(a, float).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda r: (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-12)


def match_count(found: np.ndarray, truth: np.ndarray, threshold: float = 0.5,
                found_class=None, truth_class=None) -> int:
    """Greedy one-to-one matches with IoU >= ``threshold`` (and equal class when given)."""
    if len(found) == 0 or len(truth) == 0:
        return 0
    overlap = iou(found, truth)
    if found_class is not None:
        overlap = overlap * (np.asarray(found_class)[:, None] == np.asarray(truth_class)[None, :])
    matches = 0
    while overlap.size and overlap.max() >= threshold:
        i, j = np.unravel_index(np.argmax(overlap), overlap.shape)
        overlap[i, :], overlap[:, j] = 0, 0
        matches += 1
    return matches


def hmean(matches: int, found: int, truth: int) -> float:
    """Harmonic mean of precision ``matches / found`` and recall ``matches / truth`` (1 if both empty)."""
    if found == 0 and truth == 0:
        return 1.0
    return 2.0 * matches / (found + truth)


def components(mask: np.ndarray) -> np.ndarray:
    """4-connected component labels of a boolean 2-D mask (0 background, 1..K in raster order).

    Each pixel starts with its own flat index; every round takes the minimum over its
    4-neighbourhood, then jumps to the label of the pixel its label names (pointer jumping),
    until nothing changes: every component ends labelled by its first pixel.
    """
    mask = np.asarray(mask, bool)
    h, w = mask.shape
    big = h * w
    labels = np.where(mask, np.arange(h * w).reshape(h, w), big)
    while True:
        padded = np.pad(labels, 1, constant_values=big)
        updated = np.minimum.reduce([padded[1:-1, 1:-1], padded[:-2, 1:-1], padded[2:, 1:-1],
                                     padded[1:-1, :-2], padded[1:-1, 2:]])
        updated = np.where(mask, updated, big)
        flat = np.append(updated.ravel(), big)
        updated = np.where(mask, flat[updated], big)
        if np.array_equal(updated, labels):
            break
        labels = updated
    out = np.zeros((h, w), np.int64)
    roots = np.unique(labels[mask])
    out[mask] = np.searchsorted(roots, labels[mask]) + 1
    return out


def component_boxes(mask: np.ndarray, min_area: int = 1) -> np.ndarray:
    """``(K, 4)`` boxes ``x0, y0, x1, y1`` (exclusive ends) of the 4-connected components of ``mask``."""
    labels = components(mask)
    boxes = []
    for k in range(1, int(labels.max()) + 1):
        ys, xs = np.nonzero(labels == k)
        if len(ys) >= min_area:
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return np.array(boxes, float).reshape(-1, 4)
