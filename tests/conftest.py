import math
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

# Tiny models: thread start-up costs more than it saves.
torch.set_num_threads(1)
from recbole.data import data_preparation

from recbole_genair.config import Config
from recbole_genair.data import create_dataset
from recbole_genair.quick_start import run_recbole_genair

TEST_DATA = Path(__file__).resolve().parent / "test_data"
DATASET = "genair-test"


def tiny_config(tmp_path, **overrides):
    """Settings for one fast epoch on the tiny dataset, everything written under tmp_path."""
    config = {
        "data_path": str(TEST_DATA),
        "dataset": DATASET,
        "checkpoint_dir": str(tmp_path / "saved"),
        "epochs": 1,
        "train_batch_size": 64,
        "eval_batch_size": 256,
        "hidden_size": 16,
        "inner_size": 32,
        "embedding_size": 16,
        "n_layers": 1,
        "MAX_ITEM_LIST_LENGTH": 10,
        "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"]},
        "normalize_all": False,
        "metrics": ["Recall", "NDCG"],
        "topk": [5, 10],
        "valid_metric": "NDCG@10",
        "show_progress": False,
        "state": "ERROR",
        "seed": 2020,
    }
    config.update(overrides)
    return config


def copy_dataset(tmp_path, name=DATASET):
    """A writable copy of the tiny dataset under tmp_path/data/<name>; returns its folder."""
    target = tmp_path / "data" / name
    shutil.copytree(TEST_DATA / DATASET, target)
    if name != DATASET:
        for file in list(target.iterdir()):
            file.rename(target / file.name.replace(DATASET, name))
    return target


def assert_trains_and_evaluates(tmp_path, model, **overrides):
    """One epoch of `model` on the tiny dataset; validation and test NDCG@10 are valid numbers."""
    result = run_recbole_genair(model=model, config_dict=tiny_config(tmp_path, **overrides), saved=False)
    for split in ("best_valid_result", "test_result"):
        ndcg = result[split]["ndcg@10"]
        assert 0.0 <= ndcg <= 1.0 and not math.isnan(ndcg)
    return result


def built(tmp_path, model="SASRecGenAIR", **overrides):
    """Config, dataset and training split of `model` on the tiny dataset."""
    config = Config(model, config_dict=tiny_config(tmp_path, **overrides))
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    return config, dataset, train_data


def raw_training_sequences():
    """Each user's items in time order minus the last two (validation and test), from the raw file."""
    inter = pd.read_csv(TEST_DATA / "genair-test" / "genair-test.inter", sep="\t")
    inter.columns = [c.split(":")[0] for c in inter.columns]
    inter = inter.sort_values(["user_id", "timestamp"], kind="stable")
    return {u: list(g["item_id"].astype(str))[:-2] for u, g in inter.groupby("user_id")}


@pytest.fixture(autouse=True)
def isolated_run(tmp_path, monkeypatch):
    """RecBole writes ./log and ./log_tensorboard: keep them in tmp; no foreign argv."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["pytest"])
    yield
