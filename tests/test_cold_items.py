"""The cold-item protocol (issue 18, item 3): held-out items are only test targets; their metrics are reported."""
import numpy as np
import pandas as pd
import pytest

from conftest import TEST_DATA, per_user_ndcg, tiny_config
from recbole_genair.config import Config
from recbole_genair.data import create_dataset
from recbole_genair.data.cold_items import ColdItemsError
from recbole_genair.data.popularity import item_popularity
from recbole_genair.quick_start import prepare_data, run_recbole_genair


def split(tmp_path, model="SASRecGenAIR", **overrides):
    config = Config(model, config_dict=tiny_config(tmp_path, **overrides))
    dataset = create_dataset(config)
    train, valid, test = prepare_data(config, dataset)
    return dataset, train, valid, test


def items_of(loader, field):
    inter = loader.dataset.inter_feat
    return set(inter[field].tolist()) | set(inter[field + "_list"].flatten().tolist()) - {0}


def test_held_out_items_are_only_test_targets(tmp_path):
    dataset, train, valid, test = split(tmp_path, cold_items=0.2)
    cold = set(dataset.cold_item_ids.tolist())
    assert len(cold) == round(0.2 * 60)
    field = dataset.iid_field
    assert not cold & items_of(train, field) and not cold & items_of(valid, field)
    test_targets = test.dataset.inter_feat[field].tolist()
    assert cold & set(test_targets)  # they are tested...
    assert not cold & (set(test.dataset.inter_feat[field + "_list"].flatten().tolist()))  # ...never in a history
    assert (item_popularity(train.dataset)[list(cold)] == 0).all()  # training statistics never see them
    # every other test target and every user is still there
    assert len(test_targets) == 50


def test_validation_cold_items_are_only_validation_targets(tmp_path):
    """cold_valid_items: a second held-out set, disjoint from the test's, seen only as validation targets."""
    dataset, train, valid, test = split(tmp_path, cold_items=0.2, cold_valid_items=0.2)
    cold, cold_valid = set(dataset.cold_item_ids.tolist()), set(dataset.cold_valid_item_ids.tolist())
    assert len(cold_valid) == len(cold) == 12 and not cold & cold_valid
    field = dataset.iid_field
    assert not cold_valid & items_of(train, field)  # training never sees them
    assert (item_popularity(train.dataset)[list(cold_valid)] == 0).all()
    valid_targets = set(valid.dataset.inter_feat[field].tolist())
    assert cold_valid & valid_targets  # validated on...
    assert not cold_valid & set(valid.dataset.inter_feat[field + "_list"].flatten().tolist())  # ...never a history there
    assert not cold_valid & set(test.dataset.inter_feat[field].tolist())  # never a test target
    # the test's held-out items are the same as without validation's
    alone, *_ = split(tmp_path, cold_items=0.2)
    assert set(alone.cold_item_ids.tolist()) == cold


def test_positions_from_the_end_follow_time_then_file_order():
    """0 marks the leave-one-out test target, 1 the validation target."""
    from recbole_genair.data.cold_items import _positions_from_end
    users = np.array([1, 1, 1, 2, 2, 2, 2])
    times = np.array([3.0, 1.0, 2.0, 1.0, 2.0, 2.0, 0.5])
    # user 1 by time: idx1, idx2, idx0 -> 2, 1, 0; user 2: idx6, idx3, idx4, idx5 (ties by file order)
    assert _positions_from_end(users, times).tolist() == [0, 2, 1, 2, 1, 0, 3]


def raw_first_seen():
    inter = pd.read_csv(TEST_DATA / "genair-test" / "genair-test.inter", sep="\t")
    inter.columns = [c.split(":")[0] for c in inter.columns]
    return inter.groupby("item_id")["timestamp"].min()


def test_newest_holds_out_the_items_first_seen_last(tmp_path):
    dataset, *_ = split(tmp_path, cold_items=0.1, cold_items_by="newest")
    cold = {str(t) for t in dataset.id2token(dataset.iid_field, dataset.cold_item_ids)}
    first = raw_first_seen()
    first.index = first.index.astype(str)
    assert len(cold) == 6
    assert first[list(cold)].min() >= first.drop(list(cold)).max()


def test_random_draw_follows_its_seed(tmp_path):
    draws = {}
    for key, overrides in {"a": dict(seed=2020), "b": dict(seed=2020), "c": dict(seed=2021),
                           "d": dict(seed=2021, cold_items_seed=2020)}.items():
        dataset, *_ = split(tmp_path, cold_items=0.2, **overrides)
        draws[key] = tuple(dataset.id2token(dataset.iid_field, dataset.cold_item_ids))
    assert draws["a"] == draws["b"] == draws["d"] and draws["a"] != draws["c"]


def test_the_run_reports_cold_metrics_over_the_held_out_targets(tmp_path):
    """Cold NDCG@10 is the mean NDCG@10 of the test users whose target was held out, recomputed from the scores."""
    metrics = ["Hit", "NDCG", "ColdHit", "ColdNDCG"]

    def inspect(config, model, train_data, test_data):
        return per_user_ndcg(model, test_data), train_data.dataset.cold_item_ids

    result = run_recbole_genair("SASRecGenAIR", config_dict=tiny_config(tmp_path, cold_items=0.2, metrics=metrics,
                                                                         epochs=2), saved=False, inspect=inspect)
    users, cold = result["analysis"]
    on_cold = [ndcg for target, ndcg in users if target in set(cold.tolist())]
    assert len(on_cold) >= 5 and len(on_cold) < len(users)
    assert result["test_result"]["coldndcg@10"] == pytest.approx(sum(on_cold) / len(on_cold), abs=1e-4)
    hits = [ndcg > 0 for target, ndcg in users if target in set(cold.tolist())]
    assert result["test_result"]["coldhit@10"] == pytest.approx(sum(hits) / len(hits), abs=1e-4)


@pytest.mark.parametrize("overrides, message", [
    (dict(cold_items=1.5), "between 0 and 1"),
    (dict(cold_items="many"), "between 0 and 1"),
    (dict(cold_items=0.1, cold_items_by="oldest"), "'newest' .* or 'random'"),
    (dict(cold_items=0.1, eval_args={"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "mode": "full"}),
     "leave-one-out split by time"),
    (dict(cold_items=0.001), "holds out none"),
    (dict(cold_valid_items=0.1), "set cold_items too"),
    (dict(cold_items=0.5, cold_valid_items=0.5), "below 1"),
])
def test_bad_cold_item_settings_are_refused_by_name(tmp_path, overrides, message):
    config = Config("SASRecGenAIR", config_dict=tiny_config(tmp_path, **overrides))
    with pytest.raises(ColdItemsError, match=message):
        create_dataset(config)
