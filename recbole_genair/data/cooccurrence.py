"""Item co-occurrence counts from the training split (GenAIR eq. 10 needs C(i, j))."""
import numpy as np
import scipy.sparse as sp


def training_sequences(train_dataset):
    """Each user's training items in time order, as (user array, item array) sorted by user.

    RecBole's sequential training split holds one row per training target (history list + target),
    so a user's sequence is the first item of the first history list followed by all targets.
    Validation and test targets are in other splits and never appear here.
    """
    feat = train_dataset.inter_feat
    users = feat[train_dataset.uid_field].numpy()
    targets = feat[train_dataset.iid_field].numpy()
    lengths = feat[train_dataset.item_list_length_field].numpy()
    first_items = feat[train_dataset.item_id_list_field][:, 0].numpy()
    order = np.argsort(users, kind="stable")  # the split keeps each user's rows in time order
    users, targets, lengths, first_items = users[order], targets[order], lengths[order], first_items[order]
    starts = lengths == 1
    # Interleave the first item of each user before that user's first target.
    seq_users = np.concatenate([users[starts], users])
    seq_items = np.concatenate([first_items[starts], targets])
    rank = np.concatenate([np.zeros(starts.sum()), np.ones(len(users))])
    position = np.concatenate([np.flatnonzero(starts), np.arange(len(users))])
    order = np.lexsort((rank, position))
    return seq_users[order], seq_items[order]


def cooccurrence_matrix(train_dataset, window=None):
    """Symmetric sparse `n_items x n_items` counts of item pairs in the same user's training sequence.

    window=None: C(i, j) = number of users whose training sequence holds both i and j.
    window=k: C(i, j) = number of times i and j occur at most k positions apart.
    The diagonal is zero. Memory is O(nnz), never n_items^2.
    """
    n_items = train_dataset.item_num
    users, items = training_sequences(train_dataset)
    if window is None or window <= 0:
        n_users = int(users.max()) + 1 if users.size else 1
        x = sp.csr_matrix((np.ones(items.size, dtype=np.float64), (users, items)), shape=(n_users, n_items))
        x.sum_duplicates()
        x.data[:] = 1.0  # a repeated item counts once per user
        counts = (x.T @ x).tocsr()
    else:
        rows, cols = [], []
        for k in range(1, int(window) + 1):
            same_user = users[k:] == users[:-k]
            rows.append(items[:-k][same_user])
            cols.append(items[k:][same_user])
        rows = np.concatenate(rows) if rows else np.empty(0, dtype=np.int64)
        cols = np.concatenate(cols) if cols else np.empty(0, dtype=np.int64)
        upper = sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n_items, n_items))
        counts = (upper + upper.T).tocsr()
    counts.setdiag(0)
    counts.eliminate_zeros()
    return counts
