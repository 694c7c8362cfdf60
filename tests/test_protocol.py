"""The GenAIR paper's protocol as a preset (issue 20, item 1) and the authors' BCE ranking loss."""
import re

import pytest
import torch
import torch.nn.functional as F
import yaml

from conftest import tiny_config
from recbole_genair.archetype import load_settings
from recbole_genair.archetype.items import build_prompt
from recbole_genair.archetype.settings import signature
from recbole_genair.config import Config
from recbole_genair.data import create_dataset
from recbole_genair.model.losses import BCEPairLoss
from recbole_genair.paths import PROPS_DIR
from recbole_genair.quick_start import build_model, prepare_data, run_recbole_genair

PRESET = PROPS_DIR / "protocol" / "genair-paper.yaml"
ARCHETYPE_PRESET = PROPS_DIR / "protocol" / "genair-paper-archetype.yaml"
AUTHORS_PROMPT = PROPS_DIR / "protocol" / "genair-authors-prompt.yaml"
SHAPE = ("train_batch_size", "MAX_ITEM_LIST_LENGTH", "hidden_size", "inner_size", "embedding_size", "metrics", "topk")


def tiny(tmp_path, **overrides):
    settings = {k: v for k, v in tiny_config(tmp_path).items() if k not in SHAPE}
    return {**settings, "hidden_size": 16, "inner_size": 16, "embedding_size": 16, **overrides}


def test_the_preset_sets_the_papers_protocol_over_the_dataset_defaults(tmp_path):
    config = Config("SASRecGenAIR", "amazon-office", config_file_list=[str(PRESET)],
                    config_dict={"data_path": str(tmp_path)})
    expected = {"loss_type": "BPR", "train_mode": "all_positions", "train_batch_size": 128, "learning_rate": 0.001,
                "hidden_size": 128, "MAX_ITEM_LIST_LENGTH": 200, "n_heads": 1, "inner_size": 128, "epochs": 50,
                "stopping_step": 20, "valid_metric": "NDCG@10", "alpha": 0.0001, "gamma": 4.0}
    assert {k: config[k] for k in expected} == expected  # amazon-office.yaml says 20 items, batch {prefix: 512, ...}
    assert config["train_neg_sample_args"]["sample_num"] == 1
    assert config["eval_args"]["mode"] == {"valid": "uni100", "test": "uni100"}
    assert Config("BERT4RecGenAIR", "amazon-office", config_file_list=[str(PRESET)],
                  config_dict={"data_path": str(tmp_path)})["mask_ratio"] == 0.6


@pytest.mark.parametrize("preset", [PRESET, ARCHETYPE_PRESET, AUTHORS_PROMPT])
def test_every_preset_value_names_its_source(preset):
    lines = [line for line in preset.read_text().splitlines() if re.match(r"^[A-Za-z_]+:", line)]
    assert lines
    for line in lines:
        assert "#" in line and re.search(r"paper|authors' code", line.split("#", 1)[1]), line


def test_the_archetype_preset_gives_the_authors_decoding(tmp_path):
    settings = load_settings("genair-test", config_file_list=[str(ARCHETYPE_PRESET)], config_dict={"data_path": str(tmp_path)})
    assert (settings["do_sample"], settings["temperature"], settings["top_p"], settings["repetition_penalty"],
            settings["max_new_tokens"], settings["pca_components"]) == (True, 0.6, 0.9, 1.2, 512, 384)


def test_the_authors_prompt_preset_writes_their_item_text(tmp_path):
    """The wording of the authors' code: no system sentence, "key is value" clauses joined by "; ", ";" in a
    value written as ".", values cut to 100 characters, the question on its own line."""
    settings = load_settings("genair-test", config_file_list=[str(AUTHORS_PROMPT)], config_dict={"data_path": str(tmp_path)})
    values = {"title": "Red stapler", "brand": "Acme; Inc", "description": "x" * 150}
    prompt, n = build_prompt(values, {"name": "title", "brand": "brand", "description": "description"}, settings)
    assert n == 3 and prompt == (
        "Based on the following attributes, identify the types of users this item would appeal to:\n"
        "name is Red stapler; brand is Acme. Inc; description is " + "x" * 100 + "\n"
        "Which potential users align best with this item?")
    default = load_settings("genair-test", config_dict={"data_path": str(tmp_path)})
    assert build_prompt({"title": "Red stapler"}, {"name": "title"}, default)[0] == (
        "You are a helpful recommendation expert. Based on the following attributes, identify the types of users "
        "this item would appeal to: The item name is Red stapler. What potential users align best with this item?")
    # stores made before the two keys existed keep their signature
    assert "prompt_join" not in signature(default)[1] and signature(settings)[1]["prompt_join"] == "\n"


@pytest.mark.parametrize("model", ["SASRecGenAIR", "BERT4RecGenAIR", "GRU4Rec", "SASRecTFLLMER", "SASRecLLMInit"])
def test_models_train_under_the_preset(tmp_path, model):
    result = run_recbole_genair(model, config_file_list=[str(PRESET)], config_dict=tiny(tmp_path), saved=False)
    assert 0.0 <= result["test_result"]["ndcg@10"] <= 1.0


@pytest.mark.parametrize("train_mode", ["prefix", "all_positions"])
def test_bce_is_the_authors_loss_on_the_bpr_pairs(tmp_path, train_mode):
    settings = tiny(tmp_path, loss_type="BCE", train_mode=train_mode, train_batch_size=64)
    config = Config("SASRecGenAIR", config_file_list=[str(PRESET)], config_dict=settings)
    assert config["loss_type"] == "BPR" and config["pairwise_loss"] == "BCE"
    train_data, _, _ = prepare_data(config, create_dataset(config))
    model = build_model(config, train_data).eval()
    assert isinstance(model.loss_fct, BCEPairLoss)
    batch = next(iter(train_data))
    with torch.no_grad():
        if train_mode == "prefix":
            loss = model.calculate_loss(batch)
        else:
            from recbole_genair.model.all_positions import all_position_losses

            loss = all_position_losses(model, batch)
        pos, neg = batch[model.POS_ITEM_ID], batch[model.NEG_ITEM_ID]
        if train_mode == "prefix":
            output = model.forward(batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN])
        else:
            from recbole_genair.model.all_positions import sequence_outputs

            output = sequence_outputs(model, batch[model.ITEM_SEQ], batch[model.ITEM_SEQ_LEN])
            real = pos > 0
            output, pos, neg = output[real], pos[real], neg[real]
        table = model.item_embedding.weight
        pos_score, neg_score = (output * table[pos]).sum(-1), (output * table[neg]).sum(-1)
        expected = -(F.logsigmoid(pos_score).mean() + F.logsigmoid(-neg_score).mean())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_bce_is_refused_for_bert4rec_saying_why(tmp_path):
    config = Config("BERT4RecGenAIR", config_file_list=[str(PRESET)], config_dict=tiny(tmp_path, loss_type="BCE"))
    train_data, _, _ = prepare_data(config, create_dataset(config))
    with pytest.raises(ValueError, match="BERT4Rec writes BPR inline"):
        build_model(config, train_data)


def test_presets_are_yaml_mappings():
    for preset in (PRESET, ARCHETYPE_PRESET):
        assert isinstance(yaml.safe_load(preset.read_text()), dict)


def test_the_archetype_preset_is_refused_by_a_training_run(tmp_path):
    """Issue 34: props/protocol's archetype keys counted as known, so a training run took the file and ignored it."""
    from recbole_genair.config_keys import ConfigKeyError

    with pytest.raises(ConfigKeyError, match=r"'max_new_tokens' \(in .*genair-paper-archetype.yaml\): a setting of the "
                                             r"archetype step .*python -m recbole_genair.archetype"):
        Config("SASRecGenAIR", config_file_list=[str(ARCHETYPE_PRESET)], config_dict=tiny_config(tmp_path))
    Config("SASRecGenAIR", config_file_list=[str(PRESET)], config_dict=tiny_config(tmp_path))  # training's preset: taken
