"""`<Backbone><Method>` on every RecBole sequential backbone that `model.variants` supports."""
import pytest
import torch

from conftest import copy_dataset, tiny_config
from recbole_genair.config import Config
from recbole_genair.data import create_dataset
from recbole_genair.model.layers import LLMItemEmbedding
from recbole_genair.model.variants import METHODS, REFUSED, SUPPORTED, UnsupportedBackboneError
from recbole_genair.quick_start import build_model, prepare_data, run_recbole_genair
from recbole_genair.utils import get_model, model_names

# Settings the tiny dataset needs on some backbones (61 items, histories of at most 10).
TINY = {"FEARec": {"n_layers": 2}, "SASRecCPR": {"reranker_CAN_NUM": "20"}, "GRU4RecCPR": {"reranker_CAN_NUM": "20"}}
# Backbones that read only the most recent items of a history: how many.
RECENT = {"HRM": lambda model: model.high_order, "TransRec": lambda model: 1}
# Softmax-CPR re-ranks each history's top candidates, so one item's score can move the others' too.
RERANKS = {"SASRecCPR", "GRU4RecCPR"}


def test_at_least_fifteen_backbones_and_every_refusal_names_a_reason():
    assert len(SUPPORTED) >= 15 and not set(SUPPORTED) & set(REFUSED)
    assert all(len(reason) > 30 for reason in REFUSED.values())


def test_variant_names_resolve_from_the_command_line_name():
    cls = get_model("NARMGenAIR")
    assert cls.__name__ == "NARMGenAIR" and cls is get_model("NARMGenAIR")
    assert "STAMPTFLLMER" in model_names()
    from recbole_genair.model import SASRecGenAIR
    assert get_model("SASRecGenAIR") is SASRecGenAIR  # the written-out classes are not rebuilt


@pytest.mark.parametrize("name, expected", [
    ("FPMCGenAIR", "four factor tables"), ("NoSuchGenAIR", "not a RecBole sequential model"),
    ("FOSSILTFLLMER", "named alpha"),
])
def test_unsupported_backbone_names_the_reason_and_the_supported_ones(name, expected):
    with pytest.raises(UnsupportedBackboneError) as err:
        get_model(name)
    assert expected in str(err.value) and "NARM" in str(err.value) and "SRGNN" in str(err.value)


@pytest.mark.parametrize("backbone, expected", [
    ("NextItNet", "backbone"), ("Caser", "backbone"), ("STAMP", "backbone"), ("LightSANs", "backbone"), ("NARM", "default"),
])
def test_per_backbone_defaults_start_the_projected_rows_at_the_chosen_scale(tmp_path, backbone, expected):
    """props/model/<Backbone>GenAIR.yaml (chosen on validation) reaches the model; a run's own setting overrides it."""
    config = Config(f"{backbone}GenAIR", config_dict=tiny_config(tmp_path))
    assert config["projector_init_scale"] == expected
    train_data = prepare_data(config, create_dataset(config))[0]
    stds = {}
    for scale in ("default", "backbone"):
        config = Config(f"{backbone}GenAIR", config_dict=tiny_config(tmp_path, projector_init_scale=scale))
        assert config["projector_init_scale"] == scale
        stds[scale] = float(build_model(config, train_data).item_embedding.weight[1:].detach().std())
    backbone_std = float(build_model(Config(backbone, config_dict=tiny_config(tmp_path)), train_data)
                          .item_embedding.weight[1:].detach().std())
    assert stds["backbone"] == pytest.approx(backbone_std, rel=1e-3)
    # PyTorch's initialisation starts larger rows (amazon-office: NextItNet 33x, Caser 24x, NARM 14x)
    assert stds["default"] > 1.5 * stds["backbone"]


@pytest.mark.parametrize("backbone", list(SUPPORTED))
def test_each_method_trains_on_the_backbone(tmp_path, backbone):
    """GenAIR: one epoch through our trainer with calibration on; the others: one step moves their item table."""
    settings = TINY.get(backbone, {})
    result = run_recbole_genair(f"{backbone}GenAIR", config_dict=tiny_config(tmp_path, alpha=0.1, **settings),
                                saved=False)
    assert 0.0 <= result["test_result"]["ndcg@10"] <= 1.0
    for method in METHODS:
        if method == "GenAIR":
            continue
        # a prefix batch: calculate_loss is the prefix-mode loss (all positions go through the trainer)
        config = Config(f"{backbone}{method}", config_dict=tiny_config(tmp_path, train_mode="prefix", **settings))
        train_data = prepare_data(config, create_dataset(config))[0]
        model = build_model(config, train_data)
        model.train()
        before = model.item_embedding.weight.detach().clone()
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        losses = model.calculate_loss(next(iter(train_data)))
        loss = sum(losses) if isinstance(losses, tuple) else losses
        assert torch.isfinite(loss)
        loss.backward()
        optimizer.step()
        assert not torch.allclose(before, model.item_embedding.weight.detach()), f"{backbone}{method}"


def _scores(tmp_path, backbone, data_path):
    # PyTorch's projector initialisation on every backbone: `projector_init_scale: backbone` (the default of
    # some) rescales the projector by the std of all rows, so one changed row would move every item's start.
    config = Config(f"{backbone}GenAIR", config_dict=tiny_config(tmp_path, data_path=str(data_path),
                                                               projector_init_scale="default",
                                                               **TINY.get(backbone, {})))
    dataset = create_dataset(config)
    train_data, _, test_data = prepare_data(config, dataset)
    model = build_model(config, train_data).eval()
    interaction = next(iter(test_data))[0]
    with torch.no_grad():
        scores = model.full_sort_predict(interaction).view(interaction.length, -1)
    histories, lengths = interaction[model.ITEM_SEQ].clone(), interaction[model.ITEM_SEQ_LEN]
    if backbone == "BERT4Rec":  # the mask token takes the last place: a full history loses its oldest item
        histories[lengths == histories.size(1), 0] = 0
    return scores, (histories, lengths), model, dataset


@pytest.mark.parametrize("backbone", list(SUPPORTED))
def test_one_itememb_row_reaches_the_input_and_the_scoring_side(tmp_path, backbone):
    """Same seed, one `.itememb` row changed: that item's scores change for every history, and the other
    items' scores change exactly for the histories that contain it (the input side)."""
    original = copy_dataset(tmp_path / "a")
    changed = copy_dataset(tmp_path / "b")
    file = changed / "genair-test.itememb"
    lines = file.read_text().splitlines()
    header, rows = lines[0], lines[1:]
    scores, (histories, lengths), model, dataset = _scores(tmp_path / "a", backbone, original.parent)
    assert isinstance(model.item_embedding, LLMItemEmbedding)
    # the item that most test histories contain (an internal id), and its raw token
    counts = torch.bincount(histories.flatten(), minlength=scores.size(1))
    counts[0] = 0
    item = int(counts.argmax())
    token = dataset.id2token("item_id", item)
    rows = [r if r.split("\t")[0] != token else
            token + "\t" + " ".join(f"{-3.0 * float(v):.6f}" for v in r.split("\t")[1].split()) for r in rows]
    file.write_text("\n".join([header, *rows]) + "\n")
    new_scores, _, _, _ = _scores(tmp_path / "b", backbone, changed.parent)

    assert not torch.allclose(scores[:, item], new_scores[:, item], atol=1e-5), "the scoring side ignores the row"
    contains = (histories == item).any(dim=1)
    ambiguous = torch.zeros_like(contains)
    if backbone in RECENT:  # the item counts as read only among the last k; elsewhere it may or may not be read
        k = RECENT[backbone](model)
        positions = torch.arange(histories.size(1)).expand_as(histories)
        recent = (positions >= (lengths - k).unsqueeze(1)) & (positions < lengths.unsqueeze(1))
        ambiguous = contains & ~((histories == item) & recent).any(dim=1)
        contains = contains & ~ambiguous
    assert contains.any() and (~contains & ~ambiguous).any()
    others = torch.ones(scores.size(1), dtype=torch.bool)
    others[[0, item]] = False
    moved = ~torch.isclose(scores[:, others], new_scores[:, others], atol=1e-5).all(dim=1)
    assert moved[contains].all(), "the input side ignores the row"
    if backbone not in RERANKS:
        assert not moved[~contains & ~ambiguous].any(), "histories without the item changed"
