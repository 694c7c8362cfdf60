"""Reading and checking the LLM item vectors of a dataset (`<dataset>.itememb`).

The file is the contract between the archetype preprocessor and the models: a RecBole atomic file

    iid:token<TAB>item_emb:float_seq        (tab between columns, spaces inside the vector)

loaded through RecBole's `additional_feat_suffix` + `alias_of_item_id` + `preload_weight`. RecBole
itself accepts broken files silently (missing items become zero rows, foreign ids enlarge the item
vocabulary), so every problem is detected here and reported with the file, the count and examples.
"""
import hashlib
import json
import logging
import os

import numpy as np
import torch

logger = logging.getLogger("recbole_genair.itememb")
DEFAULTS = {"itememb_suffix": "itememb", "itememb_id_field": "iid", "itememb_vector_field": "item_emb"}
_EXAMPLES = 5
# RecBole settings that remove items before training (the archetype preprocessor reads them too),
# with the values that remove nothing.
NO_FILTER = {"user_inter_num_interval": "[0,inf)", "item_inter_num_interval": "[0,inf)", "val_interval": None,
             "rm_dup_inter": None}


class ItemEmbeddingError(ValueError):
    """A `.itememb` file that cannot be used as it is."""


def _setting(config, key):
    value = config[key] if key in config else None
    return DEFAULTS[key] if value is None else value


def itememb_path(config):
    return os.path.join(config["data_path"], f"{config['dataset']}.{_setting(config, 'itememb_suffix')}")


def add_itememb_settings(config_dict):
    """Add the RecBole settings that load `.itememb` as a preloaded weight of the item ids."""
    suffix = _setting(config_dict, "itememb_suffix")
    id_field = _setting(config_dict, "itememb_id_field")
    vector_field = _setting(config_dict, "itememb_vector_field")
    suffixes = list(config_dict.get("additional_feat_suffix") or [])
    if suffix not in suffixes:
        suffixes.append(suffix)
    config_dict["additional_feat_suffix"] = suffixes
    if config_dict.get("load_col") is not None:
        config_dict["load_col"] = {**config_dict["load_col"], suffix: [id_field, vector_field]}
    aliases = list(config_dict.get("alias_of_item_id") or [])
    if id_field not in aliases:
        aliases.append(id_field)
    config_dict["alias_of_item_id"] = aliases
    config_dict["preload_weight"] = {**(config_dict.get("preload_weight") or {}), id_field: vector_field}
    # RecBole's min-max normalisation would rescale the LLM vectors before they are preloaded.
    if config_dict.get("normalize_all"):
        config_dict["normalize_all"] = False
    if config_dict.get("normalize_field"):
        config_dict["normalize_field"] = [f for f in config_dict["normalize_field"] if f != vector_field]


def drop_itememb_settings(config_dict):
    """Undo `add_itememb_settings`: build the dataset without reading `.itememb` (vectors come from a checkpoint)."""
    suffix = _setting(config_dict, "itememb_suffix")
    id_field = _setting(config_dict, "itememb_id_field")
    config_dict["additional_feat_suffix"] = [s for s in config_dict.get("additional_feat_suffix") or [] if s != suffix]
    if config_dict.get("load_col") is not None:
        config_dict["load_col"] = {k: v for k, v in config_dict["load_col"].items() if k != suffix}
    config_dict["alias_of_item_id"] = [a for a in config_dict.get("alias_of_item_id") or [] if a != id_field]
    config_dict["preload_weight"] = {k: v for k, v in (config_dict.get("preload_weight") or {}).items() if k != id_field}


class _Shown(str):
    """An example already formatted for a message."""


def _examples(items):
    items = [x if isinstance(x, _Shown) else repr(x) for x in items]
    shown = ", ".join(items[:_EXAMPLES])
    return shown + (", ..." if len(items) > _EXAMPLES else "")


def check_itememb_file(config):
    """Check the raw file before RecBole parses it; return its raw item ids in file order.

    Detects: a missing file, a wrong header, empty or duplicate ids, vectors of different lengths,
    values that are not numbers, NaN and inf.
    """
    path = itememb_path(config)
    id_field = _setting(config, "itememb_id_field")
    vector_field = _setting(config, "itememb_vector_field")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{config['model']} needs LLM item vectors, but {path} does not exist. Produce it with the "
            f"archetype preprocessor: `python -m recbole_genair.archetype --dataset={config['dataset']} "
            f"--data_path={os.path.dirname(path)}` (see docs/archetypes.md), or write it yourself as "
            f"'{id_field}:token<TAB>{vector_field}:float_seq' with one line per item."
        )
    sep = config["field_separator"]
    seq_sep = config["seq_separator"]
    expected = [f"{id_field}:token", f"{vector_field}:float_seq"]
    ids, seen = [], set()
    problems = {k: [] for k in ("empty id", "duplicate id", "not a number", "NaN or inf", "wrong length")}
    dim = None
    with open(path, "r", encoding="utf-8") as f:
        header = f.readline().rstrip("\r\n").split(sep)
        if header != expected:
            raise ItemEmbeddingError(
                f"{path}: header is {sep.join(header)!r}, expected {sep.join(expected)!r} "
                f"(field names come from itememb_id_field / itememb_vector_field)."
            )
        for line_no, line in enumerate(f, start=2):
            line = line.rstrip("\r\n")
            if not line:
                continue
            token, _, vector_text = line.partition(sep)
            label = _Shown(repr(token) if token else f"line {line_no}")
            if not token:
                problems["empty id"].append(label)
                continue
            if token in seen:
                problems["duplicate id"].append(label)
            seen.add(token)
            ids.append(token)
            try:  # empty pieces (a trailing or doubled separator) are dropped, as RecBole's reader does
                vector = np.array([v for v in vector_text.split(seq_sep) if v], dtype=np.float64)
            except ValueError:
                problems["not a number"].append(label)
                continue
            if not np.isfinite(vector).all():
                problems["NaN or inf"].append(label)
            if dim is None:
                dim = vector.size
            elif vector.size != dim:
                problems["wrong length"].append(_Shown(f"{label} ({vector.size} values)"))
    found = {kind: items for kind, items in problems.items() if items}
    if found:
        lines = [f"  {len(items)} rows with {kind}: {_examples(items)}" for kind, items in found.items()]
        raise ItemEmbeddingError(
            f"{path} cannot be used (vectors should have {dim} values each):\n" + "\n".join(lines)
            + "\nFix or regenerate these rows (python -m recbole_genair.archetype resumes and rewrites the file)."
        )
    if not ids:
        raise ItemEmbeddingError(f"{path} has a header but no item rows; regenerate it.")
    return ids


def _interacted_items(dataset):
    """Internal ids of the items in the dataset's interactions (before `build()`: one row per interaction)."""
    items = np.unique(np.asarray(dataset.inter_feat[dataset.iid_field]))
    return set(items[items > 0].tolist())


def check_itememb_alignment(dataset, config, file_ids):
    """Every interacted item has a vector and every vector belongs to an interacted item."""
    path = itememb_path(config)
    token2id = dataset.field2token_id[dataset.iid_field]
    file_internal = {token2id[t] for t in file_ids}
    interacted = _interacted_items(dataset)
    extra = sorted(file_internal - interacted)
    if extra:
        filters = {k: config[k] for k, off in NO_FILTER.items() if k in config and config[k] not in (None, off)}
        if filters:
            raise ItemEmbeddingError(
                f"{path}: {len(extra)} of its items are removed by RecBole's filtering ({filters}), e.g. "
                f"{_examples(dataset.id2token(dataset.iid_field, extra))}. Give the archetype preprocessor the same "
                f"settings (e.g. --{next(iter(filters))}=...) so that it writes vectors for the items that remain."
            )
        raise ItemEmbeddingError(
            f"{path}: {len(extra)} item ids do not occur in the interactions of {config['dataset']} "
            f"(after RecBole's filtering), e.g. {_examples(dataset.id2token(dataset.iid_field, extra))}. "
            f"RecBole would add them to the item vocabulary and to every ranking. Remove these rows, "
            f"or regenerate the file for this dataset and filtering."
        )
    missing = sorted(interacted - file_internal)
    if missing:
        raise ItemEmbeddingError(
            f"{path}: {len(missing)} items of {config['dataset']} have no vector, e.g. raw ids "
            f"{_examples(dataset.id2token(dataset.iid_field, missing))}. Rerun the archetype "
            f"preprocessor (it resumes and adds the missing items) instead of training on zero vectors."
        )


def load_llm_item_table(dataset, config):
    """The frozen LLM item table, `n_items x d` float32 in internal id order, row 0 = padding (zeros).

    A dataset rebuilt from a checkpoint without its `.itememb` carries the checkpoint's table instead
    (`stored_llm_item_table`, set by `create_dataset`).
    """
    stored = getattr(dataset, "stored_llm_item_table", None)
    if stored is not None:
        return torch.as_tensor(stored).float()
    id_field = _setting(config, "itememb_id_field")
    path = itememb_path(config)
    try:
        matrix = dataset.get_preload_weight(id_field)
    except ValueError as err:
        raise ItemEmbeddingError(
            f"{config['model']} found no preloaded LLM vectors ({err}); build the dataset with "
            f"recbole_genair's Config so that {path} is loaded."
        ) from None
    if matrix.shape[0] != dataset.item_num:
        raise ItemEmbeddingError(
            f"{path}: the preloaded table has {matrix.shape[0]} rows for {dataset.item_num} item ids."
        )
    if not np.isfinite(matrix).all():
        raise ItemEmbeddingError(f"{path}: vectors contain NaN or inf; regenerate the file.")
    zero = np.flatnonzero(~matrix[1:].any(axis=1)) + 1
    if zero.size:
        raise ItemEmbeddingError(
            f"{path}: {zero.size} items have no vector (they would train on zeros), e.g. raw ids "
            f"{_examples(dataset.id2token(dataset.iid_field, zero))}. Rerun the archetype preprocessor."
        )
    report_identical_vectors(matrix, dataset, path)
    return select_views(torch.from_numpy(matrix).float(), config)


def report_identical_vectors(matrix, dataset, path):
    """Warn, naming the items, when items share one vector: without an item-ID table they tie in every ranking."""
    _, first, inverse, counts = np.unique(matrix[1:], axis=0, return_index=True, return_inverse=True,
                                          return_counts=True)
    inverse = inverse.reshape(-1)
    shared = np.flatnonzero(counts[inverse] > 1)
    if not shared.size:
        return []
    groups = {}
    for row in shared:
        groups.setdefault(int(inverse[row]), []).append(int(row) + 1)
    shown = [_Shown(" = ".join(repr(t) for t in dataset.id2token(dataset.iid_field, ids)))
             for ids in groups.values()]
    logger.warning(
        f"{path}: {shared.size} items share their vector with another item ({len(groups)} groups, e.g. "
        f"{_examples(shown)}). Models without an item-ID table (GenAIR, TF-LLMER) cannot tell them apart and rank "
        f"them tied. Regenerate the vectors with distinct prompts (the archetype preprocessor's "
        f"distinguish_duplicates) unless these items are really the same."
    )
    return list(groups.values())


def select_views(table, config):
    """Keep the prefill view, the decoding view or both (GenAIR ablation, `llm_views`).

    The archetype preprocessor writes each view's width to `<dataset>.itememb.json`; vectors from
    elsewhere can give them as `llm_view_widths: [prefill, decoding]`.
    """
    views = config["llm_views"]
    if views == "both":
        return table
    if views not in ("prefill", "decoding"):
        raise ItemEmbeddingError(f"llm_views={views!r}: use both, prefill or decoding")
    widths = config["llm_view_widths"]
    meta_path = itememb_path(config) + ".json"
    if widths is None and os.path.isfile(meta_path):
        widths = _view_widths_from_meta(meta_path, itememb_path(config))
    if widths is None:
        raise ItemEmbeddingError(
            f"llm_views={views} needs the width of each view: {meta_path} (written by the archetype "
            f"preprocessor) or llm_view_widths: [prefill, decoding] in YAML."
        )
    if sum(widths) != table.size(1):
        raise ItemEmbeddingError(
            f"view widths {widths} do not add up to the {table.size(1)} columns of {itememb_path(config)}; "
            f"regenerate {meta_path} or fix llm_view_widths."
        )
    return table[:, : widths[0]] if views == "prefill" else table[:, widths[0]:]


def file_sha256(path):
    """SHA-256 of a file's bytes; computed once per version of the file (path, inode, size, mtime) in a process."""
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if key not in _SHA256:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _SHA256[key] = digest.hexdigest()
    return _SHA256[key]


_SHA256 = {}


def lf_text_sha256(path):
    """SHA-256 of a text file's bytes with Windows line ends (CRLF) read as LF: the checksum the archetype
    preprocessor recorded, for a copy whose line ends a tool or a checkout converted."""
    digest, carry = hashlib.sha256(), b""
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            block = carry + block
            carry = b"\r" if block.endswith(b"\r") else b""  # its "\n" may open the next block
            digest.update((block[:-1] if carry else block).replace(b"\r\n", b"\n"))
    digest.update(carry)
    return digest.hexdigest()


def itememb_meta(path):
    """(meta, problem) of the archetype preprocessor's `<path>.json` beside an `.itememb`.

    The json records the SHA-256 of the `.itememb` it was written with; `problem` is None when that is this
    very file, else "missing" (no json; meta None), "no checksum" or "another version".
    """
    meta_path = str(path) + ".json"
    if not os.path.isfile(meta_path):
        return None, "missing"
    with open(meta_path, encoding="utf-8") as f:
        meta = json.load(f)
    recorded = meta.get("itememb_sha256")
    if recorded is None:
        return meta, "no checksum"
    same = recorded == file_sha256(path) or recorded == lf_text_sha256(path)
    return meta, (None if same else "another version")


def _view_widths_from_meta(meta_path, path):
    """[prefill, decoding] from the preprocessor's `.itememb.json`, if it describes this very file.

    A json left from another run (whose widths may still add up to the file's width) would select the
    wrong columns.
    """
    meta, problem = itememb_meta(path)
    fix = ("regenerate both with the archetype preprocessor (--pca_only=True redoes them from its stored "
           "vectors), or give the widths as llm_view_widths: [prefill, decoding]")
    if problem == "no checksum":
        raise ItemEmbeddingError(f"{meta_path} has no checksum of the file it describes, so its view widths may "
                                 f"belong to another {os.path.basename(path)}; {fix}.")
    if problem == "another version":
        raise ItemEmbeddingError(f"{meta_path} describes another version of {path} (its SHA-256 differs): the "
                                 f"view widths would select the wrong columns; {fix}.")
    return [meta["views"]["prefill"], meta["views"]["decoding"]]


def llm_item_source(config):
    """What the run's `.itememb` was made with (its `.itememb.json`, when that describes this very file), else None.

    Items added after training must come from the same LLM, settings and PCA basis; see
    `recbole_genair.archetype.new_items`.
    """
    path = itememb_path(config)
    if not os.path.isfile(path):
        return None
    meta, problem = itememb_meta(path)
    if problem:
        return None
    return {key: meta.get(key) for key in ("llm_model", "signature", "itememb_sha256", "pca_sha256", "views")}
