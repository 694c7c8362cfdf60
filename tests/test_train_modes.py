"""train_mode: all_positions (issue 16): the pairs of prefix mode, causal outputs, losses at every position, same evaluation."""
import logging
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch
from recbole.data.interaction import Interaction
from recbole.model.sequential_recommender import SASRec

from conftest import assert_one_epoch_trains_and_reports_its_ndcg, copy_dataset, raw_training_sequences, tiny_config
from recbole_genair.config import Config
from recbole_genair.data import create_dataset
from recbole_genair.data.train_modes import TrainDataError, window_samples
from recbole_genair.model.all_positions import TrainModeError, next_item_loss, sequence_outputs, train_objective
from recbole_genair.quick_start import build_model, prepare_data, run_recbole_genair
from recbole_genair.trainer import LLMRecTrainer
from recbole_genair.utils import get_model

ALL = {"train_mode": "all_positions"}
PREFIX = {"train_mode": "prefix"}
SEQ, LEN, ITEM, NEG = "item_id_list", "item_length", "item_id", "neg_item_id"
# One step that changes nothing and draws no dropout mask: both modes are measured on the same weights.
FROZEN_STEP = {"learning_rate": 0.0, "train_batch_size": 1000, "hidden_dropout_prob": 0.0, "attn_dropout_prob": 0.0,
               "dropout_prob": 0.0, "mapper_dropout": 0.0, "gate_dropout": 0.0}


def prepared(tmp_path, model="SASRec", **overrides):
    """(config, dataset, train, valid, test) of `model` on the tiny dataset, loaders as the run function makes them."""
    config = Config(model, config_dict=tiny_config(tmp_path, **overrides))
    dataset = create_dataset(config)
    return (config, dataset, *prepare_data(config, dataset))


def whole_epoch(loader):
    """Every sample of a training loader in one batch, built by the loader's own collate function."""
    return loader.collate_fn(list(range(loader.sample_size)))


def tokens(dataset, ids):
    return tuple(dataset.id2token(dataset.iid_field, np.asarray(ids, dtype=np.int64)).tolist())


def pairs(dataset, batch):
    """Counter of (user, history, next item), in raw tokens: one per row (prefix) or per real position (all_positions)."""
    users = dataset.id2token(dataset.uid_field, batch["user_id"].numpy())
    out = Counter()
    for b in range(len(users)):
        length, targets = int(batch[LEN][b]), batch[ITEM][b]
        positions = [(length - 1, targets)] if targets.dim() == 0 else [(j, targets[j]) for j in range(length)]
        for j, target in positions:
            if target > 0:  # 0: no target (padding, or context of an overlapping window)
                out[(int(users[b]), tokens(dataset, batch[SEQ][b, : j + 1]), tokens(dataset, [target])[0])] += 1
    return out


def reference_pairs(max_len, windows):
    """(user, history, next item) of every raw training sequence s: prefix mode's (s[t-M:t], s[t]) for t >= 1, or
    with `windows` the windows' (s[start:t], s[t]), windows ending at the last item and every M items before it."""
    out = Counter()
    for user, s in raw_training_sequences().items():
        for end in range(len(s) - 1, 0, -max_len):
            for t in range(max(1, end - max_len + 1), end + 1):
                start = max(0, end - max_len) if windows else max(0, t - max_len)
                out[(user, tuple(s[start:t]), s[t])] += 1
    return out


def test_both_modes_build_the_same_prefix_next_item_pairs(tmp_path):
    """Every training sequence of the tiny dataset fits MAX_ITEM_LIST_LENGTH 10: all_positions trains exactly
    prefix mode's (history, next item) pairs, one window per user, each pair once, in the raw file's order."""
    _, dataset, prefix_train, _, _ = prepared(tmp_path, **PREFIX)
    _, _, all_train, _, _ = prepared(tmp_path, **ALL)
    expected = reference_pairs(10, windows=False)
    assert pairs(dataset, whole_epoch(prefix_train)) == expected
    assert pairs(dataset, whole_epoch(all_train)) == expected
    assert all_train.sample_size == 50 and sum(expected.values()) == prefix_train.sample_size == 317


def test_longer_sequences_are_cut_into_windows_that_keep_every_pair(tmp_path):
    """MAX_ITEM_LIST_LENGTH 3: the windows end at the last item and every 3 items before it; each prefix-mode
    target is trained once per epoch, after the part of its history inside its window; padding has no target."""
    _, dataset, prefix_train, _, _ = prepared(tmp_path, MAX_ITEM_LIST_LENGTH=3, **PREFIX)
    _, _, all_train, _, _ = prepared(tmp_path, MAX_ITEM_LIST_LENGTH=3, **ALL)
    batch = whole_epoch(all_train)
    got, prefix = pairs(dataset, batch), pairs(dataset, whole_epoch(prefix_train))
    assert got == reference_pairs(3, windows=True) and prefix == reference_pairs(3, windows=False)
    assert Counter((u, t) for u, _, t in got.elements()) == Counter((u, t) for u, _, t in prefix.elements())
    assert all_train.sample_size == sum(-(-(len(s) - 1) // 3) for s in raw_training_sequences().values())
    padding = torch.arange(3)[None, :] >= batch[LEN][:, None]
    assert padding.any() and (batch[ITEM][padding] == 0).all() and (batch[ITEM][~padding] > 0).all()


@pytest.mark.parametrize("stride", [1, 2, 4])
def test_overlapping_windows_train_each_pair_once_after_a_longer_history(tmp_path, stride):
    """all_positions_stride S < M: windows every S pairs, each training its last S positions (a user's first
    window all of them): the same targets as prefix mode, once each, with at least M - S history items."""
    max_len = 4
    _, dataset, prefix_train, _, _ = prepared(tmp_path, MAX_ITEM_LIST_LENGTH=max_len, **PREFIX)
    _, _, all_train, _, _ = prepared(tmp_path, MAX_ITEM_LIST_LENGTH=max_len, all_positions_stride=stride, **ALL)
    expected = Counter()
    for user, s in raw_training_sequences().items():
        for end in range(len(s) - 1, 0, -stride):
            for t in range(max(1, end - max_len + 1), end + 1):
                if end - t < stride or end - stride < 1:
                    expected[(user, tuple(s[max(0, end - max_len):t]), s[t])] += 1
    got, prefix = pairs(dataset, whole_epoch(all_train)), pairs(dataset, whole_epoch(prefix_train))
    assert got == expected
    assert Counter((u, t) for u, _, t in got.elements()) == Counter((u, t) for u, _, t in prefix.elements())
    assert min(len(h) for _, h, _ in got) >= 1 and all(
        len(h) >= min(max_len - stride + 1, len(p)) for (_, h, t), (_, p, _) in
        zip(sorted(got.elements(), key=lambda x: (x[0], x[2], len(x[1]))), sorted(prefix.elements(), key=lambda x: (x[0], x[2], len(x[1])))))
    if stride == max_len:
        assert got == pairs(dataset, whole_epoch(prepared(tmp_path, MAX_ITEM_LIST_LENGTH=max_len, **ALL)[2]))


def test_overlapping_windows_are_refused_for_cloze_and_out_of_range(tmp_path):
    with pytest.raises(TrainDataError, match=r"all_positions_stride: 2 overlaps next-item windows.*BERT4Rec's cloze"):
        prepared(tmp_path, "BERT4Rec", MAX_ITEM_LIST_LENGTH=4, all_positions_stride=2, **ALL)
    with pytest.raises(TrainDataError, match=r"all_positions_stride: 5 must be an integer from 1 to MAX_ITEM_LIST_LENGTH \(4\)"):
        prepared(tmp_path, MAX_ITEM_LIST_LENGTH=4, all_positions_stride=5, **ALL)


def test_a_dataset_default_stride_leaves_cloze_windows_whole():
    """props/dataset/ml-100k.yaml sets all_positions_stride for the next-item models; BERT4Rec on ml-100k in
    all_positions mode trains on whole windows instead of refusing (only a stride the user gives is refused)."""
    config = Config("BERT4Rec", "ml-100k", config_dict={"train_mode": "all_positions", "show_progress": False,
                                                        "state": "ERROR"})
    assert config["all_positions_stride"] == 25 and "all_positions_stride" not in config.external_config_dict
    train_data = prepare_data(config, create_dataset(config))[0]
    whole, _ = window_samples(train_data._dataset, None)
    assert np.array_equal(train_data.windows, whole)


@pytest.mark.parametrize("model_name", ["SASRec", "GRU4Rec", "SASRecGenAIR", "GRU4RecFAERec"])
def test_no_position_sees_its_own_target(tmp_path, model_name):
    """The output at position j is prefix mode's output for the history up to j, and stays so when every later
    item (the target of position j among them) is replaced by a random real item: nothing after j reaches it.
    (Padding alone would not show this: a bidirectional encoder masks padding too.)"""
    config, _, train_data, _, _ = prepared(tmp_path, model_name, **ALL)
    model = build_model(config, train_data).eval()
    batch = whole_epoch(train_data)
    seq, length = batch[SEQ], batch[LEN]
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        every = sequence_outputs(model, seq, length)
        for j in range(int(length.max())):
            rows = length > j
            later = torch.arange(seq.size(1))[None, :] > j
            history = seq[rows].masked_fill(later, 0)
            alone = model.forward(history, torch.full((int(rows.sum()),), j + 1))
            scrambled = torch.where(later, torch.randint(1, model.n_items, history.shape, generator=generator), history)
            assert torch.allclose(every[rows, j], alone, atol=1e-5)
            assert torch.allclose(sequence_outputs(model, scrambled, length[rows])[:, : j + 1], every[rows, : j + 1], atol=1e-5)


def one_step(tmp_path, model_name, mode, **overrides):
    """Losses the trainer reports for one step over every training pair (one batch, weights left unchanged)."""
    config, _, train_data, _, _ = prepared(tmp_path, model_name, train_mode=mode, **FROZEN_STEP, **overrides)
    trainer = LLMRecTrainer(config, build_model(config, train_data))
    trainer.collect_training_statistics(train_data)
    assert len(train_data) == 1
    losses = trainer._train_epoch(train_data, 0)
    return losses if isinstance(losses, tuple) else (losses,)


@pytest.mark.parametrize("model_name, n_losses", [
    ("SASRec", 1), ("GRU4Rec", 1), ("SASRecGenAIR", 2), ("SASRecFAERec", 3), ("GRU4RecTFLLMER", 1), ("SASRecLLMInit", 1)])
def test_one_step_over_every_pair_gives_prefix_modes_losses(tmp_path, model_name, n_losses):
    """The histories fit the windows, so one step over the whole epoch gives prefix mode's losses term by term:
    CE over all items averaged over the 317 real positions (the windows hold 3 to 9 positions and 10 slots, so a
    padding position that counted would change it), GenAIR's calibration (same targets) and FAERec's alignment
    losses (same items), each computed once per step by the trainer in either mode."""
    overrides = {"alpha": 0.1} if model_name == "SASRecGenAIR" else {}  # calibration weighs more than its 1e-4
    prefix = one_step(tmp_path, model_name, "prefix", **overrides)
    every = one_step(tmp_path, model_name, "all_positions", **overrides)
    assert len(prefix) == len(every) == n_losses
    assert every == pytest.approx(prefix, rel=1e-5)


@pytest.mark.parametrize("model_name", ["SASRec", "SASRecGenAIR"])
def test_bpr_takes_one_sampled_negative_per_position(tmp_path, model_name):
    """loss_type BPR: one negative per real position (none at padding), never the position's own target (RecBole's
    rule for sequential models); the loss is RecBole's own BPR of the prefix-mode samples with the same pairs and
    negatives."""
    config, _, train_data, _, _ = prepared(tmp_path, model_name, loss_type="BPR", MAX_ITEM_LIST_LENGTH=4, **ALL)
    batch = whole_epoch(train_data)
    targets, negatives = batch[ITEM], batch[NEG]
    real = targets > 0
    assert ((negatives > 0) == real).all() and (~real).any()
    assert (negatives[real] != targets[real]).all()
    model = build_model(config, train_data).eval()
    b, j = real.nonzero(as_tuple=True)
    history = batch[SEQ][b].masked_fill(torch.arange(4)[None, :] > j[:, None], 0)
    samples = Interaction({SEQ: history, LEN: j + 1, ITEM: targets[b, j], NEG: negatives[b, j]})
    with torch.no_grad():
        assert next_item_loss(model, batch).item() == pytest.approx(model.calculate_loss(samples).item(), rel=1e-5)


def epoch_items(tmp_path, model_name, mode, items_of):
    """What `items_of(model, batch)` gives over one epoch of the training loader."""
    config, _, train_data, _, _ = prepared(tmp_path, model_name, train_mode=mode, MAX_ITEM_LIST_LENGTH=3)
    model = build_model(config, train_data)
    return [i for batch in train_data for i in items_of(model, batch).reshape(-1).tolist() if i > 0]


def test_auxiliary_losses_see_the_same_items_in_either_mode(tmp_path):
    """Where sequences are cut into windows (MAX_ITEM_LIST_LENGTH 3), GenAIR's calibration still sees every
    training target once per epoch, and FAERec's alignment the same items, as in prefix mode."""
    calibration = lambda model, batch: model.calibration_items(batch)
    alignment = lambda model, batch: model.alignment_items(batch)
    assert Counter(epoch_items(tmp_path, "SASRecGenAIR", "all_positions", calibration)) == Counter(
        epoch_items(tmp_path, "SASRecGenAIR", "prefix", calibration))
    assert set(epoch_items(tmp_path, "SASRecFAERec", "all_positions", alignment)) == set(
        epoch_items(tmp_path, "SASRecFAERec", "prefix", alignment))


@pytest.mark.parametrize("max_len", [10, 5])
def test_bert4rec_masks_whole_windows(tmp_path, max_len):
    """BERT4Rec's cloze runs on whole windows (history then target: each user's whole training sequence when it
    fits), masked by RecBole's own transform: the masked positions hold the mask token, their targets the items."""
    _, dataset, train_data, _, _ = prepared(tmp_path, "BERT4Rec", MAX_ITEM_LIST_LENGTH=max_len, **ALL)
    batch = whole_epoch(train_data)
    users = dataset.id2token(dataset.uid_field, batch["user_id"].numpy())
    got = Counter((int(u), tokens(dataset, seq[:n])) for u, seq, n in zip(users, batch[SEQ], batch[LEN]))
    expected = Counter((u, tuple(s[max(0, end - max_len + 1): end + 1]))
                       for u, s in raw_training_sequences().items() for end in range(len(s) - 1, 0, -max_len))
    assert got == expected
    masked, index, positive = batch["Mask_item_id_list"], batch["MASK_INDEX"], batch["Pos_item_id"]
    is_mask = masked == dataset.item_num
    assert is_mask.any() and (masked[~is_mask] == batch[SEQ][~is_mask]).all()
    rows = torch.arange(len(masked))[:, None].expand_as(index)
    kept = positive > 0
    assert (batch[SEQ][rows[kept], index[kept]] == positive[kept]).all() and is_mask[rows[kept], index[kept]].all()


def test_a_models_weights_give_the_same_evaluation_in_either_mode(tmp_path):
    """A model trained with all_positions, reloaded into either mode's loaders: the same validation and test
    numbers, which are the ones its run reported; the validation and test splits are the same samples."""
    result = run_recbole_genair(model="SASRecGenAIR", config_dict=tiny_config(tmp_path, **ALL), saved=True)
    state = torch.load(result["saved_model_file"], weights_only=False)["state_dict"]
    numbers, splits = {}, {}
    for mode in ("prefix", "all_positions"):
        config, _, train_data, valid_data, test_data = prepared(tmp_path, "SASRecGenAIR", train_mode=mode)
        model = build_model(config, train_data)
        model.load_state_dict(state)
        trainer = LLMRecTrainer(config, model)
        numbers[mode] = [trainer.evaluate(data, load_best_model=False) for data in (valid_data, test_data)]
        splits[mode] = [(d._dataset.inter_feat[SEQ], d._dataset.inter_feat[ITEM]) for d in (valid_data, test_data)]
    assert numbers["prefix"] == numbers["all_positions"]
    assert numbers["all_positions"] == [result["best_valid_result"], result["test_result"]]
    for (seq_p, item_p), (seq_a, item_a) in zip(splits["prefix"], splits["all_positions"]):
        assert torch.equal(seq_p, seq_a) and torch.equal(item_p, item_a)


@pytest.mark.parametrize("model_name, loss_type", [
    ("SASRec", "CE"), ("SASRec", "BPR"), ("GRU4Rec", "CE"), ("BERT4Rec", "CE"), ("SASRecGenAIR", "CE"),
    ("BERT4RecFAERec", "CE"), ("GRU4RecTFLLMER", "CE"), ("SASRecLLMInit", "CE")])
def test_one_all_position_epoch_trains_and_reports_the_ndcg_of_its_scores(tmp_path, model_name, loss_type):
    """Every backbone and method trains one epoch in all_positions through the run function."""
    assert_one_epoch_trains_and_reports_its_ndcg(tmp_path, model_name, loss_type=loss_type, **ALL)


# Bad input ------------------------------------------------------------------------------------------------

def test_an_unknown_mode_is_refused_with_the_valid_ones(tmp_path):
    with pytest.raises(TrainDataError, match=r"'every_position' is not a training mode; choose one of prefix \| all_positions"):
        run_recbole_genair(model="SASRec", config_dict=tiny_config(tmp_path, train_mode="every_position"), saved=False)


def test_train_batch_size_may_give_one_value_per_mode(tmp_path):
    per_mode = {"prefix": 48, "all_positions": 8}
    for mode, size in per_mode.items():
        config = Config("SASRec", config_dict=tiny_config(tmp_path, train_batch_size=per_mode, train_mode=mode))
        assert config["train_batch_size"] == size
        train_data = prepare_data(config, create_dataset(config))[0]
        assert len(next(iter(train_data))) == size  # the loader really batches that many samples / windows
    config = Config("SASRec", config_dict=tiny_config(tmp_path, train_mode="prefix"),
                    cmd_args=["--train_batch_size={'prefix': 32, 'all_positions': 4}"])
    assert config["train_batch_size"] == 32
    with pytest.raises(ValueError, match=r"train_batch_size gives prefix: 48 but no value for train_mode: all_positions"):
        Config("SASRec", config_dict=tiny_config(tmp_path, train_batch_size={"prefix": 48}, train_mode="all_positions"))


@pytest.mark.parametrize("model_name, why", [
    ("NARM", "reads the whole sequence at once"), ("Caser", "reads the whole sequence at once"),
    ("BPR", "not a sequential model")])
def test_a_model_without_all_position_training_is_refused_by_name(tmp_path, model_name, why):
    with pytest.raises(TrainModeError, match=f"^{model_name} supports train_mode: prefix only \\(.*{why}"):
        run_recbole_genair(model=model_name, config_dict=tiny_config(tmp_path, **ALL), saved=False)


def test_a_model_whose_loss_or_forward_the_mode_would_bypass_is_refused():
    class SASRecWithPenalty(SASRec):
        def calculate_loss(self, interaction):
            return super().calculate_loss(interaction) * 1.0

    class SASRecBidirectional(SASRec):
        def forward(self, item_seq, item_seq_len):
            return super().forward(item_seq, item_seq_len)

    with pytest.raises(TrainModeError, match="SASRecWithPenalty.calculate_loss adds to the ranking loss"):
        train_objective(SASRecWithPenalty, "all_positions")
    with pytest.raises(TrainModeError, match="SASRecBidirectional supports train_mode: prefix only"):
        train_objective(SASRecBidirectional, "all_positions")
    assert train_objective(get_model("SASRecFAERec"), "all_positions") == "next_item"
    assert train_objective(SASRecWithPenalty, "prefix") is None


@pytest.mark.parametrize("settings, message", [
    ({"loss_type": "BPR", "train_neg_sample_args": {"distribution": "uniform", "sample_num": 2}},
     "samples one negative per position"),
    ({"transform": "inverse_itemseq"}, "transform: inverse_itemseq rewrites the input sequences")])
def test_settings_all_positions_cannot_honour_are_refused(tmp_path, settings, message):
    with pytest.raises(TrainDataError, match=message):
        prepared(tmp_path, **settings, **ALL)


def test_training_sequences_shorter_than_two_items_are_skipped_and_counted(tmp_path, caplog):
    """Users 1 and 2 cut to their first interaction: no (prefix, next item) pair, in either mode."""
    path = copy_dataset(tmp_path) / "genair-test.inter"
    inter = pd.read_csv(path, sep="\t").sort_values("timestamp:float", kind="stable")
    inter = inter[~inter["user_id:token"].isin([1, 2]) | ~inter.duplicated("user_id:token")]
    inter.to_csv(path, sep="\t", index=False)
    caplog.set_level(logging.INFO)
    _, _, train_data, _, _ = prepared(tmp_path, data_path=str(tmp_path / "data"), **ALL)
    assert train_data.sample_size == 48
    assert any("48 users per epoch" in r.getMessage() and "2 users skipped (training sequence shorter than two items)"
               in r.getMessage() for r in caplog.records)
