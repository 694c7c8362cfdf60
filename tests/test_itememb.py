"""The `.itememb` contract: rows land on the right items, and every broken file is refused clearly."""
import numpy as np
import pytest
import torch

from conftest import copy_dataset, tiny_config
from recbole.data import data_preparation
from recbole_genair.config import Config
from recbole_genair.data import create_dataset
from recbole_genair.data.itememb import ItemEmbeddingError
from recbole_genair.quick_start import build_model, run_recbole_genair


def read_itememb(path):
    with open(path, encoding="utf-8") as f:
        header = f.readline()
        rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    return header, rows


def write_itememb(path, header, rows):
    with open(path, "w", encoding="utf-8") as f:
        f.write(header)
        for token, vector in rows:
            f.write(f"{token}\t{vector}\n")


def broken_dataset(tmp_path, edit):
    """Copy the tiny dataset, let `edit(header, rows)` change its .itememb, return a config dict."""
    folder = copy_dataset(tmp_path, "broken")
    path = folder / "broken.itememb"
    header, rows = read_itememb(path)
    header, rows = edit(header, rows)
    write_itememb(path, header, rows)
    return tiny_config(tmp_path, data_path=str(tmp_path / "data"), dataset="broken"), path


def build(config_dict):
    config = Config("SASRecGenAIR", config_dict=config_dict)
    return config, create_dataset(config)


def test_table_rows_match_file_vectors_by_raw_id(tmp_path):
    config, dataset = build(tiny_config(tmp_path))
    train_data, _, _ = data_preparation(config, dataset)
    model = build_model(config, train_data)
    table = model.item_embedding.llm_table
    _, rows = read_itememb(f"{config['data_path']}/genair-test.itememb")
    assert rows[0][0] != "1"  # the file is shuffled, not in id order
    for token, vector in rows[:: 7]:
        internal = dataset.token2id(dataset.iid_field, token)
        expected = torch.tensor(np.array(vector.split(), dtype=np.float32))
        assert torch.allclose(table[internal], expected, atol=1e-6)
    assert torch.count_nonzero(table[0]) == 0
    assert table.shape[0] == dataset.item_num


def test_missing_file_says_how_to_make_one(tmp_path):
    folder = copy_dataset(tmp_path, "novec")
    (folder / "novec.itememb").unlink()
    config_dict = tiny_config(tmp_path, data_path=str(tmp_path / "data"), dataset="novec")
    with pytest.raises(FileNotFoundError, match=r"novec\.itememb does not exist.*recbole_genair\.archetype"):
        run_recbole_genair("SASRecGenAIR", config_dict=config_dict, saved=False)


def test_missing_items_are_named(tmp_path):
    dropped = {}

    def edit(header, rows):
        dropped.update(rows[3:6])
        return header, rows[:3] + rows[6:]

    config_dict, path = broken_dataset(tmp_path, edit)
    with pytest.raises(ItemEmbeddingError) as err:
        build(config_dict)
    message = str(err.value)
    assert str(path) in message and "3 items of broken have no vector" in message
    assert all(repr(token) in message for token in dropped)


def test_nan_and_inf_are_named(tmp_path):
    def edit(header, rows):
        rows[2][1] = rows[2][1].replace(rows[2][1].split()[0], "nan", 1)
        rows[4][1] = rows[4][1] + " inf"
        rows[4][1] = " ".join(rows[4][1].split()[1:])
        return header, rows

    config_dict, path = broken_dataset(tmp_path, edit)
    _, rows = read_itememb(tmp_path / "data" / "broken" / "broken.itememb")
    with pytest.raises(ItemEmbeddingError, match=r"2 rows with NaN or inf: '%s', '%s'" % (rows[2][0], rows[4][0])):
        build(config_dict)


def test_rows_of_different_lengths_are_named(tmp_path):
    def edit(header, rows):
        rows[5][1] = " ".join(rows[5][1].split()[:-2])
        return header, rows

    config_dict, path = broken_dataset(tmp_path, edit)
    _, rows = read_itememb(path)
    with pytest.raises(ItemEmbeddingError, match=r"vectors should have 24 values[\s\S]*1 rows with wrong length: '%s' \(22 values\)" % rows[5][0]):
        build(config_dict)


def test_ids_absent_from_interactions_are_refused(tmp_path):
    def edit(header, rows):
        return header, rows + [("9001", rows[0][1]), ("9002", rows[1][1])]

    config_dict, path = broken_dataset(tmp_path, edit)
    with pytest.raises(ItemEmbeddingError, match=r"2 item ids do not occur in the interactions of broken.*'9001', '9002'"):
        build(config_dict)


def test_wrong_header_is_refused(tmp_path):
    def edit(header, rows):
        return "item_id:token\titem_emb:float_seq\n", rows

    config_dict, path = broken_dataset(tmp_path, edit)
    with pytest.raises(ItemEmbeddingError, match=r"broken\.itememb: header is 'item_id:token\\titem_emb:float_seq', expected 'iid:token\\titem_emb:float_seq'"):
        build(config_dict)


def test_duplicate_ids_and_non_numbers_are_refused(tmp_path):
    def edit(header, rows):
        rows[1][1] = rows[1][1].replace(rows[1][1].split()[0], "abc", 1)
        return header, rows + [tuple(rows[0])]

    config_dict, path = broken_dataset(tmp_path, edit)
    _, rows = read_itememb(path)
    with pytest.raises(ItemEmbeddingError, match=r"1 rows with duplicate id: '%s'[\s\S]*1 rows with not a number: '%s'" % (rows[0][0], rows[1][0])):
        build(config_dict)
