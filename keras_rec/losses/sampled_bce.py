"""Binary cross-entropy on a positive and a sampled negative per position."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_rec")
class SampledBinaryCrossentropy(keras.losses.Loss):
    """SASRec's loss: BCE on the next item against one sampled negative.

    `loss = sum_{t: o_t != PAD} [-log sigmoid(r_{o_t, t}) - log(1 - sigmoid(
    r_{j_t, t}))] / #{t: o_t != PAD}` (SASRec eq. 5), the mean over the
    batch's non-padding positions, as the reference code computes it.

    `y_pred` is `[..., 2]` logits, `[..., 0]` the positive item's and
    `[..., 1]` the negative's; `y_true` holds the positive item ids with the
    same leading shape, `PAD = -1` (any negative id) where the position is
    padding. Padding positions are left out of the sum and the count. The
    value is already a batch mean, so the reduction leaves it unchanged (a
    `sample_weight`, if given, multiplies it).

    Args:
        name: str. Name of the loss.

    Example:
    >>> loss = SampledBinaryCrossentropy()
    >>> float(loss([[3, -1]], [[[2.0, -1.0], [5.0, 5.0]]]))  # position 1 is padding
    0.44018...

    References:
        Kang and McAuley, Self-Attentive Sequential Recommendation, ICDM 2018.
        https://arxiv.org/abs/1808.09781
    """

    def __init__(self, name: str = "sampled_binary_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        y_pred = ops.convert_to_tensor(y_pred)
        mask = ops.cast(ops.greater_equal(y_true, 0), y_pred.dtype)
        # softplus(-x) = -log sigmoid(x); softplus(x) = -log(1 - sigmoid(x)).
        per_position = ops.softplus(-y_pred[..., 0]) + ops.softplus(y_pred[..., 1])
        count = ops.maximum(ops.sum(mask), 1.0)
        return ops.sum(per_position * mask) / count
