"""Matrix-based entropy of item embeddings (GenAIR section 4.7, appendix B.5)."""
import numpy as np
import torch


def matrix_entropy(z):
    """S_1(Z) = -sum_i p_i log p_i with p_i = lambda_i(Z Z^T) / tr(Z Z^T) (eq. 25 at rho = 1).

    The eigenvalues of the Gram matrix are the squared singular values of Z, so no N x N matrix is
    formed. Maximal (log rank) when all directions carry the same variance.
    """
    z = torch.as_tensor(z, dtype=torch.float64)
    eig = torch.linalg.svdvals(z) ** 2
    total = eig.sum()
    if total <= 0:
        return 0.0
    p = eig / total
    p = p[p > 0]
    return float(-(p * torch.log(p)).sum())


def popularity_groups(popularity, n_groups=5):
    """Item ids (>= 1) split into `n_groups` equal groups by training popularity, most popular first."""
    popularity = np.asarray(popularity)
    order = np.argsort(-popularity[1:], kind="stable") + 1
    return np.array_split(order, n_groups)


def entropy_by_popularity(table, popularity, n_groups=5):
    """Matrix entropy of the item embeddings of each popularity group (quintiles by default)."""
    table = torch.as_tensor(table)
    return [matrix_entropy(table[torch.from_numpy(ids)]) for ids in popularity_groups(popularity, n_groups)]


def head_tail_scatter(table, popularity, max_points=400, seed=0):
    """2-D PCA of all item embeddings; coordinates of the top and bottom 20% items (a sample of each)."""
    x = torch.as_tensor(table, dtype=torch.float64)[1:]
    x = x - x.mean(0)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    coords = (x @ v[:2].T).numpy()
    groups = popularity_groups(popularity, 5)
    rng = np.random.default_rng(seed)
    out = {}
    for name, ids in (("head", groups[0]), ("tail", groups[-1])):
        pick = ids if len(ids) <= max_points else rng.choice(ids, max_points, replace=False)
        out[name] = coords[pick - 1].tolist()
    return out
