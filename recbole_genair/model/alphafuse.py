"""AlphaFuse (Hu et al., SIGIR 2025; code Hugo-Chinn/AlphaFuse) on RecBole's backbones.

- Semantic table, frozen: the LLM vectors centred, projected on their top `width` principal directions
  and whitened (each coordinate unit variance over the items), fitted on the archetype run's raw pooled
  vectors (`alphafuse_source: raw`, `data.raw_vectors`) or on the `.itememb` (`itememb`).
- Null space: the last `alphafuse_null_dim` of those coordinates, the lowest-variance ones. A trainable
  ID embedding of that width is added there (the authors' default: not replacing them, `cover` off);
  the other coordinates stay the LLM's. One table on the input and the scoring side.
- Loss: softmax over cosine similarities divided by `alphafuse_temperature` (0.07): item rows and the
  backbone's sequence output are L2-normalised and scaled by 1/sqrt(T), so the run's `loss_type: CE`
  over all items is that softmax (the authors also use sampled negatives).
Departures from the authors' code: the normalised rows also enter the backbone (they feed the raw sum);
the sequence output is normalised inside the backbone's last layer (SASRec's encoder output, GRU4Rec's
dense layer, BERT4Rec's output LayerNorm), so RecBole's forward, losses and scoring run unchanged.
"""
import math
from logging import getLogger

import torch
import torch.nn.functional as F
from recbole.model.sequential_recommender import BERT4Rec, GRU4Rec, SASRec
from torch import nn

from recbole_genair.data.raw_vectors import load_raw_item_vectors
from recbole_genair.model.backbone import LLMItemEmbeddingMixin
from recbole_genair.model.layers import ItemTable
from recbole_genair.model.projection import pca_item_table

# The backbone layer whose output is the sequence representation (wrapped to normalise it), and
# whether it returns the list of every layer's output (RecBole's TransformerEncoder does).
SEQUENCE_OUTPUT_LAYER = ((SASRec, "trm_encoder", True), (GRU4Rec, "dense", False), (BERT4Rec, "output_ln", False))


class NormalizedOutput(nn.Module):
    """`module`'s output (or its last layer's, for a list of layer outputs) L2-normalised and scaled."""

    def __init__(self, module, scale, layers=False):
        super().__init__()
        self.module, self.scale, self.layers = module, scale, layers

    def forward(self, *args, **kwargs):
        out = self.module(*args, **kwargs)
        if self.layers:
            return list(out[:-1]) + [F.normalize(out[-1], dim=-1) * self.scale]
        return F.normalize(out, dim=-1) * self.scale


class NullSpaceItemEmbedding(ItemTable):
    """rows = normalise([frozen semantic coordinates | their null-space part + trainable ID]) * scale."""

    def __init__(self, semantic, null_dim, id_init="normal", scale=1.0, n_extra_tokens=0):
        super().__init__(semantic.size(0), semantic.size(1))
        self.register_buffer("semantic", semantic.float())
        self.null_dim = int(null_dim)
        null_id = torch.zeros(semantic.size(0) - 1, self.null_dim)
        if id_init == "normal":
            null_id.normal_(0.0, 1.0)  # the whitened coordinates have unit variance
        self.null_id = nn.Parameter(null_id)
        self.scale = float(scale)
        self._append_extra_tokens(n_extra_tokens)

    def fused_rows(self):
        """Item rows before normalisation: the semantic coordinates, the ID added to the null-space ones."""
        semantic = self.semantic[1:]
        return torch.cat([semantic[:, : -self.null_dim], semantic[:, -self.null_dim:] + self.null_id], dim=1)

    def item_rows(self):
        return F.normalize(self.fused_rows(), dim=-1) * self.scale


class AlphaFuse(LLMItemEmbeddingMixin):
    """What AlphaFuse adds to a backbone; its defaults are in `props/model/AlphaFuse.yaml`."""

    cannot_add_items = ("AlphaFuse adds a trained ID row in the null space of each item's vector: a new item has "
                        "none, and its raw vector would need the run's decomposition")

    def __init__(self, config, dataset):
        source = config["alphafuse_source"]
        null_dim, temperature = config["alphafuse_null_dim"], float(config["alphafuse_temperature"])
        id_init = config["alphafuse_id_init"]
        if source not in ("raw", "itememb"):
            raise ValueError(f"alphafuse_source must be 'raw' or 'itememb', not {source!r}")
        if id_init not in ("normal", "zeros"):
            raise ValueError(f"alphafuse_id_init must be 'normal' or 'zeros', not {id_init!r}")
        if temperature <= 0:
            raise ValueError(f"alphafuse_temperature must be positive, not {temperature}")
        super().__init__(config, dataset)
        width, n_extra_tokens = self._backbone_item_layout()
        null_dim = width // 2 if null_dim is None else int(null_dim)  # ~: half the width (authors: 64 of 128)
        if not 0 < null_dim < width:
            raise ValueError(f"alphafuse_null_dim must be between 1 and {width - 1} (the item width), not {null_dim}; "
                             f"~ takes half the width")
        llm_table = self._llm_item_table(config, dataset)  # kept in checkpoints, as every LLM model does
        if source == "raw" and not getattr(dataset, "rebuilt_from_checkpoint", False):
            vectors = torch.from_numpy(load_raw_item_vectors(dataset, config, config["llm_views"]))
        else:  # itememb; or rebuilt from a checkpoint, whose state_dict holds the table made from the raw vectors
            vectors = llm_table
        semantic = pca_item_table(vectors, width, whiten=True)
        getLogger().info(f"AlphaFuse: {source} vectors of {vectors.size(1)} dimensions -> {width} whitened principal "
                         f"coordinates, the last {null_dim} shared with a trainable ID embedding")
        scale = 1.0 / math.sqrt(temperature)
        self.item_embedding = NullSpaceItemEmbedding(semantic, null_dim, id_init, scale, n_extra_tokens)
        backbone, name, layers = next((b, n, l) for b, n, l in SEQUENCE_OUTPUT_LAYER if isinstance(self, b))
        setattr(self, name, NormalizedOutput(getattr(self, name), scale, layers))


class SASRecAlphaFuse(AlphaFuse, SASRec):
    """AlphaFuse with the SASRec backbone (the authors' setting)."""


class GRU4RecAlphaFuse(AlphaFuse, GRU4Rec):
    """AlphaFuse with the GRU4Rec backbone (item vectors of width `embedding_size`)."""


class BERT4RecAlphaFuse(AlphaFuse, BERT4Rec):
    """AlphaFuse with the BERT4Rec backbone; the mask token keeps a trainable row after the items."""
