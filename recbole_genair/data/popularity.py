"""Item popularity from the training split, and the head / tail split it defines."""
import math

import numpy as np

from recbole_genair.data.cooccurrence import training_sequences


def item_popularity(train_dataset):
    """Number of training interactions of every item id (`n_items` ints, padding 0 counts nothing)."""
    _, items = training_sequences(train_dataset)
    counts = np.bincount(items, minlength=train_dataset.item_num)
    counts[0] = 0
    return counts


def head_items(popularity, head_ratio=0.2):
    """Boolean mask of the head: the ceil(head_ratio * n) most popular of the n real items (ids >= 1).

    Ties at the border go to the item with the smaller id, so the head has exactly that size.
    """
    n = len(popularity) - 1
    n_head = min(n, math.ceil(head_ratio * n))
    order = np.argsort(-np.asarray(popularity[1:]), kind="stable") + 1
    mask = np.zeros(len(popularity), dtype=bool)
    mask[order[:n_head]] = True
    return mask
