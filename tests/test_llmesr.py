"""LLM-ESR (issue 19, item 3): two views through one encoder, scores on both, self-distillation to similar users."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import assert_one_epoch_trains_and_reports_its_ndcg, built, raw_training_sequences
from recbole_genair.quick_start import build_model


@pytest.mark.parametrize("model", ["SASRecLLMESR", "GRU4RecLLMESR", "BERT4RecLLMESR"])
@pytest.mark.parametrize("train_mode", ["prefix", "all_positions"])
def test_model_trains_one_epoch_and_reports_the_ndcg_of_its_scores(tmp_path, model, train_mode):
    assert_one_epoch_trains_and_reports_its_ndcg(tmp_path, model, train_mode=train_mode)


def test_a_score_is_the_sum_of_the_two_views_inner_products(tmp_path):
    config, dataset, train_data = built(tmp_path, "SASRecLLMESR")
    model = build_model(config, train_data).eval()
    batch = next(iter(train_data))
    layer = model.item_embedding
    with torch.no_grad():
        scores = model.full_sort_predict(batch)
        rows = layer.weight
        h = layer.width
        views = []
        for k in (0, 1):
            with layer.view(k):
                views.append(super(type(model).__mro__[1], model).forward(batch["item_id_list"], batch["item_length"]))
        expected = views[0] @ rows[:, :h].T + views[1] @ rows[:, h:].T
        semantic = layer.adapter(layer.llm_table[1:])
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(rows[1:, :h], semantic)  # the semantic half: the frozen vectors through the adapter
    assert "llm_table" not in dict(model.named_parameters()) and all(isinstance(m, torch.nn.Linear) for m in layer.adapter)


def test_neighbours_are_the_most_similar_users_by_their_training_items(tmp_path):
    """By hand from the raw file: each user's training items (all but the last two), mean LLM vector, cosine top-10."""
    config, dataset, train_data = built(tmp_path, "SASRecLLMESR")
    model = build_model(config, train_data)
    table = model.llm_item_vectors.double().numpy()
    users, vectors = [], []
    for user, items in raw_training_sequences().items():
        ids = [dataset.token2id(dataset.iid_field, str(i)) for i in items]
        users.append(dataset.token2id(dataset.uid_field, str(user)))
        vectors.append(table[ids].mean(0))
    x = np.array(vectors)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    for row, user in enumerate(users):
        expected = {users[j] for j in np.argsort(-sim[row])[:10]}
        assert set(model.neighbours[user].tolist()) == expected


@pytest.mark.parametrize("teacher", ["step", "epoch"])
def test_distillation_pulls_each_user_to_the_mean_of_its_neighbours(tmp_path, teacher):
    config, dataset, train_data = built(tmp_path, "SASRecLLMESR", llmesr_distill_weight=0.3, llmesr_teacher=teacher)
    model = build_model(config, train_data).eval()
    batch = next(iter(train_data))
    with torch.no_grad():
        (loss,) = model.auxiliary_losses(batch)
        own = model.forward(batch["item_id_list"], batch["item_length"])
        targets = []
        for user in batch["user_id"].tolist():
            reps = [model.forward(model.user_sequences[n:n + 1], model.user_lengths[n:n + 1])
                    for n in model.neighbours[user].tolist()]
            targets.append(torch.cat(reps).mean(0))
        expected = 0.3 * F.mse_loss(own, torch.stack(targets))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    # the neighbours' sequences are their training sequences: never a validation or test item
    raw = {str(user): items for user, items in raw_training_sequences().items()}
    neighbour = int(model.neighbours[int(batch["user_id"][0])][0])
    items = raw[str(dataset.id2token(dataset.uid_field, neighbour))]
    ids = [dataset.token2id(dataset.iid_field, str(i)) for i in items]
    length = int(model.user_lengths[neighbour])
    assert model.user_sequences[neighbour, :length].tolist() == ids[-config["MAX_ITEM_LIST_LENGTH"]:]


def test_the_per_epoch_teacher_is_every_users_representation_without_dropout_refreshed_each_epoch(tmp_path):
    """`llmesr_teacher: epoch`: computed before each epoch from the weights of that moment, then only looked up."""
    config, dataset, train_data = built(tmp_path, "SASRecLLMESR", llmesr_teacher="epoch")
    model = build_model(config, train_data).train()
    model.set_epoch(0)
    with torch.no_grad():
        model.eval()
        expected = model.forward(model.user_sequences, model.user_lengths.clamp(min=1))
        model.train()
    assert model.training
    torch.testing.assert_close(model._teacher_cache, expected)
    before = model._teacher_cache.clone()
    with torch.no_grad():
        model.item_embedding.id_embedding.mul_(2.0)
    batch = next(iter(train_data))
    model.auxiliary_losses(batch)
    assert torch.equal(model._teacher_cache, before)  # within the epoch the teacher stays
    model.set_epoch(1)
    assert not torch.allclose(model._teacher_cache, before)  # the next epoch's teacher has the new weights


def test_an_unknown_teacher_setting_is_refused_with_the_choices(tmp_path):
    config, dataset, train_data = built(tmp_path, "SASRecLLMESR", llmesr_teacher="batch")
    with pytest.raises(ValueError, match="llmesr_teacher: 'batch'.*'step'.*'epoch'"):
        build_model(config, train_data)
