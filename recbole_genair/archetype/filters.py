"""RecBole's interaction filters, so that `.itememb` holds exactly the items a filtered training run keeps.

The training side refuses vectors of items absent from the (filtered) interactions, so the surviving
items are computed with RecBole's own dataset code rather than a copy of its rules.
"""
import logging
import os
from pathlib import Path

import numpy as np
import torch
from recbole.data import create_dataset

from recbole_genair.archetype.items import ItemFileError, inter_header
from recbole_genair.config import Config

FILTER_KEYS = ("rm_dup_inter", "val_interval", "filter_inter_by_user_or_item", "user_inter_num_interval",
               "item_inter_num_interval")
logger = logging.getLogger("recbole_genair.archetype")


def filtered_item_ids(settings, ids):
    """`ids` (the `.inter` items in first-seen order) less those RecBole's filters drop; all when none is set."""
    chosen = {key: settings[key] for key in FILTER_KEYS if settings.get(key) is not None}
    if not chosen:
        return list(ids)
    data_dir = Path(settings["data_path"])
    inter = data_dir / f"{settings['dataset']}.inter"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    # RecBole's Config sets CUDA_VISIBLE_DEVICES to gpu_id: hand it the devices this process sees, so the LLM keeps them
    gpu_id = visible if visible is not None else ",".join(str(k) for k in range(torch.cuda.device_count()))
    config_dict = {**chosen, "data_path": str(data_dir.parent), "ITEM_ID_FIELD": settings["item_id_field"],
                   "load_col": {"inter": inter_header(inter)}, "gpu_id": gpu_id}
    try:
        config = Config("SASRec", settings["dataset"], config_dict=config_dict)
    finally:
        if visible is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    config["data_path"] = str(data_dir)  # RecBole appends the dataset name; this folder may be named otherwise
    dataset = create_dataset(config)
    items = np.unique(np.asarray(dataset.inter_feat[dataset.iid_field]))
    kept = {str(token) for token in dataset.id2token(dataset.iid_field, items[items > 0])}
    survivors = [item for item in ids if item in kept]
    if not survivors:
        raise ItemFileError(f"RecBole's filters {chosen} keep no item of {inter}; loosen them.")
    logger.info(f"RecBole's filters {chosen} keep {len(survivors)} of the {len(ids)} items of {inter}; "
                f"vectors are written for those.")
    return survivors
