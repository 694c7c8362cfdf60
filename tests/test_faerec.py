"""FAERec: gated fusion, the two alignment losses and their cosine curriculum over epochs."""
import math
from collections import Counter

import numpy as np
import pytest
import torch

from conftest import assert_trains_and_evaluates, built, raw_training_sequences, tiny_config
from recbole_genair.quick_start import build_model, run_recbole_genair
from recbole_genair.trainer import LLMRecTrainer


@pytest.mark.parametrize("model", ["SASRecFAERec", "GRU4RecFAERec", "BERT4RecFAERec"])
def test_model_trains_one_epoch_and_evaluates(tmp_path, model):
    assert_trains_and_evaluates(tmp_path, model)


def test_each_alignment_loss_is_logged(tmp_path, caplog):
    caplog.set_level("INFO")
    run_recbole_genair(model="SASRecFAERec", config_dict=tiny_config(tmp_path, state="INFO"), saved=False)
    line = next(r.getMessage() for r in caplog.records if "epoch 0 training" in r.getMessage())
    assert "rec_loss" in line and "item_align_loss" in line and "feat_align_loss" in line


def expected_weights(epoch, w_max=1.0, w_min=0.9, period=30):
    w_item = (w_max - w_min) * (1 + math.cos(2 * math.pi * epoch / period)) / 2 + w_min
    return w_item, 1 - w_item


def test_curriculum_weights_follow_the_formula(tmp_path):
    config, _, train_data = built(tmp_path, "SASRecFAERec")
    model = build_model(config, train_data)
    for epoch in (0, 7, 15, 30, 44):
        model.set_epoch(epoch)
        assert model.curriculum_weights() == pytest.approx(expected_weights(epoch))
    model.set_epoch(15)
    assert model.curriculum_weights() == pytest.approx((0.9, 0.1))


def test_curriculum_continues_at_the_right_epoch_after_resume(tmp_path):
    config, _, train_data = built(tmp_path, "SASRecFAERec", epochs=2)
    first = LLMRecTrainer(config, build_model(config, train_data))
    first.fit(train_data, saved=True)  # without validation data every epoch is saved; the last is 1
    config["epochs"] = 3
    model = build_model(config, train_data)
    second = LLMRecTrainer(config, model)
    second.resume_checkpoint(first.saved_model_file)
    second.fit(train_data, saved=False)
    assert sorted(second.train_loss_dict) == [2] and model.epoch == 2
    assert model.curriculum_weights() == pytest.approx(expected_weights(2))


def test_gate_lies_in_unit_interval_and_fuses_the_evaluation_table(tmp_path):
    config, dataset, train_data = built(tmp_path, "SASRecFAERec")
    layer = build_model(config, train_data).eval().item_embedding
    items = torch.arange(1, dataset.item_num)
    with torch.no_grad():
        id_emb, llm_emb = layer.branches(items)
        gate = layer.gate_values(id_emb, llm_emb)
        assert gate.shape == id_emb.shape and bool(((gate > 0) & (gate < 1)).all())
        table = layer.weight
        assert layer.weight is table  # computed once per evaluation
        torch.testing.assert_close(table[1:], layer.layer_norm(gate * id_emb + (1 - gate) * llm_emb))


def reference_info_nce(a, b, t):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    n, total = len(a), 0.0
    for i in range(n):
        row = [a[i] @ b[j] / t for j in range(n)]
        col = [a[j] @ b[i] / t for j in range(n)]
        total += -row[i] + math.log(sum(math.exp(s) for s in row))
        total += -col[i] + math.log(sum(math.exp(s) for s in col))
    return total / (2 * n)


def reference_barlow_twins(a, b, offdiag=0.005, eps=1e-5):
    n, h = a.shape
    za = (a - a.mean(0)) / np.sqrt(a.var(0) + eps)
    zb = (b - b.mean(0)) / np.sqrt(b.var(0) + eps)
    loss = 0.0
    for i in range(h):
        for j in range(h):
            c = sum(za[k, i] * zb[k, j] for k in range(n)) / n
            loss += (c - 1) ** 2 if i == j else offdiag * c**2
    return loss


def test_alignment_losses_match_reference(tmp_path):
    config, dataset, train_data = built(tmp_path, "SASRecFAERec")
    model = build_model(config, train_data).eval()  # no dropout: one deterministic mapping
    batch = next(iter(train_data))
    with torch.no_grad():
        item_loss, feat_loss = model.alignment_losses(batch)
        ids = sorted(({int(i) for i in batch["item_id_list"].flatten()} | {int(i) for i in batch["item_id"]}) - {0})
        id_emb, llm_emb = (x.double().numpy() for x in model.item_embedding.branches(torch.tensor(ids)))
    # head: the ceil(20%) items with the most training interactions, counted from the raw file
    counts = Counter(dataset.token2id(dataset.iid_field, t) for seq in raw_training_sequences().values() for t in seq)
    ranked = sorted(range(1, dataset.item_num), key=lambda i: (-counts[i], i))
    head = set(ranked[: math.ceil(0.2 * (dataset.item_num - 1))])
    is_head = np.array([i in head for i in ids])
    assert item_loss.item() == pytest.approx(reference_info_nce(id_emb, llm_emb, 0.05), rel=1e-4)
    expected_feat = reference_barlow_twins(id_emb[is_head], llm_emb[is_head]) + reference_barlow_twins(
        id_emb[~is_head], llm_emb[~is_head]
    )
    assert feat_loss.item() == pytest.approx(expected_feat, rel=1e-4)
