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
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(
            "Drawing figures needs matplotlib: pip install 'keras_rec[plots]'"
        ) from error
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
    figure.tight_layout()
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
