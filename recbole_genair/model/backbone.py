"""The one way every LLM-enhanced model of the package plugs into RecBole's sequential backbones."""
import torch

from recbole_genair.data.itememb import llm_item_source, load_llm_item_table
from recbole_genair.data.popularity import item_popularity
from recbole_genair.model.layers import LLMItemEmbedding, NormalizedLLMItemEmbedding, shared_table


class LLMItemEmbeddingMixin:
    """Base of the models that read `.itememb`; mixed in before the backbone (`class SASRecX(X, SASRec)`).

    `uses_llm_item_embedding` makes `Config` add the `.itememb` loading settings. A model replaces the
    backbone's `item_embedding` by a layer with `.weight` and `__call__(ids)` (an `ItemTable`) or
    re-initialises it, so RecBole's forward and scoring code run unchanged on SASRec, GRU4Rec and
    BERT4Rec. The backbone's own `nn.Embedding` tells the item width and the rows after the items
    (BERT4Rec's mask token).
    """

    uses_llm_item_embedding = True
    # The LLM table goes into checkpoints, so a trained model loads without its `.itememb` file; its
    # source (LLM, settings, PCA basis) tells which vectors items added later must come from.
    other_parameter_name = ("llm_item_vectors", "llm_item_source")

    # The method interface: what the trainer, all-position training and the tools read or call. A method overrides
    # what it needs (docs/contributing.md); these defaults add nothing to RecBole's backbone.
    loss_names = ("rec",)  # the names of the losses `calculate_loss` returns, in order, for the training log
    # Why items cannot be added from their text (None: they can, see `append_items`).
    cannot_add_items = None
    # `forward` only calls the backbone's own forward (e.g. once per view): all-position training may run it
    forward_runs_backbone = False
    # `calibration_items` is implemented: behavioural calibration (`alpha` > 0) can train this model (GenAIR)
    supports_calibration = False

    def auxiliary_losses(self, interaction):
        """The method's loss terms besides the ranking loss (tensors), added by both training modes.

        A method whose `calculate_loss` adds terms must return them here too: all-position training replaces
        the ranking loss only, and refuses a model that changes `calculate_loss` without this method.
        """
        return ()

    def set_epoch(self, epoch):
        """Called by the trainer before each training epoch, also after resuming (curricula, per-epoch teachers)."""

    def calibration_items(self, interaction):
        """The items of the batch whose rows behavioural calibration spreads apart (`supports_calibration`)."""
        raise NotImplementedError(f"{type(self).__name__} has no behavioural calibration")

    def _llm_item_table(self, config, dataset):
        """The LLM item table (`.itememb`, or the checkpoint's when reloaded), kept for checkpoints."""
        self.llm_item_vectors = load_llm_item_table(dataset, config)
        self.llm_item_source = llm_item_source(config)
        return self.llm_item_vectors

    def _table_rows_of_llm_rows(self, rows):
        """Rows of the frozen table the projector reads, for LLM vectors `rows` (GenAIR: the vectors themselves)."""
        return rows

    def append_items(self, rows):
        """Append items given by their LLM vectors (`m x` the model's LLM columns) after the trained items.

        Their rows come from the frozen projector path (for TF-LLMER through the stored Rec-PCA basis), a
        zero residual and, for BERT4Rec, the mean of the trained items' output biases; the trained items'
        rows and scores do not change. BERT4Rec's mask token moves after the new items.
        """
        if self.cannot_add_items:
            raise NotImplementedError(self.cannot_add_items)
        rows = torch.as_tensor(rows, dtype=torch.float32)
        if rows.dim() != 2 or rows.size(1) != self.llm_item_vectors.size(1):
            raise ValueError(f"new items need vectors of {self.llm_item_vectors.size(1)} columns (the model's LLM "
                             f"table), not {tuple(rows.shape)}")
        self.llm_item_vectors = torch.cat([torch.as_tensor(self.llm_item_vectors).float(), rows])
        self.item_embedding.append_llm_rows(self._table_rows_of_llm_rows(rows))
        # rows 1 .. trained_n_items - 1 are trained: appending in several steps gives what one step gives
        self.trained_n_items = getattr(self, "trained_n_items", self.n_items)
        self.n_items += rows.size(0)
        if hasattr(self, "mask_token"):  # BERT4Rec: the mask token is the row after the items
            self.mask_token = self.n_items
        bias = getattr(self, "output_bias", None)
        if bias is not None:
            with torch.no_grad():
                added = bias[1:self.trained_n_items].mean().expand(rows.size(0))
                self.output_bias = torch.nn.Parameter(torch.cat([bias.detach(), added]))

    def _backbone_item_layout(self):
        """(item width, number of extra rows after the items) of the backbone's `nn.Embedding`."""
        return self.item_embedding.embedding_dim, self.item_embedding.num_embeddings - self.n_items

    def _use_llm_item_embedding(self, config, dataset, embedding_size, n_extra_tokens=0, table=None):
        """Frozen LLM table (`.itememb`, or `table`) + trainable projector as the backbone's item table.

        `item_normalization: True` L2-normalises the projected rows to `norm_scale` (TF-LLMER's
        item-embedding normalisation; for GenAIR an extension, off by default as in the paper).
        `center_item_table`, `item_residual`, `item_residual_dropout` (issue 17, off by default): see
        `LLMItemEmbedding`; `item_residual_weight_decay` is the residual's own weight decay.
        `projector_init_scale: backbone` starts the projected rows at the std of the random table they
        replace (the projector's default initialisation gives rows ~20x the norm of SASRec's, which leaves
        the position embeddings a few percent of the encoder input); `default` is PyTorch's (the paper's).
        """
        table = self._llm_item_table(config, dataset) if table is None else table
        init_scale = config["projector_init_scale"]
        if init_scale not in ("default", "backbone"):
            raise ValueError(f"projector_init_scale must be 'default' or 'backbone', not {init_scale!r}; set it in YAML "
                             "or with --projector_init_scale")
        # the random item table being replaced: the scale the backbone's initialisation chose for item vectors
        reference_std = float(self.item_embedding.weight[1:self.n_items].detach().std())
        options = dict(center=bool(config["center_item_table"]), residual=bool(config["item_residual"]),
                       residual_dropout=float(config["item_residual_dropout"]),
                       cold_residual=config["cold_residual"], cold_neighbours=config["cold_neighbours"],
                       cold_item_dropout=config["cold_item_dropout"])
        if not 0.0 <= options["residual_dropout"] < 1.0:
            raise ValueError(f"item_residual_dropout must be in [0, 1), not {options['residual_dropout']}")
        if config["item_normalization"]:
            self.item_embedding = NormalizedLLMItemEmbedding(
                table, embedding_size, config["projector_hidden_size"], n_extra_tokens,
                scale=config["norm_scale"], learnable_scale=bool(config["learnable_norm_scale"]), **options
            )
        else:
            self.item_embedding = LLMItemEmbedding(
                table, embedding_size, config["projector_hidden_size"], n_extra_tokens=n_extra_tokens, **options
            )
        if init_scale == "backbone":
            self.item_embedding.scale_initial_rows(reference_std)
        if self.item_embedding.cold_residual != "learned":
            self.item_embedding.set_untrained_items(item_popularity(dataset) == 0)
        self._residual_weight_decay = config["item_residual_weight_decay"]

    def optimizer_parameter_groups(self):
        """Parameter groups for the optimizer: the item residual with its own weight decay, if it has one."""
        residual = getattr(self.item_embedding, "residual", None)
        decay = getattr(self, "_residual_weight_decay", None)
        if residual is None or decay is None:
            return None
        rest = [p for p in self.parameters() if p is not residual]
        return [{"params": rest}, {"params": [residual], "weight_decay": float(decay)}]

    def calculate_loss(self, interaction):
        """The backbone's loss, with an `ItemTable` computed once for the whole step."""
        with shared_table(self.item_embedding):
            return super().calculate_loss(interaction)
