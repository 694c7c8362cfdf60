"""FAERec: gated fusion, the two alignment losses and their cosine curriculum over epochs."""
import math
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import assert_one_epoch_trains_and_reports_its_ndcg, built, raw_training_sequences, tiny_config
from recbole_genair.quick_start import build_model, run_recbole_genair
from recbole_genair.trainer import LLMRecTrainer


@pytest.mark.parametrize("model", ["SASRecFAERec", "GRU4RecFAERec", "BERT4RecFAERec"])
def test_model_trains_one_epoch_and_reports_the_ndcg_of_its_scores(tmp_path, model):
    """One epoch moves the item table; the reported test NDCG@10 is the one the model's scores give.

    Fails if the item table does not train (the gated fusion layer frozen) or the test users are scored in
    training mode.
    """
    assert_one_epoch_trains_and_reports_its_ndcg(tmp_path, model)


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


def test_gate_is_an_mlp_of_both_branches_and_fuses_the_evaluation_table(tmp_path):
    """g = sigmoid(W2 GELU(W1 [id; mapped llm] + b1) + b2) per dimension (no dropout in evaluation);
    the evaluation table is g * id + (1 - g) * mapped llm (no normalisation, as the authors' code), computed once.

    Fails if the gate reads its inputs in the other order ([llm; id]).
    """
    config, dataset, train_data = built(tmp_path, "SASRecFAERec", train_mode="prefix")
    layer = build_model(config, train_data).eval().item_embedding
    items = torch.arange(1, dataset.item_num)
    with torch.no_grad():
        id_emb, llm_emb = layer.branches(items)
        w1, w2 = layer.gate[0], layer.gate[3]
        hidden = F.gelu(torch.cat([id_emb, llm_emb], dim=-1).double() @ w1.weight.double().T + w1.bias.double())
        gate = torch.sigmoid(hidden @ w2.weight.double().T + w2.bias.double())
        torch.testing.assert_close(layer.gate_values(id_emb, llm_emb).double(), gate, rtol=1e-5, atol=1e-6)
        table = layer.weight
        assert layer.weight is table  # computed once per evaluation
        fused = (gate * id_emb + (1 - gate) * llm_emb).float()
        assert layer.layer_norm is None
        torch.testing.assert_close(table[1:], fused, rtol=1e-5, atol=1e-5)


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


def reference_alignment_losses(model, dataset, ids, split="batch_median"):
    """(InfoNCE, Barlow Twins on the head + on the tail) of the ID and mapped LLM embeddings of `ids`.

    Head (training interactions counted from the raw file): batch_median, the items above the median count
    of `ids` (the lower middle value for an even number, as torch.median); ratio, the ceil(20%) items with
    the most training interactions.
    """
    with torch.no_grad():
        id_emb, llm_emb = (x.double().numpy() for x in model.item_embedding.branches(torch.tensor(ids)))
    counts = Counter(dataset.token2id(dataset.iid_field, t) for seq in raw_training_sequences().values() for t in seq)
    if split == "batch_median":
        median = sorted(counts[i] for i in ids)[(len(ids) - 1) // 2]
        is_head = np.array([counts[i] > median for i in ids])
    else:
        ranked = sorted(range(1, dataset.item_num), key=lambda i: (-counts[i], i))
        head = set(ranked[: math.ceil(0.2 * (dataset.item_num - 1))])
        is_head = np.array([i in head for i in ids])
    assert 0 < is_head.sum() < len(ids)  # both halves really enter the feature-level loss
    feat = (reference_barlow_twins(id_emb[is_head], llm_emb[is_head])
            + reference_barlow_twins(id_emb[~is_head], llm_emb[~is_head]))
    return reference_info_nce(id_emb, llm_emb, 0.05), feat


def batch_items(batch):
    """The distinct real items of a training batch: its (unmasked) input sequences and its targets."""
    return sorted(({int(i) for i in batch["item_id_list"].flatten()} | {int(i) for i in batch["item_id"]}) - {0})


@pytest.mark.parametrize("split", ["batch_median", "ratio"])
def test_alignment_losses_match_reference(tmp_path, split):
    config, dataset, train_data = built(tmp_path, "SASRecFAERec", train_mode="prefix", head_split=split)
    model = build_model(config, train_data).eval()  # no dropout: one deterministic mapping
    batch = next(iter(train_data))
    with torch.no_grad():
        item_loss, feat_loss = model.alignment_losses(batch)
    expected_item, expected_feat = reference_alignment_losses(model, dataset, batch_items(batch), split)
    assert item_loss.item() == pytest.approx(expected_item, rel=1e-4)
    assert feat_loss.item() == pytest.approx(expected_feat, rel=1e-4)


def test_loss_terms_are_their_weights_times_their_losses_at_the_trainers_epoch(tmp_path):
    """After the trainer's epoch 7, with align_weight 0.3: (L_rec, 0.3 w_item(7) L_item, 0.3 w_feat(7) L_feat),
    L_rec the cross-entropy of the next item over the fused table.

    Fails if calculate_loss weighs the alignment losses with epoch 0's curriculum.
    """
    config, dataset, train_data = built(tmp_path, "SASRecFAERec", align_weight=0.3, train_mode="prefix")
    model = build_model(config, train_data)
    trainer = LLMRecTrainer(config, model)
    trainer._train_epoch(train_data, 7)  # the trainer tells the model its epoch
    model.eval()
    batch = next(iter(train_data))
    with torch.no_grad():
        rec, item_term, feat_term = (x.item() for x in model.calculate_loss(batch))
        logits = model.forward(batch["item_id_list"], batch["item_length"]) @ model.item_embedding.weight.T
        expected_rec = F.cross_entropy(logits, batch["item_id"]).item()
    item_loss, feat_loss = reference_alignment_losses(model, dataset, batch_items(batch))
    w_item, w_feat = expected_weights(7)
    assert w_feat == pytest.approx(0.0448, abs=1e-4)  # epoch 0 would give w_feat = 0
    assert rec == pytest.approx(expected_rec, rel=1e-5)
    assert item_term == pytest.approx(0.3 * w_item * item_loss, rel=1e-4)
    assert feat_term == pytest.approx(0.3 * w_feat * feat_loss, rel=1e-4)


def test_bert4rec_mask_token_never_enters_the_alignment_losses(tmp_path):
    """The batch's input sequences hold the mask token (id n_items); the alignment items are the real items
    of the unmasked sequences and targets, and the losses are computed on them.

    Fails if FAERec aligns the items of BERT4Rec's masked sequences.
    """
    config, dataset, train_data = built(tmp_path, "BERT4RecFAERec")
    model = build_model(config, train_data).eval()
    batch = next(iter(train_data))
    assert (batch["Mask_item_id_list"] == dataset.item_num).any()
    assert model.alignment_items(batch).tolist() == batch_items(batch)
    with torch.no_grad():
        item_loss, feat_loss = model.alignment_losses(batch)
    expected_item, expected_feat = reference_alignment_losses(model, dataset, batch_items(batch))
    assert item_loss.item() == pytest.approx(expected_item, rel=1e-4)
    assert feat_loss.item() == pytest.approx(expected_feat, rel=1e-4)


@pytest.mark.parametrize("model_name", ["SASRecFAERec", "GRU4RecFAERec", "BERT4RecFAERec"])
def test_fused_rows_start_at_the_backbones_scale(tmp_path, model_name):
    """With pca_init_scale: backbone both branches, and so the fused rows, start near the std of the backbone's
    random item table; the earlier LayerNorm fixed every row at norm sqrt(h) instead."""
    from recbole.model.sequential_recommender import BERT4Rec, GRU4Rec, SASRec
    from recbole.utils import init_seed

    config, dataset, train_data = built(tmp_path, model_name)
    layer = build_model(config, train_data).eval().item_embedding
    backbone = {"SASRecFAERec": SASRec, "GRU4RecFAERec": GRU4Rec, "BERT4RecFAERec": BERT4Rec}[model_name]
    init_seed(config["seed"], config["reproducibility"])
    reference = float(backbone(config, train_data.dataset).item_embedding.weight[1:dataset.item_num].std())
    with torch.no_grad():
        id_emb, llm_emb = layer.branches(torch.arange(1, dataset.item_num))
        fused = layer.weight[1:dataset.item_num]
    assert float(id_emb.std()) == pytest.approx(reference, rel=1e-3)
    assert float(llm_emb.std()) == pytest.approx(reference, rel=1e-3)
    assert 0.4 * reference < float(fused.std()) < 1.2 * reference
    config, _, train_data = built(tmp_path, model_name, fusion_norm="layernorm")
    normed = build_model(config, train_data).eval().item_embedding.weight[1:dataset.item_num].detach()
    h = normed.size(1)
    norms = normed.norm(dim=1)  # sqrt(h) up to LayerNorm's eps, whatever the rows were
    assert float(norms.min()) > 0.85 * math.sqrt(h) and float(norms.max()) < math.sqrt(h) + 1e-3


@pytest.mark.parametrize("key, value", [("fusion_norm", "l2"), ("head_split", "median")])
def test_unknown_fusion_settings_are_refused_by_name(tmp_path, key, value):
    config, _, train_data = built(tmp_path, "SASRecFAERec", **{key: value})
    with pytest.raises(ValueError, match=f"{key} must be"):
        build_model(config, train_data)
