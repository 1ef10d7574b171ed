"""Figures of trained models. matplotlib is optional (`pip install ".[plots]"`)
and imported only when a figure is drawn."""

from __future__ import annotations

import os

import numpy as np

from keras_rec.data.splits import EvalSet
from keras_rec.evaluation.protocols import model_inputs


def average_attention(
    model, eval_set: EvalSet, max_users: int | None = 2000, batch_size: int = 256
) -> np.ndarray:
    """Mean attention weights `[num_blocks, L, L]` over users and heads.

    Entry `[b, i, j]` is the weight that position `i` gives to position `j`
    in block `b`, averaged over the users whose position `i` holds an item
    (padded query rows are left out of the mean; rows no user reaches are 0).

    Args:
        model: a model with `attention_scores(inputs)` (e.g. `SASRec`).
        eval_set: the users, e.g. `split.test`.
        max_users: int or None. Use the first `max_users` users (`None`: all).
        batch_size: int. Users per forward pass.

    Returns:
        float64 `[num_blocks, L, L]`, `L = model.history_length`.
    """
    count = len(eval_set) if max_users is None else min(max_users, len(eval_set))
    if count == 0:
        raise ValueError("`eval_set` has no users")
    totals, rows = None, None
    for start in range(0, count, batch_size):
        users = np.arange(start, min(start + batch_size, count))
        inputs = model_inputs(model, eval_set, users)
        blocks = [np.asarray(s).mean(axis=1) for s in model.attention_scores(inputs)]
        scores = np.stack(blocks, axis=0)  # [blocks, B, L, L]
        real = np.asarray(inputs["item_history"]) >= 0  # [B, L]
        batch_total = scores.sum(axis=1)
        batch_rows = real.sum(axis=0).astype(np.float64)
        totals = batch_total if totals is None else totals + batch_total
        rows = batch_rows if rows is None else rows + batch_rows
    return totals / np.maximum(rows, 1.0)[None, :, None]


def save_attention_heatmap(
    model,
    eval_set: EvalSet,
    path: str | os.PathLike,
    last_positions: int = 15,
    max_users: int | None = 2000,
) -> str | None:
    """Writes a PNG of each block's average attention (SASRec, Figure 4).

    One heatmap per block over the last `last_positions` positions (the most
    recent item is position -1): row `i` is a query position, column `j` the
    position it attends to; causality leaves the upper triangle empty.

    Args:
        model: the trained model. Models without `attention_scores` are
            skipped (the function returns `None`), so any model may be passed.
        eval_set: the users to average over, e.g. `split.test`.
        path: the PNG file to write (its folder is created).
        last_positions: int. Number of most recent positions shown.
        max_users: int or None. Number of users averaged over (`None`: all).

    Returns:
        The PNG path, or `None` for a model without attention.

    Example:
    >>> save_attention_heatmap(model, split.test, "attention.png")  # doctest: +SKIP

    References:
        Kang and McAuley, Self-Attentive Sequential Recommendation, ICDM 2018,
        Figure 4. https://arxiv.org/abs/1808.09781
    """
    if not hasattr(model, "attention_scores"):
        return None
    plt = _pyplot()
    weights = average_attention(model, eval_set, max_users)
    users = len(eval_set) if max_users is None else min(max_users, len(eval_set))
    shown = min(last_positions, weights.shape[-1])
    weights = weights[:, -shown:, -shown:]
    labels = [str(p) for p in range(-shown, 0)]
    ticks = np.arange(shown - 1, -1, -max(1, -(-shown // 8)))[::-1]
    figure, axes = plt.subplots(
        1, len(weights), figsize=(4.2 * len(weights), 3.8), squeeze=False
    )
    for index, (axis, block) in enumerate(zip(axes[0], weights, strict=True)):
        image = axis.imshow(block, cmap="Blues", vmin=0.0)
        axis.set_title(f"block {index + 1}")
        axis.set_xlabel("attended position")
        axis.set_ylabel("query position")
        axis.set_xticks(ticks, [labels[t] for t in ticks])
        axis.set_yticks(ticks, [labels[t] for t in ticks])
        figure.colorbar(image, ax=axis, fraction=0.046)
    figure.suptitle(f"{model.name}: average attention weights ({users} users)")
    return _save(plt, figure, path)


def curve_metric(curve: list[dict], preferred: str | None = None) -> str | None:
    """The metric a learning curve is drawn for: `preferred` when the curve
    has it, else the first of recall@20, ndcg@100, hr@10, else any."""
    if not curve:
        return None
    keys = [k for k in curve[0] if k not in ("epoch", "seconds")]
    for name in (preferred, "recall@20", "ndcg@100", "hr@10"):
        if name in keys:
            return name
    return keys[0] if keys else None


def save_learning_curve(
    curve: list[dict],
    metric: str,
    path: str | os.PathLike,
    title: str = "",
    reference: float | None = None,
) -> str | None:
    """Writes a PNG of `metric` against epochs and against wall time.

    Args:
        curve: the evaluation points of `train_model` (`TrainingResult.curve`,
            the results file's `"curve"`): dicts with `epoch`, `seconds` (of
            training, cumulative) and the metrics.
        metric: the metric to draw, e.g. `"recall@20"`.
        path: the PNG file to write (its folder is created).
        title: the figure's title.
        reference: a value drawn as a dashed line (the paper's number).

    Returns:
        The PNG path, or `None` when the curve has fewer than two points.

    Example:
    >>> save_learning_curve(result.curve, "recall@20", "curve.png")  # doctest: +SKIP
    """
    points = [p for p in curve if metric in p]
    if len(points) < 2:
        return None
    plt = _pyplot()
    values = [p[metric] for p in points]
    figure, axes = plt.subplots(1, 2, figsize=(9.5, 3.6), sharey=True)
    for axis, x, label in (
        (axes[0], [p["epoch"] for p in points], "epoch"),
        (axes[1], [p["seconds"] / 60 for p in points], "training time (minutes)"),
    ):
        axis.plot(x, values, marker="o", markersize=3)
        if reference is not None:
            axis.axhline(reference, color="gray", linestyle="--", label="paper")
            axis.legend(loc="lower right")
        axis.set_xlabel(label)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel(metric)
    figure.suptitle(title or metric)
    return _save(plt, figure, path)


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(
            "Drawing figures needs matplotlib: pip install 'keras_rec[plots]'"
        ) from error
    return plt


def _save(plt, figure, path) -> str:
    figure.tight_layout()
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
