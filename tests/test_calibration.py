"""Behavioural calibration (GenAIR eqs. 9-14) and the training-split co-occurrence it uses."""
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from conftest import built, copy_dataset, raw_training_sequences, tiny_config
from recbole_genair.config import Config
from recbole_genair.data import create_dataset
from recbole_genair.data.cooccurrence import cooccurrence_matrix
from recbole_genair.model.losses import BehaviouralCalibrationLoss
from recbole_genair.quick_start import build_model, prepare_data
from recbole_genair.trainer import LLMRecTrainer


def reference_loss(table, items, counts, gamma, t, kernel):
    """Direct per-pair computation over ordered batch positions holding different items."""
    c_max = counts.max()
    total, n = 0.0, 0
    for a in items:
        for b in items:
            if a == b:
                continue
            s = math.log1p(counts[a, b]) / math.log1p(c_max)
            w = math.exp(-gamma * s)
            ea = table[a] / np.linalg.norm(table[a])
            eb = table[b] / np.linalg.norm(table[b])
            d2 = float(((ea - eb) ** 2).sum())
            total += w * math.exp(-t * d2) if kernel == "exp" else -w * d2
            n += 1
    return total / n


@pytest.mark.parametrize("kernel", ["exp", "linear"])
def test_loss_matches_per_pair_reference(kernel):
    rng = np.random.default_rng(0)
    n_items = 9
    dense = np.triu(rng.integers(0, 6, size=(n_items, n_items)) * (rng.random((n_items, n_items)) < 0.5), 1)
    dense = dense + dense.T
    dense[0] = dense[:, 0] = 0
    table = rng.normal(size=(n_items, 5))
    items = [3, 1, 4, 1, 5, 8, 2, 6, 5, 3, 0]  # repeats and one padding id
    loss = BehaviouralCalibrationLoss(sp.csr_matrix(dense), gamma=1.5, t=2.0, kernel=kernel)
    got = loss(torch.tensor(table, dtype=torch.float32), torch.tensor(items))
    expected = reference_loss(table, [i for i in items if i > 0], dense, 1.5, 2.0, kernel)
    assert got.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_pairs_that_never_cooccur_get_weight_one():
    loss = BehaviouralCalibrationLoss(sp.csr_matrix(np.array([[0, 0, 0], [0, 0, 3], [0, 3, 0]])), gamma=2.0)
    w = loss.pair_weights(torch.tensor([0, 1, 2]))
    assert w[0, 1] == 1.0 and w[1, 2] == pytest.approx(math.exp(-2.0))


def test_dense_weights_equal_the_sparse_lookup(monkeypatch):
    """Small catalogues keep w(i, j) dense; large ones look it up per step: the same float32 values."""
    rng = np.random.default_rng(1)
    counts = np.triu(rng.integers(0, 9, size=(40, 40)) * (rng.random((40, 40)) < 0.3), 1)
    counts = sp.csr_matrix(counts + counts.T)
    items = torch.tensor([0, 3, 7, 11, 39, 5])
    dense = BehaviouralCalibrationLoss(counts, gamma=3.0)
    monkeypatch.setattr(BehaviouralCalibrationLoss, "DENSE_WEIGHT_ITEMS", 10)
    sparse = BehaviouralCalibrationLoss(counts, gamma=3.0)
    assert dense._dense is not None and sparse._dense is None
    assert torch.equal(dense.pair_weights(items), sparse.pair_weights(items))
    assert (dense.pair_weights(items) < 1.0).any()  # some of these pairs co-occur


def test_unknown_kernel_is_refused():
    with pytest.raises(ValueError, match="calibration_kernel"):
        BehaviouralCalibrationLoss(sp.csr_matrix((3, 3)), kernel="cosine")


def test_gradient_reaches_only_the_projector(tmp_path):
    config, dataset, train_data = built(tmp_path, alpha=1.0, item_residual=False)  # the paper's item table
    model = build_model(config, train_data)
    trainer = LLMRecTrainer(config, model)
    trainer.calibration = trainer._build_calibration(train_data)
    batch = next(iter(train_data))
    with model.item_embedding.shared_table() as table:
        cal = trainer.calibration(table, model.calibration_items(batch))
    cal.backward()
    with_grad = {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad and all(name.startswith("item_embedding.projector.") for name in with_grad)
    assert not model.item_embedding.llm_table.requires_grad


@pytest.mark.parametrize("window", [None, 2])
def test_cooccurrence_counts_training_split_only(tmp_path, window):
    config, dataset, train_data = built(tmp_path)
    got = cooccurrence_matrix(train_data._dataset, window=window).toarray()
    expected = np.zeros_like(got)
    for items in raw_training_sequences().values():
        ids = [dataset.token2id(dataset.iid_field, t) for t in items]
        if window is None:
            for a in set(ids):
                for b in set(ids):
                    if a != b:
                        expected[a, b] += 1
        else:
            for p in range(len(ids)):
                for q in range(p + 1, min(p + window + 1, len(ids))):
                    if ids[p] != ids[q]:
                        expected[ids[p], ids[q]] += 1
                        expected[ids[q], ids[p]] += 1
    np.testing.assert_array_equal(got, expected)


def test_cooccurrence_ignores_validation_and_test_items(tmp_path):
    """Items 98 and 99 occur only as one user's validation and test targets: they co-occur with nothing."""
    folder = copy_dataset(tmp_path, "heldout")
    with open(folder / "heldout.inter", "a", encoding="utf-8") as f:
        for k, item in enumerate([1, 2, 3, 98, 99]):
            f.write(f"999\t{item}\t5\t{990000000 + k}\n")
    with open(folder / "heldout.itememb", "a", encoding="utf-8") as f:
        for item in (98, 99):
            f.write(f"{item}\t" + " ".join(["0.5"] * 24) + "\n")
    config_dict = tiny_config(tmp_path, data_path=str(tmp_path / "data"), dataset="heldout")
    config = Config("SASRecGenAIR", config_dict=config_dict)
    dataset = create_dataset(config)
    train_data, _, _ = prepare_data(config, dataset)
    counts = cooccurrence_matrix(train_data._dataset)
    for token in ("98", "99"):
        assert counts[dataset.token2id(dataset.iid_field, token)].nnz == 0
    one, two = dataset.token2id(dataset.iid_field, ["1", "2"])
    others = sum(1 for items in raw_training_sequences().values() if {"1", "2"} <= set(items))
    assert counts[one, two] == others + 1  # user 999's training items 1, 2, 3 co-occur


def training_counts(dataset):
    """C(i, j): users whose training sequence (raw file) holds both i and j, as a dense n_items x n_items array."""
    counts = np.zeros((dataset.item_num, dataset.item_num))
    for items in raw_training_sequences().values():
        ids = set(dataset.token2id(dataset.iid_field, items))
        for a in ids:
            for b in ids - {a}:
                counts[a, b] += 1
    return counts


@pytest.mark.parametrize("model_name", ["SASRecGenAIR", "BERT4RecGenAIR"])
def test_trainer_adds_alpha_times_the_calibration_loss_of_the_batch_targets(tmp_path, model_name):
    """The step's losses are (the backbone's own loss, alpha * L_cal) with L_cal the per-pair reference over
    the batch's targets: SASRec's next items; BERT4Rec's items hidden by the mask token, never the token.

    Fails if the trainer leaves alpha out of the calibration term.
    """
    config, dataset, train_data = built(tmp_path, model_name, alpha=0.3, train_mode="prefix")
    model = build_model(config, train_data).eval()  # no dropout: the backbone's loss is deterministic
    trainer = LLMRecTrainer(config, model)
    trainer.collect_training_statistics(train_data)
    batch = next(iter(train_data))
    rec, cal = trainer._loss_with_calibration(batch)
    with torch.no_grad():
        assert rec.item() == pytest.approx(model.calculate_loss(batch).item(), rel=1e-6)
        table = model.item_embedding.weight[: dataset.item_num].double().numpy()
    if model_name == "SASRecGenAIR":
        targets = batch["item_id"].tolist()
    else:
        hidden = batch["Mask_item_id_list"] == dataset.item_num  # the mask token's id is n_items
        assert hidden.any()
        targets = batch["item_id_list"][hidden].tolist()
    expected = reference_loss(table, targets, training_counts(dataset), 4.0, 2.0, "exp")
    assert cal.item() == pytest.approx(0.3 * expected, rel=1e-5)


@pytest.mark.parametrize("train_mode", ["prefix", "all_positions"])
def test_ranking_terms_normalisation_multiplies_alpha_by_the_batch_targets(tmp_path, train_mode):
    """`alpha_normalization: ranking_terms`: the calibration term is alpha x (number of targets in the batch) x L_cal,
    the paper's weight against a summed ranking loss; prefix mode has one target per sample, all positions one
    per non-padding position."""
    terms = {}
    for normalization in ("none", "ranking_terms"):
        config, _, train_data = built(tmp_path, "SASRecGenAIR", alpha=0.3, train_mode=train_mode,
                                      alpha_normalization=normalization)
        model = build_model(config, train_data).eval()
        trainer = LLMRecTrainer(config, model)
        trainer.collect_training_statistics(train_data)
        batch = next(iter(train_data))
        terms[normalization] = trainer._loss_with_calibration(batch)[-1].item()
    targets = batch["item_id"]
    n = targets.numel() if train_mode == "prefix" else int((targets > 0).sum())
    assert 1 < n and (train_mode == "prefix" or n < targets.numel())
    assert terms["ranking_terms"] == pytest.approx(n * terms["none"], rel=1e-5)
    with pytest.raises(ValueError, match="alpha_normalization"):
        LLMRecTrainer(built(tmp_path, "SASRecGenAIR", alpha_normalization="sum")[0], model)


def test_gradient_ratio_is_the_two_terms_gradient_norms_on_the_projector(tmp_path):
    """Measured with two separate backward passes by hand; the ratio scales with alpha; each epoch logs one."""
    config, _, train_data = built(tmp_path, "SASRecGenAIR", alpha=0.01, epochs=2, item_residual=False,
                                  train_mode="prefix")  # calculate_loss by hand: the prefix-mode loss
    model = build_model(config, train_data)
    trainer = LLMRecTrainer(config, model)
    trainer.collect_training_statistics(train_data)
    batch = next(iter(train_data))
    params = list(model.item_embedding.projector.parameters())
    model.eval()  # no dropout: the forward passes by hand see the same network

    def norm_of(loss):
        model.zero_grad()
        loss.backward()
        return math.sqrt(sum(float((p.grad ** 2).sum()) for p in params))

    with model.item_embedding.shared_table() as table:
        rank = model.calculate_loss(batch)
        cal = trainer.calibration(table, model.calibration_items(batch))
        ratio = trainer._gradient_ratio(rank, 0.01 * cal)
        doubled = trainer._gradient_ratio(rank, 0.02 * cal)
    model.zero_grad()
    with model.item_embedding.shared_table() as table:
        by_hand_rank = norm_of(model.calculate_loss(batch))
    with model.item_embedding.shared_table() as table:
        by_hand_cal = norm_of(0.01 * trainer.calibration(table, model.calibration_items(batch)))
    assert ratio == pytest.approx(by_hand_cal / by_hand_rank, rel=1e-4)
    assert doubled == pytest.approx(2 * ratio, rel=1e-4) and ratio > 0
    trainer.fit(train_data, saved=False)
    summary = trainer.training_summary()
    assert len(summary["calibration_gradient_ratio"]) == 2 and all(r > 0 for r in summary["calibration_gradient_ratio"])


def test_without_calibration_no_ratio_is_reported(tmp_path):
    config, _, train_data = built(tmp_path, "SASRecGenAIR", alpha=0.0)
    trainer = LLMRecTrainer(config, build_model(config, train_data))
    trainer.fit(train_data, saved=False)
    assert trainer.training_summary()["calibration_gradient_ratio"] is None
