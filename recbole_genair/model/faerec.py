"""FAERec (Fusion and Alignment Enhancement with LLMs for tail-item sequential recommendation).

Each model is RecBole's backbone whose item table is the gated fusion of a trainable ID table
(initialised from PCA of the LLM vectors) and the mapped LLM vectors, on the input and on the scoring
side, in training and evaluation. Two alignment losses between the ID and mapped-LLM embeddings of the
batch's items are weighted by a cosine curriculum over epochs:

    w_item = (w_max - w_min) (1 + cos(2 pi epoch / period)) / 2 + w_min,  w_feat = 1 - w_item
    L = L_rec + align_weight (w_item L_item + w_feat L_feat)

The fused table is not normalised (as in the authors' code, ZhifuWei/FAERec: their one LayerNorm is the
backbone's, on item + position, which RecBole's backbones apply too). Departures from the authors' code:
- position embedding and input dropout are applied once, by the backbone, to the fused item vector (the
  authors add the position to each branch before the gate; with one shared position embedding the
  backbone's LayerNorm sees the same sum).
- the ranking loss is the run's `loss_type` (CE over all items in our comparisons) against the fused
  table; the authors train with BCE and one negative per position, scored against the ID table.
- test items are scored with the gated table (the authors score them with a plain sum).
- item-level InfoNCE is symmetric over the batch's distinct items (the authors': ID -> LLM over input
  positions with sampled negatives).
- `pca_init_scale: backbone` (default) starts the ID rows and the mapped LLM rows at the std of the
  backbone's random table; the authors' LLM vectors are unit-norm, so their raw PCA rows are small too.
- `fusion_norm: layernorm` restores this package's earlier LayerNorm on the fused table (it fixed every
  row at norm sqrt(h), drowning the positions); checkpoints written before the key existed had it.
"""
import math

import torch
from recbole.model.sequential_recommender import BERT4Rec, GRU4Rec, SASRec
from torch import nn

from recbole_genair.data.popularity import head_items, item_popularity
from recbole_genair.model.backbone import LLMItemEmbeddingMixin
from recbole_genair.model.layers import ItemTable, rescale_last_linear
from recbole_genair.model.losses import barlow_twins, info_nce
from recbole_genair.model.projection import check_init_scale, pca_init_table


def cosine_curriculum(epoch, w_max=1.0, w_min=0.9, period=30):
    """(w_item, w_feat) of FAERec's curriculum at `epoch`."""
    w_item = (w_max - w_min) * (1.0 + math.cos(2.0 * math.pi * epoch / period)) / 2.0 + w_min
    return w_item, 1.0 - w_item


class GatedFusionEmbedding(ItemTable):
    """fused = g * id + (1 - g) * mapper(llm), g = sigmoid(MLP([id; mapper(llm)])) per dimension.

    mapper: Linear(d, d/2) -> GELU -> Dropout -> Linear(d/2, h); gate MLP: Linear(2h, 2h) -> GELU ->
    Dropout -> Linear(2h, h). The ID table is trainable and starts from `id_init`; the LLM table is frozen.
    """

    def __init__(self, llm_table, id_init, mapper_dropout=0.3, gate_dropout=0.1, n_extra_tokens=0, layer_norm=False):
        n_items, h = id_init.shape
        super().__init__(n_items, h)
        d = llm_table.size(1)
        self.register_buffer("llm_table", llm_table.float())
        self.id_embedding = nn.Embedding(n_items, h, padding_idx=0)
        with torch.no_grad():
            self.id_embedding.weight.copy_(id_init)
        self.mapper = nn.Sequential(
            nn.Linear(d, d // 2), nn.GELU(), nn.Dropout(mapper_dropout), nn.Linear(d // 2, h)
        )
        self.gate = nn.Sequential(nn.Linear(2 * h, 2 * h), nn.GELU(), nn.Dropout(gate_dropout), nn.Linear(2 * h, h))
        self.layer_norm = nn.LayerNorm(h) if layer_norm else None
        self._append_extra_tokens(n_extra_tokens)

    def scale_mapped_rows(self, target_std):
        """Scale the mapper's last layer so that the mapped LLM rows of the items have std `target_std`."""
        rescale_last_linear(self.mapper, self.llm_table[1:], target_std)

    def branches(self, items):
        """(ID embeddings, mapped LLM embeddings) of the given item ids."""
        return self.id_embedding(items), self.mapper(self.llm_table[items])

    def gate_values(self, id_emb, llm_emb):
        """g in (0, 1) per dimension: the share of the ID embedding in the fused vector."""
        return torch.sigmoid(self.gate(torch.cat([id_emb, llm_emb], dim=-1)))

    def fuse(self, id_emb, llm_emb):
        g = self.gate_values(id_emb, llm_emb)
        fused = g * id_emb + (1.0 - g) * llm_emb
        return fused if self.layer_norm is None else self.layer_norm(fused)

    def item_rows(self):
        items = torch.arange(1, self.n_items, device=self.llm_table.device)
        return self.fuse(*self.branches(items))


class FAERec(LLMItemEmbeddingMixin):
    """What FAERec adds to a backbone; its defaults are in `props/model/FAERec.yaml`."""

    loss_names = ("rec", "item_align", "feat_align")
    cannot_add_items = ("FAERec fuses each item's LLM vector with its trained ID row: a new item has no trained ID "
                        "row for the gate to weigh")

    def __init__(self, config, dataset):
        align_temperature = config["align_temperature"]
        align_weight = config["align_weight"]
        curriculum = (config["curriculum_w_max"], config["curriculum_w_min"], config["curriculum_period"])
        barlow_offdiag_weight = config["barlow_offdiag_weight"]
        head_ratio = config["head_ratio"]
        head_split = config["head_split"]
        if head_split not in ("batch_median", "ratio"):
            raise ValueError(f"head_split must be 'batch_median' or 'ratio', not {head_split!r}")
        fusion_norm = "layernorm" if config["fusion_norm"] is None else config["fusion_norm"]  # None: older checkpoint
        if fusion_norm not in ("none", "layernorm"):
            raise ValueError(f"fusion_norm must be 'none' or 'layernorm', not {fusion_norm!r}")
        mapper_dropout = config["mapper_dropout"]
        gate_dropout = config["gate_dropout"]
        init_scale = check_init_scale(config)
        super().__init__(config, dataset)
        self.align_temperature = align_temperature
        self.align_weight = align_weight
        self.curriculum = curriculum
        self.barlow_offdiag_weight = barlow_offdiag_weight
        self.epoch = 0

        width, n_extra_tokens = self._backbone_item_layout()
        llm_table = self._llm_item_table(config, dataset)
        random_table = self.item_embedding.weight[: self.n_items].detach()
        id_init = pca_init_table(llm_table, width, init_scale, random_table)
        self.item_embedding = GatedFusionEmbedding(llm_table, id_init, mapper_dropout, gate_dropout, n_extra_tokens,
                                                   layer_norm=fusion_norm == "layernorm")
        if init_scale == "backbone":
            self.item_embedding.scale_mapped_rows(float(random_table[1:].std()))
        popularity = item_popularity(dataset)  # training split
        self.head_split = head_split
        self.register_buffer("popularity", torch.from_numpy(popularity).float(), persistent=False)
        self.register_buffer("head_mask", torch.from_numpy(head_items(popularity, head_ratio)), persistent=False)

    def set_epoch(self, epoch):
        """Called by `LLMRecTrainer` before each training epoch (also after resuming a checkpoint)."""
        self.epoch = epoch

    def curriculum_weights(self):
        return cosine_curriculum(self.epoch, *self.curriculum)

    def alignment_items(self, interaction):
        """The distinct real items of the batch: its input sequences and targets (every position's, all_positions)."""
        items = torch.cat([interaction[self.ITEM_SEQ].reshape(-1), interaction[self.POS_ITEM_ID].reshape(-1)])
        items = torch.unique(items)
        return items[(items > 0) & (items < self.n_items)]

    def batch_head(self, items):
        """Which of the batch's items are head: above the batch's median training popularity (authors' code),
        or among the `head_ratio` most popular items of the catalogue (`head_split: ratio`)."""
        if self.head_split == "ratio":
            return self.head_mask[items]
        popularity = self.popularity[items]
        return popularity > popularity.median()

    def alignment_losses(self, interaction):
        """(L_item, L_feat): InfoNCE over the batch's items; Barlow Twins on its head and on its tail items."""
        items = self.alignment_items(interaction)
        id_emb, llm_emb = self.item_embedding.branches(items)
        item_loss = info_nce(id_emb, llm_emb, self.align_temperature)
        head = self.batch_head(items)
        feat_loss = barlow_twins(id_emb[head], llm_emb[head], self.barlow_offdiag_weight) + barlow_twins(
            id_emb[~head], llm_emb[~head], self.barlow_offdiag_weight
        )
        return item_loss, feat_loss

    def auxiliary_losses(self, interaction):
        """The weighted alignment losses, added to the ranking loss in either training mode."""
        item_loss, feat_loss = self.alignment_losses(interaction)
        w_item, w_feat = self.curriculum_weights()
        return self.align_weight * w_item * item_loss, self.align_weight * w_feat * feat_loss

    def calculate_loss(self, interaction):
        return (super().calculate_loss(interaction), *self.auxiliary_losses(interaction))


class SASRecFAERec(FAERec, SASRec):
    """FAERec with the SASRec backbone (the authors' setting)."""


class GRU4RecFAERec(FAERec, GRU4Rec):
    """FAERec with the GRU4Rec backbone (item vectors of width `embedding_size`)."""


class BERT4RecFAERec(FAERec, BERT4Rec):
    """FAERec with the BERT4Rec backbone; the mask token keeps a trainable row after the fused items."""
