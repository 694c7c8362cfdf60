"""The archetype run's raw pooled vectors (before PCA), for models that decompose the LLM space themselves.

The archetype preprocessor keeps `assembled.f32` in its work folder: `rows x 2 x hidden` float32
([prefill, decoding] mean-pooled last-layer states, GenAIR eq. 6), one row per `.itememb` line in the
same order. AlphaFuse fits its own whitened decomposition on them, since the `.itememb` is already cut to
95% of the variance (its low-variance directions, AlphaFuse's null space, are gone).
"""
import os

import numpy as np

from recbole_genair.data.itememb import ItemEmbeddingError, check_itememb_file, itememb_meta, itememb_path


def archetype_work_dir(config):
    return config["archetype_work_dir"] or os.path.join(config["data_path"], f"{config['dataset']}.archetype-work")


def load_raw_item_vectors(dataset, config, views="both"):
    """`n_items x d` float64 raw vectors in internal id order (row 0 padding, zeros); `views`: both | prefill | decoding."""
    path = itememb_path(config)
    meta_path = path + ".json"
    raw_path = os.path.join(archetype_work_dir(config), "assembled.f32")
    remake = (f"`python -m recbole_genair.archetype --dataset={config['dataset']} --pca_only=True` with the run's "
              f"settings rewrites it from the archetype store; or set alphafuse_source: itememb to decompose the "
              f".itememb vectors instead (their low-variance directions are already cut)")
    meta, problem = itememb_meta(path)
    if problem == "missing":
        raise ItemEmbeddingError(f"{config['model']} reads the raw pooled vectors described by {meta_path}, which does "
                                 f"not exist: {remake}.")
    if problem:
        raise ItemEmbeddingError(f"{meta_path} describes another version of {path}, so the raw vectors cannot be "
                                 f"matched to its rows: {remake}.")
    if "rows" not in meta or "llm_hidden_size" not in meta:
        raise ItemEmbeddingError(f"{meta_path} does not say how many raw vectors of which size the archetype run "
                                 f"kept (rows, llm_hidden_size): {remake}.")
    rows, hidden = int(meta["rows"]), int(meta["llm_hidden_size"])
    expected = rows * 2 * hidden * 4
    if not os.path.isfile(raw_path) or os.path.getsize(raw_path) != expected:
        found = "does not exist" if not os.path.isfile(raw_path) else f"has {os.path.getsize(raw_path)} bytes, not {expected}"
        raise ItemEmbeddingError(f"{config['model']} reads the raw pooled vectors of {os.path.basename(path)} from "
                                 f"{raw_path}, which {found} (set archetype_work_dir if the work folder moved): {remake}.")
    file_ids = getattr(dataset, "itememb_file_ids", None) or check_itememb_file(config)  # read once by create_dataset
    if len(file_ids) != rows:
        raise ItemEmbeddingError(f"{path} has {len(file_ids)} rows, {meta_path} says {rows}: {remake}.")
    raw = np.memmap(raw_path, dtype=np.float32, mode="r", shape=(rows, 2, hidden))
    columns = {"both": slice(0, 2), "prefill": slice(0, 1), "decoding": slice(1, 2)}[views]
    table = np.zeros((dataset.item_num, (columns.stop - columns.start) * hidden))
    tokens = dataset.field2token_id[dataset.iid_field]
    for row, token in enumerate(file_ids):
        internal = tokens.get(token)
        if internal is not None:
            table[internal] = np.asarray(raw[row, columns], dtype=np.float64).reshape(-1)
    missing = np.flatnonzero(~table[1:].any(axis=1)) + 1
    if missing.size:
        raise ItemEmbeddingError(f"{raw_path}: {missing.size} items of {config['dataset']} have no raw vector; rerun "
                                 f"the archetype preprocessor (it resumes and adds them).")
    return table
