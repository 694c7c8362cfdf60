"""The cold-item protocol (issue 18): a share of the items is held out of training and validation entirely.

`cold_items: f` (0 < f < 1) picks round(f x items) items, the newest by first interaction
(`cold_items_by: newest`) or a random draw (`cold_items_by: random`, from `cold_items_seed`, else the run's
`seed`). Every interaction with them is removed except a user's last one, so they are only test targets
under the leave-one-out split: training, validation, co-occurrence and popularity never see them, and
their test rows are scored from the history like any other. The group metrics' `cold` (no training
interaction) then measures them: Cold NDCG@10 and Cold Hit@10 of the comparison tables.
"""
from logging import getLogger

import numpy as np

COLD_BY = ("newest", "random")


class ColdItemsError(ValueError):
    """A cold-item setting that cannot be used."""


def cold_item_settings(config):
    """(fraction, how, seed) of the protocol, or None when it is off; bad values are refused by name."""
    fraction = config["cold_items"]
    if fraction in (None, 0, 0.0, False):
        return None
    try:
        fraction = float(fraction)
    except (TypeError, ValueError):
        fraction = None
    if fraction is None or not 0.0 < fraction < 1.0:
        raise ColdItemsError(f"cold_items={config['cold_items']!r}: give the share of items to hold out, "
                             f"between 0 and 1 (e.g. 0.1), or ~ to switch the protocol off")
    how = config["cold_items_by"] or "random"
    if how not in COLD_BY:
        raise ColdItemsError(f"cold_items_by={how!r}: use 'newest' (by first interaction) or 'random'")
    eval_args = config["eval_args"] or {}
    split = eval_args.get("split") or {}
    if "LS" not in split or eval_args.get("order") != "TO":
        raise ColdItemsError(f"cold_items needs the leave-one-out split by time (eval_args: split: {{LS: "
                             f"valid_and_test}}, order: TO), where a user's last interaction is the test target; "
                             f"this run has split {split} and order {eval_args.get('order')!r}")
    if how == "newest" and not config["TIME_FIELD"]:
        raise ColdItemsError("cold_items_by=newest needs a time field (TIME_FIELD): use cold_items_by=random")
    seed = config["cold_items_seed"]
    return fraction, how, int(config["seed"] if seed is None else seed)


def choose_cold_items(item_ids, first_seen, fraction, how, seed):
    """The internal ids of the held-out items: the newest by `first_seen` (ties by id) or a seeded random draw."""
    item_ids = np.asarray(item_ids)
    n = int(round(fraction * len(item_ids)))
    if n < 1:
        raise ColdItemsError(f"cold_items={fraction} of {len(item_ids)} items holds out none: raise the share")
    if how == "newest":
        order = np.lexsort((-item_ids, -np.asarray(first_seen, dtype=np.float64)))
        return np.sort(item_ids[order[:n]])
    return np.sort(np.random.default_rng(seed).choice(item_ids, size=n, replace=False))


def hold_out_cold_items(dataset, config):
    """Apply the protocol to `dataset` (before its split); returns the cold items' internal ids, or None if off."""
    settings = cold_item_settings(config)
    if settings is None:
        return None
    fraction, how, seed = settings
    inter = dataset.inter_feat  # a DataFrame until RecBole's build() splits it
    users = np.asarray(inter[dataset.uid_field])
    items = np.asarray(inter[dataset.iid_field])
    times = np.asarray(inter[dataset.time_field], dtype=np.float64) if dataset.time_field else np.arange(len(items))
    present = np.unique(items)
    first_seen = np.full(dataset.item_num, np.inf)
    np.minimum.at(first_seen, items, times)
    cold = choose_cold_items(present, first_seen[present], fraction, how, seed)
    # each user's last interaction (by time, then file order), which the leave-one-out split tests
    order = np.lexsort((np.arange(len(items)), times, users))
    last = np.zeros(len(items), dtype=bool)
    last[order[np.r_[users[order][1:] != users[order][:-1], True]]] = True
    is_cold = np.isin(items, cold)
    keep = ~is_cold | last
    dataset.inter_feat = inter.iloc[np.flatnonzero(keep)].reset_index(drop=True)
    getLogger().info(
        f"cold_items: {len(cold)} of {len(present)} items held out ({how}"
        f"{f', seed {seed}' if how == 'random' else ''}); {int((is_cold & ~last).sum())} of their interactions "
        f"removed, {int((is_cold & last).sum())} kept as test targets")
    dataset.cold_item_ids = cold
    return cold
