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


COLD_RESIDUALS = ("learned", "zero", "neighbours")


class LLMItemEmbedding(ItemTable):
    """Frozen LLM item table followed by a trainable projector (GenAIR eqs. 7-8).

    Two options beyond the paper (issue 17), both off by default:
    - `center`: subtract the mean projected item row, so the projector's shared offset (the same
      vector added to every item) does not enter the backbone or the scores.
    - `residual`: a trainable per-item row added to the projected one, initialised at zero (the
      initial table, and with it every initial score, is the paper's), with its own `residual_dropout`
      (on the residual rows, in training) and weight decay (`optimizer_parameter_groups`), so that
      behaviour can separate items whose texts the LLM vectors cannot tell apart.
    - `cold_residual` (issue 32), with the residual: what an item without a training interaction (held out, or
      added later from its text) has as its residual, the same in training, evaluation and `append_llm_rows`:
      `learned` (its own row, trained only as a negative; an added item starts at zero), `zero` (its text alone),
      `neighbours` (the weighted mean of its `cold_neighbours` nearest trained items' residuals in LLM space).
      `cold_item_dropout` gives a random share of the trained items that row at each training step (DropoutNet's
      idea on the residual only), so what the model learns also holds for items it will only know by their text.
    """

    def __init__(self, llm_table, embedding_size, projector_hidden_size=None, n_extra_tokens=0, center=False,
                 residual=False, residual_dropout=0.0, cold_residual="learned", cold_neighbours=10,
                 cold_item_dropout=0.0):
        super().__init__(llm_table.size(0), embedding_size)
        self.register_buffer("llm_table", llm_table.float())
        self.projector = MLPProjector(llm_table.size(1), embedding_size, projector_hidden_size)
        self.center = bool(center)
        self.residual_dropout = float(residual_dropout or 0.0)
        # zeros draw no random numbers: the projector and every later layer initialise as without it
        self.residual = nn.Parameter(torch.zeros(llm_table.size(0) - 1, embedding_size)) if residual else None
        if cold_residual not in COLD_RESIDUALS:
            raise ValueError(f"cold_residual must be one of {', '.join(COLD_RESIDUALS)}, not {cold_residual!r}; set it "
                             f"in YAML or with --cold_residual")
        if cold_residual != "learned" and self.residual is None:
            raise ValueError(f"cold_residual: {cold_residual} sets the residual of items without a training "
                             f"interaction: it needs item_residual: True")
        self.cold_residual = cold_residual
        self.cold_neighbours = int(cold_neighbours) if self.cold_residual == "neighbours" else 0
        self.cold_item_dropout = float(cold_item_dropout or 0.0)
        if not 0.0 <= self.cold_item_dropout < 1.0:
            raise ValueError(f"cold_item_dropout must be in [0, 1), not {cold_item_dropout}")
        if self.cold_item_dropout and self.cold_residual == "learned":
            raise ValueError("cold_item_dropout trains items as cold_residual builds an untrained item's row: set "
                             "cold_residual: zero or neighbours (and item_residual: True)")
        if self.cold_residual != "learned":
            self.register_buffer("cold_rows", torch.zeros(0, dtype=torch.long))
            self.register_buffer("neighbour_rows", torch.zeros(0, self.cold_neighbours, dtype=torch.long))
            self.register_buffer("neighbour_weights", torch.zeros(0, self.cold_neighbours))
        self._append_extra_tokens(n_extra_tokens)

    def set_untrained_items(self, untrained):
        """The items without a training interaction (a boolean mask over the item ids, padding first), whose
        residual `cold_residual` sets: zero, or the weighted mean of their nearest trained items' (`text_neighbours`)."""
        if self.cold_residual == "learned":
            return
        rows = torch.as_tensor(untrained, dtype=torch.bool)[1:self.n_items].nonzero().flatten()
        trained = torch.ones(self.n_items - 1, dtype=torch.bool).index_fill(0, rows, False)
        self._add_cold_rows(rows, trained)
        if self.cold_item_dropout and self.cold_neighbours:
            # what a trained item dropped in training gets: its own neighbours among the other trained items
            index, weights = text_neighbours(self.llm_table[1:], trained.nonzero().flatten(), trained, self.cold_neighbours)
            full_index = torch.zeros(self.n_items - 1, index.size(1), dtype=torch.long)
            full_weights = torch.zeros(self.n_items - 1, index.size(1))
            full_index[trained], full_weights[trained] = index, weights
            self.register_buffer("dropout_neighbour_rows", full_index, persistent=False)
            self.register_buffer("dropout_neighbour_weights", full_weights, persistent=False)

    def _add_cold_rows(self, rows, trained):
        self.cold_rows = torch.cat([self.cold_rows, rows.to(self.cold_rows)])
        self._table = None
        if not self.cold_neighbours or not len(rows):
            return
        index, weights = text_neighbours(self.llm_table[1:], rows, trained, self.cold_neighbours)
        self.neighbour_rows = torch.cat([self.neighbour_rows, index.to(self.neighbour_rows)])
        self.neighbour_weights = torch.cat([self.neighbour_weights, weights.to(self.neighbour_weights)])

    def _simulate_cold_items(self, residual):
        """`cold_item_dropout`: a fresh random share of the items gets, this step, the residual an untrained item
        would have (zero, or its trained neighbours'), so the projector learns rows that stand on their text."""
        drop = torch.rand(residual.size(0), device=residual.device) < self.cold_item_dropout
        if self.cold_residual == "neighbours":
            replacement = (self.dropout_neighbour_weights.unsqueeze(-1) * residual[self.dropout_neighbour_rows]).sum(1)
        else:
            replacement = torch.zeros_like(residual)
        return torch.where(drop.unsqueeze(-1), replacement, residual)

    def append_llm_rows(self, rows):
        """Items added after training: their frozen rows (the projector's input) and a zero residual
        (`cold_residual: neighbours`: their text neighbours' among the trained items, as in training)."""
        rows = rows.to(self.llm_table)
        self.llm_table = torch.cat([self.llm_table, rows])
        if self.residual is not None:
            self.residual = nn.Parameter(torch.cat([self.residual.detach(), self.residual.new_zeros(len(rows), self.embedding_size)]))
        old = self.n_items - 1
        self.n_items += len(rows)
        if self.cold_residual != "learned":
            trained = torch.ones(self.n_items - 1, dtype=torch.bool)
            trained[self.cold_rows] = False
            trained[old:] = False
            self._add_cold_rows(torch.arange(old, self.n_items - 1), trained)
            for name in ("dropout_neighbour_rows", "dropout_neighbour_weights"):  # added items have no trained residual
                if hasattr(self, name):
                    table = getattr(self, name)
                    setattr(self, name, torch.cat([table, table.new_zeros(len(rows), table.size(1))]))
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
            residual = self.residual
            if self.cold_residual == "zero":
                residual = residual.index_fill(0, self.cold_rows, 0.0)
            elif self.cold_residual == "neighbours" and len(self.cold_rows):
                mixed = (self.neighbour_weights.unsqueeze(-1) * residual[self.neighbour_rows]).sum(1)
                residual = residual.index_copy(0, self.cold_rows, mixed)
            if self.training and self.cold_item_dropout:
                residual = self._simulate_cold_items(residual)
            rows = rows + F.dropout(residual, self.residual_dropout, self.training)
        return rows


def text_neighbours(vectors, rows, trained, k, chunk=2048):
    """For each of `rows` (indices into `vectors`), its `k` nearest `trained` rows by cosine (never itself) and
    their weights: the cosines clamped at zero and normalised to sum to one (equal weights when none is positive).

    Returns `(len(rows) x k` indices, `len(rows) x k` weights); computed `chunk` rows at a time.
    """
    candidates = trained.nonzero().flatten()
    k = min(k, len(candidates) - 1 if bool(trained[rows].any()) else len(candidates))
    if k < 1:
        raise ValueError("cold_residual: neighbours found no trained item to take residuals from")
    unit = F.normalize(vectors.float(), dim=-1)
    position = torch.full((len(vectors),), -1, dtype=torch.long)
    position[candidates] = torch.arange(len(candidates))
    indices, weights = [], []
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        cosine = unit[part] @ unit[candidates].t()
        own = position[part]
        mine = (own >= 0).nonzero().flatten()
        cosine[mine, own[mine]] = float("-inf")
        top, index = cosine.topk(k, dim=1)
        w = top.clamp_min(0.0)
        total = w.sum(1, keepdim=True)
        weights.append(torch.where(total > 0, w / total.clamp_min(1e-12), torch.full_like(w, 1.0 / k)))
        indices.append(candidates[index])
    if not indices:
        return torch.zeros(0, k, dtype=torch.long), torch.zeros(0, k)
    return torch.cat(indices), torch.cat(weights)


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
