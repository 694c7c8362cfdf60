"""Linear projections of the LLM item table: PCA, whitened PCA and Rec-PCA (TF-LLMER).

One place for the three methods that start from a projection of the `.itememb` vectors: FAERec and
LLMInit initialise their ID tables with `pca_init_table`, TF-LLMER feeds its backbone from
`pca_item_table(..., laplacian=..., lam=...)`. Row 0 of every item table is padding: it is left out
of the fit and stays zero.
"""
import numpy as np
import scipy.sparse as sp
import torch


def normalized_laplacian(adjacency):
    """L = I - D^-1/2 A D^-1/2 of a symmetric non-negative sparse graph (scipy CSR).

    Isolated nodes (no edges) get an all-zero row and column (Chung's convention): an item without
    co-occurrences carries no collaborative evidence, so it is not penalised.
    """
    adjacency = sp.csr_matrix(adjacency, dtype=np.float64)
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    inv_sqrt = np.zeros_like(degree)
    inv_sqrt[degree > 0] = degree[degree > 0] ** -0.5
    d = sp.diags(inv_sqrt)
    identity = sp.diags((degree > 0).astype(np.float64))
    return (identity - d @ adjacency @ d).tocsr()


def pca_basis(x, k, laplacian=None, lam=0.0):
    """Mean and `d x k` orthonormal directions W of the rows of `x` (items x d).

    PCA: the top-k eigenvectors of X^T X, X the centred rows. Rec-PCA (TF-LLMER, our reading of the
    paper's summary, the authors' code was not readable here): maximise
        tr(W^T X^T X W) - lam * tr(W^T X^T L X W)  subject to  W^T W = I,
    L the normalised Laplacian of the item co-occurrence graph (rows of `x`), whose closed form is the
    top-k eigenvectors of X^T (I - lam L) X. The second term is the graph total variation of the
    projected vectors Z = X W, so items that co-occur get close coordinates. lam = 0 is plain PCA.
    Signs are fixed (largest coordinate of each direction positive) so that a rerun gives the same W.
    """
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    if k > d:
        raise ValueError(
            f"cannot project {d}-dimensional LLM item vectors onto {k} principal directions; "
            f"choose a width of at most {d} (hidden_size / embedding_size / recpca_dim) or write wider vectors."
        )
    mean = x.mean(axis=0)
    xc = x - mean
    m = xc.T @ xc
    if laplacian is not None and lam:
        if laplacian.shape != (n, n):
            raise ValueError(f"the Laplacian is {laplacian.shape[0]} x {laplacian.shape[1]} for {n} items")
        m = m - lam * (xc.T @ (laplacian @ xc))
    values, vectors = np.linalg.eigh((m + m.T) / 2.0)
    w = vectors[:, np.argsort(values)[::-1][:k]]
    signs = np.sign(w[np.abs(w).argmax(axis=0), np.arange(k)])
    return mean, w * np.where(signs == 0, 1.0, signs)


def match_scale(table, reference):
    """`table` (row 0 padding) scaled so that its item rows have the standard deviation of `reference`'s.

    A PCA table used as an initialisation keeps its geometry (directions and relative norms) but starts
    at the scale of the random initialisation it replaces, which the backbone's learning rate and
    regularisation were set for (raw PCA coordinates of LLM vectors are orders of magnitude larger).
    """
    std, ref = float(table[1:].std()), float(reference[1:].std())
    return table * (ref / std) if std > 0 else table


def check_init_scale(config):
    """`pca_init_scale` of LLMInit and FAERec: backbone | raw (checked before the model is built)."""
    scale = config["pca_init_scale"]
    if scale not in ("backbone", "raw"):
        raise ValueError(f"pca_init_scale must be 'backbone' or 'raw', not {scale!r}; set it in YAML or with --pca_init_scale")
    return scale


def pca_init_table(llm_table, width, scale, random_table, whiten=False):
    """ID-table initialisation of LLMInit and FAERec: the `width`-dim PCA of the LLM vectors.

    `scale`: "backbone" matches the std of `random_table` (the initialisation it replaces, row 0
    padding), "raw" keeps the PCA coordinates (authors' code).
    """
    table = pca_item_table(llm_table, width, whiten=whiten)
    return match_scale(table, random_table) if scale == "backbone" else table


def pca_item_table(llm_table, k, whiten=False, laplacian=None, lam=0.0, return_basis=False):
    """`n_items x k` float32 table of the items' projected, centred LLM vectors; row 0 stays zero.

    `llm_table`: `n_items x d` (row 0 padding), as `load_llm_item_table` returns it. `whiten`: scale
    each coordinate to unit variance over the items. `laplacian`/`lam`: Rec-PCA (see `pca_basis`),
    with the Laplacian over the real items 1 .. n_items - 1. `return_basis`: also return (mean, W), which
    map further vectors into the same coordinates (without whitening).
    """
    x = torch.as_tensor(llm_table).double().numpy()[1:]
    mean, w = pca_basis(x, k, laplacian, lam)
    z = (x - mean) @ w
    if whiten:
        std = z.std(axis=0)
        z = z / np.where(std > 0, std, 1.0)
    table = np.zeros((x.shape[0] + 1, k))
    table[1:] = z
    table = torch.from_numpy(table).float()
    return (table, (mean, w)) if return_basis else table
