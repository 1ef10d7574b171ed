"""The `Interactions` container: views, filters, checksum, validation."""

from __future__ import annotations

import numpy as np
import pytest

from keras_rec.data import Interactions


def make(users, items, num_users=None, num_items=None, **kwargs):
    users, items = np.asarray(users), np.asarray(items)
    return Interactions(
        users,
        items,
        num_users if num_users is not None else int(users.max()) + 1,
        num_items if num_items is not None else int(items.max()) + 1,
        **kwargs,
    )


# --- validation --------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(user_ids=[0, 1], item_ids=[0]), "same length"),
        (dict(user_ids=[[0, 1]], item_ids=[[0, 1]]), "1-D"),
        (dict(user_ids=[0, 2], item_ids=[0, 1]), "user ids must lie in"),
        (dict(user_ids=[0, -1], item_ids=[0, 1]), "user ids must lie in"),
        (dict(user_ids=[0, 1], item_ids=[0, 3]), "item ids must lie in"),
        (dict(user_ids=[0, 1], item_ids=[0, 1], timestamps=[1]), "`timestamps`"),
        (dict(user_ids=[0, 1], item_ids=[0, 1], ratings=[1, 2, 3]), "`ratings`"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Interactions(num_users=2, num_items=3, **kwargs)


@pytest.mark.parametrize(
    "kwargs, label",
    [
        # Fractional times would be truncated to [0 0 0]: time order lost.
        (dict(user_ids=[0, 0, 0], timestamps=np.array([0.9, 0.5, 0.1])), "timestamps"),
        (
            dict(user_ids=[0, 0, 0], timestamps=np.array([1.0, np.nan, 2.0])),
            "timestamps",
        ),
        (dict(user_ids=np.array([0.0, 0.7, 1.9])), "user_ids"),
        (dict(user_ids=[0, 1, 1], item_ids=np.array([0.2, 1.5, 2.99])), "item_ids"),
    ],
)
def test_non_integer_floats_raise_instead_of_truncating(kwargs, label):
    kwargs = {"user_ids": [0, 1, 1], "item_ids": [0, 1, 2], **kwargs}
    with pytest.raises(ValueError, match=f"`{label}` must be integers"):
        Interactions(num_users=2, num_items=3, **kwargs)


def test_integer_valued_floats_are_accepted():
    data = Interactions(
        np.array([0.0, 0.0, 1.0]),
        np.array([2.0, 0.0, 1.0]),
        2,
        3,
        timestamps=np.array([30.0, 10.0, 20.0]),
    )
    assert data.user_ids.dtype == data.timestamps.dtype == np.int64
    np.testing.assert_array_equal(data.timestamps, [30, 10, 20])
    np.testing.assert_array_equal(data.sequences()[0], [0, 2])


def test_from_raw_rejects_fractional_floats():
    with pytest.raises(ValueError, match="`timestamps` must be integers"):
        Interactions.from_raw([1, 1], [5, 6], timestamps=np.array([0.9, 0.1]))
    with pytest.raises(ValueError, match="`user ids` must be integers"):
        Interactions.from_raw(
            np.array([0.0, 0.5]), np.array([0, 1]), already_contiguous=True
        )
    with pytest.raises(ValueError, match="`raw item ids` must be integers"):
        Interactions.from_raw(np.array([1, 2]), np.array([10.0, 10.5]))
    # Whole-number floats are read as the integers they are.
    data = Interactions.from_raw(
        np.array([7.0, 3.0]), np.array([10.0, 20.0]), timestamps=[2.0, 1.0]
    )
    np.testing.assert_array_equal(data.raw_user_ids, [3, 7])
    assert data.raw_item_ids.dtype == np.int64


def test_ids_become_int64():
    data = make([0, 1], [1, 0])
    assert data.user_ids.dtype == np.int64 and data.item_ids.dtype == np.int64
    assert len(data) == 2
    assert "users=2" in repr(data)


# --- views -------------------------------------------------------------------


def test_to_csr_collapses_duplicates():
    data = make([0, 0, 0, 1, 2], [1, 1, 3, 0, 1], num_users=4, num_items=5)
    binary = data.to_csr()
    assert binary.shape == (4, 5)
    expected = np.zeros((4, 5), np.float32)
    expected[[0, 0, 1, 2], [1, 3, 0, 1]] = 1.0
    np.testing.assert_array_equal(binary.toarray(), expected)
    assert binary.nnz == 4  # one stored entry per distinct pair
    assert binary.has_sorted_indices
    counts = data.to_csr(binary=False)
    expected[0, 1] = 2.0
    np.testing.assert_array_equal(counts.toarray(), expected)


def test_sequences_follow_time_and_ties_keep_file_order():
    data = make(
        [1, 0, 1, 1, 1, 0],
        [5, 2, 3, 4, 1, 0],
        num_users=3,
        timestamps=[30, 9, 10, 20, 10, 9],
    )
    sequences = data.sequences()
    assert len(sequences) == 3
    # User 1: t=10 (item 3, then item 1: a tie, file order), t=20, t=30.
    np.testing.assert_array_equal(sequences[1], [3, 1, 4, 5])
    np.testing.assert_array_equal(sequences[0], [2, 0])  # tie: file order
    assert len(sequences[2]) == 0  # a user with no rows


def test_sequences_without_timestamps_use_file_order():
    data = make([1, 0, 1, 0], [3, 2, 0, 1])
    np.testing.assert_array_equal(data.sequences()[0], [2, 1])
    np.testing.assert_array_equal(data.sequences()[1], [3, 0])


def test_counts():
    data = make([0, 0, 2], [1, 1, 0], num_users=4, num_items=3)
    assert data.user_counts().tolist() == [2, 0, 1, 0]
    assert data.item_counts().tolist() == [1, 2, 0]


def test_timestamps_and_ratings_given_as_lists_become_arrays():
    # Like the ids, the optional columns are documented as arrays; a list must
    # not break `subset` (and with it `filter` and every split) later on.
    data = make([0, 1, 2], [2, 1, 0], timestamps=[5, 6, 7], ratings=[1, 2, 3])
    assert isinstance(data.timestamps, np.ndarray)
    assert data.timestamps.dtype == np.int64
    assert isinstance(data.ratings, np.ndarray)
    assert data.ratings.dtype == np.float32
    assert len(data.subset(np.array([True, False, True]))) == 2


def test_subset_keeps_vocabularies():
    data = make(
        [0, 1, 2], [2, 1, 0], timestamps=np.array([5, 6, 7]), ratings=np.ones(3)
    )
    part = data.subset(np.array([True, False, True]))
    assert (part.num_users, part.num_items) == (3, 3)
    np.testing.assert_array_equal(part.user_ids, [0, 2])
    np.testing.assert_array_equal(part.timestamps, [5, 7])
    np.testing.assert_array_equal(part.ratings, [1, 1])


# --- raw ids -----------------------------------------------------------------


def test_from_raw_maps_in_sorted_raw_order():
    data = Interactions.from_raw([50, 10, 50], [7, 9, 3], timestamps=[3, 2, 1])
    np.testing.assert_array_equal(data.raw_user_ids, [10, 50])
    np.testing.assert_array_equal(data.raw_item_ids, [3, 7, 9])
    np.testing.assert_array_equal(data.user_ids, [1, 0, 1])
    np.testing.assert_array_equal(data.item_ids, [1, 2, 0])
    assert data.timestamps.dtype == np.int64


def test_from_raw_already_contiguous():
    data = Interactions.from_raw([0, 2], [4, 1], already_contiguous=True)
    np.testing.assert_array_equal(data.user_ids, [0, 2])
    assert (data.num_users, data.num_items) == (3, 5)
    sized = Interactions.from_raw(
        [0, 2], [4, 1], already_contiguous=True, num_users=10, num_items=8
    )
    assert (sized.num_users, sized.num_items) == (10, 8)


def test_compact_drops_empty_users_and_items():
    data = Interactions.from_raw([10, 20, 30], [1, 2, 3])
    part = data.subset(np.array([True, False, True])).compact()
    assert (part.num_users, part.num_items) == (2, 2)
    np.testing.assert_array_equal(part.raw_user_ids, [10, 30])
    np.testing.assert_array_equal(part.raw_item_ids, [1, 3])
    keep_users = data.subset(np.array([True, False, True])).compact(users=False)
    assert (keep_users.num_users, keep_users.num_items) == (3, 2)


# --- checksum ----------------------------------------------------------------


def test_checksum_is_stable_and_sensitive():
    data = make([0, 1, 1], [2, 0, 1])
    same = make([0, 1, 1], [2, 0, 1])
    assert data.checksum() == same.checksum()
    assert len(data.checksum()) == 64
    assert data.checksum() == data.checksum()
    assert make([0, 1, 1], [2, 0, 0]).checksum() != data.checksum()
    assert make([0, 1, 0], [2, 0, 1]).checksum() != data.checksum()
    assert make([0, 1, 1], [2, 0, 1], num_items=4).checksum() != data.checksum()
    assert make([1, 0, 1], [1, 2, 0]).checksum() != data.checksum()  # row order


# --- filter ------------------------------------------------------------------


def test_filter_min_rating():
    data = Interactions.from_raw(
        [1, 1, 2, 3], [10, 20, 10, 30], ratings=[4.0, 3.5, 5.0, 1.0]
    )
    kept = data.filter(min_rating=4.0)
    assert len(kept) == 2
    # Users and items without rows are dropped and renumbered.
    np.testing.assert_array_equal(kept.raw_user_ids, [1, 2])
    np.testing.assert_array_equal(kept.raw_item_ids, [10])
    np.testing.assert_allclose(kept.ratings, [4.0, 5.0])


def test_filter_min_counts_are_one_pass_over_the_same_counts():
    # SASRec's preprocessing: users and items with fewer than 2 rows are
    # dropped once, both counted before dropping anything. Item 30's only
    # row goes, which leaves user 3 with one row: it stays (no second pass).
    data = Interactions.from_raw([1, 1, 2, 2, 3, 3, 4], [10, 20, 10, 20, 10, 30, 10])
    kept = data.filter(min_user_interactions=2, min_item_interactions=2)
    np.testing.assert_array_equal(kept.raw_user_ids, [1, 2, 3])
    np.testing.assert_array_equal(kept.raw_item_ids, [10, 20])
    assert len(kept) == 5
    # Users only (Mult-VAE's `min_uc`): items are not filtered.
    assert data.filter(min_user_interactions=2).num_items == 3
    assert len(data.filter(min_item_interactions=2)) == 6


def test_filter_min_rating_needs_ratings():
    with pytest.raises(ValueError, match="needs ratings"):
        make([0], [0]).filter(min_rating=4)


def brute_force_k_core(pairs: set, k: int) -> set:
    """Removes one user or item with fewer than `k` rows at a time."""
    pairs = set(pairs)
    while True:
        users, items = {}, {}
        for user, item in pairs:
            users[user] = users.get(user, 0) + 1
            items[item] = items.get(item, 0) + 1
        weak = [p for p in pairs if users[p[0]] < k or items[p[1]] < k]
        if not weak:
            return pairs
        user, item = weak[0]
        if users[user] < k:
            pairs = {p for p in pairs if p[0] != user}
        else:
            pairs = {p for p in pairs if p[1] != item}


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [2, 3, 5])
def test_k_core_matches_brute_force(seed, k):
    rng = np.random.default_rng(seed)
    # Skewed popularity so that removing items makes users fall below k.
    items = np.minimum(rng.zipf(1.6, size=600), 80) + 1000
    users = rng.integers(0, 120 if k < 5 else 50, size=600)
    pairs = sorted(set(zip(users.tolist(), items.tolist(), strict=True)))
    data = Interactions.from_raw(*np.asarray(pairs).T)
    core = data.filter(k_core=k)
    got = set(
        zip(
            core.raw_user_ids[core.user_ids].tolist(),
            core.raw_item_ids[core.item_ids].tolist(),
            strict=True,
        )
    )
    assert got == brute_force_k_core(set(pairs), k)
    assert 0 < len(got) < len(pairs)  # the case is not trivial
    # A fixpoint: every remaining user and item has at least k rows.
    assert core.user_counts().min() >= k and core.item_counts().min() >= k
    assert (core.num_users, core.num_items) == (
        len({u for u, _ in got}),
        len({i for _, i in got}),
    )


def test_k_core_needs_more_than_one_pass():
    # Item 9 has 1 row; dropping it leaves user 2 with 1 row, which then leaves
    # item 8 with 1 row: a single pass would keep (2, 8) and (3, 8).
    data = Interactions.from_raw([0, 0, 1, 1, 2, 2, 3, 3], [5, 6, 5, 6, 8, 9, 8, 7])
    core = data.filter(k_core=2)
    assert set(core.raw_user_ids.tolist()) == {0, 1}
    assert set(core.raw_item_ids.tolist()) == {5, 6}
