"""Metric definitions and the protocol evaluators (sampled and full ranking)."""

from keras_rec.evaluation.metrics import (
    hit_rate_at_k,
    mrr_at_k,
    ndcg_at_k,
    ranking_metrics,
    recall_at_k,
    recall_unclipped_at_k,
)
from keras_rec.evaluation.protocols import evaluate, rank_full, rank_sampled

__all__ = [
    "evaluate",
    "hit_rate_at_k",
    "mrr_at_k",
    "ndcg_at_k",
    "rank_full",
    "rank_sampled",
    "ranking_metrics",
    "recall_at_k",
    "recall_unclipped_at_k",
]
