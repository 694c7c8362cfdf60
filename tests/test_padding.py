"""Trailing padding cut from the batches of causal models: the same losses and scores, less work."""
import pytest
import torch
from recbole_genair.config import Config
from recbole_genair.data import create_dataset

from conftest import tiny_config
from recbole_genair.data.padding import trim_trailing_padding
from recbole_genair.model.all_positions import all_position_losses
from recbole_genair.quick_start import build_model, prepare_data
from recbole_genair.trainer import LLMRecTrainer

WIDE = 30  # the tiny dataset's histories have at most 10 items
CAUSAL = ["SASRec", "GRU4Rec", "SASRecGenAIR", "GRU4RecGenAIR", "SASRecTFLLMER", "SASRecFAERec", "SASRecLLMInit",
          "SASRecLLMESR"]


def loaders(tmp_path, model, **overrides):
    config = Config(model, config_dict=tiny_config(tmp_path, **{"MAX_ITEM_LIST_LENGTH": WIDE, **overrides}))
    train_data, valid_data, test_data = prepare_data(config, create_dataset(config))
    return config, train_data, valid_data, test_data


@pytest.mark.parametrize("loss_type", ["CE", "BPR"])
@pytest.mark.parametrize("model_name", CAUSAL)
def test_a_trimmed_batch_gives_the_same_losses_and_scores(tmp_path, model_name, loss_type):
    overrides = dict(train_mode="all_positions", loss_type=loss_type, train_neg_sample_args=None)
    if loss_type == "BPR":
        overrides["train_neg_sample_args"] = {"distribution": "uniform", "sample_num": 1, "alpha": 1.0,
                                              "dynamic": False, "candidate_num": 0}
    config, train_data, _, test_data = loaders(tmp_path, model_name, **overrides)
    model = build_model(config, train_data).eval()
    batch = next(iter(train_data))
    trimmed = trim_trailing_padding(batch, model.ITEM_SEQ)
    assert batch[model.ITEM_SEQ].size(1) == WIDE and trimmed[model.ITEM_SEQ].size(1) <= 10
    assert trimmed[model.POS_ITEM_ID].shape == trimmed[model.ITEM_SEQ].shape  # per-position targets cut alike
    if loss_type == "BPR":
        assert trimmed[model.NEG_ITEM_ID].shape == trimmed[model.ITEM_SEQ].shape
    with torch.no_grad():
        full = all_position_losses(model, batch)
        cut = all_position_losses(model, trimmed)
        for a, b in zip(full if isinstance(full, tuple) else (full,), cut if isinstance(cut, tuple) else (cut,)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        interaction = next(iter(test_data))[0]
        torch.testing.assert_close(model.full_sort_predict(interaction),
                                   model.full_sort_predict(trim_trailing_padding(interaction, model.ITEM_SEQ)),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("train_mode", ["prefix", "all_positions"])
@pytest.mark.parametrize("model_name", ["BERT4Rec", "BERT4RecGenAIR", "BERT4RecFAERec"])
def test_bert4rec_batches_keep_one_spare_column_and_give_the_same_losses_and_scores(tmp_path, model_name, train_mode):
    """BERT4Rec masks padding keys, and at prediction writes its mask token after the history (one spare column)."""
    config, train_data, _, test_data = loaders(tmp_path, model_name, train_mode=train_mode)
    model = build_model(config, train_data).eval()
    batch = next(iter(train_data))
    trimmed = trim_trailing_padding(batch, model.ITEM_SEQ, spare=1)
    assert trimmed[model.MASK_ITEM_SEQ].size(1) == trimmed[model.ITEM_SEQ].size(1) <= 11
    with torch.no_grad():
        full, cut = model.calculate_loss(batch), model.calculate_loss(trimmed)
        for a, b in zip(full if isinstance(full, tuple) else (full,), cut if isinstance(cut, tuple) else (cut,)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        interaction = next(iter(test_data))[0]
        torch.testing.assert_close(model.full_sort_predict(interaction),
                                   model.full_sort_predict(trim_trailing_padding(interaction, model.ITEM_SEQ, 1)),
                                   rtol=1e-5, atol=1e-5)


def test_a_batch_without_padding_to_cut_is_returned_as_it_is(tmp_path):
    config = Config("SASRec", config_dict=tiny_config(tmp_path, MAX_ITEM_LIST_LENGTH=3))
    train_data = prepare_data(config, create_dataset(config))[0]
    batch = next(iter(train_data))
    assert trim_trailing_padding(batch, "item_id_list") is batch


@pytest.mark.parametrize("model_name, trims", [("SASRec", True), ("GRU4RecGenAIR", True), ("BERT4Rec", True),
                                               ("BERT4RecGenAIR", True), ("NARMGenAIR", False), ("Caser", False)])
def test_only_models_that_read_histories_causally_are_cut(tmp_path, model_name, trims):
    config, train_data, _, _ = loaders(tmp_path, model_name, MAX_ITEM_LIST_LENGTH=5 if model_name == "Caser" else WIDE)
    assert LLMRecTrainer(config, build_model(config, train_data)).trims_padding is trims


def test_evaluation_is_the_same_with_and_without_cutting(tmp_path):
    results = []
    for trim in (True, False):
        config, train_data, valid_data, _ = loaders(tmp_path, "SASRecGenAIR", trim_padding=trim)
        trainer = LLMRecTrainer(config, build_model(config, train_data))
        assert trainer.trims_padding is trim
        trainer.collect_training_statistics(train_data)
        results.append(trainer.evaluate(valid_data, load_best_model=False))
    assert results[0] == pytest.approx(results[1], abs=1e-4)


@pytest.mark.parametrize("model_name", ["SASRec", "BERT4Rec", "GRU4RecGenAIR", "SASRecLLMESR", "Caser", "NARMGenAIR"])
def test_sampled_evaluation_from_one_full_ranking_per_user_equals_recboles(tmp_path, model_name):
    """uni100: the candidates' scores from `full_sort_predict` give RecBole's metrics from `predict` per row."""
    sampled = {"valid": "uni100", "test": "uni100"}
    eval_args = {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": sampled}
    results = []
    for fast in (True, False):
        config, train_data, valid_data, _ = loaders(
            tmp_path, model_name, eval_args=eval_args, sampled_eval_from_full_ranking=fast,
            **({"MAX_ITEM_LIST_LENGTH": 5} if model_name == "Caser" else {}))
        trainer = LLMRecTrainer(config, build_model(config, train_data))
        assert trainer.sampled_from_full_ranking is fast
        trainer.collect_training_statistics(train_data)
        results.append(trainer.evaluate(valid_data, load_best_model=False))
    assert results[0] == pytest.approx(results[1], abs=1e-4)
    assert results[0]["ndcg@10"] > 0


def test_models_without_a_full_ranking_keep_recboles_sampled_scoring(tmp_path):
    """DIN scores candidates with `predict` only (its `full_sort_predict` is RecBole's NotImplementedError)."""
    config, train_data, _, _ = loaders(tmp_path, "DIN", MAX_ITEM_LIST_LENGTH=10)
    assert LLMRecTrainer(config, build_model(config, train_data)).sampled_from_full_ranking is False
