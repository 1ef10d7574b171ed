"""Bayesian Personalized Ranking loss."""

from __future__ import annotations

import keras
from keras import ops

from keras_rec.losses._config import loss_config


@keras.saving.register_keras_serializable(package="keras_rec")
class BPRLoss(keras.losses.Loss):
    """BPR: the negative log-likelihood that positives outrank negatives.

    `loss = -mean_j log sigmoid(s_pos - s_neg_j)` for predictions
    `[B, 1 + n]` whose column 0 is the positive item's score and columns
    1..n the sampled negatives' scores. `y_true` is ignored.

    Example:
    >>> round(float(BPRLoss()([0.0], [[2.0, 0.0]])), 4)  # -log sigmoid(2)
    0.1269

    References:
        Rendle et al., BPR: Bayesian Personalized Ranking from Implicit
        Feedback, UAI 2009. https://arxiv.org/abs/1205.2618
    """

    def __init__(self, name: str = "bpr", **kwargs):
        super().__init__(name=name, **kwargs)

    def get_config(self):
        return loss_config(self)

    def call(self, y_true, y_pred):
        del y_true
        y_pred = ops.convert_to_tensor(y_pred)
        if y_pred.shape[-1] is not None and y_pred.shape[-1] < 2:
            raise ValueError(
                "BPRLoss needs `y_pred` of shape [batch, 1 + negatives]: the "
                "positive's score then at least one negative's. Received shape "
                f"{tuple(y_pred.shape)}"
            )
        margin = y_pred[:, :1] - y_pred[:, 1:]
        # softplus(-x) = -log sigmoid(x), computed stably.
        return ops.mean(ops.softplus(-margin), axis=-1)
