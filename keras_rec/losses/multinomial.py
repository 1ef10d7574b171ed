"""Mult-VAE's multinomial log-likelihood, as a loss."""

from __future__ import annotations

import keras
from keras import ops

from keras_rec.losses._config import loss_config


@keras.saving.register_keras_serializable(package="keras_rec")
class MultinomialLogLikelihood(keras.losses.Loss):
    """Negative multinomial log-likelihood of a user's items under softmax(logits).

    `loss_u = -sum_i x_ui * log softmax(logits_u)_i` for multi-hot (or count)
    rows `x_u` (`y_true`) and logits `[B, num_items]` (`y_pred`); the batch
    reduction (the mean over users by default) is Keras's. This is the
    reconstruction term of Mult-VAE and Mult-DAE (Liang et al., eq. 2); the
    log-softmax is computed stably (`keras.ops.log_softmax`).

    Args:
        reduction: Keras loss reduction. Defaults to the mean over the batch.
        name: str. Name of the loss.
        dtype: dtype of the computation.

    Example:
    >>> loss = MultinomialLogLikelihood()
    >>> float(loss([[1.0, 0.0]], [[0.0, 0.0]]))  # -log(1/2)
    0.693...

    References:
        Liang et al., Variational Autoencoders for Collaborative Filtering,
        WWW 2018. https://arxiv.org/abs/1802.05814
    """

    def __init__(
        self,
        reduction: str | None = "sum_over_batch_size",
        name: str = "multinomial_log_likelihood",
        dtype: str | None = None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        y_pred = ops.convert_to_tensor(y_pred)
        y_true = ops.cast(y_true, y_pred.dtype)
        return -ops.sum(y_true * ops.log_softmax(y_pred, axis=-1), axis=-1)

    def get_config(self):
        return loss_config(self)
