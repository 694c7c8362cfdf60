"""LLMInit baseline: the backbone's trainable item-ID table starts from a PCA of the LLM item vectors.

Nothing else changes: RecBole's `nn.Embedding` stays, padding row 0 stays zero and BERT4Rec's
mask-token row keeps the backbone's random initialisation. `pca_init_scale: backbone` (default) scales
the PCA table to the standard deviation of the random table it replaces; `raw` keeps PCA coordinates.
"""
import torch
from recbole.model.sequential_recommender import BERT4Rec, GRU4Rec, SASRec

from recbole_genair.model.backbone import LLMItemEmbeddingMixin
from recbole_genair.model.projection import check_init_scale, pca_init_table


class LLMInit(LLMItemEmbeddingMixin):
    """What LLMInit adds to a backbone; its defaults are in `props/model/LLMInit.yaml`."""

    cannot_add_items = ("LLMInit scores with its trained item-ID table, initialised from the LLM vectors: a new item "
                        "has no trained row, and an untrained PCA row is not on the scale the model learned")

    def __init__(self, config, dataset):
        whiten, scale = config["pca_whiten"], check_init_scale(config)
        super().__init__(config, dataset)
        width, _ = self._backbone_item_layout()
        table = pca_init_table(self._llm_item_table(config, dataset), width, scale,
                               self.item_embedding.weight[: self.n_items].detach(), whiten=bool(whiten))
        with torch.no_grad():
            self.item_embedding.weight[: self.n_items] = table


class SASRecLLMInit(LLMInit, SASRec):
    """LLMInit with the SASRec backbone."""


class GRU4RecLLMInit(LLMInit, GRU4Rec):
    """LLMInit with the GRU4Rec backbone (item vectors of width `embedding_size`)."""


class BERT4RecLLMInit(LLMInit, BERT4Rec):
    """LLMInit with the BERT4Rec backbone."""
