"""The cold-item protocol (issue 18): a share of the items is held out of training and validation entirely.

`cold_items: f` (0 < f < 1) picks round(f x items) items, the newest by first interaction
(`cold_items_by: newest`) or a random draw (`cold_items_by: random`, from `cold_items_seed`, else the run's
`seed`). Every interaction with them is removed except a user's last one, so they are only test targets
under the leave-one-out split: training, validation, co-occurrence and popularity never see them, and
their test rows are scored from the history like any other. The group metrics' `cold` (no training
interaction) then measures them: Cold NDCG@10 and Cold Hit@10 of the comparison tables.

`cold_valid_items: f` (issue 32) holds out a second, disjoint set of round(f x items) items the same way,
kept only where one is a user's second-to-last interaction (the validation target), so options for new items
can be chosen on validation (Cold NDCG@10 of the validation split) without the test items (a user with fewer
than 4 interactions has no validation row in RecBole's split and keeps none of them). Such an item may then be
the last item of a test history, never a test target or anything training sees.
"""
from logging import getLogger

import numpy as np

COLD_BY = ("newest", "random")


class ColdItemsError(ValueError):
    """A cold-item setting that cannot be used."""


def _share(config, key):
    """The share `config[key]` in (0, 1), or None when off; anything else is refused by name."""
    fraction = config[key]
    if fraction in (None, 0, 0.0, False):
        return None
    try:
        fraction = float(fraction)
    except (TypeError, ValueError):
        fraction = None
    if fraction is None or not 0.0 < fraction < 1.0:
        raise ColdItemsError(f"{key}={config[key]!r}: give the share of items to hold out, "
                             f"between 0 and 1 (e.g. 0.1), or ~ to switch it off")
    return fraction


def cold_item_settings(config):
    """(fraction, validation's fraction or None, how, seed) of the protocol, or None when it is off; bad values
    are refused by name."""
    fraction = _share(config, "cold_items")
    valid_fraction = _share(config, "cold_valid_items")
    if fraction is None:
        if valid_fraction is not None:
            raise ColdItemsError("cold_valid_items holds out validation items beside the test's cold_items: set "
                                 "cold_items too (e.g. --cold_items=0.1 --cold_valid_items=0.1)")
        return None
    if valid_fraction is not None and fraction + valid_fraction >= 1.0:
        raise ColdItemsError(f"cold_items={fraction} and cold_valid_items={valid_fraction} hold out every item: "
                             f"their sum must stay below 1")
    how = config["cold_items_by"]
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
    return fraction, valid_fraction, how, int(config["seed"] if seed is None else seed)


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


def _positions_from_end(users, times):
    """Per interaction, 0 for a user's last (by time, then file order), 1 for the second-to-last, and so on."""
    order = np.lexsort((np.arange(len(users)), times, users))
    sorted_users = users[order]
    is_end = np.r_[sorted_users[1:] != sorted_users[:-1], True]
    group_end = np.minimum.accumulate(np.where(is_end, np.arange(len(order)), len(order))[::-1])[::-1]
    position = np.empty(len(order), dtype=np.int64)
    position[order] = group_end - np.arange(len(order))
    return position


def hold_out_cold_items(dataset, config):
    """Apply the protocol to `dataset` (before its split); returns the cold items' internal ids, or None if off.

    With `cold_valid_items` the validation's held-out items are in `dataset.cold_valid_item_ids`.
    """
    settings = cold_item_settings(config)
    if settings is None:
        return None
    fraction, valid_fraction, how, seed = settings
    inter = dataset.inter_feat  # a DataFrame until RecBole's build() splits it
    users = np.asarray(inter[dataset.uid_field])
    items = np.asarray(inter[dataset.iid_field])
    times = np.asarray(inter[dataset.time_field], dtype=np.float64) if dataset.time_field else np.arange(len(items))
    present = np.unique(items)
    first_seen = np.full(dataset.item_num, np.inf)
    np.minimum.at(first_seen, items, times)
    cold = choose_cold_items(present, first_seen[present], fraction, how, seed)  # the same with or without validation's
    # each user's last interaction (by time, then file order), which the leave-one-out split tests
    last = _positions_from_end(users, times) == 0
    is_cold = np.isin(items, cold)
    keep = ~is_cold | last
    message = (f"cold_items: {len(cold)} of {len(present)} items held out ({how}"
               f"{f', seed {seed}' if how == 'random' else ''}); {int((is_cold & ~last).sum())} of their interactions "
               f"removed, {int((is_cold & last).sum())} kept as test targets")
    if valid_fraction is not None:
        # from the other items, the same count as the share asks of all (for `newest`: the next newest)
        rest = np.setdiff1d(present, cold)
        cold_valid = choose_cold_items(rest, first_seen[rest], valid_fraction * len(present) / len(rest), how, seed + 1)
        kept = np.flatnonzero(keep)
        from_end = np.full(len(items), -1)
        from_end[kept] = _positions_from_end(users[kept], times[kept])
        is_valid_cold = np.isin(items, cold_valid)
        # a user's last interaction once the validation items are gone: if it is one of them, the second-to-last
        # would become the test target, so that user keeps none of them
        as_target = is_valid_cold & (from_end == 1) & ~np.isin(users, users[is_valid_cold & (from_end == 0)])
        # RecBole validates a user only with 4 interactions or more (fewer: the second-to-last trains)
        remaining = np.bincount(users[keep & (~is_valid_cold | as_target)], minlength=users.max() + 1)
        as_target &= remaining[users] >= 4
        keep &= ~is_valid_cold | as_target
        message += (f"; cold_valid_items: {len(cold_valid)} more held out, {int(as_target.sum())} of their "
                    f"interactions kept as validation targets, {int((is_valid_cold & ~as_target).sum())} removed")
    else:
        cold_valid = np.zeros(0, dtype=cold.dtype)
    dataset.inter_feat = inter.iloc[np.flatnonzero(keep)].reset_index(drop=True)
    getLogger().info(message)
    dataset.cold_item_ids = cold
    dataset.cold_valid_item_ids = cold_valid
    return cold
