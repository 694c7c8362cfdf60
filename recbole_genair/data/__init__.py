"""Data helpers: `.itememb` checks, training-split statistics, dataset creation."""
from recbole.data import create_dataset as recbole_create_dataset

from recbole_genair.data.itememb import check_itememb_alignment, check_itememb_file


def create_dataset(config):
    """RecBole's `create_dataset`, with the `.itememb` checked before and after loading."""
    needs_vectors = getattr(config.model_class, "uses_llm_item_embedding", False)
    file_ids = check_itememb_file(config) if needs_vectors else None
    dataset = recbole_create_dataset(config)
    if needs_vectors:
        check_itememb_alignment(dataset, config, file_ids)
    return dataset
