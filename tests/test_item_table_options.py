"""Options of the GenAIR item table beyond the paper (issue 17): centring and a per-item residual."""
import pytest
import torch
import yaml

from conftest import assert_one_epoch_trains_and_reports_its_ndcg, built, tiny_config
from recbole_genair.config import Config
from recbole_genair.data import create_dataset
from recbole_genair.quick_start import build_model, prepare_data
from recbole_genair.trainer import LLMRecTrainer

GENAIR_MODELS = ["SASRecGenAIR", "GRU4RecGenAIR", "BERT4RecGenAIR"]


def all_test_scores(model, test_data):
    """full_sort_predict over the whole test loader, in evaluation mode."""
    model.eval()
    with torch.no_grad():
        return torch.cat([model.full_sort_predict(batch[0]).view(batch[0].length, -1) for batch in test_data])


@pytest.mark.parametrize("model_name", GENAIR_MODELS)
def test_zero_initialised_residual_leaves_the_initial_scores_unchanged(tmp_path, model_name):
    config = Config(model_name, config_dict=tiny_config(tmp_path))
    dataset = create_dataset(config)
    train_data, _, test_data = prepare_data(config, dataset)
    paper = build_model(config, train_data)
    with_residual = build_model(Config(model_name, config_dict=tiny_config(tmp_path, item_residual=True)), train_data)
    residual = with_residual.item_embedding.residual
    assert residual.shape == (dataset.item_num - 1, paper.item_embedding.embedding_size)
    assert residual.requires_grad and float(residual.detach().abs().max()) == 0.0
    torch.testing.assert_close(all_test_scores(with_residual, test_data), all_test_scores(paper, test_data))


def test_options_reach_the_model_and_the_optimizer_from_yaml(tmp_path):
    path = tmp_path / "options.yaml"
    path.write_text(yaml.safe_dump({"center_item_table": True, "item_residual": True, "item_residual_dropout": 0.25,
                                    "item_residual_weight_decay": 0.01, "weight_decay": 0.0}))
    config = Config("SASRecGenAIR", config_file_list=[str(path)], config_dict=tiny_config(tmp_path))
    train_data, _, _ = prepare_data(config, create_dataset(config))
    model = build_model(config, train_data)
    layer = model.item_embedding
    assert layer.center and layer.residual is not None and layer.residual_dropout == 0.25
    groups = LLMRecTrainer(config, model).optimizer.param_groups
    (residual_group,) = [g for g in groups if any(p is layer.residual for p in g["params"])]
    assert residual_group["weight_decay"] == 0.01 and len(residual_group["params"]) == 1
    rest = [p for g in groups if g is not residual_group for p in g["params"]]
    assert [g["weight_decay"] for g in groups if g is not residual_group] == [0.0]
    assert len(rest) + 1 == len(list(model.parameters()))


def test_without_its_own_weight_decay_the_residual_shares_the_run_optimizer(tmp_path):
    config, _, train_data = built(tmp_path, item_residual=True, item_residual_weight_decay=None, weight_decay=0.001)
    groups = LLMRecTrainer(config, build_model(config, train_data)).optimizer.param_groups
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.001


def test_centred_table_has_zero_mean_item_rows_and_differs_from_the_paper(tmp_path):
    config, _, train_data = built(tmp_path, center_item_table=True)
    model = build_model(config, train_data)
    paper = build_model(Config("SASRecGenAIR", config_dict=tiny_config(tmp_path)), train_data)
    rows, paper_rows = model.item_embedding.weight[1:], paper.item_embedding.weight[1:]
    torch.testing.assert_close(rows.mean(dim=0), torch.zeros(rows.size(1)), atol=1e-5, rtol=0)
    torch.testing.assert_close(rows, paper_rows - paper_rows.mean(dim=0, keepdim=True))
    assert float(paper_rows.mean(dim=0).norm()) > 1e-3  # the offset the option removes is really there


def test_residual_dropout_applies_in_training_only(tmp_path):
    config, _, train_data = built(tmp_path, item_residual=True, item_residual_dropout=0.5)
    layer = build_model(config, train_data).item_embedding
    with torch.no_grad():
        layer.residual.fill_(1.0)
        base = layer.projector(layer.llm_table[1:])
        layer.train()
        dropped = layer.project()[1:] - base
        layer.eval()
        kept = layer.project()[1:] - base
    assert set(torch.unique(dropped.round(decimals=4)).tolist()) == {0.0, 2.0}
    torch.testing.assert_close(kept, torch.ones_like(kept))


@pytest.mark.parametrize("residual", [False, True])
def test_residual_lets_training_separate_items_whose_llm_vectors_are_identical(tmp_path, residual):
    """Two items with the same text: the paper's table keeps them equal whatever the training; the residual can part them."""
    config, _, train_data = built(tmp_path, item_residual=residual)
    model = build_model(config, train_data)
    with torch.no_grad():
        model.item_embedding.llm_table[2] = model.item_embedding.llm_table[1]
    trainer = LLMRecTrainer(config, model)
    trainer.collect_training_statistics(train_data)
    trainer._train_epoch(train_data, 0)
    model.eval()
    with torch.no_grad():
        table = model.item_embedding.weight
    gap = float((table[1] - table[2]).abs().max())
    assert (gap > 1e-5) if residual else (gap == 0.0)


def test_out_of_range_residual_dropout_is_refused(tmp_path):
    config, _, train_data = built(tmp_path, item_residual=True, item_residual_dropout=1.0)
    with pytest.raises(ValueError, match="item_residual_dropout"):
        build_model(config, train_data)


@pytest.mark.parametrize("model_name", ["SASRecGenAIR", "BERT4RecGenAIR"])
def test_model_with_both_options_trains_and_reports_its_ndcg(tmp_path, model_name):
    assert_one_epoch_trains_and_reports_its_ndcg(tmp_path, model_name, center_item_table=True, item_residual=True,
                                                 item_residual_dropout=0.1, item_residual_weight_decay=0.0001)


@pytest.mark.parametrize("model_name", GENAIR_MODELS)
def test_backbone_init_scale_starts_rows_at_the_std_of_the_table_they_replace(tmp_path, model_name):
    config, _, train_data = built(tmp_path, model_name, projector_init_scale="backbone")
    model = build_model(config, train_data)
    # the backbone's own random table under the same seed: what the option matches
    from recbole.model.sequential_recommender import BERT4Rec, GRU4Rec, SASRec
    from recbole.utils import init_seed
    backbone = {"SASRecGenAIR": SASRec, "GRU4RecGenAIR": GRU4Rec, "BERT4RecGenAIR": BERT4Rec}[model_name]
    init_seed(config["seed"], config["reproducibility"])
    reference = backbone(config, train_data.dataset).item_embedding.weight[1:model.n_items]
    rows = model.item_embedding.weight[1:model.n_items]
    assert float(rows.std()) == pytest.approx(float(reference.std()), rel=1e-4)
    paper = build_model(Config(model_name, config_dict=tiny_config(tmp_path)), train_data).item_embedding.weight
    assert float(paper[1:model.n_items].std()) > 2 * float(rows.std())  # the default really is larger (SASRec: ~18x)
    assert_one_epoch_trains_and_reports_its_ndcg(tmp_path, model_name, projector_init_scale="backbone")


def test_unknown_projector_init_scale_is_refused_by_name(tmp_path):
    config, _, train_data = built(tmp_path, projector_init_scale="pca")
    with pytest.raises(ValueError, match="projector_init_scale must be 'default' or 'backbone', not 'pca'"):
        build_model(config, train_data)
