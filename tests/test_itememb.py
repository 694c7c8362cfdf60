"""The `.itememb` contract: rows land on the right items, and every broken file is refused clearly."""
import hashlib
import json

import numpy as np
import pytest
import torch

from conftest import copy_dataset, tiny_config
from recbole_genair.config import Config
from recbole_genair.data import create_dataset
from recbole_genair.data.itememb import ItemEmbeddingError
from recbole_genair.quick_start import build_model, prepare_data, run_recbole_genair


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
    train_data, _, _ = prepare_data(config, dataset)
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


def write_view_widths(itememb, prefill, decoding):
    """The preprocessor's `.itememb.json` for `itememb` with these view widths and the file's SHA-256."""
    meta = {"views": {"prefill": prefill, "decoding": decoding}, "order": ["prefill", "decoding"],
            "itememb_sha256": hashlib.sha256(itememb.read_bytes()).hexdigest()}
    itememb.with_name(itememb.name + ".json").write_text(json.dumps(meta))


def uneven_dataset(tmp_path, prefill=10, decoding=14, **overrides):
    folder = copy_dataset(tmp_path, "uneven")
    write_view_widths(folder / "uneven.itememb", prefill, decoding)
    config_dict = tiny_config(tmp_path, data_path=str(tmp_path / "data"), dataset="uneven", **overrides)
    return config_dict, folder / "uneven.itememb"


def model_table(config_dict):
    config, dataset = build(config_dict)
    train_data, _, _ = prepare_data(config, dataset)
    return dataset, build_model(config, train_data).item_embedding.llm_table


@pytest.mark.parametrize("views,columns", [("prefill", slice(0, 10)), ("decoding", slice(10, 24))])
def test_views_of_uneven_widths_are_exact_column_slices(tmp_path, views, columns):
    """Widths 10 / 14: prefill is columns 0-9 of the file, decoding columns 10-23, on every item's row.

    Fails if a view's slice is off by one column or takes its width from the other view.
    """
    config_dict, path = uneven_dataset(tmp_path, llm_views=views)
    dataset, table = model_table(config_dict)
    _, rows = read_itememb(path)
    expected = np.zeros((dataset.item_num, columns.stop - columns.start), dtype=np.float32)
    for token, vector in rows:
        expected[dataset.token2id(dataset.iid_field, token)] = np.array(vector.split(), dtype=np.float64)[columns]
    np.testing.assert_array_equal(table.numpy(), expected)


@pytest.mark.parametrize("source", ["json", "config"])
def test_view_widths_that_do_not_add_up_are_refused(tmp_path, source):
    """Fails if select_views slices widths that do not add up to the file's 24 columns."""
    if source == "json":
        config_dict, _ = uneven_dataset(tmp_path, 10, 13, llm_views="decoding")
    else:
        config_dict, _ = uneven_dataset(tmp_path, llm_views="prefill", llm_view_widths=[12, 13])
    widths = r"\[10, 13\]" if source == "json" else r"\[12, 13\]"
    message = rf"view widths {widths} do not add up to the 24 columns of \S+uneven\.itememb"
    with pytest.raises(ItemEmbeddingError, match=message):
        model_table(config_dict)


def test_an_all_zero_vector_is_refused(tmp_path):
    """Fails if an item whose vector is all zeros (it would train on zeros) is accepted."""
    def edit(header, rows):
        rows[7][1] = " ".join(["0"] * 24)
        return header, rows

    config_dict, path = broken_dataset(tmp_path, edit)
    _, rows = read_itememb(path)
    message = r"1 items have no vector \(they would train on zeros\), e\.g\. raw ids '%s'" % rows[7][0]
    with pytest.raises(ItemEmbeddingError, match=message):
        model_table(config_dict)


def test_a_header_without_rows_is_refused(tmp_path):
    """Fails if check_itememb_file accepts a file with a header and no item rows."""
    config_dict, path = broken_dataset(tmp_path, lambda header, rows: (header, []))
    with pytest.raises(ItemEmbeddingError, match=r"broken\.itememb has a header but no item rows"):
        build(config_dict)


def test_a_row_without_id_is_named_by_its_line(tmp_path):
    """The fourth item row (line 5 of the file) has an empty id.

    Fails if check_itememb_file accepts a row with an empty id.
    """
    def edit(header, rows):
        rows[3][0] = ""
        return header, rows

    config_dict, path = broken_dataset(tmp_path, edit)
    with pytest.raises(ItemEmbeddingError, match=r"1 rows with empty id: line 5\b"):
        build(config_dict)


def test_an_itememb_with_windows_line_ends_keeps_its_json(tmp_path):
    """Issue 34: an .itememb converted to CRLF (same vectors) had its .itememb.json refused as another version."""
    from recbole_genair.data.itememb import itememb_meta, load_llm_item_table

    folder = copy_dataset(tmp_path)
    path = folder / "genair-test.itememb"
    config = Config("SASRecGenAIR", config_dict=tiny_config(tmp_path, data_path=str(folder.parent)))
    expected = load_llm_item_table(create_dataset(config), config)
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    assert itememb_meta(path)[1] is None
    np.testing.assert_array_equal(load_llm_item_table(create_dataset(config), config), expected)
    path.write_bytes(path.read_bytes().replace(b"\r\n", b"\n", 3).replace(b"0.", b"1.", 1))  # a changed value
    assert itememb_meta(path)[1] == "another version"
