"""Per-view PCA of the pooled vectors (GenAIR eq. 7), fitted in chunks so memory stays O(d^2)."""
import numpy as np

CHUNK = 4096


def fit_pca(rows, view, n_components):
    """(mean, components d x k, explained variance fraction) of `rows[:, view]` over all items.

    `n_components` < 1 keeps that fraction of variance (paper: 0.95); an integer keeps that many
    components (authors' code: 384), capped at the rank.
    """
    n, d = rows.shape[0], rows.shape[2]
    total = np.zeros(d)
    for start in range(0, n, CHUNK):
        total += rows[start: start + CHUNK, view].astype(np.float64).sum(0)
    mean = total / n
    cov = np.zeros((d, d))
    for start in range(0, n, CHUNK):
        x = rows[start: start + CHUNK, view].astype(np.float64) - mean
        cov += x.T @ x
    eigval, eigvec = np.linalg.eigh(cov / max(n - 1, 1))
    order = np.argsort(eigval)[::-1]
    eigval, eigvec = np.clip(eigval[order], 0.0, None), eigvec[:, order]
    rank = max(1, min(n - 1, d))
    variance = eigval.sum()
    if isinstance(n_components, float) and 0 < n_components < 1:
        k = int(np.searchsorted(np.cumsum(eigval) / variance, n_components) + 1) if variance > 0 else 1
    else:
        k = int(n_components)
    k = max(1, min(k, rank))
    kept = float(eigval[:k].sum() / variance) if variance > 0 else 1.0
    return mean, eigvec[:, :k], kept


def transform(rows, view, mean, components):
    """Chunks of `(rows[:, view] - mean) @ components`, in row order."""
    for start in range(0, rows.shape[0], CHUNK):
        yield (rows[start: start + CHUNK, view].astype(np.float64) - mean) @ components
