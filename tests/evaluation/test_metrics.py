"""Ranking metrics against an independent computation of the README's definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from keras_rec.evaluation import (
    hit_rate_at_k,
    mrr_at_k,
    ndcg_at_k,
    ranking_metrics,
    recall_at_k,
    recall_unclipped_at_k,
)


def reference(ranked: list[int], relevant: set[int], k: int) -> dict[str, float]:
    """The definitions, one user at a time, in plain Python."""
    top = ranked[:k]
    ranks = [r for r, item in enumerate(top, start=1) if item in relevant]
    ideal = min(k, len(relevant))
    dcg = sum(1.0 / math.log2(r + 1) for r in ranks)
    idcg = sum(1.0 / math.log2(r + 1) for r in range(1, ideal + 1))
    return {
        "hr": float(bool(ranks)),
        "recall": len(ranks) / ideal,
        "recall_unclipped": len(ranks) / len(relevant),
        "ndcg": dcg / idcg,
        "mrr": 1.0 / ranks[0] if ranks else 0.0,
    }


def rank(scores: np.ndarray) -> list[int]:
    """Items by descending score, ties by ascending id."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


def hit_matrix(rankings: list[list[int]], relevant: list[set[int]], width: int):
    hits = np.array(
        [
            [item in rel for item in r[:width]]
            for r, rel in zip(rankings, relevant, strict=True)
        ],
        np.float64,
    )
    return hits, np.array([len(rel) for rel in relevant])


def test_hand_computed_exact_values():
    # 3 relevant items, hits at ranks 1 and 3, k = 5.
    hits = np.array([[1, 0, 1, 0, 0]], np.float64)
    relevant = np.array([3])
    dcg = 1.0 + 1.0 / math.log2(4)  # 1.5
    idcg = 1.0 + 1.0 / math.log2(3) + 1.0 / math.log2(4)  # 2.1309...
    assert ndcg_at_k(hits, relevant, 5)[0] == pytest.approx(dcg / idcg)
    assert ndcg_at_k(hits, relevant, 5)[0] == pytest.approx(0.703918, abs=1e-6)
    assert recall_at_k(hits, relevant, 5)[0] == pytest.approx(2 / 3)
    assert hit_rate_at_k(hits, relevant, 5)[0] == 1.0
    assert mrr_at_k(hits, relevant, 5)[0] == 1.0
    # At k = 2 only the first hit counts, and min(k, 3) = 2 ideal hits.
    assert ndcg_at_k(hits, relevant, 2)[0] == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert recall_at_k(hits, relevant, 2)[0] == pytest.approx(0.5)


def test_single_item_leave_one_out_values():
    # The target at rank 3 (1-based): NDCG = 1/log2(4) = 0.5, MRR = 1/3.
    hits = np.array([[0, 0, 1, 0], [0, 0, 0, 0], [1, 0, 0, 0]], np.float64)
    relevant = np.ones(3, np.int64)
    result = ranking_metrics(hits, relevant, (2, 4))
    np.testing.assert_allclose(result["ndcg@4"], [0.5, 0.0, 1.0])
    np.testing.assert_allclose(result["mrr@4"], [1 / 3, 0.0, 1.0])
    np.testing.assert_allclose(result["hr@4"], [1.0, 0.0, 1.0])
    np.testing.assert_allclose(result["hr@2"], [0.0, 0.0, 1.0])
    np.testing.assert_allclose(result["recall@4"], result["hr@4"])


def test_fewer_relevant_items_than_k_is_not_penalised():
    # Both relevant items on top: perfect scores although k = 10 > 2.
    hits = np.zeros((1, 10))
    hits[0, :2] = 1
    result = ranking_metrics(hits, np.array([2]), (10,))
    assert result["ndcg@10"][0] == pytest.approx(1.0)
    assert result["recall@10"][0] == pytest.approx(1.0)
    # NGCF's original IDCG (from the hits in the top k only) would give 1.0
    # here too; with the hit at rank 2 only, the correct NDCG is < 1.
    late = np.zeros((1, 10))
    late[0, 1] = 1
    assert ndcg_at_k(late, np.array([2]), 10)[0] == pytest.approx(
        (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    )


def test_more_relevant_items_than_k_caps_recall_and_idcg():
    hits = np.ones((1, 3))
    result = ranking_metrics(hits, np.array([50]), (3,))
    assert result["recall@3"][0] == pytest.approx(1.0)  # 3 / min(3, 50)
    unclipped = ranking_metrics(hits, np.array([50]), (3,), ("recall_unclipped",))
    assert unclipped["recall_unclipped@3"][0] == pytest.approx(3 / 50)
    assert result["ndcg@3"][0] == pytest.approx(1.0)


def test_users_without_relevant_items_are_left_out():
    hits = np.array([[1, 0], [0, 0], [0, 1]], np.float64)
    result = ranking_metrics(hits, np.array([1, 0, 2]), (2,))
    assert all(len(v) == 2 for v in result.values())
    np.testing.assert_allclose(result["recall@2"], [1.0, 0.5])
    np.testing.assert_allclose(result["hr@2"], [1.0, 1.0])


@pytest.mark.parametrize("seed", range(4))
def test_random_cases_against_the_reference(seed):
    rng = np.random.default_rng(seed)
    num_users, num_items, width = 50, 30, 25
    # Few distinct scores, so many ties (broken by ascending id).
    scores = rng.integers(0, 4, size=(num_users, num_items)).astype(float)
    relevant = [
        set(rng.choice(num_items, size=rng.integers(0, 12), replace=False).tolist())
        for _ in range(num_users)
    ]
    rankings = [rank(s) for s in scores]
    hits, num_relevant = hit_matrix(rankings, relevant, width)
    ks = (1, 5, 10, 25)
    names = ("hr", "recall", "recall_unclipped", "ndcg", "mrr")
    result = ranking_metrics(hits, num_relevant, ks, names)
    kept = [u for u in range(num_users) if relevant[u]]
    assert len(kept) < num_users  # the case has users without targets
    for k in ks:
        expected = [reference(rankings[u], relevant[u], k) for u in kept]
        for name in names:
            np.testing.assert_allclose(
                result[f"{name}@{k}"], [e[name] for e in expected], rtol=1e-12
            )


def test_names_subset_and_argument_checks():
    hits = np.zeros((2, 5))
    result = ranking_metrics(hits, np.array([1, 1]), (3, 5), names=("ndcg",))
    assert sorted(result) == ["ndcg@3", "ndcg@5"]
    with pytest.raises(ValueError, match="exceeds"):
        ranking_metrics(hits, np.array([1, 1]), (6,))
    with pytest.raises(ValueError, match=r"\[n, K\]"):
        ranking_metrics(hits, np.array([1, 1, 1]), (3,))
    with pytest.raises(ValueError, match=r"\[n, K\]"):
        ranking_metrics(np.zeros(5), np.array([1]), (3,))
    with pytest.raises(ValueError, match=r"Unknown metric\(s\) \['ndgc'\].*'ndcg'"):
        ranking_metrics(hits, np.array([1, 1]), (3,), names=("ndcg", "ndgc"))
    with pytest.raises(ValueError, match="k must be a positive integer"):
        ranking_metrics(hits, np.array([1, 1]), (0, 3))


@pytest.mark.parametrize("function", [recall_at_k, recall_unclipped_at_k, ndcg_at_k])
def test_per_user_functions_refuse_a_user_without_relevant_items(function):
    # Called directly (not through `ranking_metrics`, which leaves such users
    # out), a zero denominator is an error, not NaN or a silent 0.
    hits = np.array([[1.0, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(function(hits, np.array([1, 2]), 2)[1], 0.0)
    with pytest.raises(ValueError, match="1 user.*no relevant item"):
        function(hits, np.array([1, 0]), 2)


@pytest.mark.parametrize(
    "function", [hit_rate_at_k, recall_at_k, recall_unclipped_at_k, ndcg_at_k, mrr_at_k]
)
def test_per_user_functions_refuse_fewer_columns_than_k_and_non_binary_hits(function):
    # recall_at_k([[1, 1]], [5], 5) gave 0.4: columns never ranked counted
    # as misses.
    with pytest.raises(ValueError, match=r"K >= k=5 ranked columns.*\(1, 2\)"):
        function(np.array([[1.0, 1.0]]), np.array([5]), 5)
    with pytest.raises(ValueError, match="only 0 and 1"):
        function(np.array([[np.nan, 1.0]]), np.array([2]), 2)


def test_ranking_metrics_refuses_impossible_hits_and_counts():
    with pytest.raises(ValueError, match="only 0 and 1"):
        ranking_metrics(np.array([[2.0, 0.0]]), np.array([1]), (2,))
    with pytest.raises(ValueError, match="only 0 and 1"):
        ranking_metrics(np.array([[np.nan, 0.0]]), np.array([1]), (2,))
    with pytest.raises(ValueError, match="more hits than relevant items"):
        ranking_metrics(np.array([[1.0, 1.0, 1.0]]), np.array([1]), (3,))
    with pytest.raises(ValueError, match="counts"):
        ranking_metrics(np.array([[1.0, 0.0]]), np.array([-1]), (2,))
    with pytest.raises(ValueError, match="counts"):
        ranking_metrics(np.array([[1.0, 0.0]]), np.array([1.5]), (2,))
    with pytest.raises(ValueError, match="no cut-off"):
        ranking_metrics(np.array([[1.0, 0.0]]), np.array([1]), ())
    # Whole-number floats are counts, and an empty set is no error.
    assert ranking_metrics(np.array([[1.0, 0.0]]), np.array([1.0]), (2,))[
        "ndcg@2"
    ].tolist() == [1.0]
    assert ranking_metrics(np.zeros((0, 2)), np.array([]), (2,))["ndcg@2"].size == 0
