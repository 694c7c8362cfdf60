"""Item embedding layers shared by every LLM-enhanced model of the package."""
import contextlib

import torch
import torch.nn.functional as F
from torch import nn


class MLPProjector(nn.Module):
    """p_theta of GenAIR eq. 8 (authors' code): Linear(d, m) -> LayerNorm(m) -> GELU -> Linear(m, h)."""

    def __init__(self, in_size, out_size, hidden_size=None):
        super().__init__()
        hidden_size = hidden_size or 2 * out_size
        self.net = nn.Sequential(
            nn.Linear(in_size, hidden_size), nn.LayerNorm(hidden_size), nn.GELU(), nn.Linear(hidden_size, out_size)
        )

    def forward(self, x):
        return self.net(x)


class LLMItemEmbedding(nn.Module):
    """Frozen LLM item table followed by a trainable projector (GenAIR eqs. 7-8).

    Stands in for the backbone's `nn.Embedding`: `layer(ids)` looks items up and `layer.weight` is the
    whole projected table, used on the scoring side. Row 0 (padding) is zero; `n_extra_tokens`
    trainable rows follow the items (BERT4Rec's mask token).

    The projected table is computed once per training step (inside `shared_table()`) and once per
    evaluation (cached in eval mode without autograd; dropped by `train()`/`eval()` and on load).
    """

    def __init__(self, llm_table, embedding_size, projector_hidden_size=None, n_extra_tokens=0):
        super().__init__()
        self.register_buffer("llm_table", llm_table.float())
        self.embedding_size = embedding_size
        self.projector = MLPProjector(llm_table.size(1), embedding_size, projector_hidden_size)
        self.extra_tokens = None
        if n_extra_tokens:
            self.extra_tokens = nn.Parameter(torch.empty(n_extra_tokens, embedding_size).normal_(0.0, 0.02))
        self._table = None

    @property
    def num_embeddings(self):
        return self.llm_table.size(0) + (0 if self.extra_tokens is None else self.extra_tokens.size(0))

    def project(self):
        """The projected table; padding row zero, extra tokens appended."""
        items = self.projector(self.llm_table[1:])
        parts = [items.new_zeros(1, self.embedding_size), items]
        if self.extra_tokens is not None:
            parts.append(self.extra_tokens)
        return torch.cat(parts)

    @property
    def weight(self):
        if self._table is not None:
            return self._table
        table = self.project()
        if not self.training and not torch.is_grad_enabled():
            self._table = table
        return table

    def forward(self, item_ids):
        return F.embedding(item_ids, self.weight)

    @contextlib.contextmanager
    def shared_table(self):
        """Project once for everything computed inside (ranking loss and calibration of one step)."""
        self._table = self.project()
        try:
            yield self._table
        finally:
            self._table = None

    def train(self, mode=True):
        self._table = None
        return super().train(mode)

    def _load_from_state_dict(self, *args, **kwargs):
        self._table = None
        return super()._load_from_state_dict(*args, **kwargs)
