"""`tf.data` pipelines: negatives, alignment, padding, epochs and seeds."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf

from keras_rec.data import (
    PAD,
    Interactions,
    bpr_dataset,
    make_synthetic,
    pad_histories,
    pointwise_dataset,
    sequence_dataset,
    user_rows_dataset,
)
from keras_rec.data.interactions import binary_csr
from keras_rec.data.pipelines import (
    expected_valid_positions,
    pointwise_steps,
    sample_unseen,
)
from keras_rec.losses.sampled_bce import SampledBinaryCrossentropy


@pytest.fixture(scope="module")
def train():
    # Dense enough (about 40% of items per user) that careless negatives
    # would often hit a positive.
    return make_synthetic(num_users=40, num_items=30, mean_length=12, seed=1)


def collect(dataset: tf.data.Dataset):
    """Concatenates every batch of `(features, labels)` into NumPy arrays."""
    features, labels = collections.defaultdict(list), collections.defaultdict(list)
    for x, y in dataset:
        for key, value in x.items():
            features[key].append(value.numpy())
        if isinstance(y, dict):
            for key, value in y.items():
                labels[key].append(value.numpy())
        else:
            labels[None].append(y.numpy())
    features = {k: np.concatenate(v) for k, v in features.items()}
    labels = {k: np.concatenate(v) for k, v in labels.items()}
    return features, labels.get(None, labels)


def positives_of(data: Interactions) -> list[set]:
    return [set(s.tolist()) for s in data.sequences()]


# --- sample_unseen -----------------------------------------------------------


def test_sample_unseen_avoids_seen_items():
    seen = sp.csr_matrix(np.array([[1, 1, 1, 0, 1], [0, 0, 0, 0, 0], [1, 0, 1, 0, 1]]))
    seen.sort_indices()
    rng = np.random.default_rng(0)
    users = np.array([0, 2, 1, 0] * 50)
    negatives = sample_unseen(users, seen, rng, num=7)
    assert negatives.shape == (200, 7)
    assert not seen.toarray()[users[:, None], negatives].any()
    # User 0 can only get item 3; user 2 items 1 and 3 (both drawn).
    assert set(negatives[users == 0].ravel().tolist()) == {3}
    assert set(negatives[users == 2].ravel().tolist()) == {1, 3}
    assert len(set(negatives[users == 1].ravel().tolist())) == 5


def test_sample_unseen_sorts_a_matrix_with_unsorted_indices():
    # Row 0 stores items [2, 0, 1] in that order: only item 3 is unseen.
    seen = sp.csr_matrix(
        (np.ones(3), np.array([2, 0, 1]), np.array([0, 3])), shape=(1, 4)
    )
    assert not seen.has_sorted_indices
    negatives = sample_unseen(np.zeros(50, np.int64), seen, np.random.default_rng(0))
    assert set(negatives.ravel().tolist()) == {3}
    assert seen.indices.tolist() == [2, 0, 1]  # the caller's matrix is kept


def test_sample_unseen_user_who_saw_everything():
    seen = sp.csr_matrix(np.array([[1, 1], [1, 0]]))
    with pytest.raises(ValueError, match="user 0 has seen every item"):
        sample_unseen(np.array([1, 0]), seen, np.random.default_rng(0))


# --- pointwise (NCF) ---------------------------------------------------------


def test_pointwise_dataset(train):
    features, labels = collect(pointwise_dataset(train, 4, batch_size=64, seed=3))
    users, items = features["user_id"], features["item_id"]
    matrix = train.to_csr()
    assert labels.dtype == np.float32
    assert labels.sum() == matrix.nnz  # every positive exactly once
    assert len(labels) == 5 * matrix.nnz  # 1 : 4
    truth = matrix.toarray() > 0
    np.testing.assert_array_equal(truth[users, items], labels == 1.0)
    positive_pairs = set(
        zip(users[labels == 1].tolist(), items[labels == 1].tolist(), strict=True)
    )
    assert positive_pairs == set(zip(*matrix.nonzero(), strict=True))
    # Each user has 4 negatives per positive.
    np.testing.assert_array_equal(
        np.bincount(users[labels == 0], minlength=train.num_users),
        4 * np.bincount(users[labels == 1], minlength=train.num_users),
    )
    assert labels[:64].min() == 0 and labels[:64].max() == 1  # shuffled


def test_pointwise_negatives_never_positives_over_epochs(train):
    truth = train.to_csr().toarray() > 0
    for epoch in range(8):
        features, labels = collect(pointwise_dataset(train, 4, 512, 0, epoch))
        negative = labels == 0
        assert not truth[
            features["user_id"][negative], features["item_id"][negative]
        ].any()


def negatives_by_user(features, labels):
    users = features["user_id"][labels == 0]
    items = features["item_id"][labels == 0]
    order = np.lexsort((items, users))
    return users[order], items[order]


def test_pointwise_epochs_and_seeds(train):
    def negatives(seed, epoch):
        return negatives_by_user(
            *collect(pointwise_dataset(train, 4, 512, seed, epoch))
        )

    first = negatives(0, 0)
    np.testing.assert_array_equal(first[1], negatives(0, 0)[1])
    assert (first[1] != negatives(0, 1)[1]).mean() > 0.5
    assert (first[1] != negatives(1, 0)[1]).mean() > 0.5


# --- BPR ---------------------------------------------------------------------


def test_bpr_dataset(train):
    features, labels = collect(bpr_dataset(train, batch_size=100, seed=2))
    users, items = features["user_id"], features["item_ids"]
    matrix = train.to_csr()
    truth = matrix.toarray() > 0
    assert items.shape == (matrix.nnz, 2)
    np.testing.assert_array_equal(labels, np.zeros(matrix.nnz))
    assert set(zip(users.tolist(), items[:, 0].tolist(), strict=True)) == set(
        zip(*matrix.nonzero(), strict=True)
    )
    assert truth[users, items[:, 0]].all()
    assert not truth[users, items[:, 1]].any()


def test_bpr_negatives_redrawn_each_epoch(train):
    truth = train.to_csr().toarray() > 0

    def triples(seed, epoch):
        features, _ = collect(bpr_dataset(train, 4096, seed, epoch))
        users, items = features["user_id"], features["item_ids"]
        assert not truth[users, items[:, 1]].any()
        order = np.lexsort((items[:, 0], users))
        return items[order, 1]

    first = triples(0, 0)
    np.testing.assert_array_equal(first, triples(0, 0))
    for epoch in range(1, 6):
        assert (first != triples(0, epoch)).mean() > 0.5
    assert (first != triples(9, 0)).mean() > 0.5


def test_bpr_users_sampling_draws_users_uniformly():
    # User 0 has 40 items, users 1-4 one each, user 5 none.
    data = Interactions(
        np.array([0] * 40 + [1, 2, 3, 4]),
        np.array(list(range(40)) + [40, 41, 42, 43]),
        6,
        50,
    )
    truth = data.to_csr().toarray() > 0
    counts = {}
    for sampling in ("pairs", "users"):
        users = []
        for epoch in range(50):
            features, _ = collect(bpr_dataset(data, 64, 1, epoch, sampling))
            items = features["item_ids"]
            assert len(items) == 44  # as many triples as training pairs
            assert truth[features["user_id"], items[:, 0]].all()
            assert not truth[features["user_id"], items[:, 1]].any()
            users.append(features["user_id"])
        counts[sampling] = np.bincount(np.concatenate(users), minlength=6) / 2200
    np.testing.assert_allclose(counts["pairs"], [40 / 44, *[1 / 44] * 4, 0])
    # Uniform over the 5 users with items: 0.2 each (std of a share ~0.0085).
    np.testing.assert_allclose(counts["users"], [0.2] * 5 + [0], atol=0.03)
    first, _ = collect(bpr_dataset(data, 64, 1, 0, "users"))
    again, _ = collect(bpr_dataset(data, 64, 1, 0, "users"))
    np.testing.assert_array_equal(first["item_ids"], again["item_ids"])
    with pytest.raises(ValueError, match="sampling"):
        bpr_dataset(data, sampling="items")
    with pytest.raises(ValueError, match="no training pair"):
        bpr_dataset(Interactions(np.array([], int), np.array([], int), 2, 3))


# --- sequences (SASRec) ------------------------------------------------------


def test_pad_histories():
    padded = pad_histories([np.array([1, 2, 3, 4]), np.array([5]), np.array([])], 3)
    np.testing.assert_array_equal(padded, [[2, 3, 4], [PAD, PAD, 5], [PAD, PAD, PAD]])
    assert padded.dtype == np.int64


@pytest.mark.parametrize("maxlen", [4, 25])
def test_sequence_dataset(train, maxlen):
    data = Interactions(
        np.concatenate([train.user_ids, [train.num_users]]),
        np.concatenate([train.item_ids, [0]]),
        train.num_users + 1,  # one more user with a single interaction
        train.num_items,
        timestamps=np.arange(len(train) + 1),
    )
    features, labels = collect(
        sequence_dataset(data, maxlen=maxlen, batch_size=16, shuffle=False)
    )
    inputs = features["item_history"]
    positives, negatives = labels["positives"], labels["negatives"]
    sequences = [s for s in data.sequences() if len(s) >= 2]
    assert (
        inputs.shape == positives.shape == negatives.shape == (len(sequences), maxlen)
    )
    assert len(sequences) == train.num_users  # the single-item user is left out
    np.testing.assert_array_equal(
        inputs, pad_histories([s[:-1] for s in sequences], maxlen)
    )
    np.testing.assert_array_equal(
        positives, pad_histories([s[1:] for s in sequences], maxlen)
    )
    # Alignment: the input at t+1 is the positive at t.
    both = (inputs[:, 1:] != PAD) & (positives[:, :-1] != PAD)
    np.testing.assert_array_equal(inputs[:, 1:][both], positives[:, :-1][both])
    np.testing.assert_array_equal(positives[:, -1], [s[-1] for s in sequences])
    # Padding is aligned everywhere; negatives avoid the user's whole sequence.
    np.testing.assert_array_equal(inputs == PAD, positives == PAD)
    np.testing.assert_array_equal(negatives == PAD, positives == PAD)
    for r, seq in enumerate(sequences):
        real = negatives[r][negatives[r] != PAD]
        assert not set(real.tolist()) & set(seq.tolist())
    if maxlen == 4:
        assert (positives != PAD).all()  # every sequence is longer: truncated
    else:
        assert (positives == PAD).any()


def test_sequence_dataset_shuffles_and_redraws(train):
    def rows(seed, epoch, shuffle=True):
        features, labels = collect(
            sequence_dataset(train, 10, 1000, seed, epoch, shuffle=shuffle)
        )
        order = np.lexsort(features["item_history"].T[::-1])
        return features["item_history"][order], labels["negatives"][order]

    first_inputs, first_negatives = rows(0, 0)
    same_inputs, same_negatives = rows(0, 0)
    next_inputs, next_negatives = rows(0, 1)
    np.testing.assert_array_equal(first_negatives, same_negatives)
    np.testing.assert_array_equal(first_inputs, next_inputs)  # same rows
    real = first_negatives != PAD
    assert (first_negatives[real] != next_negatives[real]).mean() > 0.5
    shuffled, _ = collect(sequence_dataset(train, 10, 1000, 0, 0))
    ordered, _ = collect(sequence_dataset(train, 10, 1000, 0, 0, shuffle=False))
    assert (shuffled["item_history"] != ordered["item_history"]).any()


def test_sequence_dataset_needs_two_interactions():
    data = Interactions(np.array([0, 1]), np.array([0, 1]), 2, 3)
    with pytest.raises(ValueError, match="two or more"):
        sequence_dataset(data)


def test_sequence_dataset_names_the_user_who_saw_every_item():
    # User 0 has one item (not trained on); user 2, the second sequence, has
    # seen all three items: the error names user 2, not row 1.
    data = Interactions(
        np.array([0, 1, 1, 2, 2, 2]), np.array([0, 0, 1, 0, 1, 2]), 3, 3
    )
    with pytest.raises(ValueError, match="user 2 has seen every item"):
        sequence_dataset(data, maxlen=4, batch_size=2)


def _batches(dataset: tf.data.Dataset) -> list:
    return [
        (x["item_history"].numpy(), y["positives"].numpy(), y["negatives"].numpy())
        for x, y in dataset
    ]


def _left_pad(array: np.ndarray, maxlen: int) -> np.ndarray:
    return np.pad(array, [(0, 0), (maxlen - array.shape[1], 0)], constant_values=PAD)


def _sorted_rows(batches: list, maxlen: int) -> np.ndarray:
    rows = np.concatenate(
        [
            np.concatenate([_left_pad(a, maxlen) for a in batch], axis=1)
            for batch in batches
        ]
    )
    return rows[np.lexsort(rows.T[::-1])]


@pytest.fixture(scope="module")
def varied():
    # 300 users of very different lengths: 9 full batches of 32 and one of 12.
    return make_synthetic(num_users=300, num_items=200, mean_length=8, seed=4)


@pytest.mark.parametrize("epoch", [0, 3])
def test_bucketed_sequences_are_the_same_rows_cropped_per_batch(varied, epoch):
    maxlen, batch_size = 12, 32
    padded = _batches(sequence_dataset(varied, maxlen, batch_size, 5, epoch))
    dataset = sequence_dataset(
        varied, maxlen, batch_size, 5, epoch, bucket_by_length=True, bucket_window=2
    )
    spec = dataset.element_spec
    assert spec[0]["item_history"].shape.as_list() == [None, None]
    assert spec[1]["negatives"].shape.as_list() == [None, None]
    bucketed = _batches(dataset)
    # As many batches, the same multiset of (input, positives, negatives)
    # rows: the same users with the same negatives.
    assert len(bucketed) == len(padded) == 10
    assert sorted(len(b[0]) for b in bucketed) == sorted(len(b[0]) for b in padded)
    np.testing.assert_array_equal(
        _sorted_rows(bucketed, maxlen), _sorted_rows(padded, maxlen)
    )
    widths = []
    for inputs, positives, negatives in bucketed:
        assert inputs.shape == positives.shape == negatives.shape
        # Cropped to the batch's longest sequence: only padding is dropped.
        assert (inputs[:, 0] != PAD).any()
        widths.append(inputs.shape[1])
        np.testing.assert_array_equal(inputs == PAD, positives == PAD)
        np.testing.assert_array_equal(negatives == PAD, positives == PAD)
        both = (inputs[:, 1:] != PAD) & (positives[:, :-1] != PAD)
        np.testing.assert_array_equal(inputs[:, 1:][both], positives[:, :-1][both])
        # (The negatives avoid the whole sequence: same rows as unbucketed.)
        for row in range(len(inputs)):
            seen = set(inputs[row].tolist()) | set(positives[row].tolist())
            assert not set(negatives[row][negatives[row] != PAD].tolist()) & seen
    assert np.mean(widths) < maxlen
    # Same seed and epoch: the same batches in the same order.
    again = _batches(
        sequence_dataset(
            varied, maxlen, batch_size, 5, epoch, bucket_by_length=True, bucket_window=2
        )
    )
    for first, second in zip(bucketed, again, strict=True):
        for a, b in zip(first, second, strict=True):
            np.testing.assert_array_equal(a, b)


def test_bucketed_batches_are_sorted_within_windows(varied):
    maxlen, batch_size, window = 12, 32, 3
    bucketed = _batches(
        sequence_dataset(
            varied,
            maxlen,
            batch_size,
            bucket_by_length=True,
            bucket_window=window,
            shuffle=False,
        )
    )
    ordered = _batches(sequence_dataset(varied, maxlen, batch_size, shuffle=False))
    lengths = [(b[0] != PAD).sum(1) for b in bucketed]
    for start in range(0, len(bucketed), window):
        in_window = np.concatenate(lengths[start : start + window])
        assert np.all(np.diff(in_window) >= 0)
        expected = np.concatenate(
            [(b[0] != PAD).sum(1) for b in ordered[start : start + window]]
        )
        np.testing.assert_array_equal(in_window, np.sort(expected))
    # Shuffled: the order of the batches changes with the epoch.
    first, second = (
        [
            b[0].shape[1]
            for b in _batches(
                sequence_dataset(
                    varied, maxlen, batch_size, epoch=e, bucket_by_length=True
                )
            )
        ]
        for e in (0, 1)
    )
    assert first != second


def test_bucketed_epoch_loss_matches_random_batches_in_expectation(varied):
    # A fixed loss term per position (a function of the ids): over an epoch,
    # bucketed batches with the constant normalizer give what the paper's
    # random batches give in expectation, `num_sequences / batch_size` times
    # the mean over all positions.
    maxlen, batch_size = 12, 32
    normalizer = expected_valid_positions(varied, maxlen, batch_size)
    lengths = [min(len(s) - 1, maxlen) for s in varied.sequences() if len(s) >= 2]
    np.testing.assert_allclose(normalizer, batch_size * np.mean(lengths))
    loss = SampledBinaryCrossentropy(normalizer=normalizer)

    def logits(positives, negatives):
        return np.stack([np.sin(positives), np.cos(negatives)], -1).astype(np.float32)

    total, terms = 0.0, []
    for _, positives, negatives in _batches(
        sequence_dataset(varied, maxlen, batch_size, bucket_by_length=True)
    ):
        total += float(loss(positives, logits(positives, negatives)))
        pair = logits(positives, negatives)[positives != PAD]
        terms.append(np.logaddexp(0, -pair[:, 0]) + np.logaddexp(0, pair[:, 1]))
    terms = np.concatenate(terms)
    assert len(terms) == sum(lengths)
    np.testing.assert_allclose(
        total, len(lengths) / batch_size * terms.mean(), rtol=1e-5
    )


def test_bucket_window_must_be_positive(train):
    with pytest.raises(ValueError, match="bucket_window"):
        sequence_dataset(train, bucket_by_length=True, bucket_window=0)


# --- user rows (autoencoders) ------------------------------------------------


def test_user_rows_dataset_dense(train):
    matrix = train.to_csr()
    seen = []
    for x, y in user_rows_dataset(matrix, batch_size=7, seed=1):
        x, y = x.numpy(), y.numpy()
        np.testing.assert_array_equal(x, y)
        assert x.dtype == np.float32 and x.shape[1] == train.num_items
        seen.append(x)
    batches = np.concatenate(seen)
    assert [len(b) for b in seen] == [7] * 5 + [5]
    dense = matrix.toarray()
    # Every row exactly once per epoch, in a shuffled order.
    order = [int(np.flatnonzero((dense == b).all(axis=1))[0]) for b in batches]
    assert sorted(order) == list(range(train.num_users))
    assert order != list(range(train.num_users))
    np.testing.assert_array_equal(batches, dense[order])


def test_user_rows_dataset_without_shuffle_and_sparse(train):
    matrix = train.to_csr()
    dense = np.concatenate(
        [x.numpy() for x, _ in user_rows_dataset(matrix, 16, shuffle=False)]
    )
    np.testing.assert_array_equal(dense, matrix.toarray())
    batches = list(user_rows_dataset(matrix, 16, shuffle=False, sparse=True))
    assert all(isinstance(x, tf.SparseTensor) for x, _ in batches)
    stacked = np.concatenate([tf.sparse.to_dense(x).numpy() for x, _ in batches])
    np.testing.assert_array_equal(stacked, matrix.toarray())


def test_user_rows_dataset_epochs_reshuffle(train):
    def first_batch(epoch):
        x, _ = next(iter(user_rows_dataset(train.to_csr(), 40, 0, epoch)))
        return x.numpy()

    np.testing.assert_array_equal(first_batch(0), first_batch(0))
    assert (first_batch(0) != first_batch(1)).any()


def test_pointwise_steps_counts_an_epochs_batches_with_duplicate_pairs(train):
    # A repeated (user, item) pair is one positive in the epoch.
    doubled = Interactions(
        np.concatenate([train.user_ids, train.user_ids[:7]]),
        np.concatenate([train.item_ids, train.item_ids[:7]]),
        train.num_users,
        train.num_items,
    )
    for data in (train, doubled):
        epoch = pointwise_dataset(data, 4, 32, seed=0, epoch=0)
        assert pointwise_steps(data, 4, 32) == sum(1 for _ in epoch)


@pytest.mark.parametrize("value", [np.nan, np.inf, -1.0])
def test_a_nan_or_negative_value_is_no_interaction_but_an_error(value):
    matrix = sp.csr_matrix(np.array([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0]]))
    matrix.data[1] = value  # row 0, column 2
    message = "NaN, infinite or negative values .* at row 0, column 2"
    with pytest.raises(ValueError, match=message):
        user_rows_dataset(matrix, batch_size=2)
    with pytest.raises(ValueError, match=message):
        binary_csr(matrix)


@pytest.mark.parametrize("batch_size", [0, 2.5, True])
def test_batch_size_must_be_a_positive_integer(train, batch_size):
    matrix = train.to_csr()
    with pytest.raises(ValueError, match="`batch_size` must be an integer >= 1"):
        user_rows_dataset(matrix, batch_size=batch_size)
    with pytest.raises(ValueError, match="`batch_size` must be an integer >= 1"):
        bpr_dataset(train, batch_size=batch_size)


def test_user_rows_dataset_ignores_explicitly_stored_zeros():
    # An interaction removed by zeroing its value (without eliminate_zeros)
    # is no interaction: the rows follow the values, as `toarray()` does.
    matrix = sp.csr_matrix(np.array([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0]]))
    matrix.data[matrix.data == 2.0] = 0.0
    assert matrix.nnz == 3
    rows, targets = next(iter(user_rows_dataset(matrix, batch_size=2, shuffle=False)))
    expected = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    np.testing.assert_array_equal(rows.numpy(), expected)
    np.testing.assert_array_equal(targets.numpy(), expected)
    sparse_rows, _ = next(
        iter(user_rows_dataset(matrix, batch_size=2, shuffle=False, sparse=True))
    )
    np.testing.assert_array_equal(tf.sparse.to_dense(sparse_rows).numpy(), expected)
    # The caller's matrix is left as it was.
    assert matrix.nnz == 3


def test_user_rows_dataset_sums_duplicates_before_binarising():
    # Duplicate entries that cancel out are no interaction either.
    matrix = sp.csr_matrix(
        (np.array([1.0, -1.0, 2.0]), np.array([0, 0, 1]), np.array([0, 3])),
        shape=(1, 3),
    )
    rows, _ = next(iter(user_rows_dataset(matrix, batch_size=1, shuffle=False)))
    np.testing.assert_array_equal(rows.numpy(), [[0.0, 1.0, 0.0]])
