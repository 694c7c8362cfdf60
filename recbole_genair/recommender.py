"""Use a trained model: top-k items for histories of raw item ids, and its item table for an ANN index.

    from recbole_genair.recommender import Recommender

    rec = Recommender.load("saved/SASRecGenAIR-seed2020-....pth")
    rec.recommend([["242", "302", "377"], ["51"]], k=10)  # one Recommendation per history, best first
    rec.export("exported/")                               # item_vectors.npy + item_ids.json

A history is a list of raw item ids (the `item_id` tokens of the dataset's files), oldest first; the
model reads its `MAX_ITEM_LIST_LENGTH` most recent items. The scores are those of the model's
`full_sort_predict` on the interaction that RecBole's evaluation builds for the same history (item
rows left-aligned, zero-padded, with the history's length; BERT4Rec appends its mask token there).
Row 0 of the item table (padding) and BERT4Rec's mask token are never candidates.

The model and its catalogue are held as one snapshot that each call reads once: a step that appends
rows to the item table (items added from their text) can replace both at once while calls run.
"""
import copy
import json
import numbers
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from recbole.data.interaction import Interaction
from recbole.model.sequential_recommender import BERT4Rec, GRU4Rec, SASRec
from recbole.utils import ModelType

from recbole_genair import __version__
from recbole_genair.checkpoint import (CheckpointError, checkpoint_state, holds_extended_weights, is_self_contained,
                                       load_model, read_checkpoint, stored_llm_rows, training_inputs, write_checkpoint)
from recbole_genair.threads import apply_threads

UNKNOWN_IDS = ("error", "skip")
# Backbones whose score is the inner product of a history vector with `item_embedding` rows (+ BERT4Rec's bias).
INNER_PRODUCT_BACKBONES = (SASRec, GRU4Rec, BERT4Rec)
_MAX_LISTED = 10


class RecommendError(ValueError):
    """A request the model cannot answer as asked: unknown item ids, an empty history, k beyond the catalogue.

    `status`: the HTTP status the service answers it with (400 unless the case is a missing or conflicting item).
    """

    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Recommendation:
    """The top-k of one history: raw item ids best first, their scores, and the unknown ids skipped."""

    items: tuple
    scores: tuple
    skipped: tuple = ()


@dataclass(frozen=True)
class _Snapshot:
    model: torch.nn.Module
    item_ids: tuple  # item_ids[j] is row j + 1 of the model's item table
    rows: dict  # raw id -> row
    # the model without the items added from their text, and those items' LLM vectors in row order
    # (None: not known, for a checkpoint of 0.1 that already held added items)
    trained: torch.nn.Module = None
    added: tuple = ()  # ((raw id, LLM vector row), ...)


def _snapshot(model, item_ids, trained=None, added=()):
    item_ids = tuple(item_ids)
    return _Snapshot(model.eval(), item_ids, {item: row for row, item in enumerate(item_ids, 1)}, trained, tuple(added))


class Recommender:
    """A trained sequential model that ranks its catalogue for raw item-id histories.

    Works for every model of recbole_genair and for RecBole's own sequential models that score from
    the item sequence alone (SASRec, GRU4Rec, BERT4Rec, ...). `item_ids` are the raw ids of the
    catalogue in the model's row order (row j + 1 of its item table, row 0 being padding); the columns
    of `score()` and the rows of `item_vectors()` follow that order.
    """

    def __init__(self, model, item_ids, config=None, checkpoint=None):
        """`model`: a trained RecBole sequential model; `item_ids`: raw ids of its item rows 1, 2, ... in order."""
        name = type(model).__name__
        if getattr(model, "type", None) != ModelType.SEQUENTIAL:
            raise RecommendError(f"{name} is not a sequential model: the Recommender ranks items for item histories, "
                                 f"which sequential models do (SASRec, GRU4Rec, BERT4Rec and recbole_genair's)")
        item_ids = tuple(str(i) for i in item_ids)
        if len(item_ids) != model.n_items - 1:
            raise ValueError(f"{len(item_ids)} item ids for the {model.n_items - 1} item rows of {name}")
        self.config = config
        self.checkpoint = None if checkpoint is None else str(checkpoint)
        self.batch_size = int(config["eval_batch_size"]) if config is not None else 256
        trained = None if getattr(model, "added_item_ids", ()) else model
        self._snapshot = _snapshot(model, item_ids, trained)
        self._training = None  # the training columns a saved checkpoint keeps (set by `load`)

    @classmethod
    def load(cls, checkpoint, data_path=None, threads=None, trust_checkpoint=False):
        """The model saved in `checkpoint` by our run function (or by `save`), ready to recommend.

        Reads no dataset file: the checkpoint holds what the model needs. Checkpoints written before 0.2
        are rebuilt with their dataset's files (not the `.itememb`): where they were at training, or in
        `data_path` (the dataset folder or the folder holding it); they pickle Python objects, so they load
        only with `trust_checkpoint=True` (reading such a file can run code it contains). Raises
        `CheckpointError` for a file that is not such a checkpoint, a dataset whose items changed, or a model
        that does not rank histories. `threads`: PyTorch threads of this process (None: the cores shared
        among the package's processes).
        """
        apply_threads(threads)
        state = read_checkpoint(checkpoint, trust=trust_checkpoint)
        added = ()
        if is_self_contained(state):
            config, model, item_ids = load_model(checkpoint, checkpoint=state, append_added=False)
            training = {key: state[key] for key in ("training_columns", "user_num")}  # kept by save()
            added_ids = list(state.get("added_item_ids") or [])
            if added_ids and not holds_extended_weights(state):
                added = tuple(zip(added_ids, stored_llm_rows(state)[1]))
        else:
            from recbole_genair.quick_start import load_data_and_model

            config, model, dataset, train_data, *_ = load_data_and_model(checkpoint, data_path=data_path,
                                                                         trust=trust_checkpoint)
            item_ids = [str(i) for i in dataset.field2id_token[dataset.iid_field][1:]] + list(model.added_item_ids)
            training = training_inputs(train_data._dataset)
        if config["MODEL_TYPE"] != ModelType.SEQUENTIAL:
            raise CheckpointError(f"{checkpoint} holds {config['model']}, a {config['MODEL_TYPE'].name.lower()} model: "
                                  f"the Recommender ranks items for item histories, which sequential models do; "
                                  f"train one, e.g. `python run_recbole_genair.py --model=SASRecGenAIR`")
        recommender = cls(model, item_ids, config, checkpoint)
        recommender._training = training
        if added:
            recommender._snapshot = recommender._extended(model, added)
        return recommender

    @property
    def model(self):
        return self._snapshot.model

    @property
    def added_item_ids(self):
        """Items added from their text since training (`add_items`, or in the checkpoint loaded), in row order."""
        return tuple(getattr(self._snapshot.model, "added_item_ids", ()))

    @property
    def item_ids(self):
        """Raw ids of the catalogue, in row order: `item_ids[j]` is row j + 1 of the item table."""
        return self._snapshot.item_ids

    @property
    def max_history(self):
        """How many of a history's most recent items the model reads (`MAX_ITEM_LIST_LENGTH`)."""
        return self._snapshot.model.max_seq_length

    def __repr__(self):
        dataset = f" on {self.config['dataset']}" if self.config is not None else ""
        return (f"Recommender({type(self.model).__name__}{dataset}: {len(self.item_ids)} items, "
                f"histories of up to {self.max_history} items)")

    def recommend(self, histories, k=10, exclude_seen=True, unknown="error"):
        """One `Recommendation` per history: the k best items (raw ids, best first) and their scores.

        `histories`: a batch, a list of histories, each a list of raw item ids, oldest first.
        `exclude_seen`: leave out the items of the history (all of it, not only the part the model reads).
        `unknown`: "error" refuses ids that are not in the catalogue (all are listed), "skip" leaves them
        out and lists them in `Recommendation.skipped`.
        """
        snapshot = self._snapshot
        k = self._check_k(snapshot, k)
        resolved = self._resolve(snapshot, histories, unknown)
        seen = [sorted(set(rows)) if exclude_seen else [] for rows, _ in resolved]
        for n, rows in enumerate(seen):
            left = len(snapshot.item_ids) - len(rows)
            if k > left:
                raise RecommendError(f"k={k} is larger than the {left} items left for history {n}: the catalogue's "
                                     f"{len(snapshot.item_ids)} items minus the {len(rows)} it holds (exclude_seen=True); "
                                     f"ask for k <= {left} or pass exclude_seen=False")
        scores = self._scores(snapshot, [rows for rows, _ in resolved])
        for n, rows in enumerate(seen):
            scores[n, [row - 1 for row in rows]] = -torch.inf
        top = torch.topk(scores, k, dim=1)
        return [
            Recommendation(tuple(snapshot.item_ids[j] for j in columns), tuple(values), tuple(skipped))
            for columns, values, (_, skipped) in zip(top.indices.tolist(), top.values.tolist(), resolved)
        ]

    def score(self, histories, unknown="error"):
        """The model's score of every catalogue item for each history, `len(histories) x len(item_ids)` float32.

        Column j is item `item_ids[j]`; the values are `full_sort_predict`'s for the same history.
        """
        snapshot = self._snapshot
        resolved = self._resolve(snapshot, histories, unknown)
        return self._scores(snapshot, [rows for rows, _ in resolved]).numpy()

    def item_vectors(self):
        """The item table the model scores with, `len(item_ids) x d` float32; row j is item `item_ids[j]`.

        `score()` = `query_vectors()` @ `item_vectors().T`. BERT4Rec adds a per-item bias to the inner
        product: for its models the last column is that bias, and the query's last entry is 1.
        """
        model, n = self._snapshot.model, len(self._snapshot.item_ids)
        self._check_inner_product(model)
        with torch.no_grad():
            table = model.item_embedding.weight[1: n + 1]
            if isinstance(model, BERT4Rec):
                table = torch.cat([table, model.output_bias[1: n + 1].unsqueeze(1)], dim=1)
        return table.detach().float().cpu().numpy()

    def query_vectors(self, histories, unknown="error"):
        """The vector each history is scored with, `len(histories) x d` float32 (see `item_vectors`)."""
        snapshot = self._snapshot
        model = snapshot.model
        self._check_inner_product(model)
        sequences = [rows for rows, _ in self._resolve(snapshot, histories, unknown)]
        out = []
        with torch.no_grad():
            for start in range(0, len(sequences), self.batch_size):
                interaction = self._interaction(model, sequences[start: start + self.batch_size])
                items, lengths = interaction[model.ITEM_SEQ], interaction[model.ITEM_SEQ_LEN]
                if isinstance(model, BERT4Rec):  # as its full_sort_predict: the mask token after the history
                    hidden = model.gather_indexes(model.forward(model.reconstruct_test_data(items, lengths)), lengths - 1)
                    hidden = torch.cat([hidden, hidden.new_ones(len(hidden), 1)], dim=1)
                else:
                    hidden = model.forward(items, lengths)
                out.append(hidden.float().cpu())
        return torch.cat(out).numpy()

    def export(self, folder):
        """Write `item_vectors.npy` (`item_vectors()`) and `item_ids.json` (raw ids in row order) into `folder`.

        For an approximate-nearest-neighbour index: query it with `query_vectors()` by inner product.
        Returns the two paths.
        """
        snapshot = self._snapshot
        vectors = self.item_vectors()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {
            "item_ids": list(snapshot.item_ids),
            "rows": "row j of item_vectors.npy is item_ids[j]",
            "score": "inner product of a history's query vector (Recommender.query_vectors) with a row",
            "bias_column": isinstance(snapshot.model, BERT4Rec),
            "model": type(snapshot.model).__name__,
            "dataset": self.config["dataset"] if self.config is not None else None,
            "checkpoint": self.checkpoint,
            "shape": list(vectors.shape),
        }
        paths = folder / "item_vectors.npy", folder / "item_ids.json"
        tmp = folder / f".item_vectors-{os.getpid()}.npy", folder / f".item_ids-{os.getpid()}.json"
        np.save(tmp[0], vectors)
        tmp[1].write_text(json.dumps(meta, indent=1, ensure_ascii=False), encoding="utf-8")
        for source, target in zip(tmp, paths):
            source.replace(target)
        return paths

    def export_recbole(self, path):
        """Write the model as a checkpoint of its RecBole backbone (e.g. SASRec for SASRecGenAIR) that RecBole's own
        `recbole.quick_start.load_data_and_model` reads; see `recbole_genair.interop.write_recbole_checkpoint`.

        For GenAIR, TF-LLMER, LLMInit and RecBole's models; others are refused with the reason. Returns the path.
        """
        if self.config is None:
            raise RecommendError("this Recommender was built without its config: load it from a checkpoint to export it")
        from recbole_genair.interop import write_recbole_checkpoint  # RecBole's configurator: loaded only here

        return write_recbole_checkpoint(self.config, self._snapshot.model, path)

    def add_items(self, new_items):
        """Add items from their text without retraining; returns the number added.

        `new_items`: `recbole_genair.archetype.new_items.NewItemVectors` (`embed_new_items`), made with the
        LLM, settings and PCA basis of the `.itememb` the model was trained on (anything else is refused,
        saying which differs). The trained projector maps them into the item table; every trained item's
        score is unchanged and the new items can be recommended at once. Calls running meanwhile use the
        catalogue as it was before. `save()` writes the extended model as a new checkpoint.
        """
        snapshot = self._snapshot
        self.check_can_add_items()
        ids = self.check_new_ids(new_items.ids)
        self._check_source(snapshot.model, new_items.source)
        rows = np.asarray(new_items.vectors, dtype=np.float32)
        rows = torch.from_numpy(_selected_views(rows, self.config, new_items.source.views))
        if snapshot.trained is None:  # a 0.1 checkpoint holding added items: extend the model as it is
            extended = copy.deepcopy(snapshot.model)
            extended.append_items(rows)
            extended.added_item_ids = self.added_item_ids + tuple(ids)
            self._snapshot = _snapshot(extended, snapshot.item_ids + tuple(ids))
        else:
            self._snapshot = self._extended(snapshot.trained, snapshot.added + tuple(zip(ids, rows)))
        return len(ids)

    def remove_items(self, ids):
        """Remove items that were added from their text (`add_items`); returns the number removed.

        The model becomes the trained model with the remaining added items, exactly as if only those had
        been added. Trained items cannot be removed (they are part of the trained weights: retrain without
        them); unknown ids are refused, all listed. Calls running meanwhile use the catalogue as it was.
        """
        snapshot = self._snapshot
        ids = [str(i) for i in ids]
        added = dict(snapshot.added)
        unknown = [i for i in ids if i not in snapshot.rows]
        trained = [i for i in ids if i in snapshot.rows and i not in added]
        if unknown:
            raise RecommendError(f"{_listed(unknown)} not in the catalogue: nothing was removed", status=404)
        if trained:
            raise RecommendError(f"{_listed(trained)} {'is a trained item' if len(trained) == 1 else 'are trained items'}"
                                 f": only items added from their text can be removed (a trained item is part of the "
                                 f"model's weights; retrain without it)", status=409)
        if snapshot.trained is None:
            raise RecommendError("this model was loaded from a recbole_genair 0.1 checkpoint that already held added "
                                 "items: save it (Recommender.save) and load that file to remove items", status=409)
        self._snapshot = self._extended(snapshot.trained, tuple((i, v) for i, v in snapshot.added if i not in ids))
        return len(set(ids))

    def _extended(self, trained, added):
        """The snapshot of `trained` with the items `added` ((id, LLM vector row), ...) appended in order."""
        model = trained
        if added:
            model = copy.deepcopy(trained)
            model.append_items(torch.stack([torch.as_tensor(v, dtype=torch.float32) for _, v in added]))
            model.added_item_ids = tuple(i for i, _ in added)
        n_trained = trained.n_items - 1
        item_ids = tuple(self._snapshot.item_ids[:n_trained]) + tuple(i for i, _ in added)
        return _snapshot(model, item_ids, trained, added)

    def check_new_ids(self, ids):
        """The ids as strings, or `RecommendError` for ids already in the catalogue or given more than once."""
        ids = [str(i) for i in ids]
        known = [i for i in ids if i in self._snapshot.rows]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if known or repeated:
            raise RecommendError(f"new items must have new ids: {_listed(known)} already in the catalogue"
                                 if known else f"ids given more than once: {_listed(repeated)}")
        return ids

    def check_can_add_items(self):
        """Raise `RecommendError`, saying why, unless the model can take items from their text (`add_items`)."""
        model = self._snapshot.model
        name = type(model).__name__
        reason = getattr(model, "cannot_add_items", None) if hasattr(model, "append_items") else (
            f"{name} scores with a trained item-ID table only: a new item has no row, and no text path to make one")
        if reason:
            raise RecommendError(f"{name} cannot add items from their text: {reason}. Use a GenAIR or TF-LLMER model "
                                 f"(e.g. SASRecGenAIR), whose item rows are computed from the LLM vectors.")

    @staticmethod
    def _check_source(model, source):
        trained = getattr(model, "llm_item_source", None)
        if not trained:
            raise RecommendError(
                f"{type(model).__name__} does not record which LLM and PCA made its vectors (its .itememb was not "
                f"written by this version's archetype preprocessor): new vectors could not be checked to be in its "
                f"space. Retrain on an .itememb written by `python -m recbole_genair.archetype`.")
        if source.llm_model != str(trained.get("llm_model")):
            raise RecommendError(
                f"the new vectors come from another LLM ({source.llm_model}); the model was trained on vectors of "
                f"{trained.get('llm_model')}. Embed the new items with the .itememb the model was trained on.")
        same_itememb = source.itememb_sha256 == str(trained.get("itememb_sha256"))
        # a model trained before its .itememb.json recorded the basis: the basis now beside that same file is its own
        same_basis = source.pca_sha256 == str(trained.get("pca_sha256")) or trained.get("pca_sha256") is None
        if not (same_itememb and same_basis):
            raise RecommendError(
                f"the new vectors were mapped with another PCA basis (archetype run with signature {source.signature}, "
                f".itememb {source.itememb_sha256[:12]}); the model was trained on the run with signature "
                f"{trained.get('signature')}, .itememb {str(trained.get('itememb_sha256'))[:12]}. Embed the new items "
                f"with the .itememb the model was trained on.")

    def save(self, path):
        """Write the model as it is now (items added included) as a checkpoint that `Recommender.load` reads.

        The checkpoint is self-contained (no dataset file is needed to load it) and holds plain types only.
        Written atomically; returns the path.
        """
        if self.config is None:
            raise RecommendError("this Recommender was built without its config: load it from a checkpoint to save it")
        snapshot = self._snapshot  # one snapshot: the weights, the ids and the added items agree
        added = tuple(getattr(snapshot.model, "added_item_ids", ()))
        if snapshot.trained is not None:  # format 2: the trained weights; the added rows are rebuilt on loading
            state = checkpoint_state(self.config, snapshot.trained, ["[PAD]"] + list(snapshot.item_ids), added,
                                     training=self._training, saved_from=self.checkpoint,
                                     recbole_genair_version=__version__)
            if added:
                state["other_parameter"]["llm_item_vectors"] = snapshot.model.llm_item_vectors
        else:  # the extended weights of a 0.1 checkpoint holding added items: loading appends before the weights
            state = checkpoint_state(self.config, snapshot.model, ["[PAD]"] + list(snapshot.item_ids), added,
                                     training=self._training, saved_from=self.checkpoint, state_dict_extended=True,
                                     recbole_genair_version=__version__)
        path = write_checkpoint(state, path)
        self.checkpoint = str(path)
        return path

    def _check_k(self, snapshot, k):
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise RecommendError(f"k={k!r}: give a whole number of items, at least 1")
        if k > len(snapshot.item_ids):
            raise RecommendError(f"k={k} is larger than the {len(snapshot.item_ids)} items {type(snapshot.model).__name__} "
                                 f"can recommend (its catalogue); ask for k <= {len(snapshot.item_ids)}")
        return int(k)

    @staticmethod
    def _check_inner_product(model):
        if not isinstance(model, INNER_PRODUCT_BACKBONES):
            raise RecommendError(f"{type(model).__name__} is not built on SASRec, GRU4Rec or BERT4Rec, whose scores are "
                                 f"an inner product with item_embedding rows: use score() or recommend() for it")

    def _resolve(self, snapshot, histories, unknown):
        """[(rows of the history's known items, unknown ids skipped)], or a `RecommendError` naming what is wrong."""
        if unknown not in UNKNOWN_IDS:
            raise RecommendError(f"unknown={unknown!r}: give 'error' (refuse unknown item ids) or 'skip' (leave them out)")
        if isinstance(histories, (str, bytes)) or not hasattr(histories, "__iter__"):
            raise RecommendError(f"histories={histories!r:.60}: give a list of histories, each a list of raw item ids")
        histories = list(histories)
        if not histories:
            raise RecommendError("no histories given: pass a list of histories, each a list of raw item ids (oldest first)")
        resolved, missing = [], {}
        for n, history in enumerate(histories):
            if isinstance(history, (str, bytes)) or not hasattr(history, "__iter__"):
                raise RecommendError(f"history {n} is {history!r:.40}, not a list of item ids: `histories` is a batch; "
                                     f"for one history pass [history]")
            ids = [str(item) for item in history]
            if not ids:
                raise RecommendError(f"history {n} is empty: give at least one raw item id (oldest first), or leave "
                                     f"the history out of the batch")
            rows = [snapshot.rows.get(item) for item in ids]
            skipped = [item for item, row in zip(ids, rows) if row is None]
            if skipped:
                missing[n] = skipped
            rows = [row for row in rows if row is not None]
            if not rows and unknown == "skip":
                raise RecommendError(f"history {n} has no item of the catalogue: all its ids are unknown "
                                     f"({_listed(skipped)}); give ids of items the model was trained on")
            resolved.append((rows, skipped))
        if missing and unknown == "error":
            count = sum(len(ids) for ids in missing.values())
            where = "; ".join(f"history {n}: {_listed(ids)}" for n, ids in list(missing.items())[:_MAX_LISTED])
            more = f"; and {len(missing) - _MAX_LISTED} more histories" if len(missing) > _MAX_LISTED else ""
            raise RecommendError(
                f"{count} item id{'s are' if count > 1 else ' is'} not in the catalogue of {type(snapshot.model).__name__} "
                f"({len(snapshot.item_ids)} items, raw ids such as {snapshot.item_ids[0]!r}): {where}{more}. "
                f"Check the ids against the dataset's item_id column, or pass unknown='skip' (--unknown=skip) to leave them out."
            )
        return resolved

    def _interaction(self, model, sequences):
        """RecBole's evaluation input for these histories: the most recent items left-aligned, zero-padded."""
        length = model.max_seq_length
        items = torch.zeros(len(sequences), length, dtype=torch.long)
        for n, rows in enumerate(sequences):
            rows = rows[-length:]
            items[n, : len(rows)] = torch.tensor(rows, dtype=torch.long)
        lengths = torch.tensor([min(len(rows), length) for rows in sequences], dtype=torch.long)
        return Interaction({model.ITEM_SEQ: items, model.ITEM_SEQ_LEN: lengths}).to(getattr(model, "device", "cpu"))

    def _scores(self, snapshot, sequences):
        """`full_sort_predict` over the catalogue's columns (padding and mask rows dropped), float32 on the CPU."""
        model, n = snapshot.model, len(snapshot.item_ids)
        out = []
        with torch.no_grad():
            for start in range(0, len(sequences), self.batch_size):
                chunk = sequences[start: start + self.batch_size]
                try:
                    scores = model.full_sort_predict(self._interaction(model, chunk))
                except KeyError as err:
                    raise RecommendError(f"{type(model).__name__} scores with the field {err} besides the item history; "
                                         f"the Recommender serves models that rank from the history alone (SASRec, "
                                         f"GRU4Rec, BERT4Rec and recbole_genair's)") from None
                out.append(scores.view(len(chunk), -1)[:, 1: n + 1].float().cpu())
        return torch.cat(out)


def _selected_views(rows, config, widths):
    """The columns of `.itememb` vectors the model reads (`llm_views`: both, prefill or decoding)."""
    views = (config["llm_views"] if config is not None else None) or "both"
    if views == "both":
        return rows
    prefill = int(widths["prefill"])
    return rows[:, :prefill] if views == "prefill" else rows[:, prefill:]


def _listed(ids):
    shown = ", ".join(repr(i) for i in ids[:_MAX_LISTED])
    return shown + (f" and {len(ids) - _MAX_LISTED} more" if len(ids) > _MAX_LISTED else "")
