"""Options for items without a training interaction (issue 32): their residual, and the training softmax."""
import numpy as np
import pytest
import torch

from conftest import built, tiny_config
from recbole_genair.config import Config
from recbole_genair.data import create_dataset
from recbole_genair.data.popularity import item_popularity
from recbole_genair.model.layers import LLMItemEmbedding, text_neighbours
from recbole_genair.quick_start import build_model, prepare_data, run_recbole_genair
from recbole_genair.trainer import LLMRecTrainer


def layer_with(mode, untrained, n_items=12, width=8, seed=0, dropout=0.0):
    torch.manual_seed(seed)
    table = torch.randn(n_items, 6)
    table[0] = 0
    layer = LLMItemEmbedding(table, width, residual=True, cold_residual=mode, cold_neighbours=3, cold_item_dropout=dropout)
    with torch.no_grad():
        layer.residual.normal_()
    mask = np.zeros(n_items, dtype=bool)
    mask[untrained] = True
    layer.set_untrained_items(mask)
    return layer.eval()


def test_text_neighbours_are_the_closest_trained_rows_by_cosine():
    vectors = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0], [0.7, 0.7]])
    trained = torch.tensor([False, True, True, True, False])
    index, weights = text_neighbours(vectors, torch.tensor([0, 4]), trained, 2)
    assert index.tolist() == [[1, 2], [1, 2]]
    assert torch.allclose(weights.sum(1), torch.ones(2))
    assert weights[0, 0] > weights[0, 1]  # the nearer neighbour weighs more; the opposite row (3) is never taken


def test_zero_gives_untrained_items_their_text_row_alone():
    layer = layer_with("zero", untrained=[2, 5])
    rows, text = layer.item_rows(), layer.projector(layer.llm_table[1:])
    torch.testing.assert_close(rows[[1, 4]], text[[1, 4]])  # items 2 and 5: row index = id - 1
    torch.testing.assert_close(rows[[0, 2]], text[[0, 2]] + layer.residual[[0, 2]])


def test_neighbours_give_untrained_items_their_neighbours_residual():
    layer = layer_with("neighbours", untrained=[2, 5])
    rows, text = layer.item_rows(), layer.projector(layer.llm_table[1:])
    for row in (1, 4):
        position = layer.cold_rows.tolist().index(row)
        mixed = (layer.neighbour_weights[position, :, None] * layer.residual[layer.neighbour_rows[position]]).sum(0)
        assert set(layer.neighbour_rows[position].tolist()).isdisjoint({1, 4})  # trained items only
        torch.testing.assert_close(rows[row], text[row] + mixed)


@pytest.mark.parametrize("mode", ["zero", "neighbours"])
def test_an_added_item_gets_the_row_an_untrained_item_of_the_same_text_has(mode):
    """The row of an item without training interactions is the same in training, evaluation and add_items."""
    layer = layer_with(mode, untrained=[2, 5])
    before = layer.item_rows().detach()
    layer.append_llm_rows(layer.llm_table[[5, 7]].clone())  # one untrained item's text, one trained item's
    after = layer.item_rows().detach()
    torch.testing.assert_close(after[:11], before)  # nothing trained moves
    torch.testing.assert_close(after[11], before[4])  # the same text as untrained item 5: the same row
    if mode == "zero":
        torch.testing.assert_close(after[12], layer.projector(layer.llm_table[7]).detach())


@pytest.mark.parametrize("mode", ["zero", "neighbours"])
def test_cold_item_dropout_gives_trained_items_the_untrained_row_in_training_only(mode):
    layer = layer_with(mode, untrained=[2, 5], n_items=200, dropout=0.5)
    evaluated = layer.item_rows().detach()
    text = layer.projector(layer.llm_table[1:]).detach()
    residual = layer.residual.detach()
    if mode == "neighbours":
        cold = (layer.dropout_neighbour_weights[..., None] * residual[layer.dropout_neighbour_rows]).sum(1)
    else:
        cold = torch.zeros_like(residual)
    torch.testing.assert_close(evaluated[0], text[0] + residual[0])  # evaluation: never dropped
    trained = [row for row in range(199) if row not in (1, 4)]
    torch.manual_seed(1)
    rows = layer.train().item_rows().detach()[trained]
    as_cold = torch.isclose(rows, text[trained] + cold[trained], atol=1e-6).all(1)
    as_trained = torch.isclose(rows, text[trained] + residual[trained], atol=1e-6).all(1)
    assert bool((as_cold | as_trained).all()) and 0.3 < float(as_cold.float().mean()) < 0.7
    if mode == "neighbours":  # a dropped item never takes its own residual
        assert not (layer.dropout_neighbour_rows[trained] == torch.tensor(trained)[:, None]).any()


def test_cold_item_dropout_needs_a_cold_residual():
    with pytest.raises(ValueError, match="set cold_residual: zero or neighbours"):
        LLMItemEmbedding(torch.randn(5, 3), 4, residual=True, cold_item_dropout=0.2)


def test_learned_is_the_default_and_adds_nothing(tmp_path):
    config, _, train_data = built(tmp_path, item_residual=True, cold_items=0.2)
    model = build_model(config, train_data)
    assert model.item_embedding.cold_residual == "learned"
    assert not any("cold_rows" in key or "neighbour" in key for key in model.state_dict())


def test_the_model_marks_the_items_the_training_split_never_saw(tmp_path):
    config, _, train_data = built(tmp_path, item_residual=True, cold_items=0.2, cold_residual="neighbours")
    model = build_model(config, train_data)
    unseen = np.flatnonzero(item_popularity(train_data._dataset)[1:] == 0)
    assert len(unseen) >= 12 and sorted(model.item_embedding.cold_rows.tolist()) == unseen.tolist()


def test_cold_residual_needs_the_residual(tmp_path):
    config = Config("SASRecGenAIR", config_dict=tiny_config(tmp_path, item_residual=False, cold_residual="zero"))
    train_data, _, _ = prepare_data(config, create_dataset(config))
    with pytest.raises(ValueError, match="needs item_residual: True"):
        build_model(config, train_data)


def test_unseen_items_leave_the_training_softmax(tmp_path):
    """unseen_item_negatives: False: items without a training interaction get no gradient as negatives."""
    config, _, train_data = built(tmp_path, model="SASRec", cold_items=0.2, unseen_item_negatives=False)
    model = build_model(config, train_data)
    trainer = LLMRecTrainer(config, model)
    trainer.collect_training_statistics(train_data)
    unseen = trainer.excluded_items
    assert unseen is not None and len(unseen) >= 12
    before = model.item_embedding.weight.detach().clone()
    loss = trainer._model_losses(next(iter(train_data)))
    loss.backward()
    grad = model.item_embedding.weight.grad
    assert float(grad[unseen].abs().max()) == 0.0 and float(grad[1:].abs().max()) > 0.0
    torch.testing.assert_close(model.item_embedding.weight.detach(), before)


def test_unseen_item_negatives_needs_the_all_position_softmax(tmp_path):
    config, _, train_data = built(tmp_path, model="SASRec", train_mode="prefix", unseen_item_negatives=False)
    trainer = LLMRecTrainer(config, build_model(config, train_data))
    with pytest.raises(ValueError, match="unseen_item_negatives: False needs train_mode: all_positions"):
        trainer.collect_training_statistics(train_data)


def test_a_run_with_the_options_trains_and_reports_cold_validation(tmp_path):
    result = run_recbole_genair("SASRecGenAIR", config_dict=tiny_config(
        tmp_path, cold_items=0.2, cold_valid_items=0.2, item_residual=True, cold_residual="neighbours",
        unseen_item_negatives=False, epochs=1, metrics=["NDCG", "ColdNDCG"]), saved=False)
    assert "coldndcg@10" in result["best_valid_result"] and "coldndcg@10" in result["test_result"]


@pytest.mark.parametrize("mode", ["learned", "zero", "neighbours"])
def test_add_items_scores_a_copy_of_a_held_out_item_as_the_model_scores_it(tmp_path, mode):
    """append_items (the add-items path) builds an untrained item's row as training and evaluation do: a new item
    with the text of a held-out item gets its score; with `learned` the held-out row was trained as a negative."""
    config, _, train_data = built(tmp_path, item_residual=True, cold_items=0.2, cold_residual=mode)
    model = build_model(config, train_data)
    with torch.no_grad():
        model.item_embedding.residual.normal_()  # as if trained
    unseen = int(np.flatnonzero(item_popularity(train_data._dataset) == 0)[1])
    batch = next(iter(train_data))
    model.eval()
    with torch.no_grad():
        before = model.full_sort_predict(batch)
        model.append_items(model.llm_item_vectors[[unseen]].clone())
        after = model.full_sort_predict(batch)
    torch.testing.assert_close(after[:, :before.size(1)], before)
    same = torch.allclose(after[:, -1], before[:, unseen], atol=1e-5)
    assert same == (mode != "learned")
