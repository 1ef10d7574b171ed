"""Ranking metrics with binary relevance, as README.md defines them
(section "Protocols and metrics").

* DCG@k = sum over hits at rank r (1-based, r <= k) of 1 / log2(r + 1).
* NDCG@k = DCG@k / IDCG@k, with IDCG@k over min(k, |relevant|) ideal hits
  (the corrected definition; NGCF's original code used only the hits in the
  top k for IDCG, which inflates NDCG).
* Recall@k = hits@k / min(k, |relevant|) (Mult-VAE's definition).
* Unclipped Recall@k = hits@k / |relevant| (NGCF's and LightGCN's code: a
  user with more than k relevant items cannot reach 1; their papers'
  Recall@20 is this one).
* HR@k = 1 if any relevant item is in the top k (the single test item in
  leave-one-out).
* MRR@k = 1 / rank of the first hit within the top k, else 0.

`ranking_metrics` leaves users with no relevant items out of every mean;
the per-user Recall and NDCG functions raise for such a user (their
denominator would be 0), and every function raises for a k below 1.
"""

from __future__ import annotations

import numpy as np


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2))


def is_cutoff(k: object) -> bool:
    """Whether `k` is a valid cut-off: a positive integer (not a bool)."""
    return not isinstance(k, bool) and isinstance(k, int | np.integer) and k >= 1


def _check_k(k: int) -> None:
    if not is_cutoff(k):
        raise ValueError(f"k must be a positive integer. Received k={k!r}")


def _check_relevant(num_relevant: np.ndarray) -> np.ndarray:
    num_relevant = np.asarray(num_relevant)
    if np.any(num_relevant < 1):
        raise ValueError(
            f"{int(np.sum(num_relevant < 1))} user(s) have no relevant item: "
            "Recall and NDCG are undefined for them (`ranking_metrics` leaves "
            "them out)"
        )
    return num_relevant


def _check_hits(hits: np.ndarray, k: int) -> np.ndarray:
    """`hits` as an array, checked to be a `[n, K]` 0/1 matrix with K >= k."""
    _check_k(k)
    hits = np.asarray(hits)
    if hits.ndim != 2 or hits.shape[1] < k:
        raise ValueError(
            f"`hits` must be [n, K] with K >= k={k} ranked columns. Received "
            f"shape {hits.shape}"
        )
    if not np.isin(hits, (0, 1)).all():
        raise ValueError("`hits` must hold only 0 and 1 (a NaN or a count is not)")
    return hits


def hits_at_k(hits: np.ndarray, k: int) -> np.ndarray:
    """Number of hits in the first `k` columns of a `[n, K]` 0/1 hit matrix."""
    return _check_hits(hits, k)[:, :k].sum(axis=1)


def hit_rate_at_k(hits: np.ndarray, num_relevant: np.ndarray, k: int) -> np.ndarray:
    """Per-user HR@k from a `[n, K]` hit matrix of the ranked top K (K >= k)."""
    del num_relevant
    return (hits_at_k(hits, k) > 0).astype(np.float64)


def recall_at_k(hits: np.ndarray, num_relevant: np.ndarray, k: int) -> np.ndarray:
    """Per-user Recall@k = hits@k / min(k, |relevant|) (each |relevant| >= 1)."""
    return hits_at_k(hits, k) / np.minimum(k, _check_relevant(num_relevant))


def recall_unclipped_at_k(
    hits: np.ndarray, num_relevant: np.ndarray, k: int
) -> np.ndarray:
    """Per-user Recall@k = hits@k / |relevant| (NGCF's and LightGCN's; each
    |relevant| >= 1)."""
    return hits_at_k(hits, k) / _check_relevant(num_relevant)


def ndcg_at_k(hits: np.ndarray, num_relevant: np.ndarray, k: int) -> np.ndarray:
    """Per-user NDCG@k with IDCG over min(k, |relevant|) ideal hits (each
    |relevant| >= 1)."""
    hits = _check_hits(hits, k)
    discounts = _discounts(k)
    dcg = (hits[:, :k] * discounts).sum(axis=1)
    ideal = np.cumsum(discounts)[np.minimum(k, _check_relevant(num_relevant)) - 1]
    return dcg / ideal


def mrr_at_k(hits: np.ndarray, num_relevant: np.ndarray, k: int) -> np.ndarray:
    """Per-user reciprocal rank of the first hit within the top k (0 if none)."""
    del num_relevant
    top = _check_hits(hits, k)[:, :k] > 0
    first = np.argmax(top, axis=1)
    return np.where(top.any(axis=1), 1.0 / (first + 1.0), 0.0)


METRICS = {
    "hr": hit_rate_at_k,
    "recall": recall_at_k,
    "recall_unclipped": recall_unclipped_at_k,
    "ndcg": ndcg_at_k,
    "mrr": mrr_at_k,
}


def ranking_metrics(
    hits: np.ndarray,
    num_relevant: np.ndarray,
    ks: tuple[int, ...],
    names: tuple[str, ...] = ("hr", "recall", "ndcg", "mrr"),
) -> dict[str, np.ndarray]:
    """Per-user values of each `name@k`, for users with a relevant item.

    Args:
        hits: `[n, K]` 0/1: whether the item ranked at column j is relevant.
        num_relevant: `[n]` number of relevant items of each user.
        ks: cut-offs, each at most K.
        names: metrics to compute, keys of `METRICS` (`"hr"`, `"recall"`,
            `"recall_unclipped"`, `"ndcg"`, `"mrr"`).

    Returns:
        `{"name@k": [n'] per-user values}`, over the n' users with
        `num_relevant > 0`.

    Raises:
        ValueError: `hits` is not a 0/1 `[n, K]` with `n = len(num_relevant)`,
            a user has more hits than relevant items, a count is negative or
            not an integer, `ks` is empty, a `k` is below 1 or exceeds K, or
            a name is not a metric.
    """
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise ValueError(
            f"Unknown metric(s) {unknown}; expected some of {sorted(METRICS)}"
        )
    hits = np.asarray(hits, np.float64)
    num_relevant = np.asarray(num_relevant)
    if hits.ndim != 2 or len(hits) != len(num_relevant):
        raise ValueError(
            f"`hits` must be [n, K] with n = len(num_relevant). Received "
            f"{hits.shape} and {num_relevant.shape}"
        )
    if not len(ks):
        raise ValueError("`ks` names no cut-off")
    for k in ks:
        _check_k(k)
    if num_relevant.size and (
        num_relevant.dtype == bool
        or not np.issubdtype(num_relevant.dtype, np.number)
        or not np.all(np.isfinite(num_relevant))
        or np.any(num_relevant < 0)
        or np.any(num_relevant != np.floor(num_relevant))
    ):
        raise ValueError(
            "`num_relevant` must hold counts (whole numbers >= 0). Received "
            f"dtype {num_relevant.dtype}, min {num_relevant.min()}"
        )
    num_relevant = num_relevant.astype(np.int64)
    if max(ks) > hits.shape[1]:
        raise ValueError(f"k={max(ks)} exceeds the {hits.shape[1]} ranked columns")
    hits = _check_hits(hits, max(ks))  # 0/1 only
    if (hits.sum(axis=1) > num_relevant).any():
        raise ValueError("A user has more hits than relevant items")
    keep = num_relevant > 0
    hits, num_relevant = hits[keep], num_relevant[keep]
    return {
        f"{name}@{k}": METRICS[name](hits, num_relevant, k)
        for name in names
        for k in ks
    }
