"""The four evaluation protocols of README.md, for any `Recommender`.

Full ranking scores every item for a batch of users with one matrix
multiply (`model.score_all`), sets the user's history items to -inf, and
takes the top K in TensorFlow; only `[B, K]` ids leave the graph. Batches
keep memory at `batch_size x num_items` floats, so all 29,858 Gowalla users
fit.

Ties count against the relevant items in both kinds of ranking, so that a
model gains nothing from scoring items equal (a constant model scores 0).
In full ranking, among items of equal score the user's targets come after
the other items, then ascending item id (`tf.math.top_k`'s order, redone in
NumPy only for the rows whose top k holds or borders a tie: ids often follow
popularity, so id order alone would favour popular targets). In sampled
ranking the relevant item is placed after its negatives (rank = 1 +
#negatives scoring higher or equal). The candidates are a set, as in NCF's `evaluate.py`
(which keys the scores by item): a negative equal to the target, or
repeated, is not counted against it (NCF's own ML-1M file lists the
target among the 99 negatives of 156 users).

In full ranking a target that is also in the user's history is masked
with the history, so it cannot be recommended; it is left out of the
user's relevant set rather than counted as a miss (users left with no
target are left out of the mean).
"""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from keras_rec.data.pipelines import pad_histories
from keras_rec.data.splits import EvalSet
from keras_rec.evaluation.metrics import is_cutoff, ranking_metrics
from keras_rec.models.base import ITEM_HISTORY, USER_ID, Recommender, seen_mask

FULL_RANKING = ("loo_full", "holdout_full", "strong_generalization")
SAMPLED_RANKING = ("loo_sampled",)

DEFAULT_KS = {
    "loo_sampled": (10,),
    "loo_full": (10, 20),
    "holdout_full": (20,),
    "strong_generalization": (20, 50, 100),
}
DEFAULT_METRICS = {
    "loo_sampled": ("hr", "ndcg", "mrr"),
    "loo_full": ("hr", "ndcg", "mrr"),
    # NGCF's and LightGCN's papers report the unclipped recall.
    "holdout_full": ("recall", "recall_unclipped", "ndcg"),
    "strong_generalization": ("recall", "ndcg"),
}


def model_inputs(model: Recommender, eval_set: EvalSet, rows: np.ndarray) -> dict:
    """The contract's input dict for `rows` of `eval_set`."""
    if model.input_kind == USER_ID:
        if not eval_set.known_users:
            raise ValueError(
                f"{type(model).__name__} scores from user ids, but this protocol "
                "evaluates users unseen in training (strong generalization); use a "
                "history-based model"
            )
        return {USER_ID: tf.constant(eval_set.users[rows], tf.int64)}
    histories = [eval_set.histories[r] for r in rows]
    length = model.history_length or max(1, max(len(h) for h in histories))
    return {ITEM_HISTORY: tf.constant(pad_histories(histories, length))}


def _exclusion(eval_set: EvalSet, rows: np.ndarray) -> tf.Tensor:
    return tf.constant(
        pad_histories(
            [eval_set.histories[r] for r in rows],
            max(1, max(len(eval_set.histories[r]) for r in rows)),
        )
    )


def _check_scores(model, scores, rows: np.ndarray) -> None:
    """Raises on NaN scores: every comparison with NaN is false, so they
    would rank silently (a NaN target outranks all its negatives)."""
    nan_rows = np.flatnonzero(
        tf.reduce_any(tf.math.is_nan(tf.convert_to_tensor(scores)), axis=1).numpy()
    )
    if nan_rows.size:
        raise FloatingPointError(
            f"{type(model).__name__} returned NaN scores for {nan_rows.size} of "
            f"{len(rows)} users in a batch (first: evaluation row "
            f"{rows[nan_rows[0]]}); its weights or inputs hold NaN or inf, so "
            "no metric is computed"
        )


def rank_full(
    model: Recommender,
    eval_set: EvalSet,
    k: int,
    batch_size: int = 1024,
    progress: bool = False,
) -> np.ndarray:
    """`[n, k]` top-k item ids per user over all items minus the history.

    Among items of equal score, the user's targets (`eval_set.targets`)
    come after the other items, then ascending id: a tie never counts for
    a target (see the module docstring). A model whose `score_all` is
    costly in memory per user (NCF's towers score every user-item pair)
    caps `batch_size` with its `scoring_batch_size`.
    """
    batch_size = min(batch_size, getattr(model, "scoring_batch_size", batch_size))
    _check_item_count(model, eval_set)
    if not 1 <= k <= eval_set.targets.shape[1]:
        raise ValueError(
            f"k={k} must be between 1 and the {eval_set.targets.shape[1]} items"
        )
    top = np.empty((len(eval_set), k), np.int64)
    starts = range(0, len(eval_set), batch_size)
    for start in tqdm(starts, desc="ranking", disable=not progress, leave=False):
        rows = np.arange(start, min(start + batch_size, len(eval_set)))
        scores = model.score_all(model_inputs(model, eval_set, rows))
        _check_scores(model, scores, rows)
        mask = seen_mask(_exclusion(eval_set, rows), tf.shape(scores)[1])
        # A model's -inf is raised to the lowest finite score, so the masked
        # items (-inf) rank strictly after every candidate.
        scores = tf.maximum(tf.cast(scores, tf.float32), np.finfo(np.float32).min)
        scores = tf.where(mask, -np.inf, scores)
        # One more than k shows a tie at the k-th place.
        values, ids = tf.math.top_k(scores, k=min(k + 1, int(tf.shape(scores)[1])))
        top[rows] = ids.numpy()[:, :k]
        values = values.numpy()
        tied = np.flatnonzero((values[:, 1:] == values[:, :-1]).any(axis=1))
        if tied.size:
            _ties_against_targets(
                top, scores, mask, values[tied, k - 1], eval_set, rows, tied
            )
    return top


def _ties_against_targets(
    top: np.ndarray,
    scores: tf.Tensor,
    mask: tf.Tensor,
    kth: np.ndarray,
    eval_set: EvalSet,
    rows: np.ndarray,
    tied: np.ndarray,
) -> None:
    """Re-ranks the `tied` rows (batch positions) of `top`: by score, then
    the user's targets after the other items, then ascending id. Only the
    items scoring at least the row's k-th value (`kth`) can be in its top
    k, so only they are sorted; a masked history item is no target."""
    k = top.shape[1]
    tied_scores = tf.gather(scores, tied).numpy()
    targets = (eval_set.targets[rows[tied]].toarray() > 0) & ~tf.gather(
        mask, tied
    ).numpy()
    for row, row_scores, row_targets, value in zip(
        tied, tied_scores, targets, kth, strict=True
    ):
        candidates = np.flatnonzero(row_scores >= value)
        order = np.lexsort(
            (candidates, row_targets[candidates], -row_scores[candidates])
        )
        top[rows[row]] = candidates[order[:k]]


def rank_sampled(
    model: Recommender,
    eval_set: EvalSet,
    batch_size: int = 1024,
    progress: bool = False,
) -> np.ndarray:
    """0-based rank of each user's single target among target + negatives."""
    if eval_set.negatives is None:
        raise ValueError("loo_sampled needs negatives in the EvalSet")
    targets = eval_set.targets
    if np.any(np.diff(targets.indptr) != 1):
        raise ValueError("loo_sampled needs exactly one target item per user")
    if eval_set.negatives.ndim != 2 or eval_set.negatives.shape[1] == 0:
        raise ValueError(
            "loo_sampled needs at least one negative per user; received "
            f"negatives of shape {list(eval_set.negatives.shape)}"
        )
    _check_item_count(model, eval_set)
    ranks = np.empty(len(eval_set), np.int64)
    starts = range(0, len(eval_set), batch_size)
    for start in tqdm(starts, desc="ranking", disable=not progress, leave=False):
        rows = np.arange(start, min(start + batch_size, len(eval_set)))
        negatives = eval_set.negatives[rows]
        target = targets.indices[rows, None]
        candidates = np.concatenate([negatives, target], axis=1)
        scores = model.score_items(
            model_inputs(model, eval_set, rows), tf.constant(candidates, tf.int64)
        )
        scores = np.asarray(scores, np.float64)
        _check_scores(model, scores, rows)
        ranks[rows] = (
            (scores[:, :-1] >= scores[:, -1:]) & _distinct_negatives(negatives, target)
        ).sum(axis=1)
    return ranks


def _distinct_negatives(negatives: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Bool `[B, N]`: the first occurrence of each negative that is not the
    target (the candidates are a set, as in NCF's `evaluate.py`)."""
    order = np.argsort(negatives, axis=1, kind="stable")
    ordered = np.take_along_axis(negatives, order, axis=1)
    first = np.ones(ordered.shape, bool)
    first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    keep = np.empty(ordered.shape, bool)
    np.put_along_axis(keep, order, first, axis=1)
    return keep & (negatives != target)


def _check_item_count(model, eval_set: EvalSet) -> None:
    num_items = getattr(model, "num_items", None)
    if num_items is not None and num_items != eval_set.targets.shape[1]:
        raise ValueError(
            f"{type(model).__name__} scores {num_items} items but the evaluation "
            f"set has {eval_set.targets.shape[1]}: the model was built for "
            "another split or dataset"
        )


def evaluate(
    model: Recommender,
    eval_set: EvalSet,
    protocol: str,
    ks: tuple[int, ...] | None = None,
    metrics: tuple[str, ...] | None = None,
    batch_size: int = 1024,
    progress: bool = False,
) -> dict[str, float]:
    """Mean of each `metric@k` over users with targets, under `protocol`.

    Also returns `num_users` (evaluated users) and `seconds`.
    """
    if protocol not in SAMPLED_RANKING + FULL_RANKING:
        raise ValueError(
            f"Unknown protocol {protocol!r}. Known: {SAMPLED_RANKING + FULL_RANKING}"
        )
    ks = ks or DEFAULT_KS[protocol]
    if not all(is_cutoff(k) for k in ks):
        raise ValueError(
            f"Every cut-off k must be a positive integer. Received ks={ks}"
        )
    metrics = metrics or DEFAULT_METRICS[protocol]
    begin = time.perf_counter()
    if protocol in SAMPLED_RANKING:
        candidates = 1 + (
            0 if eval_set.negatives is None else eval_set.negatives.shape[1]
        )
        if max(ks) > candidates:
            raise ValueError(
                f"loo_sampled ranks each target among {candidates} candidates "
                f"(1 + its negatives), so k={max(ks)} would count every user as a "
                "hit; use k <= the number of candidates or more negatives"
            )
        ranks = rank_sampled(model, eval_set, batch_size, progress)
        hits = np.zeros((len(ranks), max(ks)), np.float64)
        inside = ranks < hits.shape[1]
        hits[np.flatnonzero(inside), ranks[inside]] = 1.0
        relevant = np.ones(len(ranks), np.int64)
    elif protocol in FULL_RANKING:
        if max(ks) > eval_set.targets.shape[1]:
            raise ValueError(
                f"{protocol} ranks all {eval_set.targets.shape[1]} items, so "
                f"k={max(ks)} is more than there are; use k <= the number of items"
            )
        top = rank_full(model, eval_set, max(ks), batch_size, progress)
        hits = np.zeros(top.shape, np.float64)
        relevant = np.zeros(len(top), np.int64)  # targets outside the history
        for start in range(0, len(top), batch_size):
            stop = min(start + batch_size, len(top))
            dense = eval_set.targets[start:stop].toarray() > 0
            # A target in the history is masked: it must never count as a hit
            # (it can reach the top k at -inf when k > the unmasked items).
            dense &= ~(eval_set.history_matrix[start:stop].toarray() > 0)
            hits[start:stop] = np.take_along_axis(dense, top[start:stop], axis=1)
            relevant[start:stop] = dense.sum(axis=1)
    else:
        raise ValueError(
            f"Unknown protocol {protocol!r}. Known: {SAMPLED_RANKING + FULL_RANKING}"
        )
    if not (relevant > 0).any():
        raise ValueError(
            f"No user in the evaluation set ({len(eval_set)} rows) has a target "
            "outside their history: there is nothing to evaluate"
        )
    per_user = ranking_metrics(hits, relevant, ks, metrics)
    result = {name: float(np.mean(values)) for name, values in per_user.items()}
    result["num_users"] = int((relevant > 0).sum())
    result["seconds"] = time.perf_counter() - begin
    return result
