"""Item-text presets, GenAIR ablation switches and hyper-parameter tuning (issue 7)."""
import pytest
import torch
import yaml

from conftest import TEST_DATA, assert_one_epoch_trains_and_reports_its_ndcg, tiny_config
from recbole_genair.archetype import load_settings
from recbole_genair.archetype.items import build_prompt, preset_field_map
from recbole_genair.commands.tune import run_tuning
from recbole_genair.config import Config
from recbole_genair.data import create_dataset
from recbole_genair.quick_start import build_model, prepare_data
from recbole_genair.trainer import LLMRecTrainer

# (header fixture, sample row, clauses the prompt must contain in this order)
PRESET_CASES = {
    "ml-100k": (["item_id", "movie_title", "release_year", "class"],
                {"movie_title": "Toy Story", "release_year": "1995", "class": "Animation Children's Comedy"},
                ["The item name is Toy Story.", "The item date is 1995.", "The item genre is Animation Children's Comedy."]),
    "ml-1m": (["item_id", "movie_title", "release_year", "genre"],
              {"movie_title": "Heat", "release_year": "1995", "genre": "Action Crime Thriller"},
              ["The item name is Heat.", "The item date is 1995.", "The item genre is Action Crime Thriller."]),
    "amazon-2014": (["item_id", "title", "sales_type", "sales_rank", "categories", "price", "brand"],
                    {"title": "Gel Pens", "sales_type": "Office Products", "categories": "Office Products Pens",
                     "price": "7.99", "brand": "Pilot"},
                    ["The item name is Gel Pens.", "The item brand is Pilot.", "The item feature is Office Products Pens.",
                     "The item price is 7.99."]),
    "amazon-2018": (["item_id", "title", "brand", "categories", "price", "description"],
                    {"title": "Stapler", "brand": "Swingline", "categories": "Staplers", "price": "12.5",
                     "description": "Full strip desk stapler"},
                    ["The item name is Stapler.", "The item brand is Swingline.", "The item feature is Staplers.",
                     "The item price is 12.5.", "The item description is Full strip desk stapler."]),
    "yelp": (["business_id", "item_name", "address", "city", "state", "item_stars", "categories"],
             {"item_name": "Joe's Diner", "city": "Phoenix", "item_stars": "4.5", "categories": "Diners Breakfast"},
             ["The item name is Joe's Diner.", "The item feature is Diners Breakfast.", "The item rating is 4.5."]),
    "amazon-office": (["item_id", "title", "brand", "categories", "description"],
                      {"title": "VTECH Cordless Phone", "brand": "VTech", "categories": "Office Electronics",
                       "description": ""},
                      ["The item name is VTECH Cordless Phone.", "The item brand is VTech.",
                       "The item feature is Office Electronics."]),
}


@pytest.mark.parametrize("case", sorted(PRESET_CASES))
def test_preset_is_recognised_and_builds_the_expected_prompt(case):
    header, row, clauses = PRESET_CASES[case]
    _, field_map = preset_field_map(header)
    assert field_map is not None
    prompt, _ = build_prompt(row, field_map, load_settings("ml-100k"))
    body = prompt.split("would appeal to: ", 1)[1].rsplit(" What potential users", 1)[0]
    assert body == " ".join(clauses)


def test_unknown_header_has_no_preset():
    assert preset_field_map(["item_id", "sku", "colour"]) == (None, None)


def test_empty_title_still_prompts_from_other_fields():
    _, field_map = preset_field_map(PRESET_CASES["amazon-office"][0])
    prompt, n = build_prompt({"title": "", "brand": "Acme", "categories": "Pens"}, field_map, load_settings("ml-100k"))
    assert n == 2 and "The item brand is Acme. The item feature is Pens." in prompt and "name is" not in prompt


@pytest.mark.parametrize("views,columns", [("both", slice(0, 24)), ("prefill", slice(0, 12)),
                                           ("decoding", slice(12, 24))])
def test_view_switch_feeds_the_projector_the_views_columns_and_trains(tmp_path, views, columns):
    """Fails if `llm_views` is ignored (the projector then reads all 24 columns)."""
    settings = tiny_config(tmp_path, llm_views=views)
    config = Config("SASRecGenAIR", config_dict=settings)
    dataset = create_dataset(config)
    train_data, _, _ = prepare_data(config, dataset)
    layer = build_model(config, train_data).item_embedding
    expected = torch.zeros(dataset.item_num, columns.stop - columns.start)
    with open(TEST_DATA / "genair-test" / "genair-test.itememb", encoding="utf-8") as f:
        next(f)
        for line in f:
            token, vector = line.rstrip("\n").split("\t")
            values = torch.tensor([float(v) for v in vector.split()])
            expected[dataset.token2id(dataset.iid_field, token)] = values[columns]
    torch.testing.assert_close(layer.llm_table, expected)
    assert layer.projector.net[0].in_features == columns.stop - columns.start
    assert_one_epoch_trains_and_reports_its_ndcg(tmp_path, "SASRecGenAIR", llm_views=views)


@pytest.mark.parametrize("alpha,kernel,has_cal", [(0.0, "exp", False), (0.01, "exp", True), (0.01, "linear", True)])
def test_calibration_switches(tmp_path, alpha, kernel, has_cal):
    settings = tiny_config(tmp_path, alpha=alpha, calibration_kernel=kernel)
    config = Config("SASRecGenAIR", config_dict=settings)
    train_data, _, _ = prepare_data(config, create_dataset(config))
    trainer = LLMRecTrainer(config, build_model(config, train_data))
    trainer.collect_training_statistics(train_data)
    assert (trainer.calibration is not None) == has_cal
    if has_cal:
        assert trainer.calibration.kernel == kernel
    losses = trainer._train_epoch(train_data, 0)
    assert (isinstance(losses, tuple) and len(losses) == 2) == has_cal


@pytest.mark.parametrize("model_name", ["SASRecGenAIR", "BERT4RecGenAIR"])
def test_item_normalization_switch_gives_rows_of_norm_scale_and_trains(tmp_path, model_name):
    """Fails if `item_normalization` is ignored (rows keep the projector's norms)."""
    settings = tiny_config(tmp_path, item_normalization=True, norm_scale=2.5)
    config = Config(model_name, config_dict=settings)
    train_data, _, _ = prepare_data(config, create_dataset(config))
    model = build_model(config, train_data)
    rows = model.item_embedding.weight[1:model.n_items]
    assert torch.allclose(rows.norm(dim=1), torch.full((model.n_items - 1,), 2.5), atol=1e-5)
    plain = build_model(Config(model_name, config_dict=tiny_config(tmp_path)), train_data)
    assert not torch.allclose(plain.item_embedding.weight[1:plain.n_items].norm(dim=1), torch.tensor(2.5))
    assert_one_epoch_trains_and_reports_its_ndcg(tmp_path, model_name, item_normalization=True, norm_scale=2.5)


def test_two_trial_tuning_writes_trials_and_best_config(tmp_path):
    space = tmp_path / "space.hyper"
    space.write_text("alpha choice [0.0001,0.01]\n")
    out = tmp_path / "tune"
    result = run_tuning("SASRecGenAIR", "genair-test", space, out, config_dict=tiny_config(tmp_path),
                        algo="exhaustive", max_evals=2)
    assert len(result["trials"]) == 2
    assert {t["params"]["alpha"] for t in result["trials"]} == {0.0001, 0.01}
    rows = (out / "trials.csv").read_text().strip().splitlines()
    assert len(rows) == 3 and rows[0].startswith("alpha,valid_score")
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["model"] == "SASRecGenAIR" and best["alpha"] == result["best_params"]["alpha"]
    assert "| alpha | valid score |" in (out / "trials.md").read_text()
