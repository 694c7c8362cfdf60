"""LLMInit: the backbone's ID table starts from a PCA of the `.itememb` vectors."""
import math

import numpy as np
import pytest
import torch

from conftest import TEST_DATA, assert_trains_and_evaluates, built
from recbole_genair.quick_start import build_model


@pytest.mark.parametrize("model", ["SASRecLLMInit", "GRU4RecLLMInit", "BERT4RecLLMInit"])
def test_model_trains_one_epoch_and_evaluates(tmp_path, model):
    assert_trains_and_evaluates(tmp_path, model)


def file_pca(k, whiten=False):
    """Raw item id -> k PCA coordinates of the vectors of the .itememb file, by SVD of the centred rows."""
    with open(TEST_DATA / "genair-test" / "genair-test.itememb", encoding="utf-8") as f:
        next(f)
        rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    x = np.array([[float(v) for v in vector.split(" ")] for _, vector in rows])
    xc = x - x.mean(0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    z = xc @ vt[:k].T
    if whiten:
        z = z / z.std(0)
    return {token: z[i] for i, (token, _) in enumerate(rows)}


@pytest.mark.parametrize("whiten", [False, True])
def test_initial_table_is_the_pca_of_the_file_vectors(tmp_path, whiten):
    config, dataset, train_data = built(tmp_path, "SASRecLLMInit", pca_whiten=whiten, pca_init_scale="raw")
    weight = build_model(config, train_data).item_embedding.weight.detach().double().numpy()
    reference = file_pca(16, whiten)
    tokens = ["1", "23", "49", "60"]
    got = weight[dataset.token2id(dataset.iid_field, tokens)]
    expected = np.stack([reference[t] for t in tokens])
    np.testing.assert_allclose(np.abs(got), np.abs(expected), rtol=1e-4, atol=1e-4)  # PCA's sign is arbitrary
    signs = np.sign(got[0]) * np.sign(expected[0])
    np.testing.assert_allclose(got, expected * signs, rtol=1e-4, atol=1e-4)
    assert not weight[0].any()


@pytest.mark.parametrize("model", ["SASRecLLMInit", "GRU4RecLLMInit", "SASRecFAERec"])
def test_backbone_scale_keeps_the_pca_geometry_at_the_random_tables_std(tmp_path, model):
    """`pca_init_scale: backbone`: the PCA table times one factor, with the std of the backbone's random init."""
    raw_config, dataset, train_data = built(tmp_path / "raw", model, pca_init_scale="raw")
    config, _, _ = built(tmp_path / "scaled", model, pca_init_scale="backbone")
    tables = []
    for c in (raw_config, config):
        layer = build_model(c, train_data).item_embedding
        weight = layer.id_embedding.weight if hasattr(layer, "id_embedding") else layer.weight
        tables.append(weight.detach().double().numpy()[1: dataset.item_num])
    raw, scaled = tables
    factor = scaled.std() / raw.std()
    np.testing.assert_allclose(scaled, raw * factor, rtol=1e-4, atol=1e-7)
    if model.startswith("SASRec"):  # SASRec's random table: N(0, initializer_range = 0.02)
        expected_std = 0.02
    else:  # GRU4Rec's: xavier_normal over an n_items x width matrix
        expected_std = math.sqrt(2.0 / (dataset.item_num + config["embedding_size"]))
    assert scaled.std() == pytest.approx(expected_std, rel=0.1)
    assert raw.std() > 5 * scaled.std()  # the raw PCA coordinates are far larger than a random init
    bad_config, _, _ = built(tmp_path / "bad", model, pca_init_scale="huge")
    with pytest.raises(ValueError, match="pca_init_scale must be 'backbone' or 'raw'"):
        build_model(bad_config, train_data)


def test_bert4rec_mask_token_keeps_its_random_row(tmp_path):
    config, dataset, train_data = built(tmp_path, "BERT4RecLLMInit")
    weight = build_model(config, train_data).item_embedding.weight.detach()
    mask_row = weight[dataset.item_num]
    assert weight.shape[0] == dataset.item_num + 1
    assert 0.005 < mask_row.std().item() < 0.05  # N(0, initializer_range = 0.02)
    assert isinstance(weight, torch.Tensor) and not weight[0].any()
