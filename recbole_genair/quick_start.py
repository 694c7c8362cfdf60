"""One run function for every model, ours and RecBole's (no `recbole.quick_start`, no ray).

`load_data_and_model` rebuilds a trained model from its checkpoint; the command line that calls
these is `recbole_genair.commands`.
"""
import copy
import logging
import os
import sys
from logging import getLogger

import torch
from recbole.data import data_preparation
from recbole.model.loss import BPRLoss
from recbole.model.sequential_recommender import BERT4Rec
from recbole.utils import get_environment, init_logger, init_seed, set_color

from recbole_genair.checkpoint import CheckpointError, SavedConfig, load_weights, read_checkpoint, stored_llm_rows
from recbole_genair.config import Config
from recbole_genair.data import create_dataset
from recbole_genair.data.itememb import itememb_path
from recbole_genair.data.train_modes import all_position_loader
from recbole_genair.evaluation.reference import backbone_of, run_settings
from recbole_genair.interop import recbole_config
from recbole_genair.model.all_positions import train_objective
from recbole_genair.model.losses import BCEPairLoss
from recbole_genair.runtime import apply_speed_fixes, use_fast_dropout
from recbole_genair.threads import apply_threads
from recbole_genair.utils import get_model, get_trainer


def prepare_data(config, dataset):
    """RecBole's training, validation and test loaders of `dataset`.

    With `train_mode: all_positions` the training loader gives each training sequence once per epoch
    (`recbole_genair.data.train_modes`); the split and the validation and test loaders are RecBole's.
    """
    objective = train_objective(config.model_class, config["train_mode"])
    train_data, valid_data, test_data = data_preparation(config, dataset)
    if objective is not None:
        train_data = all_position_loader(config, train_data, objective)
    return train_data, valid_data, test_data


def build_model(config, train_data):
    """Instantiate `config['model']` on the training split, with the CPU speed fixes applied."""
    apply_speed_fixes()
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    if config["pairwise_loss"] == "BCE":
        use_bce_pair_loss(model)
    if config["fast_dropout"]:
        use_fast_dropout(model)
    return model


def use_bce_pair_loss(model):
    """`loss_type: BCE`: the model's pairwise `loss_fct(pos_score, neg_score)` becomes `BCEPairLoss`."""
    if isinstance(model, BERT4Rec) or not isinstance(getattr(model, "loss_fct", None), BPRLoss):
        raise ValueError(f"loss_type: BCE replaces the pairwise loss function of SASRec, GRU4Rec and the models built "
                         f"on them; {type(model).__name__} computes its pairwise loss otherwise (BERT4Rec writes BPR "
                         f"inline). Use loss_type: BPR or CE for it.")
    model.loss_fct = BCEPairLoss()


def test_loader_for_mode(config, mode):
    """The test split of `config`'s dataset under another evaluation protocol (`full`, `uni100`, ...).

    The dataset is loaded again (RecBole builds a dataset only once) and split the same way (the split
    is deterministic); only the negatives of the test users change.
    """
    other = copy.deepcopy(config)
    other["eval_args"]["mode"] = {**other["eval_args"]["mode"], "test": mode}
    other._set_eval_neg_sample_args("test")
    return data_preparation(other, create_dataset(other))[2]


def run_recbole_genair(
    model=None, dataset=None, config_file_list=None, config_dict=None, cmd_args=None, saved=True, verbose=True,
    inspect=None, extra_test_modes=(),
):
    """Train `model` on `dataset` and evaluate it on the validation and test splits.

    Works for recbole_genair's models and for RecBole's own, so every comparison uses one code path.
    Returns RecBole's result dict (best_valid_score, valid_score_bigger, best_valid_result, test_result)
    plus the evaluation mode; `inspect(config, model, train_data, test_data)`, if given, runs on the
    evaluated model and its return value is kept under "analysis". `extra_test_modes` (e.g. `["uni100"]`)
    evaluates the same trained model on the test split under other protocols too ("extra_test_results");
    the negatives are drawn from the run's seed, so every model compared ranks against the same ones.
    """
    apply_speed_fixes()
    config = Config(model, dataset, config_file_list, config_dict, cmd_args=cmd_args)
    threads = apply_threads(config["threads"])  # before the data and the model: OpenMP's pool is sized once
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = getLogger()
    if not verbose:
        logger.setLevel(logging.WARNING)
    logger.info(sys.argv)
    logger.info(config)
    logger.info(set_color(config.describe_training(), "green") + f"; {threads} thread{'' if threads == 1 else 's'}")

    train_objective(config.model_class, config["train_mode"])  # refuse an unsupported mode before loading data
    dataset = create_dataset(config)
    logger.info(dataset)
    train_data, valid_data, test_data = prepare_data(config, dataset)

    model = build_model(config, train_data)
    logger.info(model)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)

    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=config["show_progress"]
    )
    test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])
    extra_test_results = {}
    for mode in extra_test_modes or ():
        loader = test_loader_for_mode(config, mode)
        init_seed(config["seed"], config["reproducibility"])
        extra_test_results[mode] = trainer.evaluate(loader, load_best_model=False, show_progress=config["show_progress"])
        logger.info(set_color(f"test result ({mode})", "yellow") + f": {extra_test_results[mode]}")

    environment_tb = get_environment(config)
    logger.info("The running environment of this training is as follows:\n" + environment_tb.draw())
    logger.info(set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(set_color("test result", "yellow") + f": {test_result}")
    result = {
        "model": config["model"],
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
        "saved_model_file": trainer.saved_model_file if saved else None,
        "eval_mode": config["eval_args"]["mode"]["test"],
        "extra_test_results": extra_test_results,
        "analysis": inspect(config, model, train_data, test_data) if inspect else None,
        "training": trainer.training_summary() if hasattr(trainer, "training_summary") else None,
        "settings": run_settings(config), "seed": config["seed"], "backbone": backbone_of(config.model_class),
        "threads": threads,
    }
    if not config["single_spec"]:
        torch.distributed.destroy_process_group()
    return result


def objective_function(config_dict=None, config_file_list=None, saved=True):
    """RecBole's `HyperTuning` objective, through our run function (RecBole's imports ray)."""
    result = run_recbole_genair(config_dict=config_dict, config_file_list=config_file_list, saved=saved, verbose=False)
    return result


def check_same_items(checkpoint, dataset, model_file):
    """Refuse a dataset whose item ids (in row order) are not those the checkpoint was trained on."""
    stored = checkpoint.get("item_ids")
    if stored is None:  # written before checkpoints held their ids: the weights' shapes are checked on load
        return
    current = [str(token) for token in dataset.field2id_token[dataset.iid_field]]
    stored = list(stored)[: len(stored) - len(checkpoint.get("added_item_ids") or [])]  # items added after training
    if stored == current:
        return
    moved = [row for row in range(1, min(len(stored), len(current))) if stored[row] != current[row]]
    example = f", e.g. row {moved[0]}: {stored[moved[0]]!r} at training, {current[moved[0]]!r} now" if moved else ""
    raise CheckpointError(
        f"{model_file} was trained on {len(stored) - 1} items of dataset {dataset.dataset_name!r}, but "
        f"{dataset.config['data_path']} now gives {len(current) - 1} items, {len(moved)} of them in other rows{example}: "
        f"the dataset's files changed since training, or data_path names another dataset. Restore the files the "
        f"model was trained on, or train again on these."
    )


def load_data_and_model(model_file, data_path=None, trust=False):
    """Rebuild config, data and model from a checkpoint written by our run function (RecBole's six values).

    Reads the dataset's interaction files (for the evaluation data); LLM-enhanced models read their
    `.itememb` file if it is there, else the item vectors stored in the checkpoint. `data_path`: where the
    dataset's files are now, if not where they were at training (the dataset folder or the folder holding
    it). A file that is not such a checkpoint, a dataset whose items are not those the model was trained on,
    or an older checkpoint that pickles Python objects (unless `trust`) raises `CheckpointError`.
    For the model alone, without any dataset file, use `recbole_genair.checkpoint.load_model`.
    """
    apply_speed_fixes()
    checkpoint = read_checkpoint(model_file, trust=trust)
    config = checkpoint["config"]
    config = recbole_config(config) if isinstance(config, SavedConfig) else config
    # a model trained on several processes is read back in one
    config.final_config_dict.update(single_spec=True, local_rank=0)
    if data_path is not None:
        inside = os.path.join(data_path, config["dataset"])
        config.final_config_dict["data_path"] = inside if os.path.isdir(inside) else str(data_path)
    config.compatibility_settings()  # numpy aliases RecBole sets when a Config is built, not when unpickled
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    stored = stored_llm_rows(checkpoint)[0]
    if stored is not None and os.path.isfile(itememb_path(config)):
        stored = None
    elif stored is not None:
        getLogger().warning(f"{itememb_path(config)} is missing: using the item vectors stored in {model_file}")
    dataset = create_dataset(config, llm_item_vectors=stored)
    check_same_items(checkpoint, dataset, model_file)
    train_data, valid_data, test_data = prepare_data(config, dataset)
    model = build_model(config, train_data)
    load_weights(model, checkpoint, model_file)
    return config, model, dataset, train_data, valid_data, test_data
