"""Binary cross-entropy on a positive and a sampled negative per position."""

from __future__ import annotations

import math
import numbers

import keras
from keras import ops

from keras_rec.losses._config import loss_config


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
    value is already a batch mean, so the reduction leaves it unchanged. A
    `sample_weight` cannot weigh rows: Keras multiplies the batch's one
    value by it and averages, so pass none.

    With `normalizer`, the sum over the batch's non-padding positions is
    divided by that constant instead of by their count. Length-bucketed
    batches (`keras_rec.data.sequence_dataset(..., bucket_by_length=True)`)
    need this: a batch of short sequences has few positions, and the
    per-batch mean would give each of them more weight than a position of
    a long-sequence batch. With `normalizer` the expected number of
    non-padding positions in a random batch
    (`keras_rec.data.pipelines.expected_valid_positions`), every position
    weighs the same and the expected gradient per epoch is that of the
    paper's randomly drawn batches.

    Args:
        normalizer: float or None. Constant the sum is divided by (`None`:
            the batch's non-padding count, the reference code's mean).
        name: str. Name of the loss.

    Example:
    >>> loss = SampledBinaryCrossentropy()
    >>> float(loss([[3, -1]], [[[2.0, -1.0], [5.0, 5.0]]]))  # position 1 is padding
    0.44018...

    References:
        Kang and McAuley, Self-Attentive Sequential Recommendation, ICDM 2018.
        https://arxiv.org/abs/1808.09781
    """

    def __init__(
        self,
        normalizer: float | None = None,
        name: str = "sampled_binary_crossentropy",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if normalizer is not None:
            if (
                isinstance(normalizer, bool)
                or not isinstance(normalizer, numbers.Real)
                or not 0 < normalizer < math.inf
            ):
                raise ValueError(
                    "`normalizer` must be a positive finite number or None. "
                    f"Received normalizer={normalizer}"
                )
            normalizer = float(normalizer)
        self.normalizer = normalizer

    def call(self, y_true, y_pred):
        y_pred = ops.convert_to_tensor(y_pred)
        real = ops.greater_equal(y_true, 0)
        mask = ops.cast(real, y_pred.dtype)
        # softplus(-x) = -log sigmoid(x); softplus(x) = -log(1 - sigmoid(x)).
        per_position = ops.softplus(-y_pred[..., 0]) + ops.softplus(y_pred[..., 1])
        # Selected, not multiplied: a pad's logits never reach the sum, even
        # an infinite one (0 * inf would be NaN).
        total = ops.sum(ops.where(real, per_position, ops.zeros_like(per_position)))
        if self.normalizer is not None:
            return total / ops.cast(self.normalizer, total.dtype)
        return total / ops.maximum(ops.sum(mask), 1.0)

    def get_config(self):
        return {**loss_config(self), "normalizer": self.normalizer}
