"""Cosine proximity between a target row and a predicted row, as a loss."""

from __future__ import annotations

import keras

from keras_rec.losses._config import loss_config


@keras.saving.register_keras_serializable(package="keras_rec")
class CosineProximityLoss(keras.losses.CosineSimilarity):
    """Negative cosine similarity of each row: `loss_u = -cos(y_true_u, y_pred_u)`.

    `cos(a, b) = <a, b> / (|a| |b|)` over the last axis, in `[-1, 1]`, so the
    loss is minimal (`-1`) when the prediction points along the target; it is
    `0` when either row is all zeros. The formula is exactly
    `keras.losses.CosineSimilarity` (which this class subclasses and leaves
    unchanged, L2 normalisation with Keras's epsilon included); the class
    only gives it the "cosine proximity" name used by the autoencoder papers'
    Keras code (Keras 2's `cosine_proximity`) and a registered config.

    Args:
        axis: int. The axis holding the items.
        reduction: Keras loss reduction over the batch (mean by default).
        name: str. Name of the loss.
        dtype: dtype of the computation.

    Example:
    >>> float(CosineProximityLoss()([[1.0, 0.0]], [[2.0, 0.0]]))
    -1.0

    References:
        Vančura and Kordík, Deep Variational Autoencoder with Shallow
        Parallel Path for Top-N Recommendation (VASP), ICANN 2021.
        https://arxiv.org/abs/2102.05774
    """

    def __init__(
        self,
        axis: int = -1,
        reduction: str | None = "sum_over_batch_size",
        name: str = "cosine_proximity",
        dtype: str | None = None,
    ):
        super().__init__(axis=axis, reduction=reduction, name=name, dtype=dtype)
        self.axis = axis

    def get_config(self):
        return {**loss_config(self), "axis": self.axis}
