"""`evaluate` under each protocol, against an independent NumPy ranking."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from keras_rec.data import (
    EvalSet,
    Interactions,
    given_split,
    leave_one_out,
    make_synthetic,
    strong_generalization,
)
from keras_rec.data.splits import sample_negatives, targets_matrix
from keras_rec.evaluation import evaluate, rank_full, rank_sampled
from keras_rec.models.base import Recommender
from keras_rec.models.popularity import Popularity


class UserScores(Recommender):
    """A user-id model whose scores are the rows of a fixed table."""

    input_kind = "user_id"
    history_length = None

    def __init__(self, table):
        self.table = np.asarray(table, np.float32)
        self.num_items = self.table.shape[1]

    def score_all(self, inputs):
        return tf.constant(self.table[inputs["user_id"].numpy()])


class HistoryScores(Recommender):
    """A history model: `base + sum of item_item[h]` over the history items."""

    input_kind = "item_history"

    def __init__(self, base, item_item, history_length=None):
        self.base = np.asarray(base, np.float32)
        self.item_item = np.asarray(item_item, np.float32)
        self.num_items = len(self.base)
        self.history_length = history_length
        self.widths = []
        self.inputs = []

    def score_all(self, inputs):
        histories = inputs["item_history"].numpy()
        self.widths.append(histories.shape[1])
        self.inputs.append(histories)
        return tf.constant([self.scores(h[h >= 0]) for h in histories])

    def scores(self, history):
        return self.base + self.item_item[history].sum(axis=0)


def reference_metrics(rankings, relevant, ks, names):
    """Means of each `name@k` from the README's definitions."""
    out = {}
    for k in ks:
        values = {name: [] for name in names}
        for ranked, rel in zip(rankings, relevant, strict=True):
            if not rel:
                continue
            ranks = [r for r, i in enumerate(ranked[:k], start=1) if i in rel]
            dcg = sum(1 / math.log2(r + 1) for r in ranks)
            idcg = sum(1 / math.log2(r + 1) for r in range(1, min(k, len(rel)) + 1))
            value = {
                "hr": float(bool(ranks)),
                "recall": len(ranks) / min(k, len(rel)),
                "recall_unclipped": len(ranks) / len(rel),
                "ndcg": dcg / idcg,
                "mrr": 1 / ranks[0] if ranks else 0.0,
            }
            for name in names:
                values[name].append(value[name])
        out.update({f"{n}@{k}": float(np.mean(v)) for n, v in values.items()})
    return out


def full_ranking(scores: np.ndarray, history, targets=()) -> list[int]:
    """All items not in `history`, by descending score; among equal scores
    the `targets` after the other items, then ascending id."""
    history = set(np.asarray(history).tolist())
    items = [i for i in range(len(scores)) if i not in history]
    return sorted(items, key=lambda i: (-scores[i], i in targets, i))


def targets_of(eval_set: EvalSet) -> list[set]:
    t = eval_set.targets
    return [
        set(t.indices[t.indptr[r] : t.indptr[r + 1]].tolist())
        for r in range(len(t.indptr) - 1)
    ]


def assert_matches(result, expected):
    for name, value in expected.items():
        assert result[name] == pytest.approx(value, abs=1e-9), name


# --- loo_sampled -------------------------------------------------------------


def sampled_set():
    targets = targets_matrix([np.array([0]), np.array([6]), np.array([3])], 8)
    negatives = np.array([[1, 2, 3, 4], [0, 1, 2, 3], [7, 6, 5, 4]])
    histories = [np.array([5]), np.array([7]), np.array([0])]
    return EvalSet(np.array([0, 1, 2]), histories, targets, negatives)


def test_loo_sampled_ties_count_against_the_target():
    table = np.zeros((3, 8))
    table[0] = [0.5, 0.9, 0.5, 0.1, 0.2, 9, 0, 0]  # one higher, one tie: rank 3
    table[1] = [0.3, 0.3, 0.3, 0.3, 0, 0, 0.3, 0]  # all tied: rank 5 (last)
    table[2] = [9, 0, 0, 0.7, 0.1, 0.2, 0.6, 0.5]  # the best: rank 1
    model = UserScores(table)
    ranks = rank_sampled(model, sampled_set())
    np.testing.assert_array_equal(ranks, [2, 4, 0])
    result = evaluate(model, sampled_set(), "loo_sampled", ks=(1, 3, 5))
    assert result["num_users"] == 3
    assert result["hr@1"] == pytest.approx(1 / 3)
    assert result["hr@3"] == pytest.approx(2 / 3)
    assert result["hr@5"] == pytest.approx(1.0)
    assert result["ndcg@3"] == pytest.approx((1 / math.log2(4) + 1) / 3)
    assert result["mrr@5"] == pytest.approx((1 / 3 + 1 / 5 + 1) / 3)


@pytest.mark.parametrize("protocol", ["loo_sampled", "loo_full"])
def test_nan_scores_raise_instead_of_ranking(protocol):
    # Every comparison with NaN is false: unchecked, an all-NaN row ranked
    # its target first (loo_sampled HR@10 = 1.0 from NaN weights).
    table = np.zeros((3, 8))
    table[2, 4] = np.nan
    with pytest.raises(FloatingPointError, match="NaN scores for 1 of 3 users"):
        evaluate(UserScores(table), sampled_set(), protocol, ks=(5,))
    table[2] = np.nan
    with pytest.raises(FloatingPointError, match="first: evaluation row 2"):
        evaluate(UserScores(table), sampled_set(), protocol, ks=(5,), batch_size=2)


@pytest.mark.parametrize("batch_size", [1, 4, 1024])
def test_loo_sampled_against_numpy(batch_size):
    rng = np.random.default_rng(0)
    data = make_synthetic(num_users=60, num_items=50, mean_length=8, seed=4)
    split = leave_one_out(data)
    split.test.negatives = sample_negatives(split.test, 20, 50, seed=1)
    table = rng.integers(0, 5, size=(60, 50)).astype(float)  # many ties
    result = evaluate(
        UserScores(table),
        split.test,
        "loo_sampled",
        ks=(1, 5, 10),
        batch_size=batch_size,
    )
    targets = split.test.targets.indices
    rankings = []
    for r, user in enumerate(split.test.users):
        target_score = table[user, targets[r]]
        rank = int((table[user, split.test.negatives[r]] >= target_score).sum())
        # The target is placed after every negative that ties with it.
        rankings.append([-1] * rank + [targets[r]])
    expected = reference_metrics(
        rankings, [{t} for t in targets], (1, 5, 10), ("hr", "ndcg", "mrr")
    )
    assert_matches(result, expected)


def test_loo_sampled_with_k_beyond_the_candidates_raises():
    # 5 candidates and k = 10: every target would be in the top 10 (HR 1.0
    # for any model), so it is refused; k = 5 is the largest that means anything.
    model = UserScores(np.random.default_rng(0).random((3, 8)))
    with pytest.raises(ValueError, match="among 5 candidates"):
        evaluate(model, sampled_set(), "loo_sampled", ks=(10,))
    assert evaluate(model, sampled_set(), "loo_sampled", ks=(5,))["hr@5"] == 1.0


def test_loo_sampled_counts_each_distinct_negative_once():
    # NCF's ML-1M file lists the target among the negatives of 156 users;
    # its evaluate.py keys the scores by item, so the duplicate is not a
    # competitor. Repeated negatives count once.
    targets = targets_matrix([np.array([0]), np.array([1])], 8)
    negatives = np.array([[2, 0, 3, 3], [4, 4, 4, 5]])
    eval_set = EvalSet(
        np.array([0, 1]), [np.array([6]), np.array([7])], targets, negatives
    )
    table = np.zeros((2, 8))
    table[0] = [0.9, 0, 0.1, 0.95, 0, 0, 0, 0]  # above: item 3 (twice) -> rank 1
    table[1] = [0, 0.5, 0, 0, 0.7, 0.1, 0, 0]  # above: item 4 (thrice) -> rank 1
    np.testing.assert_array_equal(rank_sampled(UserScores(table), eval_set), [1, 1])
    table[0, 3] = 0.0  # the target is first: its own copy does not tie it
    np.testing.assert_array_equal(rank_sampled(UserScores(table), eval_set), [0, 1])


def test_loo_sampled_needs_negatives_and_single_targets():
    model = UserScores(np.zeros((3, 8)))
    eval_set = sampled_set()
    eval_set.negatives = None
    with pytest.raises(ValueError, match="needs negatives"):
        evaluate(model, eval_set, "loo_sampled", ks=(1,))
    eval_set = sampled_set()
    eval_set.targets = targets_matrix(
        [np.array([0, 1]), np.array([6]), np.array([3])], 8
    )
    with pytest.raises(ValueError, match="exactly one target"):
        evaluate(model, eval_set, "loo_sampled", ks=(1,))


# --- loo_full ----------------------------------------------------------------


def test_loo_full_masks_history_items():
    # Item 1 (history) has the highest score; the target 2 is the best of the
    # rest, so HR@1 = 1. Unmasked, the target would be second.
    targets = targets_matrix([np.array([2]), np.array([4])], 6)
    eval_set = EvalSet(np.array([0, 1]), [np.array([1, 0]), np.array([4, 3])], targets)
    table = [[5, 9, 4, 1, 1, 1], [0, 0, 0, 0, 0, 0]]
    result = evaluate(UserScores(table), eval_set, "loo_full", ks=(1, 2))
    # User 1: its target 4 is also in its history: masked, it cannot be
    # recommended, so it is no target (and user 1 no evaluated user).
    assert result["hr@1"] == pytest.approx(1.0)
    assert result["hr@2"] == pytest.approx(1.0)
    assert result["num_users"] == 1
    top = rank_full(UserScores(table), eval_set, 3)
    np.testing.assert_array_equal(top[0], [2, 3, 4])  # ties: ascending id
    np.testing.assert_array_equal(top[1], [0, 1, 2])


@pytest.mark.parametrize("batch_size", [3, 1024])
def test_loo_full_against_numpy(batch_size):
    rng = np.random.default_rng(1)
    data = make_synthetic(num_users=50, num_items=40, mean_length=8, seed=5)
    split = leave_one_out(data)
    table = rng.integers(0, 6, size=(50, 40)).astype(float)
    # Make every user's history items the top-scored ones: masking matters.
    for r, user in enumerate(split.test.users):
        table[user, split.test.histories[r]] = 100.0
    ks = (1, 10, 20)
    result = evaluate(
        UserScores(table), split.test, "loo_full", ks=ks, batch_size=batch_size
    )
    targets = targets_of(split.test)
    rankings = [
        full_ranking(table[u], split.test.histories[r], targets[r])
        for r, u in enumerate(split.test.users)
    ]
    expected = reference_metrics(rankings, targets, ks, ("hr", "ndcg", "mrr"))
    assert_matches(result, expected)
    assert expected["hr@20"] > 0.3  # the case is not degenerate
    assert result["num_users"] == 50


def test_rank_full_respects_the_models_scoring_batch_size():
    # NCF's score_all scores every user-item pair: its cap bounds the memory.
    class Capped(UserScores):
        scoring_batch_size = 4

        def score_all(self, inputs):
            self.calls.append(len(inputs["user_id"]))
            return super().score_all(inputs)

    data = make_synthetic(num_users=30, num_items=20, mean_length=6, seed=2)
    split = leave_one_out(data)
    table = np.random.default_rng(0).random((30, 20))
    model = Capped(table)
    model.calls = []
    top = rank_full(model, split.test, 5, batch_size=1024)
    assert max(model.calls) == 4 and sum(model.calls) == len(split.test)
    np.testing.assert_array_equal(top, rank_full(UserScores(table), split.test, 5))


def test_popularity_model_on_loo_full():
    data = make_synthetic(num_users=80, num_items=60, mean_length=10, seed=6)
    split = leave_one_out(data)
    model = Popularity(data.num_items).fit_closed_form(split.train)
    result = evaluate(model, split.test, "loo_full", ks=(5, 10), batch_size=16)
    counts = np.bincount(split.train.item_ids, minlength=60).astype(float)
    targets = targets_of(split.test)
    rankings = [
        full_ranking(counts, h, t)
        for h, t in zip(split.test.histories, targets, strict=True)
    ]
    expected = reference_metrics(rankings, targets, (5, 10), ("hr", "ndcg", "mrr"))
    assert_matches(result, expected)


def test_full_ranking_ties_count_against_the_targets():
    # Items 1, 2 and 3 tie after item 0; target 2 comes after 1 and 3.
    targets = targets_matrix([np.array([2]), np.array([1, 2])], 5)
    eval_set = EvalSet(np.array([0, 1]), [np.array([4]), np.array([4])], targets)
    table = [[9, 5, 5, 5, 0], [1, 1, 1, 1, 1]]
    np.testing.assert_array_equal(
        rank_full(UserScores(table), eval_set, 3), [[0, 1, 3], [0, 3, 1]]
    )
    result = evaluate(UserScores(table), eval_set, "loo_full", ks=(3, 4))
    assert result["hr@3"] == pytest.approx(0.5)  # user 1 (both targets at 3, 4)
    assert result["mrr@4"] == pytest.approx((1 / 4 + 1 / 3) / 2)
    # A tie at the k-th place only (item 1 with item 2), and one at +inf
    # (a model's own score, not a mask): the target comes after.
    targets = targets_matrix([np.array([1]), np.array([0])], 5)
    eval_set = EvalSet(np.array([0, 1]), [np.array([4]), np.array([4])], targets)
    table = [[9, 5, 5, 0, 0], [np.inf, 0, np.inf, 1, 0]]
    np.testing.assert_array_equal(
        rank_full(UserScores(table), eval_set, 2), [[0, 2], [2, 0]]
    )
    with pytest.raises(ValueError, match="k=6 must be between 1 and the 5 items"):
        rank_full(UserScores(table), eval_set, 6)
    # A constant model never gains from its ties, whatever the ids.
    data = make_synthetic(num_users=60, num_items=30, mean_length=6, seed=2)
    split = leave_one_out(data)
    constant = UserScores(np.ones((60, 30)))
    assert evaluate(constant, split.test, "loo_full", ks=(10,))["hr@10"] == 0.0


def test_history_length_truncates_the_input_not_the_mask():
    base = np.arange(10, 0, -1, dtype=float)  # item 0 best, item 9 worst
    model = HistoryScores(base, np.zeros((10, 10)), history_length=2)
    targets = targets_matrix([np.array([5])], 10)
    eval_set = EvalSet(np.array([0]), [np.array([0, 1, 2, 3, 4])], targets)
    result = evaluate(model, eval_set, "loo_full", ks=(1,))
    assert model.widths == [2]
    np.testing.assert_array_equal(model.inputs[0], [[3, 4]])  # the latest two
    assert result["hr@1"] == 1.0  # items 0..4 are masked although unseen by it


# --- holdout_full ------------------------------------------------------------


def test_holdout_full_against_numpy():
    rng = np.random.default_rng(2)
    num_users, num_items = 30, 60
    users = rng.integers(0, num_users, size=300)
    items = rng.integers(0, num_items, size=300)
    is_test = rng.random(300) < 0.25
    train = Interactions(users[~is_test], items[~is_test], num_users, num_items)
    test = Interactions(users[is_test], items[is_test], num_users, num_items)
    split = given_split(train, test)
    table = rng.integers(0, 4, size=(num_users, num_items)).astype(float)
    # Test items score 2 higher: hits in the top 2, and ties with others.
    table[test.user_ids, test.item_ids] += 2
    ks = (2, 20)
    result = evaluate(
        UserScores(table), split.test, "holdout_full", ks=ks, batch_size=7
    )
    train_sets = [set() for _ in range(num_users)]
    for u, i in zip(train.user_ids, train.item_ids, strict=True):
        train_sets[u].add(int(i))
    test_sets = [set() for _ in range(num_users)]
    for u, i in zip(test.user_ids, test.item_ids, strict=True):
        test_sets[u].add(int(i))
    evaluated = [u for u in range(num_users) if test_sets[u]]
    np.testing.assert_array_equal(split.test.users, evaluated)
    # A test item the user also has in training is masked: it is no target.
    relevant = [test_sets[u] - train_sets[u] for u in evaluated]
    rankings = [
        full_ranking(table[u], sorted(train_sets[u]), r)
        for u, r in zip(evaluated, relevant, strict=True)
    ]
    assert any(test_sets[u] & train_sets[u] for u in evaluated)  # the case occurs
    names = ("recall", "recall_unclipped", "ndcg")
    expected = reference_metrics(rankings, relevant, ks, names)
    assert_matches(result, expected)
    assert result["num_users"] == sum(1 for r in relevant if r)
    # The case tells the two recalls apart.
    assert result["recall_unclipped@2"] < result["recall@2"]
    assert set(result) == {
        "recall@2",
        "recall@20",
        "recall_unclipped@2",
        "recall_unclipped@20",
        "ndcg@2",
        "ndcg@20",
        "num_users",
        "seconds",
    }


def test_masked_items_never_count_when_k_exceeds_the_unmasked_items():
    # 4 items, 3 in the history: only item 3 can be recommended. Target 0 is
    # also in the history (a repeat); with k = 4 the masked items fill the
    # rest of the top k at -inf, and must still never count as hits. The
    # masked target is no target: the relevant set is {3}.
    targets = targets_matrix([np.array([0, 3])], 4)
    eval_set = EvalSet(np.array([0]), [np.array([0, 1, 2])], targets)
    model = UserScores([[4.0, 3.0, 2.0, 1.0]])
    result = evaluate(model, eval_set, "holdout_full", ks=(1, 4))
    assert result["recall@1"] == pytest.approx(1.0)  # 1 hit / min(1, 1)
    assert result["recall@4"] == pytest.approx(1.0)  # 1 hit / min(4, 1)
    assert result["ndcg@4"] == pytest.approx(1.0)
    # Only masked targets: nothing to evaluate.
    only_masked = EvalSet(np.array([0]), [np.array([0, 1])], targets_matrix([[0]], 4))
    with pytest.raises(ValueError, match="No user in the evaluation set"):
        evaluate(model, only_masked, "holdout_full", ks=(1,))


def test_a_target_scored_minus_infinity_still_ranks_before_masked_items():
    # 6 items, item 0 in the history, target 5 scored -inf by the model:
    # only 5 items are candidates, so with k = 5 the target is in the top 5.
    eval_set = EvalSet(np.array([0]), [np.array([0])], targets_matrix([[5]], 6))
    model = UserScores([[0.0, 0.0, 0.0, 0.0, 0.0, -np.inf]])
    result = evaluate(model, eval_set, "holdout_full", ks=(4, 5))
    assert result["recall@4"] == 0.0
    assert result["recall@5"] == pytest.approx(1.0)
    assert result["ndcg@5"] == pytest.approx(1.0 / np.log2(6.0))


def test_full_ranking_with_k_beyond_the_items_raises():
    # tf.math.top_k failed with "input must have at least k columns".
    eval_set = EvalSet(np.array([0]), [np.array([0])], targets_matrix([[3]], 4))
    with pytest.raises(ValueError, match="ranks all 4 items, so k=5"):
        evaluate(UserScores([[4.0, 3.0, 2.0, 1.0]]), eval_set, "holdout_full", ks=(5,))


def test_users_without_targets_are_left_out_of_the_mean():
    targets = targets_matrix([np.array([0]), np.array([], np.int64), np.array([1])], 4)
    eval_set = EvalSet(np.arange(3), [np.array([], np.int64)] * 3, targets)
    table = np.array([[1.0, 0, 0, 0]] * 3)
    result = evaluate(UserScores(table), eval_set, "holdout_full", ks=(1,))
    assert result["num_users"] == 2
    assert result["recall@1"] == pytest.approx(0.5)  # not 1/3


# --- strong generalization ---------------------------------------------------


def test_strong_generalization_against_numpy():
    rng = np.random.default_rng(3)
    data = make_synthetic(num_users=70, num_items=40, mean_length=10, seed=7)
    split = strong_generalization(data, 10, 10, seed=1)
    n = split.num_items
    model = HistoryScores(rng.random(n), rng.random((n, n)))
    ks = (5, 10, 20)
    result = evaluate(model, split.test, "strong_generalization", ks=ks, batch_size=4)
    rankings = [full_ranking(model.scores(h), h) for h in split.test.histories]
    expected = reference_metrics(
        rankings, targets_of(split.test), ks, ("recall", "ndcg")
    )
    assert_matches(result, expected)
    assert result["num_users"] == 10
    # Each batch's input is as wide as its longest fold-in history.
    assert model.widths[0] == max(len(h) for h in split.test.histories[:4])


def test_user_id_model_on_strong_generalization_raises():
    data = make_synthetic(num_users=40, num_items=30, mean_length=8, seed=8)
    split = strong_generalization(data, 5, 5, seed=0)
    model = UserScores(np.zeros((40, split.num_items)))
    with pytest.raises(ValueError, match="unseen in training") as info:
        evaluate(model, split.test, "strong_generalization", ks=(5,))
    assert "UserScores" in str(info.value)


@pytest.mark.parametrize(
    "kwargs", [dict(), dict(ks=(1,)), dict(ks=(1,), metrics=("hr",))]
)
def test_unknown_protocol(kwargs):
    model = UserScores(np.zeros((3, 8)))
    with pytest.raises(ValueError, match="Unknown protocol"):
        evaluate(model, sampled_set(), "loo_random", **kwargs)


def test_default_cut_offs():
    data = make_synthetic(num_users=30, num_items=200, mean_length=8, seed=9)
    split = leave_one_out(data)
    table = np.random.default_rng(0).random((30, 200))
    result = evaluate(UserScores(table), split.test, "loo_full")
    assert {"hr@10", "hr@20", "ndcg@10", "ndcg@20", "mrr@10"} <= set(result)
    split.test.negatives = sample_negatives(split.test, 100, 200, seed=0)
    result = evaluate(UserScores(table), split.test, "loo_sampled")
    assert {"hr@10", "ndcg@10"} <= set(result)
    assert set(result) == {"hr@10", "ndcg@10", "mrr@10", "num_users", "seconds"}


@pytest.mark.parametrize("protocol", ["loo_sampled", "loo_full"])
def test_a_model_built_for_another_item_count_is_refused(protocol):
    model = Popularity(7)  # the evaluation set has 8 items
    with pytest.raises(ValueError, match="scores 7 items but the evaluation set has 8"):
        evaluate(model, sampled_set(), protocol, ks=(5,))


def test_an_empty_evaluation_set_is_refused():
    empty = EvalSet(
        np.array([], np.int64), [], targets_matrix([], 8), np.zeros((0, 4), np.int64)
    )
    with pytest.raises(ValueError, match="No user in the evaluation set"):
        evaluate(UserScores(np.zeros((1, 8))), empty, "loo_sampled", ks=(5,))


@pytest.mark.parametrize("ks", [(-1, 10), (0,), (2.5,)])
def test_cut_offs_must_be_positive_integers(ks):
    # hr@-1 was reported as the hits of all but the last rank.
    with pytest.raises(ValueError, match="positive integer"):
        evaluate(UserScores(np.zeros((3, 8))), sampled_set(), "loo_sampled", ks=ks)
