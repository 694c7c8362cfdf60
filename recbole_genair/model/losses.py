"""Losses: GenAIR's calibration (added by the trainer), FAERec's alignment losses, the pairwise BCE ranking loss."""
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class BehaviouralCalibrationLoss(nn.Module):
    """GenAIR behavioural calibration (eqs. 9-14) on L2-normalised item embeddings.

    S(i, j) = log(1 + C(i, j)) / log(1 + C_max)            (eq. 10)
    w(i, j) = exp(-gamma * S(i, j))                         (eq. 11; w = 1 for pairs that never co-occur)
    kernel "exp" (paper, eq. 12):    K = w * exp(-t * ||e_i - e_j||^2), L_cal = E[K]   (eq. 14)
    kernel "linear" (authors' code): L_cal = -E[w * ||e_i - e_j||^2]

    The expectation runs over ordered pairs of batch positions holding different items. It is computed
    on the batch's unique items with multiplicity weights n_i * n_j, which gives the same value with
    U x U memory (U unique items) and no n x n or pair x d tensor.

    A catalogue of at most `DENSE_WEIGHT_ITEMS` items keeps w(i, j) as one dense float32 matrix computed once
    (the same values as the per-step sparse lookup, which cost ~0.1 s per all-position step on ml-100k).
    """

    DENSE_WEIGHT_ITEMS = 4096  # 4096^2 float32 = 64 MB

    def __init__(self, cooccurrence, gamma=4.0, t=2.0, kernel="exp"):
        super().__init__()
        if kernel not in ("exp", "linear"):
            raise ValueError(f"calibration_kernel must be 'exp' (paper) or 'linear' (authors' code), got {kernel!r}")
        self.cooccurrence = cooccurrence.tocsr()
        c_max = self.cooccurrence.max() if self.cooccurrence.nnz else 0.0
        self.log_c_max = math.log1p(c_max) if c_max > 0 else 1.0
        self.gamma, self.t, self.kernel = float(gamma), float(t), kernel
        self._dense = None
        if max(self.cooccurrence.shape) <= self.DENSE_WEIGHT_ITEMS:
            self._dense = self._weights_of(self.cooccurrence.toarray())

    def _weights_of(self, counts):
        """w = exp(-gamma * log(1 + C) / log(1 + C_max)) (eqs. 10-11), in float64, returned as float32."""
        s = np.log1p(counts) / self.log_c_max
        return torch.from_numpy(np.exp(-self.gamma * s)).to(dtype=torch.float32)

    def pair_weights(self, items):
        """w(i, j) for all pairs of the given item ids, as a dense U x U tensor."""
        if self._dense is not None:
            if self._dense.device != items.device:
                self._dense = self._dense.to(items.device)
            return self._dense.index_select(0, items).index_select(1, items)
        idx = items.cpu().numpy()
        return self._weights_of(self.cooccurrence[idx][:, idx].toarray()).to(items.device)

    def forward(self, item_table, items):
        """`item_table`: projected item embeddings (n_items x h); `items`: the batch's target item ids."""
        items = items.reshape(-1)
        items = items[items > 0]
        unique, counts = torch.unique(items, return_counts=True)
        multiplicity = counts[:, None].float() * counts[None, :].float()
        multiplicity.fill_diagonal_(0.0)
        n_pairs = multiplicity.sum()
        if n_pairs == 0:
            return item_table.sum() * 0.0
        e = F.normalize(item_table[unique], dim=-1)
        sq_dist = (2.0 - 2.0 * (e @ e.t())).clamp_min(0.0)
        w = self.pair_weights(unique)
        if self.kernel == "exp":
            per_pair = w * torch.exp(-self.t * sq_dist)
        else:
            per_pair = -w * sq_dist
        return (multiplicity * per_pair).sum() / n_pairs


def info_nce(a, b, temperature):
    """Symmetric InfoNCE between row-aligned views `a` and `b` (N x h) of the same N items.

    Rows are L2-normalised; row i of `a` has row i of `b` as its positive and the other rows of `b`
    as negatives, and the other way round; the two directions are averaged (FAERec item-level alignment).
    """
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).t() / temperature
    target = torch.arange(a.size(0), device=a.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2.0


def barlow_twins(a, b, offdiag_weight=0.005, eps=1e-5):
    """Cross-correlation loss sum_i (C_ii - 1)^2 + offdiag_weight * sum_{i != j} C_ij^2.

    C = z_a^T z_b / N with each dimension standardised over the N rows (FAERec feature-level
    alignment). Fewer than two rows carry no correlation: the loss is then zero.
    """
    if a.size(0) < 2:
        return a.sum() * 0.0 + b.sum() * 0.0
    za = (a - a.mean(0)) / torch.sqrt(a.var(0, unbiased=False) + eps)
    zb = (b - b.mean(0)) / torch.sqrt(b.var(0, unbiased=False) + eps)
    c = za.t() @ zb / a.size(0)
    on_diag = (torch.diagonal(c) - 1.0).pow(2).sum()
    off_diag = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
    return on_diag + offdiag_weight * off_diag


class BCEPairLoss(nn.Module):
    """Binary cross-entropy on a (positive, sampled negative) score pair: -log s(pos) - log(1 - s(neg)), averaged.

    The GenAIR authors' ranking loss (their code; the paper's eq. 17 is BPR, -log s(pos - neg)). It takes the
    place of RecBole's `BPRLoss` as `loss_fct(pos_score, neg_score)` (`loss_type: BCE`).
    """

    def forward(self, pos_score, neg_score):
        return (F.binary_cross_entropy_with_logits(pos_score, torch.ones_like(pos_score))
                + F.binary_cross_entropy_with_logits(neg_score, torch.zeros_like(neg_score)))
