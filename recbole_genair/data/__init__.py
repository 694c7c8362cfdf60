"""Data helpers: dataset files, `.itememb` checks, training-split statistics, dataset creation."""
from recbole.data import create_dataset as recbole_create_dataset

from recbole_genair.data.cold_items import hold_out_cold_items
from recbole_genair.data.files import check_dataset_files
from recbole_genair.data.itememb import check_itememb_alignment, check_itememb_file, drop_itememb_settings


def create_dataset(config, llm_item_vectors=None):
    """RecBole's `create_dataset`, with the dataset's files and its `.itememb` checked before and after loading.

    `llm_item_vectors` (a checkpoint's table, `n_items x d` in internal id order): build the dataset
    without reading `.itememb` and hand this table to the model instead. `cold_items` holds items out of
    training and validation (`data.cold_items`).
    """
    check_dataset_files(config)
    needs_vectors = getattr(config.model_class, "uses_llm_item_embedding", False)
    if needs_vectors and llm_item_vectors is not None:
        drop_itememb_settings(config.final_config_dict)
        dataset = recbole_create_dataset(config)
        if len(llm_item_vectors) != dataset.item_num:
            raise ValueError(f"the stored item vectors have {len(llm_item_vectors)} rows, but {config['dataset']} "
                             f"in {config['data_path']} now has {dataset.item_num} item ids: the dataset changed "
                             f"since the checkpoint was written.")
        dataset.stored_llm_item_table = llm_item_vectors
        hold_out_cold_items(dataset, config)
        return dataset
    file_ids = check_itememb_file(config) if needs_vectors else None
    dataset = recbole_create_dataset(config)
    if needs_vectors:
        check_itememb_alignment(dataset, config, file_ids)
        dataset.itememb_file_ids = file_ids  # raw ids in file order, for models that read files aligned with it
    hold_out_cold_items(dataset, config)
    return dataset
