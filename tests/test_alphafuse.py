"""AlphaFuse (issue 19, item 4): whitened principal coordinates, a trainable ID in their null space, cosine scores."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import assert_one_epoch_trains_and_reports_its_ndcg, built, copy_dataset, tiny_config
from recbole_genair.data.itememb import ItemEmbeddingError
from recbole_genair.quick_start import build_model
from recbole_genair.trainer import LLMRecTrainer

SMALL = dict(alphafuse_source="itememb", alphafuse_null_dim=6)  # the tiny .itememb has 24 columns, width 16


@pytest.mark.parametrize("model", ["SASRecAlphaFuse", "GRU4RecAlphaFuse", "BERT4RecAlphaFuse"])
def test_model_trains_one_epoch_and_reports_the_ndcg_of_its_scores(tmp_path, model):
    assert_one_epoch_trains_and_reports_its_ndcg(tmp_path, model, **SMALL)


def whitened(x, k):
    """Reference: centre, top-k principal directions by SVD, each coordinate scaled to unit variance."""
    xc = x - x.mean(0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    z = xc @ vt[:k].T
    return z / z.std(0)


@pytest.mark.parametrize("train_mode", ["prefix", "all_positions"])
def test_the_id_lives_in_the_null_space_and_the_llm_coordinates_stay(tmp_path, train_mode):
    config, dataset, train_data = built(tmp_path, "SASRecAlphaFuse", train_mode=train_mode, **SMALL)
    model = build_model(config, train_data)
    layer = model.item_embedding
    semantic = layer.semantic[1:].numpy()
    expected = whitened(model.llm_item_vectors[1:].double().numpy(), 16)
    np.testing.assert_allclose(np.abs(semantic), np.abs(expected), rtol=1e-3, atol=1e-3)  # up to each axis' sign
    before = layer.fused_rows().detach().clone()
    trainer = LLMRecTrainer(config, model)
    trainer.collect_training_statistics(train_data)
    trainer._train_epoch(train_data, 0)
    after = layer.fused_rows().detach()
    torch.testing.assert_close(after[:, :-6], before[:, :-6], rtol=0, atol=0)  # the LLM's coordinates are frozen
    assert float((after[:, -6:] - before[:, -6:]).abs().max()) > 1e-4  # the null-space ID trained


@pytest.mark.parametrize("model_name", ["SASRecAlphaFuse", "GRU4RecAlphaFuse"])
def test_scores_are_cosine_similarities_over_the_temperature(tmp_path, model_name):
    config, dataset, train_data = built(tmp_path, model_name, alphafuse_temperature=0.2, **SMALL)
    model = build_model(config, train_data).eval()
    batch = next(iter(train_data))
    with torch.no_grad():
        scores = model.full_sort_predict(batch)
        sequence = model.forward(batch["item_id_list"], batch["item_length"])
        items = model.item_embedding.weight
        cosine = F.normalize(sequence, dim=-1) @ F.normalize(items, dim=-1).T
    torch.testing.assert_close(scores, cosine / 0.2, rtol=1e-4, atol=1e-4)
    assert float(scores.abs().max()) <= 1 / 0.2 + 1e-4


def test_raw_vectors_from_the_archetype_store_are_decomposed(tmp_path):
    """alphafuse_source: raw reads the work folder's assembled.f32 in .itememb row order (all 2 x hidden columns)."""
    from test_new_items import archetype_settings
    from tiny_llm import build_tiny_llm

    from recbole_genair.archetype import run_archetype

    folder = copy_dataset(tmp_path, "arch")
    (folder / "arch.itememb").unlink()
    run_archetype(archetype_settings(folder, str(build_tiny_llm(tmp_path / "llm"))))
    config, dataset, train_data = built(tmp_path, "SASRecAlphaFuse", data_path=str(tmp_path / "data"), dataset="arch",
                                        alphafuse_null_dim=6)
    model = build_model(config, train_data)
    ids = [line.split("\t")[0] for line in (folder / "arch.itememb").read_text().splitlines()[1:]]
    raw = np.fromfile(folder / "arch.archetype-work" / "assembled.f32", dtype=np.float32).reshape(len(ids), 64)
    x = np.zeros((dataset.item_num, 64))
    for row, token in enumerate(ids):
        x[dataset.token2id(dataset.iid_field, token)] = raw[row]
    expected = whitened(x[1:], 16)
    np.testing.assert_allclose(np.abs(model.item_embedding.semantic[1:].numpy()), np.abs(expected), rtol=1e-3, atol=1e-3)
    # without the work folder: the error names the command that remakes it and the fallback
    (folder / "arch.archetype-work" / "assembled.f32").unlink()
    config, _, train_data = built(tmp_path, "SASRecAlphaFuse", data_path=str(tmp_path / "data"), dataset="arch",
                                  alphafuse_null_dim=6)
    with pytest.raises(ItemEmbeddingError, match="--pca_only=True.*alphafuse_source: itememb"):
        build_model(config, train_data)


@pytest.mark.parametrize("overrides, message", [
    (dict(alphafuse_null_dim=16), "alphafuse_null_dim must be between 1 and 15"),
    (dict(alphafuse_source="pca"), "alphafuse_source must be"),
    (dict(alphafuse_id_init="ortho"), "alphafuse_id_init must be"),
    (dict(alphafuse_temperature=0), "alphafuse_temperature must be positive"),
])
def test_bad_settings_are_refused_by_name(tmp_path, overrides, message):
    config, _, train_data = built(tmp_path, "SASRecAlphaFuse", **{**SMALL, **overrides})
    with pytest.raises(ValueError, match=message):
        build_model(config, train_data)


def test_the_tiny_itememb_without_a_work_folder_needs_the_fallback(tmp_path):
    config, _, train_data = built(tmp_path, "SASRecAlphaFuse", alphafuse_null_dim=6)
    with pytest.raises(ItemEmbeddingError, match="alphafuse_source: itememb"):
        build_model(config, train_data)


def test_the_null_space_is_half_the_width_by_default(tmp_path):
    """`alphafuse_null_dim: ~` (the default): half the item width, as the authors' 64 of 128; ml-100k runs at width 64."""
    config, _, train_data = built(tmp_path, "SASRecAlphaFuse", alphafuse_source="itememb")
    assert config["alphafuse_null_dim"] is None and config["hidden_size"] == 16
    assert build_model(config, train_data).item_embedding.null_dim == 8
