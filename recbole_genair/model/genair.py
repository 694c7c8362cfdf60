"""GenAIR (Generative Archetype Item Representations, WWW 2026) on RecBole's backbones.

Each model is RecBole's backbone with its item-ID embedding replaced by the frozen archetype vectors
(`.itememb`, eq. 7) and a trainable projector (eq. 8), on the input and on the scoring side. The
behavioural calibration loss (eqs. 9-14) is added by `LLMRecTrainer` when `alpha` > 0.
"""
from recbole.model.sequential_recommender import BERT4Rec, GRU4Rec, SASRec

from recbole_genair.model.backbone import LLMItemEmbeddingMixin


class GenAIR(LLMItemEmbeddingMixin):
    """What the GenAIR models add to a backbone; its defaults are in `props/model/GenAIR.yaml`.

    The backbone's item table (its width, and extra rows after the items such as BERT4Rec's mask token)
    becomes the frozen LLM table + projector; the same mixin serves every backbone of `model.variants`.
    """

    supports_calibration = True

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        width, n_extra_tokens = self._backbone_item_layout()
        self._use_llm_item_embedding(config, dataset, width, n_extra_tokens)

    def calibration_items(self, interaction):
        """Target items of the batch (every position's, all_positions), whose embeddings calibration spreads apart."""
        return interaction[self.POS_ITEM_ID]


class SASRecGenAIR(GenAIR, SASRec):
    """GenAIR with the SASRec backbone."""


class GRU4RecGenAIR(GenAIR, GRU4Rec):
    """GenAIR with the GRU4Rec backbone (item vectors of width `embedding_size`)."""


class BERT4RecGenAIR(GenAIR, BERT4Rec):
    """GenAIR with the BERT4Rec backbone; the mask token keeps a trainable row after the items."""

    def calibration_items(self, interaction):
        return interaction[self.POS_ITEMS]
