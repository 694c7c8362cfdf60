"""LLM-ESR (Liu et al., NeurIPS 2024; code liuqidong07/LLM-ESR) on RecBole's backbones.

- Two views of each item: semantic, the frozen LLM vector through an adapter (two linear layers, no
  activation); collaborative, a trainable ID table initialised from a PCA of the LLM vectors (scaled to
  the backbone's random table, `pca_init_scale`).
- One shared encoder (the backbone, its own position embedding, dropout and layers) runs on each view's
  item sequence; the sequence representation is the concatenation [semantic; collaborative], and items
  are scored with the concatenation of their two rows, so a score is the sum of the views' inner products.
- Retrieval-augmented self-distillation: each user's representation is pulled (MSE, `llmesr_distill_weight`)
  toward the detached mean representation of its `llmesr_neighbours` most similar users, neighbours by
  cosine similarity of the mean LLM vector of each user's training items (training split only), their
  representations computed from their training sequences.
Departures from the authors' code: no sqrt(h) scaling of the item embeddings; no cross-attention between
the views (optional there, off in their runs); the per-view width is the backbone's `hidden_size`
(`embedding_size` for GRU4Rec); the batch's own representation for the distillation is that of its input
sequences (the authors': the last position of each user's training sequence); `llmesr_teacher: epoch` (default) computes
every user's representation once per training epoch, without dropout, instead of the neighbours' at every step
with dropout (`step`, the authors'), which costs ten more encoder passes per view and step.
"""
import contextlib
from logging import getLogger

import numpy as np
import torch
import torch.nn.functional as F
from recbole.model.sequential_recommender import BERT4Rec, GRU4Rec, SASRec
from torch import nn

from recbole_genair.data.cooccurrence import training_sequences
from recbole_genair.model.backbone import LLMItemEmbeddingMixin
from recbole_genair.model.layers import ItemTable
from recbole_genair.model.projection import check_init_scale, pca_init_table


class DualViewItemEmbedding(ItemTable):
    """Rows [adapter(frozen LLM vector); trainable ID row]; inside `view(k)` a lookup returns view k's half only."""

    def __init__(self, llm_table, id_init, n_extra_tokens=0):
        width = id_init.size(1)
        super().__init__(llm_table.size(0), 2 * width)
        self.width = width
        self.register_buffer("llm_table", llm_table.float())
        d = llm_table.size(1)
        self.adapter = nn.Sequential(nn.Linear(d, max(d // 2, 1)), nn.Linear(max(d // 2, 1), width))
        self.id_embedding = nn.Parameter(id_init[1:].clone().float())
        self._view = None
        self._append_extra_tokens(n_extra_tokens)

    def item_rows(self):
        return torch.cat([self.adapter(self.llm_table[1:]), self.id_embedding], dim=1)

    @contextlib.contextmanager
    def view(self, k):
        """Lookups inside return the semantic (k = 0) or collaborative (k = 1) half of each row."""
        self._view = k
        try:
            yield
        finally:
            self._view = None

    def forward(self, item_ids):
        table = self.weight
        if self._view is not None:
            table = table[:, self._view * self.width: (self._view + 1) * self.width]
        return F.embedding(item_ids, table)


def similar_users(user_vectors, k, chunk=1024):
    """`n_users x k` ids of each user's most cosine-similar other users (-1 where a user has fewer or no vector)."""
    x = F.normalize(torch.as_tensor(user_vectors, dtype=torch.float32), dim=1)
    has = x.norm(dim=1) > 0
    out = torch.full((x.size(0), k), -1, dtype=torch.long)
    for start in range(0, x.size(0), chunk):
        sim = x[start: start + chunk] @ x.T
        sim[:, ~has] = -float("inf")
        rows = torch.arange(start, min(start + chunk, x.size(0)))
        sim[rows - start, rows] = -float("inf")  # not oneself
        values, ids = sim.topk(min(k, x.size(0)), dim=1)
        ids[~torch.isfinite(values)] = -1
        ids[~has[rows]] = -1
        out[rows, : ids.size(1)] = ids
    return out


class LLMESR(LLMItemEmbeddingMixin):
    """What LLM-ESR adds to a backbone; its defaults are in `props/model/LLMESR.yaml`."""

    loss_names = ("rec", "distill")
    forward_runs_backbone = True  # forward runs the backbone's own forward once per view (all positions allowed)
    cannot_add_items = "LLM-ESR's collaborative view is a trained ID row, which a new item does not have"

    def __init__(self, config, dataset):
        k, weight, scale = int(config["llmesr_neighbours"]), float(config["llmesr_distill_weight"]), check_init_scale(config)
        super().__init__(config, dataset)
        width, n_extra_tokens = self._backbone_item_layout()
        llm_table = self._llm_item_table(config, dataset)
        id_init = pca_init_table(llm_table, width, scale, self.item_embedding.weight[: self.n_items].detach())
        self.item_embedding = DualViewItemEmbedding(llm_table, id_init, n_extra_tokens)
        self.distill_weight = weight
        self.teacher_refresh = config["llmesr_teacher"]
        if self.teacher_refresh not in ("step", "epoch"):
            raise ValueError(f"llmesr_teacher: {self.teacher_refresh!r} is not one of 'step' (the neighbours' "
                             f"representations at every step, as the authors' code) or 'epoch' (every user's, once "
                             f"per training epoch)")
        self._teacher_cache = None
        self._build_neighbours(dataset, llm_table, k)

    def _build_neighbours(self, dataset, llm_table, k):
        users, items = training_sequences(dataset)
        n_users, length = dataset.user_num, self.max_seq_length
        sums = np.zeros((n_users, llm_table.size(1)))
        np.add.at(sums, users, llm_table.numpy()[items])
        counts = np.bincount(users, minlength=n_users)[:, None]
        user_vectors = sums / np.maximum(counts, 1)
        self.register_buffer("neighbours", similar_users(user_vectors, k), persistent=False)
        sequences = torch.zeros(n_users, length, dtype=torch.long)
        lengths = torch.zeros(n_users, dtype=torch.long)
        starts = np.r_[0, np.flatnonzero(np.diff(users)) + 1]
        for begin, end in zip(starts, np.r_[starts[1:], len(users)]):
            recent = torch.from_numpy(items[begin:end][-length:])
            sequences[users[begin], : len(recent)] = recent
            lengths[users[begin]] = len(recent)
        self.register_buffer("user_sequences", sequences, persistent=False)
        self.register_buffer("user_lengths", lengths, persistent=False)
        getLogger().info(f"LLM-ESR: {k} neighbours per user from the LLM vectors of {int((counts > 0).sum())} users' "
                         f"training items")

    def forward(self, *args, **kwargs):
        """The backbone's forward on the semantic view, then on the collaborative view, concatenated."""
        with self.item_embedding.view(0):
            semantic = super().forward(*args, **kwargs)
        with self.item_embedding.view(1):
            collaborative = super().forward(*args, **kwargs)
        return torch.cat([semantic, collaborative], dim=-1)

    def user_representation(self, item_seq, item_seq_len):
        """The sequence's representation at its last item (BERT4Rec: its output there, without a mask token)."""
        if isinstance(self, BERT4Rec):
            return self.gather_indexes(self.forward(item_seq), item_seq_len - 1)
        return self.forward(item_seq, item_seq_len)

    def set_epoch(self, epoch):
        """Called by `LLMRecTrainer` before each training epoch, outside any step: the per-epoch teacher."""
        self._teacher_cache = None
        if self.teacher_refresh == "epoch":
            self._teacher_cache = self._all_user_representations()

    @torch.no_grad()
    def _all_user_representations(self, chunk=1024):
        """Every user's representation from its training sequence, without dropout."""
        training = self.training
        self.eval()
        try:
            return torch.cat([self._from_training_sequences(slice(start, start + chunk))
                              for start in range(0, self.user_sequences.size(0), chunk)])
        finally:
            self.train(training)

    def _from_training_sequences(self, users):
        """The representations of `users` (ids or a slice) from their training sequences."""
        return self.user_representation(self.user_sequences[users], self.user_lengths[users].clamp(min=1))

    def _teacher_representations(self, users):
        """Representations of `users` from their training sequences (no gradient); see `llmesr_teacher`."""
        if self.teacher_refresh == "step":
            return self._from_training_sequences(users)
        if self._teacher_cache is None:  # a step outside the trainer's epochs
            self._teacher_cache = self._all_user_representations()
        return self._teacher_cache[users]

    def auxiliary_losses(self, interaction):
        """Self-distillation toward the mean representation of each user's neighbours (detached)."""
        users = interaction[self.USER_ID]
        item_seq = interaction[self.ITEM_SEQ]
        item_seq_len = (item_seq > 0).sum(dim=1)  # of the plain input sequence (BERT4Rec masks its own copy)
        neighbours = self.neighbours[users]  # B x K, -1: none
        valid = neighbours >= 0
        if not valid.any():
            return (item_seq.new_zeros((), dtype=torch.float),)
        flat = neighbours.clamp(min=0).reshape(-1)
        with torch.no_grad():
            their = self._teacher_representations(flat)
            their = their.view(*neighbours.shape, -1) * valid.unsqueeze(-1)
            target = their.sum(1) / valid.sum(1, keepdim=True).clamp(min=1)
        own = self.user_representation(item_seq, item_seq_len.clamp(min=1))
        keep = valid.any(dim=1)
        return (self.distill_weight * F.mse_loss(own[keep], target[keep]),)

    def calculate_loss(self, interaction):
        return (super().calculate_loss(interaction), *self.auxiliary_losses(interaction))


class SASRecLLMESR(LLMESR, SASRec):
    """LLM-ESR with the SASRec backbone (the authors' main setting)."""


class GRU4RecLLMESR(LLMESR, GRU4Rec):
    """LLM-ESR with the GRU4Rec backbone (item vectors of width `embedding_size` per view)."""


class BERT4RecLLMESR(LLMESR, BERT4Rec):
    """LLM-ESR with the BERT4Rec backbone; the mask token keeps a trainable row after the items."""
