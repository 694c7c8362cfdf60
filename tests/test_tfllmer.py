"""TF-LLMER: Rec-PCA (our reading of the paper) and item-embedding normalisation."""
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from conftest import (TEST_DATA, assert_one_epoch_trains_and_reports_its_ndcg, built, copy_dataset,
                      raw_training_sequences)
from recbole_genair.model.layers import LLMItemEmbedding
from recbole_genair.model.projection import normalized_laplacian, pca_basis, pca_item_table
from recbole_genair.quick_start import build_model


@pytest.mark.parametrize("model", ["SASRecTFLLMER", "GRU4RecTFLLMER", "BERT4RecTFLLMER"])
def test_model_trains_one_epoch_and_reports_the_ndcg_of_its_scores(tmp_path, model):
    """One epoch moves the item table; the reported test NDCG@10 is the one the model's scores give.

    Fails if the item table does not train (the projector frozen) or the test users are scored in training mode.
    """
    assert_one_epoch_trains_and_reports_its_ndcg(tmp_path, model)


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


def file_vectors(dataset, path=TEST_DATA / "genair-test" / "genair-test.itememb"):
    """The `.itememb` vectors of items 1 .. n-1 in internal id order, read from the text file."""
    x = np.zeros((dataset.item_num - 1, 24))
    with open(path, encoding="utf-8") as f:
        next(f)
        for line in f:
            token, vector = line.rstrip("\n").split("\t")
            x[dataset.token2id(dataset.iid_field, token) - 1] = np.array(vector.split(), dtype=np.float64)
    return x


def reference_rec_pca(dataset, k, lam):
    """Rec-PCA by hand: top-k eigenvectors of Xc^T (I - lam L) Xc, L = I - D^-1/2 A D^-1/2 over items 1..n-1.

    A(i, j) = number of users whose training sequence (raw file, minus the last two items) holds both;
    an item without co-occurrences gets a zero row and column in L.
    """
    n = dataset.item_num - 1
    adjacency = np.zeros((n, n))
    for items in raw_training_sequences().values():
        ids = sorted(set(dataset.token2id(dataset.iid_field, items)))
        for a in ids:
            for b in ids:
                if a != b:
                    adjacency[a - 1, b - 1] += 1
    degree = adjacency.sum(1)
    inv_sqrt = np.where(degree > 0, 1 / np.sqrt(np.where(degree > 0, degree, 1)), 0.0)
    laplacian = np.diag((degree > 0).astype(float)) - inv_sqrt[:, None] * adjacency * inv_sqrt[None, :]
    xc = file_vectors(dataset)
    xc = xc - xc.mean(0)
    values, vectors = np.linalg.eigh(xc.T @ (np.eye(n) - lam * laplacian) @ xc)
    return xc @ vectors[:, np.argsort(values)[::-1][:k]]


def assert_equal_up_to_column_sign(got, expected):
    signs = np.sign((got * expected).sum(0))
    np.testing.assert_allclose(got * signs, expected, rtol=1e-4, atol=1e-4)


def rec_pca_table(tmp_path, lam, **overrides):
    config, dataset, train_data = built(tmp_path, "SASRecTFLLMER", recpca_dim=8, recpca_lambda=lam, **overrides)
    return dataset, build_model(config, train_data).item_embedding.llm_table.double().numpy()


def test_rec_pca_table_is_built_from_the_training_cooccurrence_laplacian(tmp_path):
    """Fails if the Laplacian's rows are shifted against the items (row 0 padding kept instead of dropped)."""
    dataset, table = rec_pca_table(tmp_path, 0.5)
    assert not table[0].any()
    assert_equal_up_to_column_sign(table[1:], reference_rec_pca(dataset, 8, 0.5))


def test_lambda_zero_is_plain_pca_and_lambda_half_is_not(tmp_path):
    """Fails if recpca_lambda does not reach pca_basis (every lambda then gives plain PCA)."""
    dataset, plain = rec_pca_table(tmp_path / "0", 0.0)
    _, rec = rec_pca_table(tmp_path / "half", 0.5)
    assert_equal_up_to_column_sign(plain[1:], reference_rec_pca(dataset, 8, 0.0))
    # the spans differ: their largest principal angle is about 18 degrees (cosine 0.95)
    q0, q1 = np.linalg.qr(plain[1:])[0], np.linalg.qr(rec[1:])[0]
    assert np.linalg.svd(q0.T @ q1, compute_uv=False).min() < 0.98


def test_pairs_only_in_validation_and_test_change_nothing(tmp_path):
    """One user's validation and test items are replaced by two items that user never saw: the
    training split, and with it the Rec-PCA table of every item, stays the same.

    Fails if the co-occurrence graph is counted on all interactions.
    """
    dataset, original = rec_pca_table(tmp_path / "original", 0.5)
    folder = copy_dataset(tmp_path, "heldout")
    inter = pd.read_csv(folder / "heldout.inter", sep="\t", dtype=str)
    user = inter[inter.columns[0]] == "1"
    seen = set(inter.loc[user, inter.columns[1]])
    last_two = inter[user].sort_values(inter.columns[3], key=lambda t: t.astype(float)).index[-2:]
    inter.loc[last_two, inter.columns[1]] = [t for t in map(str, range(1, 61)) if t not in seen][:2]
    inter.to_csv(folder / "heldout.inter", sep="\t", index=False)
    changed, table = rec_pca_table(tmp_path, 0.5, data_path=str(tmp_path / "data"), dataset="heldout")
    tokens = [str(t) for t in range(1, 61)]
    np.testing.assert_allclose(table[changed.token2id(changed.iid_field, tokens)],
                               original[dataset.token2id(dataset.iid_field, tokens)], atol=1e-6)


@pytest.mark.parametrize("model_name", ["SASRecTFLLMER", "BERT4RecTFLLMER"])
def test_trainable_mode_starts_from_rec_pca_normalised_and_trains(tmp_path, model_name):
    """tfllmer_table: trainable: a trainable table initialised from Rec-PCA (k = width), rows at the norm scale."""
    config, dataset, train_data = built(tmp_path, model_name, tfllmer_table="trainable", norm_scale=1.5)
    model = build_model(config, train_data)
    layer = model.item_embedding
    rec_pca = build_model(built(tmp_path, model_name)[0], train_data).item_embedding.llm_table  # the frozen mode's table
    assert layer.table.requires_grad and layer.table.shape == (dataset.item_num - 1, 16)
    torch.testing.assert_close(layer.table.detach(), rec_pca[1:])
    rows = layer.weight[1:dataset.item_num]
    torch.testing.assert_close(rows.norm(dim=1), torch.full((dataset.item_num - 1,), 1.5))
    assert not any("projector" in name for name, _ in model.named_parameters())
    assert "no trained row" in model.cannot_add_items  # Recommender.add_items refuses it, saying why
    assert_one_epoch_trains_and_reports_its_ndcg(tmp_path, model_name, tfllmer_table="trainable")


def test_trainable_mode_needs_the_item_width_and_unknown_modes_are_refused(tmp_path):
    config, _, train_data = built(tmp_path, "SASRecTFLLMER", tfllmer_table="trainable", recpca_dim=8)
    with pytest.raises(ValueError, match="recpca_dim must be 16"):
        build_model(config, train_data)
    config, _, train_data = built(tmp_path, "SASRecTFLLMER", tfllmer_table="learned")
    with pytest.raises(ValueError, match="tfllmer_table must be 'frozen' or 'trainable'"):
        build_model(config, train_data)
