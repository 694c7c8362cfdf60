"""Vectors for items that arrive after training, in the columns of an existing `.itememb` (issue 18).

The archetype run stores beside its `.itememb` the settings that made each vector (`.itememb.json`,
"settings") and the per-view PCA basis it fitted (`.itememb.pca.npz`). A new item goes through the
same prompt, LLM, generation and pooling (GenAIR eqs. 5-6), then through that stored basis (eq. 7),
never a new fit: its vector lands in the space the trained projector reads.

    vectors = embed_new_items("~/data/amazon-office/amazon-office.itememb", "new.item")
    embedder = ItemEmbedder("~/data/amazon-office/amazon-office.itememb")   # the LLM loaded once
    vectors = embedder.embed({"B0NEW": {"title": "Recycled paper ream", "brand": "Lumo"}})
"""
import difflib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recbole_genair.archetype.backends import (
    OpenAICompatibleGenerator, TransformersGenerator, load_llm, prompt_token_ids,
)
from recbole_genair.archetype.items import ItemTable, join_prompt, prompt_clauses, read_item_rows, resolve_field_map
from recbole_genair.archetype.pipeline import archetype_records, archetype_views, states_while_generating
from recbole_genair.archetype.pooling import pooled_views, prefill_views
from recbole_genair.archetype.settings import SettingsError
from recbole_genair.data.itememb import file_sha256

logger = logging.getLogger("recbole_genair.archetype")
VIEWS = ("prefill", "decoding")


class NewItemsError(ValueError):
    """New items that cannot be given vectors as asked: no stored basis, bad rows, or a foreign `.itememb`."""


@dataclass(frozen=True)
class ItemSource:
    """What an `.itememb` was made with: its LLM, its settings' signature, its file and PCA basis checksums."""

    llm_model: str
    signature: str
    itememb_sha256: str
    pca_sha256: str
    views: dict  # {"prefill": width, "decoding": width}

    @classmethod
    def of(cls, meta):
        return cls(str(meta.get("llm_model")), str(meta.get("signature")), str(meta.get("itememb_sha256")),
                   str(meta.get("pca_sha256")), dict(meta.get("views") or {}))


@dataclass(frozen=True)
class NewItemVectors:
    """Raw ids (file order), their `.itememb`-column vectors (`len(ids) x columns` float32), archetypes and source."""

    ids: tuple
    vectors: np.ndarray
    archetypes: tuple
    source: ItemSource


def stored_basis(itememb):
    """(meta, {view: (mean, components)}) stored beside `itememb` by the archetype run; checked against each other."""
    itememb = Path(itememb).expanduser()
    meta_path = itememb.with_name(itememb.name + ".json")
    if not meta_path.is_file():
        raise NewItemsError(f"{meta_path} does not exist: new items get their vectors with the settings and PCA basis "
                            f"that the archetype preprocessor stores beside {itememb.name}; give the .itememb it wrote.")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if "pca_file" not in meta or "settings" not in meta:
        raise NewItemsError(
            f"{meta_path} was written without the PCA basis and settings that new items need (an earlier version). "
            f"Rerun `python -m recbole_genair.archetype --dataset=... --pca_only=True` with the run's settings: it "
            f"refits the same PCA from the stored work and writes {itememb.name}.pca.npz.")
    basis_path = itememb.with_name(meta["pca_file"])
    if not basis_path.is_file() or file_sha256(basis_path) != meta.get("pca_sha256"):
        raise NewItemsError(f"{basis_path} is missing or is not the PCA basis {meta_path.name} records (SHA-256 "
                            f"differs): rerun the archetype preprocessor with --pca_only=True to write both again.")
    with np.load(basis_path) as arrays:
        basis = {view: (arrays[f"{view}_mean"], arrays[f"{view}_components"]) for view in VIEWS}
    widths = {view: int(basis[view][1].shape[1]) for view in VIEWS}
    if widths != {view: int(meta["views"][view]) for view in VIEWS}:
        raise NewItemsError(f"{basis_path} has view widths {widths}, {meta_path.name} says {meta['views']}: rerun the "
                            f"archetype preprocessor with --pca_only=True.")
    return meta, basis


def read_new_items(item_file, item_id_field):
    """{raw id: fields} of an `.item` file of new items (RecBole atomic format, the dataset's header)."""
    path = Path(item_file).expanduser()
    if not path.is_file():
        raise NewItemsError(f"{path} does not exist: give an .item file (RecBole atomic format, the same fields as "
                            f"the dataset's .item, e.g. item_id:token<TAB>title:token_seq) with one row per new item.")
    header, rows, bad = read_item_rows(path, item_id_field)
    if not rows:
        raise NewItemsError(f"{path} has no item rows under its header {header}: add one row per new item.")
    if bad:
        lines = ", ".join(f"line {n} (item {i!r})" for n, i in bad[:5])
        raise NewItemsError(f"{len(bad)} lines of {path} are not valid UTF-8 ({lines}); re-encode the file as UTF-8.")
    return header, rows, path


def embed_new_items(itememb, item_file, llm_model=None, batch_size=None):
    """`NewItemVectors` for every row of `item_file`, made as the run that wrote `itememb` made its vectors.

    `llm_model`: where the same LLM is now (a local folder), if not where the run found it; the run's
    own `llm_model` names the model that must be there. `batch_size`: generation batch (default: the run's).
    """
    embedder = ItemEmbedder(itememb, llm_model, batch_size)
    header, rows, path = read_new_items(item_file, embedder.settings["item_id_field"])
    return embedder.embed(rows, header=header, where=str(path))


class ItemEmbedder:
    """The archetype run of one `.itememb` made reusable: its settings, its PCA basis and (loaded once) its LLM."""

    def __init__(self, itememb, llm_model=None, batch_size=None):
        self.itememb = Path(itememb).expanduser()
        self.meta, self.basis = stored_basis(self.itememb)
        self.settings = dict(self.meta["settings"])
        if llm_model is not None:
            self.settings["llm_model"] = str(llm_model)
        if batch_size is not None:
            self.settings["batch_size"] = int(batch_size)
        self._llm = None

    def _loaded(self):
        if self._llm is None:
            model, tokenizer, device = load_llm(self.settings)
            if model.config.hidden_size != self.basis["prefill"][0].shape[0]:
                raise NewItemsError(
                    f"{self.settings['llm_model']} has hidden size {model.config.hidden_size}, but the basis stored "
                    f"beside {self.itememb.name} was fitted on states of size {self.basis['prefill'][0].shape[0]} "
                    f"({self.meta['llm_model']}): give the LLM the run used (llm_model).")
            if self.settings["backend"] == "openai":
                generator = OpenAICompatibleGenerator(tokenizer, self.settings)
            else:
                generator = TransformersGenerator(model, tokenizer, device, self.settings)
            self._llm = model, tokenizer, device, generator
        return self._llm

    def _check_fields(self, given, run_fields, where):
        """Refuse fields the dataset's .item did not have (a misspelt 'brnad' would silently leave the prompt)."""
        if not run_fields:  # an .itememb written before its fields were recorded
            return
        unknown = [f for f in given if f not in run_fields]
        if unknown:
            hints = [f"{f!r} -> {close[0]!r}" for f in unknown for close in [difflib.get_close_matches(f, run_fields, 1)] if close]
            raise NewItemsError(
                f"{where}: {', '.join(repr(f) for f in unknown)} {'is not a field' if len(unknown) == 1 else 'are not fields'} "
                f"of the .item the model's vectors were made from ({', '.join(run_fields)})"
                f"{'; did you mean ' + ', '.join(hints) if hints else ''}. Rename or drop "
                f"{'it' if len(unknown) == 1 else 'them'}: new items are prompted from those fields only.")

    def embed(self, rows, header=None, where="the new items"):
        """`NewItemVectors` of rows given as {raw id: {field: text}} (the `.item` fields, without their types)."""
        settings = self.settings
        if not rows:
            raise NewItemsError(f"{where}: no items given")
        rows = {str(item): {str(k): "" if v is None else str(v) for k, v in fields.items()}
                for item, fields in rows.items()}
        run_fields = list(self.meta.get("item_fields") or [])
        given = list(dict.fromkeys([f for fields in rows.values() for f in fields] + list(header or [])))
        if header is None:  # rows without a file: the fields of the dataset's .item, as the run read them
            header = list(dict.fromkeys(run_fields + given))
        self._check_fields(given, run_fields, where)
        # the run's prompt: its field map, recognised from the dataset's .item header as the run did
        table = ItemTable(ids=list(rows), fields=rows, header=run_fields or header, path=Path(where))
        try:
            field_map = resolve_field_map(settings, table)
        except (SettingsError, ValueError) as err:  # the run's settings are fixed: say which fields to give
            raise NewItemsError(
                f"{where}: the fields {', '.join(repr(f) for f in given)} do not make the prompt the archetype run "
                f"made ({err}). New items take the prompt settings of the .itememb the model was trained on, which "
                f"cannot be changed here: give each item the fields of the dataset's .item file those vectors were "
                f"made from (e.g. its title field)") from None
        clauses = {item: prompt_clauses(rows[item], field_map, settings) for item in rows}
        empty = [item for item in rows if not clauses[item]]
        if empty:
            raise NewItemsError(f"{len(empty)} new items of {where} have no text in the prompt fields "
                                f"{sorted(set(field_map.values()))} (e.g. {empty[:5]}): their vector would carry "
                                f"nothing about them. Fill at least one of those fields.")
        prompts = {item: join_prompt(clauses[item], settings) for item in rows}
        model, tokenizer, device, generator = self._loaded()
        ids = list(rows)
        prompt_ids = {item: prompt_token_ids(tokenizer, prompts[item]) for item in ids}
        order = sorted(ids, key=lambda item: len(prompt_ids[item]))  # as the archetype run batches them
        pooled, texts = {}, {}
        step = int(settings["batch_size"])
        for begin in range(0, len(order), step):
            batch = order[begin: begin + step]
            if archetype_views(settings) == "prefill":  # as the run: the prompt alone
                rows_ = prefill_views(model, [prompt_ids[i] for i in batch], tokenizer.pad_token_id, device)
                for item, row in zip(batch, rows_):
                    pooled[item], texts[item] = row, ""
                continue
            pool = states_while_generating(settings, generator)  # as the archetype run
            records, fresh = archetype_records(generator, tokenizer, model, batch, prompts, prompt_ids, pool=pool)
            if len(fresh) < len(batch):
                states = pooled_views(model, [prompt_ids[i] for i in batch], [r["archetype_ids"] for r in records],
                                      tokenizer.pad_token_id, device)
                fresh = {item: fresh.get(item, row) for item, row in zip(batch, states)}
            for item, record in zip(batch, records):
                pooled[item], texts[item] = fresh[item], record["archetype"]
        raw = np.stack([pooled[item] for item in ids]).astype(np.float64)
        vectors = np.concatenate([(raw[:, v] - self.basis[view][0]) @ self.basis[view][1]
                                  for v, view in enumerate(VIEWS)], axis=1)
        logger.info(f"{len(ids)} new items embedded with {settings['llm_model']} and the PCA basis of {self.itememb.name}")
        return NewItemVectors(tuple(ids), vectors.astype(np.float32), tuple(texts[i] for i in ids),
                              ItemSource.of(self.meta))
