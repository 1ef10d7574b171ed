"""Protocol splits: leave-one-out, given files, holdout, strong generalization."""

from __future__ import annotations

import collections
import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp

from keras_rec.data import (
    EvalSet,
    Interactions,
    given_split,
    leave_one_out,
    make_synthetic,
    random_holdout,
    strong_generalization,
)
from keras_rec.data.splits import (
    random_item_validation,
    sample_negatives,
    targets_matrix,
    targets_of,
)


@pytest.fixture(scope="module")
def synthetic():
    return make_synthetic(num_users=120, num_items=80, mean_length=12, seed=3)


def pairs_of(data: Interactions) -> collections.Counter:
    return collections.Counter(
        zip(data.user_ids.tolist(), data.item_ids.tolist(), strict=True)
    )


def row(matrix: sp.csr_matrix, r: int) -> list[int]:
    return matrix.indices[matrix.indptr[r] : matrix.indptr[r + 1]].tolist()


# --- leave-one-out -----------------------------------------------------------


def test_leave_one_out_by_hand():
    # File order is not time order; user 2 has 2 items, user 3 one item.
    data = Interactions(
        user_ids=np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 3]),
        item_ids=np.array([4, 1, 2, 3, 5, 0, 1, 2, 3, 5]),
        num_users=4,
        num_items=6,
        timestamps=np.array([40, 10, 20, 30, 3, 1, 2, 1, 2, 1]),
    )
    split = leave_one_out(data)
    assert split.protocol == "leave_one_out"
    np.testing.assert_array_equal(split.test.users, [0, 1])
    assert [row(split.test.targets, r) for r in range(2)] == [[4], [5]]
    assert [row(split.validation.targets, r) for r in range(2)] == [[3], [1]]
    # The test history includes the validation item; the validation one not.
    assert [h.tolist() for h in split.test.histories] == [[1, 2, 3], [0, 1]]
    assert [h.tolist() for h in split.validation.histories] == [[1, 2], [0]]
    train = [s.tolist() for s in split.train.sequences()]
    # Users with fewer than 3 interactions stay wholly in training.
    assert train == [[1, 2], [0], [2, 3], [5]]
    assert (split.num_users, split.num_items) == (4, 6)

    no_validation = leave_one_out(data, validation=False)
    assert no_validation.validation is None
    np.testing.assert_array_equal(no_validation.test.users, [0, 1, 2])
    assert [row(no_validation.test.targets, r) for r in range(3)] == [[4], [5], [3]]
    train = [s.tolist() for s in no_validation.train.sequences()]
    assert train == [[1, 2, 3], [0, 1], [2], [5]]


def test_leave_one_out_properties(synthetic):
    split = leave_one_out(synthetic)
    sequences = synthetic.sequences()
    train = split.train.sequences()
    assert len(split.test) == synthetic.num_users  # every user has >= 5 items
    for r, user in enumerate(split.test.users):
        seq = sequences[user]
        assert row(split.test.targets, r) == [seq[-1]]
        assert row(split.validation.targets, r) == [seq[-2]]
        assert train[user].tolist() == seq[:-2].tolist()
        assert split.test.histories[r].tolist() == seq[:-1].tolist()
        # No leakage (synthetic sequences never repeat an item).
        assert seq[-1] not in train[user] and seq[-2] not in train[user]
        assert seq[-1] not in split.test.histories[r]
    # Every interaction is in exactly one of train / validation / test.
    assert len(split.train) + 2 * len(split.test) == len(synthetic)


def test_leave_one_out_min_interactions():
    data = Interactions(np.array([0, 0, 0, 1, 1, 1, 1]), np.arange(7), 2, 7)
    split = leave_one_out(data, min_interactions=4)
    np.testing.assert_array_equal(split.test.users, [1])
    assert split.train.user_counts().tolist() == [3, 2]


# --- given split -------------------------------------------------------------


def test_given_split():
    train = Interactions(np.array([0, 0, 1, 2]), np.array([1, 2, 0, 3]), 4, 5)
    test = Interactions(np.array([2, 0, 2]), np.array([4, 3, 1]), 4, 5)
    split = given_split(train, test)
    assert split.train is train
    np.testing.assert_array_equal(split.test.users, [0, 2])  # users 1, 3: no test
    assert [row(split.test.targets, r) for r in range(2)] == [[3], [1, 4]]
    assert [h.tolist() for h in split.test.histories] == [[1, 2], [3]]
    assert split.test.targets.shape == (2, 5)


def test_given_split_needs_one_id_space():
    train = Interactions(np.array([0]), np.array([1]), 2, 5)
    test = Interactions(np.array([0]), np.array([1]), 2, 6)
    with pytest.raises(ValueError, match="one id space"):
        given_split(train, test)


def test_given_split_refuses_a_test_user_without_training_items():
    train = Interactions(np.array([0, 0]), np.array([1, 2]), 3, 5)
    test = Interactions(np.array([0, 2]), np.array([3, 4]), 3, 5)
    with pytest.raises(ValueError, match="1 test users .*first: user id 2"):
        given_split(train, test)


# --- random holdout ----------------------------------------------------------


def test_random_holdout(synthetic):
    split = random_holdout(synthetic, 0.2, seed=1)
    assert split.protocol == "random_holdout"
    train_matrix = split.train.to_csr()
    test_rows = {u: row(split.test.targets, r) for r, u in enumerate(split.test.users)}
    for user, seq in enumerate(synthetic.sequences()):
        held = test_rows.get(user, [])
        assert len(held) == max(1, round(0.2 * len(seq)))
        assert not set(held) & set(row(train_matrix, user))
    # Train and test together are the original interactions.
    test_pairs = collections.Counter(
        (u, i) for u, items in test_rows.items() for i in items
    )
    assert pairs_of(split.train) + test_pairs == pairs_of(synthetic)
    fraction = sum(test_pairs.values()) / len(synthetic)
    assert 0.17 < fraction < 0.23


def test_random_holdout_is_seeded(synthetic):
    first = random_holdout(synthetic, 0.2, seed=7)
    again = random_holdout(synthetic, 0.2, seed=7)
    other = random_holdout(synthetic, 0.2, seed=8)
    assert first.train.checksum() == again.train.checksum()
    assert (first.test.targets != again.test.targets).nnz == 0
    assert first.train.checksum() != other.train.checksum()


def test_random_holdout_keeps_single_item_users_in_train():
    data = Interactions(np.array([0, 1, 1, 1]), np.array([0, 1, 2, 3]), 2, 4)
    split = random_holdout(data, 0.5, seed=0)
    np.testing.assert_array_equal(split.test.users, [1])
    assert split.train.user_counts().tolist() == [1, 1]


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_random_holdout_invalid_fraction(synthetic, fraction):
    with pytest.raises(ValueError, match="test_fraction"):
        random_holdout(synthetic, fraction)


# --- strong generalization ---------------------------------------------------


def test_given_split_rejects_files_remapped_separately():
    # Same sizes, different raw items: {10, 20, 30} and {10, 20, 40}. Test
    # item 40 would silently become train item 30.
    train = Interactions.from_raw([1, 1, 2, 2], [10, 20, 30, 10])
    test = Interactions.from_raw([1, 2, 2], [40, 20, 10])
    with pytest.raises(ValueError, match="different raw item ids") as info:
        given_split(train, test)
    assert "30" in str(info.value) and "40" in str(info.value)
    users = Interactions.from_raw([1, 1, 3], [10, 20, 30])
    with pytest.raises(ValueError, match="different raw user ids"):
        given_split(train, users)


def test_given_split_accepts_one_shared_vocabulary():
    data = Interactions.from_raw([1, 1, 2, 2, 1], [10, 20, 30, 10, 40])
    split = given_split(data.subset(np.arange(5) < 3), data.subset(np.arange(5) >= 3))
    assert [r.indices.tolist() for r in split.test.targets] == [[3], [0]]


@pytest.mark.parametrize(
    "num_validation_users, num_test_users",
    [(-2, -2), (1, 0), (1, -1), (1.5, 1), (1, 2.0), (True, 1)],
)
def test_strong_generalization_rejects_bad_user_counts(
    synthetic, num_validation_users, num_test_users
):
    with pytest.raises(ValueError, match="must be an integer"):
        strong_generalization(synthetic, num_validation_users, num_test_users)


def test_strong_generalization():
    # Many rare items, so that some belong to held-out users only.
    synthetic = make_synthetic(num_users=100, num_items=400, mean_length=10, seed=3)
    split = strong_generalization(synthetic, 20, 30, seed=5)
    assert split.protocol == "strong_generalization"
    val, test = split.validation, split.test
    assert not val.known_users and not test.known_users
    # Held-out users with fewer than 5 (train-known) items are not evaluated.
    assert len(val) <= 20 and len(test) <= 30 and len(val) + len(test) > 30
    train_users = set(np.flatnonzero(split.train.user_counts() > 0).tolist())
    assert len(train_users) == synthetic.num_users - 50
    # Disjoint user sets; no held-out user has a training row.
    assert not train_users & set(val.users.tolist())
    assert not train_users & set(test.users.tolist())
    assert not set(val.users.tolist()) & set(test.users.tolist())

    # Items are renumbered to those the training users have.
    in_train = np.isin(synthetic.user_ids, sorted(train_users))
    train_items = np.unique(synthetic.item_ids[in_train])
    np.testing.assert_array_equal(split.train.raw_item_ids, train_items)
    assert split.num_items == len(train_items) < synthetic.num_items
    assert (split.train.item_counts() > 0).all()
    sequences = synthetic.sequences()
    for eval_set in (val, test):
        assert eval_set.targets.shape[1] == split.num_items
        for r, user in enumerate(eval_set.users):
            fold_in = eval_set.histories[r].tolist()
            held = row(eval_set.targets, r)
            original = [i for i in sequences[user] if i in train_items]
            # Fold-in and targets partition the user's (train-known) items.
            renumbered = np.searchsorted(train_items, original).tolist()
            assert sorted(fold_in + held) == sorted(renumbered)
            # The reference code's int(0.2 * n): 9 items give 1 target, not 2.
            assert len(original) >= 5
            assert len(held) == int(0.2 * len(original) + 1e-9)
            # Fold-in keeps the time order.
            assert fold_in == [i for i in renumbered if i in fold_in]


def test_strong_generalization_evaluates_users_as_the_reference_code():
    # Users 0-7 have 2, 4, 5, 9, 10, 14, 15, 24 items, users 8-13 all 24.
    lengths = [2, 4, 5, 9, 10, 14, 15, 24] + [24] * 6
    users = np.repeat(np.arange(len(lengths)), lengths)
    items = np.concatenate([np.arange(n) for n in lengths])
    data = Interactions.from_raw(users, items)
    seen = {}
    for seed in range(6):
        split = strong_generalization(data, 4, 4, seed=seed)
        assert split.num_items == 24  # the full users keep every item
        heldout_users = set()
        for eval_set in (split.validation, split.test):
            for r, user in enumerate(eval_set.users):
                n = lengths[int(data.raw_user_ids[user])]
                seen[n] = (len(eval_set.histories[r]), len(row(eval_set.targets, r)))
                heldout_users.add(int(user))
        trained = set(np.flatnonzero(split.train.user_counts() > 0).tolist())
        # Users under 5 items who are held out are not evaluated.
        assert len(trained) + len(heldout_users) == 14 - sum(
            1 for u in (0, 1) if u not in trained
        )
    # floor(0.2 n) targets (the reference code's int(0.2 * n)), the rest fold-in.
    assert seen == {
        5: (4, 1),
        9: (8, 1),
        10: (8, 2),
        14: (12, 2),
        15: (12, 3),
        24: (20, 4),
    }
    half = strong_generalization(data, 4, 4, fold_in_fraction=0.5, seed=0)
    for eval_set in (half.validation, half.test):
        for r, user in enumerate(eval_set.users):
            n = lengths[int(data.raw_user_ids[user])]
            assert len(row(eval_set.targets, r)) == n // 2


def test_strong_generalization_draws_the_targets_at_random():
    # 14 users with the same 24 items in the same order: a fixed rule (the
    # latest 20%, the first ones) would give every held-out user one set.
    data = Interactions.from_raw(
        np.repeat(np.arange(14), 24), np.tile(np.arange(24), 14)
    )
    drawn = []
    for seed in range(3):
        split = strong_generalization(data, 4, 4, seed=seed)
        for eval_set in (split.validation, split.test):
            drawn += [
                tuple(row(eval_set.targets, r)) for r in range(len(eval_set.users))
            ]
    assert len(drawn) == 24 and all(len(t) == 4 for t in drawn)
    assert len(set(drawn)) > 12


def test_strong_generalization_drops_items_unknown_to_training():
    # Item 9 belongs to one user only; whether it survives depends on whether
    # that user trains. Check both outcomes against the rule over many seeds.
    users = np.repeat(np.arange(10), 6)
    items = np.tile(np.arange(6), 10)
    users = np.append(users, 3)
    items = np.append(items, 9)
    data = Interactions.from_raw(users, items)
    outcomes = set()
    for seed in range(12):
        split = strong_generalization(data, 2, 2, seed=seed)
        user_3_trains = split.train.user_counts()[3] > 0
        assert split.num_items == (7 if user_3_trains else 6)
        assert (9 in split.train.raw_item_ids.tolist()) == user_3_trains
        outcomes.add(bool(user_3_trains))
    assert outcomes == {True, False}


def test_strong_generalization_is_seeded(synthetic):
    first = strong_generalization(synthetic, 10, 10, seed=1)
    again = strong_generalization(synthetic, 10, 10, seed=1)
    other = strong_generalization(synthetic, 10, 10, seed=2)
    np.testing.assert_array_equal(first.test.users, again.test.users)
    assert (first.test.targets != again.test.targets).nnz == 0
    assert first.train.checksum() == again.train.checksum()
    assert set(first.test.users.tolist()) != set(other.test.users.tolist())


def test_split_checksum_tells_splits_apart(synthetic):
    first = strong_generalization(synthetic, 10, 10, seed=1)
    assert (
        first.checksum() == strong_generalization(synthetic, 10, 10, seed=1).checksum()
    )
    others = [
        strong_generalization(synthetic, 10, 10, seed=2),
        strong_generalization(synthetic, 10, 10, fold_in_fraction=0.5, seed=1),
        dataclasses.replace(first, validation=None),
    ]
    # The same users and training data, one fold-in item moved to the targets.
    histories = list(first.test.histories)
    moved, histories[0] = histories[0][0], histories[0][1:]
    targets = first.test.targets.tolil()
    targets[0, moved] = 1.0
    others.append(
        dataclasses.replace(
            first,
            test=dataclasses.replace(
                first.test, histories=histories, targets=targets.tocsr()
            ),
        )
    )
    checksums = {split.checksum() for split in [first, *others]}
    assert len(checksums) == 1 + len(others)


def test_strong_generalization_too_many_heldout_users(synthetic):
    with pytest.raises(ValueError, match="held-out users"):
        strong_generalization(synthetic, 60, 60)


# --- EvalSet and negatives ---------------------------------------------------


def make_eval_set():
    histories = [np.array([0, 1, 1]), np.array([], np.int64), np.array([5, 2])]
    targets = targets_matrix([np.array([3]), np.array([0, 4]), np.array([1])], 8)
    return EvalSet(np.array([10, 11, 12]), histories, targets)


def test_eval_set_refuses_ids_past_the_catalogue_and_ragged_parts():
    targets = targets_matrix([np.array([3]), np.array([1])], 8)
    with pytest.raises(ValueError, match="Target item id 8 is outside"):
        targets_matrix([np.array([8])], 8)
    with pytest.raises(ValueError, match="Target item ids must be integers"):
        targets_matrix([np.array([1.5])], 8)
    with pytest.raises(ValueError, match="`histories` holds item id 9"):
        EvalSet(np.array([0, 1]), [np.array([9]), np.array([], np.float64)], targets)
    with pytest.raises(ValueError, match="`histories` holds item id -1"):
        EvalSet(np.array([0, 1]), [np.array([-1]), np.array([2])], targets)
    with pytest.raises(ValueError, match="integer item ids"):
        EvalSet(np.array([0, 1]), [np.array([1.5]), np.array([2])], targets)
    with pytest.raises(ValueError, match="one of each per user"):
        EvalSet(np.array([0, 1]), [np.array([1])], targets)
    with pytest.raises(ValueError, match="`negatives` holds item id 8"):
        EvalSet(np.array([0, 1]), [[1], [2]], targets, np.array([[4], [8]]))
    with pytest.raises(ValueError, match="one of each per user"):
        EvalSet(np.array([0, 1]), [[1], [2]], targets, np.array([[4]]))
    # Empty histories of any dtype are fine.
    assert len(EvalSet(np.array([0, 1]), [np.array([]), []], targets)) == 2


def test_eval_set_history_matrix_and_take():
    eval_set = make_eval_set()
    expected = np.zeros((3, 8))
    expected[[0, 0, 2, 2], [0, 1, 5, 2]] = 1
    np.testing.assert_array_equal(eval_set.history_matrix.toarray(), expected)
    part = eval_set.take(np.array([2, 0]))
    np.testing.assert_array_equal(part.users, [12, 10])
    assert [row(part.targets, r) for r in range(2)] == [[1], [3]]
    assert part.histories[0].tolist() == [5, 2]


def test_targets_of_selects_each_users_row_by_id():
    # Users 12 and 10 in that order, 99 not evaluated: an empty row.
    rows = targets_of(make_eval_set(), np.array([12, 99, 10, 11]))
    assert rows.shape == (4, 8)
    assert [row(rows, r) for r in range(4)] == [[1], [], [3], [0, 4]]
    twice = make_eval_set()
    twice.users = np.array([10, 11, 10])
    with pytest.raises(ValueError, match=r"users more than once \(3 rows, 2 users\)"):
        targets_of(twice, np.array([10]))


def test_sample_negatives():
    eval_set = make_eval_set()
    exclude = targets_matrix([np.array([7]), np.array([7]), np.array([])], 8)
    negatives = sample_negatives(eval_set, 3, 8, seed=0, exclude=exclude)
    assert negatives.shape == (3, 3)
    forbidden = (eval_set.history_matrix + eval_set.targets + exclude).toarray() > 0
    for r in range(3):
        assert len(set(negatives[r].tolist())) == 3
        assert not forbidden[r, negatives[r]].any()
    np.testing.assert_array_equal(
        negatives, sample_negatives(eval_set, 3, 8, seed=0, exclude=exclude)
    )


def test_sample_negatives_many_rows_seeded(synthetic):
    split = leave_one_out(synthetic)
    negatives = sample_negatives(split.test, 30, synthetic.num_items, seed=4)
    seen = (split.test.history_matrix + split.test.targets).toarray() > 0
    assert not np.take_along_axis(seen, negatives, axis=1).any()
    assert all(len(set(r)) == 30 for r in negatives.tolist())
    assert (negatives >= 0).all() and (negatives < synthetic.num_items).all()
    again = sample_negatives(split.test, 30, synthetic.num_items, seed=4)
    other = sample_negatives(split.test, 30, synthetic.num_items, seed=5)
    np.testing.assert_array_equal(negatives, again)
    assert (negatives != other).any()


def test_sample_negatives_too_few_unseen_items():
    with pytest.raises(ValueError, match="fewer than num_negatives"):
        sample_negatives(make_eval_set(), 6, 8, seed=0)


def test_random_item_validation_holds_out_one_item_per_user(synthetic):
    train, valid = random_item_validation(synthetic, seed=1)
    counts = np.bincount(synthetic.user_ids, minlength=synthetic.num_users)
    assert valid.users.tolist() == np.flatnonzero(counts >= 2).tolist()
    assert len(train) == len(synthetic) - len(valid)
    remaining = np.bincount(train.user_ids, minlength=synthetic.num_users)
    np.testing.assert_array_equal(remaining[valid.users], counts[valid.users] - 1)
    for row, user in enumerate(valid.users[:20]):
        target = valid.targets[row].indices
        assert len(target) == 1 and target[0] in synthetic.sequences()[user]
        # The history is the user's other training items, in order.
        assert valid.histories[row].tolist() == train.sequences()[user].tolist()
    other_train, other = random_item_validation(synthetic, seed=2)
    assert (other.targets != valid.targets).nnz > 0


def test_random_item_validation_refuses_repeated_pairs():
    # One copy of (0, 1) could be the validation target, the other training.
    data = Interactions(np.array([0, 0, 0]), np.array([1, 2, 1]), 1, 3)
    with pytest.raises(ValueError, match="repeat a .user, item. pair"):
        random_item_validation(data)


def test_random_item_validation_needs_a_user_with_two_items():
    data = Interactions(np.array([0, 1]), np.array([0, 1]), 2, 2)
    with pytest.raises(ValueError, match="2 or more interactions"):
        random_item_validation(data)


def test_strong_generalization_with_nothing_to_evaluate_is_an_error():
    # Every user has 4 items: none can be evaluated (5 or more needed).
    data = Interactions.from_raw(np.repeat(np.arange(20), 4), np.tile(np.arange(4), 20))
    with pytest.raises(ValueError, match="5 or more items"):
        strong_generalization(data, 2, 2, seed=0)
    # 6 items at fold_in_fraction 0.9: floor(0.6) = 0 targets.
    data = Interactions.from_raw(np.repeat(np.arange(20), 6), np.tile(np.arange(6), 20))
    with pytest.raises(ValueError, match="fold_in_fraction=0.9"):
        strong_generalization(data, 2, 2, fold_in_fraction=0.9, seed=0)
    assert len(strong_generalization(data, 0, 2, seed=0).test) == 2
