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


@torch.no_grad()
def rescale_last_linear(net, inputs, target_std):
    """Scale the last `nn.Linear` of the `nn.Sequential` `net` so that `net(inputs)` has standard deviation
    `target_std` (measured without dropout, as the rows are evaluated)."""
    training = net.training
    std = float(net.eval()(inputs).std())
    net.train(training)
    if std > 0:
        net[-1].weight.mul_(target_std / std)
        net[-1].bias.mul_(target_std / std)


def register_scale(module, scale, learnable):
    """`module.scale`: a trainable scalar when `learnable`, else a fixed buffer (it goes into checkpoints either way)."""
    scale = torch.tensor(float(scale))
    if learnable:
        module.scale = nn.Parameter(scale)
    else:
        module.register_buffer("scale", scale)


class ItemTable(nn.Module):
    """An item embedding computed as a whole table from trainable parts; stands in for `nn.Embedding`.

    `layer(ids)` looks items up and `layer.weight` is the whole table, used on the scoring side. Row 0
    (padding) is zero; trainable rows may follow the items (BERT4Rec's mask token). Subclasses compute
    the real items' rows in `item_rows()` and call `_append_extra_tokens` last in `__init__` (so the
    parameter order, and with it the random initialisation and optimizer checkpoints, stays as it was).

    The table is computed once per training step (inside `shared_table()`, re-entrant) and once per
    evaluation (cached in eval mode without autograd; dropped by `train()`/`eval()` and on load).
    """

    def __init__(self, n_items, embedding_size):
        super().__init__()
        self.n_items = n_items
        self.embedding_size = embedding_size
        self.extra_tokens = None
        self._table = None
        self._sharing = False

    def _append_extra_tokens(self, n_extra_tokens):
        if n_extra_tokens:
            self.extra_tokens = nn.Parameter(torch.empty(n_extra_tokens, self.embedding_size).normal_(0.0, 0.02))

    @property
    def num_embeddings(self):
        return self.n_items + (0 if self.extra_tokens is None else self.extra_tokens.size(0))

    def item_rows(self):
        """Embeddings of items 1 .. n_items - 1, `(n_items - 1) x embedding_size`."""
        raise NotImplementedError

    def project(self):
        """The whole table; padding row zero, extra tokens appended."""
        items = self.item_rows()
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
        """Compute the table once for everything inside (ranking and auxiliary losses of one step)."""
        if self._sharing:
            yield self._table
            return
        self._table, self._sharing = self.project(), True
        try:
            yield self._table
        finally:
            self._table, self._sharing = None, False

    def train(self, mode=True):
        self._table = None
        return super().train(mode)

    def _load_from_state_dict(self, *args, **kwargs):
        self._table = None
        return super()._load_from_state_dict(*args, **kwargs)


def shared_table(embedding):
    """`embedding.shared_table()` for an `ItemTable`; an `nn.Embedding` has no table to compute, so nothing to share."""
    return embedding.shared_table() if isinstance(embedding, ItemTable) else contextlib.nullcontext()


class LLMItemEmbedding(ItemTable):
    """Frozen LLM item table followed by a trainable projector (GenAIR eqs. 7-8).

    Two options beyond the paper (issue 17), both off by default:
    - `center`: subtract the mean projected item row, so the projector's shared offset (the same
      vector added to every item) does not enter the backbone or the scores.
    - `residual`: a trainable per-item row added to the projected one, initialised at zero (the
      initial table, and with it every initial score, is the paper's), with its own `residual_dropout`
      (on the residual rows, in training) and weight decay (`optimizer_parameter_groups`), so that
      behaviour can separate items whose texts the LLM vectors cannot tell apart.
    """

    def __init__(self, llm_table, embedding_size, projector_hidden_size=None, n_extra_tokens=0, center=False,
                 residual=False, residual_dropout=0.0):
        super().__init__(llm_table.size(0), embedding_size)
        self.register_buffer("llm_table", llm_table.float())
        self.projector = MLPProjector(llm_table.size(1), embedding_size, projector_hidden_size)
        self.center = bool(center)
        self.residual_dropout = float(residual_dropout or 0.0)
        # zeros draw no random numbers: the projector and every later layer initialise as without it
        self.residual = nn.Parameter(torch.zeros(llm_table.size(0) - 1, embedding_size)) if residual else None
        self._append_extra_tokens(n_extra_tokens)

    def append_llm_rows(self, rows):
        """Items added after training: their frozen rows (the projector's input) and a zero residual."""
        rows = rows.to(self.llm_table)
        self.llm_table = torch.cat([self.llm_table, rows])
        if self.residual is not None:
            self.residual = nn.Parameter(torch.cat([self.residual.detach(), self.residual.new_zeros(len(rows), self.embedding_size)]))
        self.n_items += len(rows)
        self._table = None

    def scale_initial_rows(self, target_std):
        """Scale the projector's last layer so that the projected item rows have standard deviation `target_std`."""
        rescale_last_linear(self.projector.net, self.llm_table[1:], target_std)
        self._table = None

    def item_rows(self):
        rows = self.projector(self.llm_table[1:])
        if self.center:
            rows = rows - rows.mean(dim=0, keepdim=True)
        if self.residual is not None:
            rows = rows + F.dropout(self.residual, self.residual_dropout, self.training)
        return rows


class NormalizedLLMItemEmbedding(LLMItemEmbedding):
    """`LLMItemEmbedding` whose item rows are L2-normalised and multiplied by a scale (TF-LLMER).

    Every item then enters the backbone and the scorer with the same norm, `scale`, fixed or learned.
    """

    def __init__(self, llm_table, embedding_size, projector_hidden_size=None, n_extra_tokens=0, scale=1.0,
                 learnable_scale=False, **options):
        super().__init__(llm_table, embedding_size, projector_hidden_size, n_extra_tokens, **options)
        register_scale(self, scale, learnable_scale)

    def item_rows(self):
        return F.normalize(super().item_rows(), dim=-1) * self.scale


class NormalizedItemTable(ItemTable):
    """A trainable item table, initialised from `init` (`n_items x h`, row 0 padding), whose rows are
    L2-normalised and multiplied by a fixed or learnable scale at every use (TF-LLMER's trainable mode)."""

    def __init__(self, init, n_extra_tokens=0, scale=1.0, learnable_scale=False):
        super().__init__(init.size(0), init.size(1))
        self.table = nn.Parameter(init[1:].clone().float())
        register_scale(self, scale, learnable_scale)
        self._append_extra_tokens(n_extra_tokens)

    def item_rows(self):
        return F.normalize(self.table, dim=-1) * self.scale
