"""`tf.data` pipelines for the four training regimes.

Each builder takes the epoch number: negatives are re-drawn every epoch from
a generator seeded with `(seed, epoch)`, so a run is reproducible and
resumable at any epoch.

Histories and sequences use `PAD = -1` for padding, left-padded (most recent
item last); models that embed ids shift them internally.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import tensorflow as tf

from keras_rec.data.interactions import Interactions, check_feedback_values

PAD = -1


def sample_unseen(
    users: np.ndarray,
    seen: sp.csr_matrix,
    rng: np.random.Generator,
    num: int = 1,
    user_ids: np.ndarray | None = None,
) -> np.ndarray:
    """`[len(users), num]` uniform items that each user has not seen.

    Rejection sampling, vectorised: a draw that hits a seen item is re-drawn
    until none does. `seen` is a CSR matrix (sorted here if its indices are
    not). Its rows are `users`; `user_ids` (same length as `seen`'s rows), when its
    rows are not the user ids, names the user in the error.

    Raises:
        ValueError: a user has seen every item (no negative to draw).
    """
    if not seen.has_sorted_indices:
        seen = seen.sorted_indices()  # a copy: the caller's matrix is kept
    num_items = seen.shape[1]
    counts = np.diff(seen.indptr)[users]
    if np.any(counts >= num_items):
        bad = users[np.argmax(counts >= num_items)]
        if user_ids is not None:
            bad = user_ids[bad]
        raise ValueError(f"user {bad} has seen every item: no negative to sample")
    keys = (
        np.repeat(np.arange(seen.shape[0]), np.diff(seen.indptr)) * num_items
        + seen.indices
    ).astype(np.int64)
    negatives = rng.integers(0, num_items, size=(len(users), num))
    rows = np.repeat(users, num).reshape(len(users), num).astype(np.int64)
    todo = np.ones(negatives.shape, bool)
    while True:
        query = rows[todo] * num_items + negatives[todo]
        position = np.searchsorted(keys, query)
        hit = (position < len(keys)) & (
            keys[np.minimum(position, len(keys) - 1)] == query
        )
        if not hit.any():
            return negatives
        flat = np.flatnonzero(todo)
        still = flat[hit]
        todo = np.zeros(negatives.shape, bool)
        todo.flat[still] = True
        negatives.flat[still] = rng.integers(0, num_items, size=len(still))


def check_count(least: int = 1, **values) -> None:
    """Raises `ValueError` unless each value is an int >= `least`, naming it."""
    for label, value in values.items():
        if (
            isinstance(value, bool)
            or not isinstance(value, int | np.integer)
            or value < least
        ):
            raise ValueError(
                f"`{label}` must be an integer >= {least}. Received {label}={value!r}"
            )


def _check_not_empty(train: Interactions) -> None:
    if len(train) == 0:
        raise ValueError(f"{train.name}: the training set has no interaction")


def _finish(dataset: tf.data.Dataset, batch_size: int) -> tf.data.Dataset:
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def pointwise_dataset(
    train: Interactions,
    num_negatives: int = 4,
    batch_size: int = 256,
    seed: int = 0,
    epoch: int = 0,
) -> tf.data.Dataset:
    """NCF: every positive with `num_negatives` fresh negatives, shuffled.

    Yields `({"user_id": [B], "item_id": [B]}, label [B])`.
    """
    check_count(batch_size=batch_size)
    check_count(0, num_negatives=num_negatives)
    _check_not_empty(train)
    rng = np.random.default_rng([seed, epoch])
    matrix = train.to_csr()
    users = np.repeat(np.arange(train.num_users), np.diff(matrix.indptr))
    positives = matrix.indices.astype(np.int64)
    negatives = sample_unseen(users, matrix, rng, num_negatives)
    all_users = np.concatenate([users, np.repeat(users, num_negatives)])
    all_items = np.concatenate([positives, negatives.reshape(-1)])
    labels = np.concatenate(
        [np.ones(len(users), np.float32), np.zeros(negatives.size, np.float32)]
    )
    order = rng.permutation(len(all_users))
    features = {"user_id": all_users[order], "item_id": all_items[order]}
    return _finish(
        tf.data.Dataset.from_tensor_slices((features, labels[order])), batch_size
    )


def pointwise_steps(
    train: Interactions, num_negatives: int = 4, batch_size: int = 256
) -> int:
    """Batches in one epoch of `pointwise_dataset(train, num_negatives, batch_size)`.

    Counts the distinct (user, item) pairs, as the dataset does.
    """
    check_count(batch_size=batch_size)
    check_count(0, num_negatives=num_negatives)
    return math.ceil(train.to_csr().nnz * (1 + num_negatives) / batch_size)


def bpr_dataset(
    train: Interactions,
    batch_size: int = 2048,
    seed: int = 0,
    epoch: int = 0,
    sampling: str = "pairs",
) -> tf.data.Dataset:
    """BPR triples `(user, positive, negative)`, one fresh unseen negative each.

    Yields `({"user_id": [B], "item_ids": [B, 2]}, zeros [B])` where
    `item_ids[:, 0]` is the positive and `item_ids[:, 1]` the negative;
    an epoch is as many triples as training pairs.

    Args:
        train: the training interactions.
        batch_size: int. Triples per batch.
        seed: int. With `epoch`, seeds the draws (same seed and epoch, same
            triples).
        epoch: int.
        sampling: `"pairs"`: every training pair once, shuffled (BPR over the
            observed pairs). `"users"`: each triple's user drawn uniformly
            among the users with a training item, then one of that user's
            items uniformly, as NGCF's and LightGCN's code sample (light
            users weigh as much as heavy ones).

    Raises:
        ValueError: an unknown `sampling`, `batch_size` not a positive
            integer, or no training pair.
    """
    check_count(batch_size=batch_size)
    if sampling not in ("pairs", "users"):
        raise ValueError(
            f"`sampling` must be 'pairs' or 'users'. Received sampling={sampling!r}"
        )
    rng = np.random.default_rng([seed, epoch])
    matrix = train.to_csr()
    counts = np.diff(matrix.indptr)
    if not matrix.nnz:
        raise ValueError(f"{train.name}: no training pair to draw BPR triples from")
    if sampling == "pairs":
        users = np.repeat(np.arange(train.num_users), counts)
        positives = matrix.indices.astype(np.int64)
        negatives = sample_unseen(users, matrix, rng, 1)[:, 0]
        order = rng.permutation(len(users))
        users, positives, negatives = users[order], positives[order], negatives[order]
    else:
        users = rng.choice(np.flatnonzero(counts), matrix.nnz)
        offsets = (rng.random(matrix.nnz) * counts[users]).astype(np.int64)
        positives = matrix.indices[matrix.indptr[users] + offsets].astype(np.int64)
        negatives = sample_unseen(users, matrix, rng, 1)[:, 0]
    features = {"user_id": users, "item_ids": np.stack([positives, negatives], 1)}
    labels = np.zeros(len(users), np.float32)
    return _finish(tf.data.Dataset.from_tensor_slices((features, labels)), batch_size)


def pad_histories(histories: list[np.ndarray], maxlen: int) -> np.ndarray:
    """Left-pads (or keeps the latest `maxlen` of) each history with `PAD`."""
    out = np.full((len(histories), maxlen), PAD, np.int64)
    for row, history in enumerate(histories):
        tail = np.asarray(history[-maxlen:], np.int64)
        if len(tail):
            out[row, maxlen - len(tail) :] = tail
    return out


def _training_sequences(train: Interactions) -> tuple[np.ndarray, list[np.ndarray]]:
    """The ids and sequences of the users with two or more interactions."""
    every = train.sequences()
    users = np.array([u for u, s in enumerate(every) if len(s) >= 2], np.int64)
    if not users.size:
        raise ValueError(f"{train.name}: no user has two or more interactions")
    return users, [every[u] for u in users]


def expected_valid_positions(
    train: Interactions, maxlen: int = 50, batch_size: int = 128
) -> float:
    """Expected number of non-padding positions in a uniformly drawn batch of
    `batch_size` training sequences of `sequence_dataset`:
    `batch_size * mean_u min(|S_u| - 1, maxlen)`.

    The constant `SampledBinaryCrossentropy(normalizer=...)` divides by when
    the batches are bucketed by length, so that every position has the same
    weight and the expected gradient per epoch is that of random batches.
    """
    _, sequences = _training_sequences(train)
    lengths = np.minimum([len(s) - 1 for s in sequences], maxlen)
    return float(batch_size * np.mean(lengths))


def sequence_dataset(
    train: Interactions,
    maxlen: int = 50,
    batch_size: int = 128,
    seed: int = 0,
    epoch: int = 0,
    shuffle: bool = True,
    bucket_by_length: bool = False,
    bucket_window: int = 32,
) -> tf.data.Dataset:
    """SASRec: input `seq[:-1]`, positives `seq[1:]`, one fresh negative per
    position that is never in the user's sequence; padding is `PAD` everywhere.

    Yields `({"item_history": [B, L]}, {"positives": [B, L], "negatives": [B, L]})`
    with `L = maxlen`, users in a random order (`shuffle`).

    With `bucket_by_length`, the same rows (same users, same negatives, as
    many batches) come in batches of similar lengths, each cropped to its
    longest sequence: the users are shuffled as above, then every window of
    `bucket_window` batches is sorted by length (ties keep the shuffled
    order) and cut into batches of `batch_size`, each batch keeps its last
    `L_b = max length` columns (left padding only is dropped: cropping is
    exact for `SASRec`), and the order of the batches is shuffled. The
    element spec has width `None`, so Keras traces the train step once.
    Train such batches with `SampledBinaryCrossentropy(normalizer=
    expected_valid_positions(train, maxlen, batch_size))`: a per-batch mean
    would re-weight the users of short-sequence batches. With
    `shuffle=False` neither the users nor the batches are shuffled.

    Args:
        train: the training interactions, ordered by `sequences()`.
        maxlen: int. Longest sequence kept (its latest `maxlen + 1` items).
        batch_size: int. Sequences per batch.
        seed: int. Seed of the negatives and the shuffles, with `epoch`.
        epoch: int. Epoch number: negatives and orders are re-drawn per epoch.
        shuffle: bool. Shuffle the users (and, bucketed, the batches).
        bucket_by_length: bool. Length-bucketed, width-cropped batches.
        bucket_window: int. Batches per sorting window when bucketing:
            larger windows give tighter widths but less mixing of lengths.
    """
    check_count(maxlen=maxlen, batch_size=batch_size, bucket_window=bucket_window)
    rng = np.random.default_rng([seed, epoch])
    user_ids, sequences = _training_sequences(train)
    inputs = pad_histories([s[:-1] for s in sequences], maxlen)
    positives = pad_histories([s[1:] for s in sequences], maxlen)
    # Negatives avoid every item of the user's own training sequence.
    seen = sp.csr_matrix(
        (
            np.ones(sum(len(s) for s in sequences), np.float32),
            np.concatenate(sequences),
            np.concatenate([[0], np.cumsum([len(s) for s in sequences])]),
        ),
        shape=(len(sequences), train.num_items),
    )
    seen.sum_duplicates()
    seen.sort_indices()
    negatives = sample_unseen(np.arange(len(sequences)), seen, rng, maxlen, user_ids)
    negatives[positives == PAD] = PAD
    order = rng.permutation(len(sequences)) if shuffle else np.arange(len(sequences))
    if bucket_by_length:
        return _bucketed(
            (inputs, positives, negatives),
            order,
            batch_size,
            bucket_window,
            rng if shuffle else None,
        )
    dataset = tf.data.Dataset.from_tensor_slices(
        (
            {"item_history": inputs[order]},
            {"positives": positives[order], "negatives": negatives[order]},
        )
    )
    return _finish(dataset, batch_size)


def _bucketed(
    arrays: tuple[np.ndarray, np.ndarray, np.ndarray],
    order: np.ndarray,
    batch_size: int,
    window: int,
    rng: np.random.Generator | None,
) -> tf.data.Dataset:
    """`sequence_dataset`'s length-bucketed batches of the rows `order` of the
    left-padded `(inputs, positives, negatives)`."""
    inputs, positives, negatives = arrays
    maxlen = inputs.shape[1]
    lengths = np.sum(inputs != PAD, axis=1)
    span = window * batch_size  # windows end on batch boundaries
    order = np.concatenate(
        [
            chunk[np.argsort(lengths[chunk], kind="stable")]
            for chunk in np.split(order, np.arange(span, len(order), span))
        ]
    )
    batches = np.split(order, np.arange(batch_size, len(order), batch_size))
    if rng is not None:
        batches = [batches[b] for b in rng.permutation(len(batches))]
    rows = np.concatenate(batches)
    sizes = np.array([len(b) for b in batches], np.int64)
    widths = np.array([lengths[b].max() for b in batches], np.int64)
    row_widths = np.repeat(widths, sizes)
    # Each row's last `width` columns, rows one after another: the values of
    # a [batches, (rows), (width)] ragged tensor, uniform within a batch.
    kept = np.arange(maxlen)[None, :] >= (maxlen - row_widths)[:, None]

    def ragged(array):
        return tf.RaggedTensor.from_nested_row_lengths(
            array[rows][kept], [sizes, row_widths]
        )

    dataset = tf.data.Dataset.from_tensor_slices(
        (
            {"item_history": ragged(inputs)},
            {"positives": ragged(positives), "negatives": ragged(negatives)},
        )
    )

    def dense(features, targets):
        return tf.nest.map_structure(lambda x: x.to_tensor(), (features, targets))

    return dataset.map(dense, num_parallel_calls=tf.data.AUTOTUNE).prefetch(
        tf.data.AUTOTUNE
    )


def user_rows_dataset(
    matrix: sp.csr_matrix,
    batch_size: int = 500,
    seed: int = 0,
    epoch: int = 0,
    shuffle: bool = True,
    sparse: bool = False,
) -> tf.data.Dataset:
    """Autoencoders: batches of user rows, densified one batch at a time.

    The whole matrix stays sparse (a ragged constant); each batch is turned
    into a dense `[B, num_items]` float32 tensor (or a `tf.SparseTensor` with
    `sparse=True`). Yields `(rows, rows)`.

    Rows are binary by value: each entry whose value is nonzero becomes 1.0
    (duplicates are summed first); stored zeros, e.g. an interaction removed
    by setting its value to 0, are not interactions, as in `matrix.toarray()`.

    Raises:
        ValueError: `batch_size` is not a positive integer, or a value is
            NaN, infinite or negative (`check_feedback_values`).
    """
    check_count(batch_size=batch_size)
    # A copy: the caller's matrix keeps its stored zeros and index order.
    matrix = sp.csr_matrix(matrix, copy=True)
    matrix.sum_duplicates()
    check_feedback_values(matrix)
    matrix.eliminate_zeros()
    matrix.sort_indices()
    num_items = matrix.shape[1]
    ragged = tf.RaggedTensor.from_row_splits(
        tf.constant(matrix.indices.astype(np.int64)),
        tf.constant(matrix.indptr.astype(np.int64)),
    )
    rows = np.arange(matrix.shape[0], dtype=np.int64)
    if shuffle:
        rows = np.random.default_rng([seed, epoch]).permutation(rows)

    def densify(index):
        picked = tf.gather(ragged, index)
        coordinates = tf.stack([picked.value_rowids(), picked.flat_values], axis=1)
        shape = tf.stack([tf.shape(index, out_type=tf.int64)[0], num_items])
        values = tf.ones_like(picked.flat_values, dtype=tf.float32)
        batch = tf.SparseTensor(coordinates, values, shape)
        if not sparse:
            batch = tf.sparse.to_dense(batch)
        return batch, batch

    dataset = tf.data.Dataset.from_tensor_slices(rows).batch(batch_size)
    return dataset.map(densify, num_parallel_calls=tf.data.AUTOTUNE).prefetch(
        tf.data.AUTOTUNE
    )
