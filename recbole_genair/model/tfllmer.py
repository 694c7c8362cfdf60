"""TF-LLMER (Training-Friendly LLM-Enhanced Recommender, arXiv:2604.20490) on RecBole's backbones.

Our reading of the paper's summary; the authors' code (woriazzc/TF-LLMER) could not be read here.
- Rec-PCA, computed once when the model is built: the LLM vectors of the real items are centred and
  projected on the top-k eigenvectors of X^T (I - lambda L) X, L the normalised Laplacian of the item
  co-occurrence graph of the training split (`projection.pca_basis`). lambda = 0 is plain PCA.
- How Rec-PCA feeds the backbone (our choice): the k-dim vectors are a frozen item table followed by a
  trainable MLP to the backbone's item width (GenAIR's projector p_theta, so that the two methods
  differ only in what each adds), not a trainable table initialised from them.
- Item-embedding normalisation: the projected item vectors are L2-normalised and multiplied by a fixed
  or learnable scale; the same table enters the backbone and scores the items.
- `tfllmer_table: trainable` (the paper's other framing, LLM vectors as the initialisation of the item
  embeddings): the Rec-PCA table, with k = the item width, initialises a trainable item table that is
  L2-normalised (times the scale) at every use; no projector. Items cannot be added from text then.
"""
from logging import getLogger

import torch
from recbole.model.sequential_recommender import BERT4Rec, GRU4Rec, SASRec

from recbole_genair.data.cooccurrence import cooccurrence_matrix
from recbole_genair.model.backbone import LLMItemEmbeddingMixin
from recbole_genair.model.layers import NormalizedItemTable
from recbole_genair.model.projection import normalized_laplacian, pca_item_table


class TFLLMER(LLMItemEmbeddingMixin):
    """What TF-LLMER adds to a backbone; its defaults are in `props/model/TFLLMER.yaml`."""

    def __init__(self, config, dataset):
        recpca_dim = config["recpca_dim"]
        mode = config["tfllmer_table"]
        if mode not in ("frozen", "trainable"):
            raise ValueError(f"tfllmer_table must be 'frozen' or 'trainable', not {mode!r}")
        recpca_lambda = float(config["recpca_lambda"])
        window = config["cooccurrence_window"]
        super().__init__(config, dataset)

        width, n_extra_tokens = self._backbone_item_layout()
        llm_table = self._llm_item_table(config, dataset)
        # Graph over the real items (row and column 0 are padding), from the training split only.
        counts = cooccurrence_matrix(dataset, window=window)[1:, 1:]
        k = recpca_dim or width
        if mode == "trainable" and k != width:
            raise ValueError(f"tfllmer_table: trainable initialises the item table of width {width} from Rec-PCA, so "
                             f"recpca_dim must be {width} (or ~), not {k}")
        table, self._recpca_basis = pca_item_table(llm_table, k, laplacian=normalized_laplacian(counts),
                                                   lam=recpca_lambda, return_basis=True)
        getLogger().info(
            f"Rec-PCA: {llm_table.size(1)} -> {k} dimensions, lambda={recpca_lambda}, "
            f"{counts.nnz // 2} co-occurring item pairs (training split)"
        )
        if mode == "trainable":
            self.cannot_add_items = ("TF-LLMER with tfllmer_table: trainable scores with its trained item table: a new "
                                     "item has no trained row (the frozen mode maps new items through Rec-PCA)")
            self.item_embedding = NormalizedItemTable(table, n_extra_tokens, scale=config["norm_scale"],
                                                      learnable_scale=bool(config["learnable_norm_scale"]))
            return
        # item_normalization / norm_scale / learnable_norm_scale: see `_use_llm_item_embedding`
        self._use_llm_item_embedding(config, dataset, width, n_extra_tokens, table=table)

    def _table_rows_of_llm_rows(self, rows):
        """New items through the Rec-PCA basis fitted on the training items (never refitted)."""
        mean, w = self._recpca_basis
        return torch.from_numpy((rows.double().numpy() - mean) @ w).float()


class SASRecTFLLMER(TFLLMER, SASRec):
    """TF-LLMER with the SASRec backbone."""


class GRU4RecTFLLMER(TFLLMER, GRU4Rec):
    """TF-LLMER with the GRU4Rec backbone (item vectors of width `embedding_size`)."""


class BERT4RecTFLLMER(TFLLMER, BERT4Rec):
    """TF-LLMER with the BERT4Rec backbone; the mask token keeps a trainable row after the items."""
