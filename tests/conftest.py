import shutil
import sys
from pathlib import Path

import pytest

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


@pytest.fixture(autouse=True)
def isolated_run(tmp_path, monkeypatch):
    """RecBole writes ./log and ./log_tensorboard: keep them in tmp; no foreign argv."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["pytest"])
    yield
