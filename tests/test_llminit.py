"""LLMInit: the backbone's ID table starts from a PCA of the `.itememb` vectors."""
import numpy as np
import pytest
import torch

from conftest import TEST_DATA, assert_one_epoch_trains_and_reports_its_ndcg, built
from recbole_genair.quick_start import build_model


@pytest.mark.parametrize("model", ["SASRecLLMInit", "GRU4RecLLMInit", "BERT4RecLLMInit"])
def test_model_trains_one_epoch_and_reports_the_ndcg_of_its_scores(tmp_path, model):
    """One epoch moves the item table; the reported test NDCG@10 is the one the model's scores give.

    Fails if the item table does not train (the ID table frozen) or the test users are scored in training mode.
    """
    assert_one_epoch_trains_and_reports_its_ndcg(tmp_path, model)


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


@pytest.mark.parametrize("model,backbone", [("SASRecLLMInit", "SASRec"), ("GRU4RecLLMInit", "GRU4Rec"),
                                            ("SASRecFAERec", "SASRec")])
def test_backbone_scale_keeps_the_pca_geometry_at_the_random_tables_std(tmp_path, model, backbone):
    """`pca_init_scale: backbone`: the PCA table times one factor, with the std of the item rows of the
    backbone's random table (the same seed builds the same one).

    Fails if the std of the random table is taken with its padding row.
    """
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
    backbone_config, _, _ = built(tmp_path / "backbone", backbone)
    random_rows = build_model(backbone_config, train_data).item_embedding.weight.detach().double().numpy()
    random_rows = random_rows[1: dataset.item_num]
    assert scaled.std() == pytest.approx(random_rows.std(), rel=1e-5)
    bad_config, _, _ = built(tmp_path / "bad", model, pca_init_scale="huge")
    with pytest.raises(ValueError, match="pca_init_scale must be 'backbone' or 'raw'"):
        build_model(bad_config, train_data)


def test_bert4rec_mask_token_keeps_its_random_row(tmp_path):
    """The mask token's row is BERT4Rec's own random row from the same seed; padding stays zero.

    Fails if LLMInit overwrites the mask token's row.
    """
    config, dataset, train_data = built(tmp_path, "BERT4RecLLMInit")
    weight = build_model(config, train_data).item_embedding.weight.detach()
    backbone_config, _, _ = built(tmp_path / "backbone", "BERT4Rec")
    random_weight = build_model(backbone_config, train_data).item_embedding.weight.detach()
    assert weight.shape[0] == dataset.item_num + 1
    assert torch.equal(weight[dataset.item_num], random_weight[dataset.item_num])
    assert not torch.equal(weight[1: dataset.item_num], random_weight[1: dataset.item_num])
    assert not weight[0].any()
