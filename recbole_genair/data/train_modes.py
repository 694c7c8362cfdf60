"""Training data of `train_mode: all_positions`: each training sequence once per epoch, a target at every position.

RecBole's sequential dataset turns a user's training sequence i_1 .. i_n into one sample per prefix,
(i_{t-M} .. i_{t-1}, i_t) for t = 2 .. n (at most M = MAX_ITEM_LIST_LENGTH history items); `prefix` mode
(RecBole's) trains each sample at its last position. `all_positions` keeps, per user, the sample that
ends the sequence and every M-th one before it (windows), and trains every position of a window's
history against the next item:

    next item (causal backbones)   position j -> history[j + 1]; the last real position -> the sample's target
    cloze (BERT4Rec)               the window's items (history then target, the last M) are masked by RecBole

Each (prefix, next item) pair of prefix mode is a target exactly once per epoch; its history is the part
of the prefix inside its window (the whole prefix when the sequence has at most M + 1 items). The
dataset, the split, the statistics computed from the training split and the validation and test loaders
stay RecBole's: only the training loader changes, so RecBole's own models train on the same data.
"""
from logging import getLogger

import numpy as np
import torch
from recbole.data.dataloader import TrainDataLoader
from recbole.data.interaction import Interaction
from recbole.utils import InputType

TRAIN_MODES = ("prefix", "all_positions")
NEXT_ITEM, CLOZE = "next_item", "cloze"


class TrainDataError(ValueError):
    """Training data or settings that all-position training cannot use."""


def check_train_mode(train_mode):
    """`train_mode` (None: prefix), refused with the valid values when unknown."""
    mode = "prefix" if train_mode is None else train_mode
    if mode not in TRAIN_MODES:
        raise TrainDataError(f"train_mode: {train_mode!r} is not a training mode; choose one of "
                             f"{' | '.join(TRAIN_MODES)} (YAML or --train_mode=...).")
    return mode


def window_samples(train_dataset, stride=None):
    """Indices of the window samples of RecBole's sequential training split, in the split's order, and per
    window how many of its last positions carry a target.

    Windows end at each user's last sample and every `stride` samples before it (default and at most
    M = MAX_ITEM_LIST_LENGTH: windows that do not overlap). With stride S < M a window trains its last S
    positions only, the earlier ones being context (trained by the window before), except each user's
    first window, which trains all of its positions: every pair is still a target once per epoch, and
    sees at least M - S history items where its prefix has them.

    The split holds each user's samples together and in time order (RecBole's leave-one-out and ratio
    splits of a time-ordered dataset); that is checked, since the windows are read from it: each sample's
    history is the previous sample's history plus the previous target, cut to the last M items.
    """
    feat = train_dataset.inter_feat
    users = feat[train_dataset.uid_field].numpy()
    targets = feat[train_dataset.iid_field].numpy()
    lengths = feat[train_dataset.item_list_length_field].numpy()
    histories = feat[train_dataset.item_id_list_field].numpy()
    max_len = histories.shape[1]
    stride = max_len if stride is None else stride
    if not isinstance(stride, int) or not 1 <= stride <= max_len:
        raise TrainDataError(f"all_positions_stride: {stride!r} must be an integer from 1 to MAX_ITEM_LIST_LENGTH "
                             f"({max_len}), or ~ for windows that do not overlap.")
    if not len(users):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    same_user = users[1:] == users[:-1]
    follows = (lengths[1:] == np.minimum(lengths[:-1] + 1, max_len)) & (
        histories[np.arange(1, len(users)), lengths[1:] - 1] == targets[:-1])
    if len(np.unique(users)) != len(starts) or not (lengths[starts] == 1).all() or not follows[same_user].all():
        raise TrainDataError(
            f"train_mode: all_positions reads each user's training sequence from RecBole's sequential training "
            f"split, whose samples must be grouped by user and in time order ({train_dataset.dataset_name}'s are "
            f"not: set eval_args order to TO and group_by to user, or use train_mode: prefix).")
    ends = np.r_[starts[1:], len(users)]
    position_from_end = np.repeat(ends, ends - starts) - 1 - np.arange(len(users))
    last_position = np.repeat(ends - starts, ends - starts) - 1  # of the user's first sample
    windows = np.flatnonzero(position_from_end % stride == 0)
    has_earlier = position_from_end[windows] + stride <= last_position[windows]
    return windows, np.where(has_earlier, stride, max_len)


def next_items(history, length, target):
    """`B x L` next item of every position: the history shifted by one, the target at position length - 1, 0 after."""
    targets = torch.zeros_like(history)
    targets[:, :-1] = history[:, 1:]
    targets[torch.arange(len(history)), length - 1] = target
    return targets


def whole_windows(history, length, target):
    """(`B x L` items, lengths) of each history followed by its target, the last L items where that is longer."""
    extended = torch.cat([history, torch.zeros_like(history[:, :1])], dim=1)
    extended[torch.arange(len(history)), length] = target
    full = length == history.size(1)
    items = torch.where(full[:, None], extended[:, 1:], extended[:, :-1])
    return items, torch.clamp(length + 1, max=history.size(1))


class AllPositionTrainDataLoader(TrainDataLoader):
    """RecBole's training loader over the window samples only, each made an all-position sample.

    next item: `item_id` becomes the `B x L` next item of every position (0 at padding) and, with a
    sampled loss (BPR), `neg_item_id` one negative per real position from RecBole's sampler, excluding
    what it excludes in prefix mode (for sequential models: the position's own target). cloze: the history becomes the window's
    items before RecBole's transform (`mask_itemseq`) masks them.
    """

    def __init__(self, config, dataset, sampler, windows, trained, objective, shuffle=False):
        self.windows = np.asarray(windows)
        self.trained = torch.as_tensor(trained)  # per window: how many of its last positions carry a target
        self.objective = objective
        super().__init__(config, dataset, sampler, shuffle=shuffle)
        self._check_settings(config)

    def _init_batch_size_and_step(self):
        # RecBole sizes the loader from `sample_size` (every prefix sample): one window per sample here.
        self.sample_size = len(self.windows)
        super()._init_batch_size_and_step()

    @property
    def samples_negatives(self):
        return self.neg_sample_args["distribution"] != "none" and self.neg_sample_args["sample_num"] != "none"

    def _check_settings(self, config):
        if self.objective != NEXT_ITEM:
            return
        if config["transform"]:
            raise TrainDataError(f"transform: {config['transform']} rewrites the input sequences, which train_mode: "
                                 f"all_positions also uses as next-item targets; unset it or use train_mode: prefix.")
        if self.samples_negatives and (self.dl_format != InputType.PAIRWISE or self.neg_sample_num != 1
                                       or self.neg_sample_args.get("dynamic", False)):
            raise TrainDataError(
                f"train_mode: all_positions samples one negative per position (loss_type: BPR); "
                f"train_neg_sample_args {self.neg_sample_args} asks for another scheme: set sample_num: 1 "
                f"and dynamic: False, or use train_mode: prefix.")

    def collate_fn(self, index):
        dataset = self._dataset
        data = dataset[self.windows[np.asarray(index)]]
        history, length = data[dataset.item_id_list_field], data[dataset.item_list_length_field]
        target = data[self.iid_field]
        if self.objective == CLOZE:
            items, lengths = whole_windows(history, length, target)
            data.update(Interaction({dataset.item_id_list_field: items, dataset.item_list_length_field: lengths}))
            return self._neg_sampling(self.transform(dataset, data))
        targets = next_items(history, length, target)
        context = torch.arange(targets.size(1))[None, :] < (length - self.trained[np.asarray(index)])[:, None]
        targets[context] = 0  # positions trained by an earlier, overlapping window (all_positions_stride)
        data[self.iid_field] = targets
        if self.samples_negatives:
            real = targets > 0
            users = data[self.uid_field][:, None].expand_as(targets)[real].numpy()
            negatives = torch.zeros_like(targets)
            negatives[real] = self._sampler.sample_by_user_ids(users, targets[real].numpy(), 1)
            data[self.neg_item_id] = negatives
        return data


def all_position_loader(config, train_data, objective):
    """The all-position training loader replacing RecBole's `train_data` (same dataset, sampler and seed).

    Logs the windows and the pairs per epoch, and the users skipped for a training sequence shorter than
    two items (they hold no (prefix, next item) pair, in either mode: RecBole's augmentation drops them).
    """
    train_dataset = train_data._dataset
    stride = config["all_positions_stride"]
    if stride is not None and objective == CLOZE and stride != train_dataset.max_item_list_len:
        if "all_positions_stride" in getattr(config, "external_config_dict", {}):
            raise TrainDataError(f"all_positions_stride: {stride} overlaps next-item windows (SASRec, GRU4Rec and the "
                                 f"models on them); {config['model']}'s cloze masks whole windows: leave it at ~.")
        # a dataset's default for the next-item models (props/dataset/ml-100k.yaml): cloze windows stay whole
        getLogger().info(f"all_positions_stride: {stride} (dataset default) is for next-item models; "
                         f"{config['model']}'s cloze trains on whole windows")
        stride = None
    windows, trained = window_samples(train_dataset, stride)
    loader = AllPositionTrainDataLoader(config, train_dataset, train_data._sampler, windows, trained, objective,
                                        shuffle=config["shuffle"])
    users = train_dataset.inter_feat[train_dataset.uid_field].numpy()
    skipped = train_dataset.user_num - 1 - np.unique(users).size  # user id 0 is padding
    getLogger().info(
        f"train_mode: all_positions ({objective.replace('_', ' ')}): {len(windows)} windows of at most "
        f"{train_dataset.max_item_list_len} positions (a new window every {stride or train_dataset.max_item_list_len} "
        f"pairs) from {np.unique(users).size} users per epoch, holding the "
        f"{len(users)} (prefix, next item) pairs of prefix mode; {skipped} users skipped (training sequence "
        f"shorter than two items).")
    return loader
