"""TF-LLMER: Rec-PCA (our reading of the paper) and item-embedding normalisation."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from conftest import assert_trains_and_evaluates, built
from recbole_genair.model.layers import LLMItemEmbedding
from recbole_genair.model.projection import normalized_laplacian, pca_basis, pca_item_table
from recbole_genair.quick_start import build_model


@pytest.mark.parametrize("model", ["SASRecTFLLMER", "GRU4RecTFLLMER", "BERT4RecTFLLMER"])
def test_model_trains_one_epoch_and_evaluates(tmp_path, model):
    assert_trains_and_evaluates(tmp_path, model)


def chain_graph(n):
    """Items 0 - 1 - 2 - ... - (n-1), each edge of weight 1."""
    upper = sp.diags(np.ones(n - 1), 1, shape=(n, n))
    return (upper + upper.T).tocsr()


def total_variation(z, laplacian):
    return float(np.trace(z.T @ (laplacian @ z)))


def test_lambda_zero_is_plain_pca_up_to_sign():
    x = np.random.default_rng(0).normal(size=(30, 8)) * np.arange(1, 9)
    _, w = pca_basis(x, 3, normalized_laplacian(chain_graph(30)), lam=0.0)
    _, _, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
    np.testing.assert_allclose(np.abs(w.T @ vt[:3].T), np.eye(3), atol=1e-8)


def test_rec_pca_lowers_graph_total_variation():
    """Coordinate 0 has the most variance but is noise on the chain; coordinate 1 is smooth along it."""
    n = 40
    rng = np.random.default_rng(1)
    x = np.stack([2.0 * rng.normal(size=n), 2.0 * np.sin(np.linspace(0, 2 * np.pi, n)), 0.1 * rng.normal(size=n)], 1)
    laplacian = normalized_laplacian(chain_graph(n))
    tv = {}
    for lam in (0.0, 0.9):
        mean, w = pca_basis(x, 1, laplacian, lam)
        tv[lam] = total_variation((x - mean) @ w, laplacian)
    assert tv[0.9] < 0.5 * tv[0.0]


def test_rec_pca_projection_is_orthonormal():
    x = np.random.default_rng(2).normal(size=(25, 6))
    _, w = pca_basis(x, 4, normalized_laplacian(chain_graph(25)), lam=0.7)
    np.testing.assert_allclose(w.T @ w, np.eye(4), atol=1e-10)


def test_item_table_keeps_padding_zero_and_refuses_too_many_components():
    table = torch.randn(6, 3)
    table[0] = 0
    assert torch.count_nonzero(pca_item_table(table, 2)[0]) == 0
    with pytest.raises(ValueError, match="at most 3"):
        pca_item_table(table, 4)


def test_items_enter_backbone_with_the_norm_scale(tmp_path):
    config, dataset, train_data = built(tmp_path, "SASRecTFLLMER", norm_scale=2.0, recpca_dim=8)
    model = build_model(config, train_data)
    weight = model.item_embedding.weight
    assert model.item_embedding.llm_table.shape == (dataset.item_num, 8)  # the frozen Rec-PCA table
    assert torch.count_nonzero(weight[0]) == 0
    torch.testing.assert_close(weight[1:].norm(dim=1), torch.full((dataset.item_num - 1,), 2.0))


def test_normalisation_off_and_learnable_scale(tmp_path):
    config, _, train_data = built(tmp_path, "SASRecTFLLMER", item_normalization=False)
    assert type(build_model(config, train_data).item_embedding) is LLMItemEmbedding
    config, _, train_data = built(tmp_path, "BERT4RecTFLLMER", learnable_norm_scale=True)
    model = build_model(config, train_data)
    assert any(name == "item_embedding.scale" for name, _ in model.named_parameters())
