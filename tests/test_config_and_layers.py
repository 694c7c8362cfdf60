"""Config layering, data paths, command-line parsing and the shared item-embedding layer."""
import pytest
import torch

from conftest import tiny_config
from recbole_genair.commands.train import parse_args
from recbole_genair.config import DATASET_DIR, Config
from recbole_genair.model.layers import LLMItemEmbedding


def test_genair_model_inherits_backbone_and_package_defaults(tmp_path):
    config = Config("SASRecGenAIR", config_dict=tiny_config(tmp_path))
    assert config["loss_type"] == "CE" and config["hidden_act"] == "gelu"  # RecBole's SASRec.yaml
    assert config["alpha"] == 0.0001 and config["calibration_kernel"] == "exp"  # props/model/GenAIR.yaml
    assert config["preload_weight"] == {"iid": "item_emb"} and "iid" in config["alias_of_item_id"]
    bert = Config("BERT4RecGenAIR", config_dict=tiny_config(tmp_path))
    assert bert["transform"] == "mask_itemseq" and bert["mask_ratio"] == 0.2


def test_recbole_models_get_no_itememb_settings(tmp_path):
    config = Config("SASRec", config_dict=tiny_config(tmp_path))
    assert not config["preload_weight"] and config["alpha"] is None


def test_ml100k_uses_this_repository_copy():
    config = Config("SASRec", "ml-100k")
    assert config["data_path"] == str(DATASET_DIR / "ml-100k")
    assert config["train_neg_sample_args"]["distribution"] == "none"


def test_command_line_pairs_become_settings(tmp_path):
    args, rest = parse_args(["--model=SASRec", "--dataset=ml-100k", "--epochs=3", "--learning_rate=0.01"])
    config = Config(args.model, args.dataset, cmd_args=rest)
    assert config["epochs"] == 3 and config["learning_rate"] == 0.01
    with pytest.raises(SyntaxError, match="--key=value"):
        Config("SASRec", "ml-100k", cmd_args=["epochs", "3"])


def make_layer(n_items=7, d=6, h=4, extra=0):
    torch.manual_seed(0)
    table = torch.randn(n_items, d)
    table[0] = 0
    return LLMItemEmbedding(table, h, n_extra_tokens=extra)


def test_padding_row_is_zero_and_extra_tokens_follow_items():
    layer = make_layer(extra=1)
    weight = layer.weight
    assert weight.shape == (8, 4) and torch.count_nonzero(weight[0]) == 0
    assert torch.equal(weight[7], layer.extra_tokens[0])
    assert torch.allclose(layer(torch.tensor([[3, 0]]))[0, 0], weight[3])


def test_projected_table_is_computed_once_per_evaluation():
    layer = make_layer()
    layer.eval()
    with torch.no_grad():
        first = layer.weight
        assert layer.weight is first  # cached for the whole evaluation
    layer.train()
    assert layer._table is None  # training invalidates it
    with torch.no_grad():
        layer.projector.net[3].bias.add_(1.0)
    layer.eval()
    with torch.no_grad():
        assert not torch.allclose(layer.weight, first)


def test_training_projects_fresh_tables_with_gradients():
    layer = make_layer()
    layer.train()
    assert layer.weight is not layer.weight
    with layer.shared_table() as table:
        assert layer.weight is table and table.requires_grad
    assert layer._table is None


# Read for every model, set in YAML only for the models that have it: GenAIR's calibration weight (a default for every
# model in props/overall.yaml would replace FOSSIL's own `alpha`, read by RecBole's FOSSIL).
NOT_EVERY_MODEL = {"alpha"}


def test_defaults_live_in_props_yaml_only():
    """Issue 36: no setting has a second default in code (`config["k"] or 4`, `... if config["k"] is not None else
    0.2`), and every setting the package reads has its default in a YAML file of props/ or RecBole's properties/."""
    import re
    from pathlib import Path

    import recbole

    from recbole_genair.config_keys import _code_keys, _yaml_keys
    from recbole_genair.paths import PACKAGE_DIR, PROPS_DIR

    default = re.compile(r"config\[\s*[\"'](\w+)[\"']\s*\]\)?\s+(?:or\s+(?:-?\d|[\"']|True\b|False\b)"
                         r"|if\s+(?:self\.)?config\[\s*[\"']\1[\"']\s*\]\s+is not None\s+else\s)")
    found = sorted({(path.relative_to(PACKAGE_DIR).as_posix(), key) for path in PACKAGE_DIR.rglob("*.py")
                    for key in default.findall(path.read_text(encoding="utf-8"))})
    assert [f for f in found if f[1] not in NOT_EVERY_MODEL] == []
    recbole_dir = Path(recbole.__file__).resolve().parent
    yaml_keys = _yaml_keys(PROPS_DIR) | _yaml_keys(recbole_dir / "properties")
    read = _code_keys(PACKAGE_DIR) - _code_keys(recbole_dir) - {"key"}  # `config["key"]` in a docstring example
    assert sorted(read - yaml_keys) == []
