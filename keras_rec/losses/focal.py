"""VASP's focal loss: binary focal cross-entropy summed over the items."""

from __future__ import annotations

import keras
from keras import ops

from keras_rec.losses._config import loss_config


@keras.saving.register_keras_serializable(package="keras_rec")
class FocalLoss(keras.losses.BinaryFocalCrossentropy):
    """Class-balanced binary focal loss, summed over the items of each user.

    `loss_u = sum_i alpha_t (1 - p_t)^gamma (-log p_t)` with `p_t = p_ui` and
    `alpha_t = alpha` where `x_ui = 1`, `p_t = 1 - p_ui` and
    `alpha_t = 1 - alpha` where `x_ui = 0` (Lin et al.'s alpha-balanced focal
    loss, which VASP trains FLVAE and VASP with, `alpha = 0.25`, `gamma = 2`).

    Per element this *is* `keras.losses.BinaryFocalCrossentropy(
    apply_class_balancing=True, alpha=alpha, gamma=gamma)`, which this class
    subclasses; the only difference is the reduction over the item axis:
    Keras takes the mean over the last axis, VASP the sum (VASP's notebook
    compiles with `lambda x, y: tfa.losses.sigmoid_focal_crossentropy(x, y,
    alpha=..., gamma=...)`, TensorFlow Addons' function, which ends in
    `reduce_sum(..., axis=-1)`; Keras then takes the mean over users). So
    `FocalLoss()(y, p) == num_items * BinaryFocalCrossentropy(
    apply_class_balancing=True)(y, p)`; the batch reduction (the mean over
    users by default) is Keras's. The sum keeps the gradient per item
    independent of the catalogue size, as the multinomial likelihood does.

    Args:
        alpha: float in `[0, 1]`. Weight of the positives (`1 - alpha` for
            the negatives).
        gamma: float >= 0. Focusing exponent (`0`: weighted cross-entropy).
        from_logits: bool. Whether `y_pred` holds logits rather than
            probabilities (Keras applies the sigmoid, then the clipped
            cross-entropy, exactly as `BinaryFocalCrossentropy`).
        reduction: Keras loss reduction over the batch.
        name: str. Name of the loss.
        dtype: dtype of the computation.

    Example:
    >>> loss = FocalLoss(alpha=0.25, gamma=2.0)
    >>> float(loss([[1.0, 0.0]], [[0.5, 0.5]]))  # (0.25 + 0.75) * 0.25 * log 2
    0.173...

    References:
        Lin et al., Focal Loss for Dense Object Detection, ICCV 2017.
        https://arxiv.org/abs/1708.02002
        Vančura and Kordík, Deep Variational Autoencoder with Shallow
        Parallel Path for Top-N Recommendation (VASP), ICANN 2021.
        https://arxiv.org/abs/2102.05774
    """

    def __init__(
        self,
        alpha: float = 0.25,
        gamma: float = 2.0,
        from_logits: bool = False,
        reduction: str | None = "sum_over_batch_size",
        name: str = "focal",
        dtype: str | None = None,
    ):
        super().__init__(
            apply_class_balancing=True,
            alpha=alpha,
            gamma=gamma,
            from_logits=from_logits,
            reduction=reduction,
            name=name,
            dtype=dtype,
        )
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"`alpha` must be in [0, 1]. Received: alpha={alpha}")
        if gamma < 0.0:
            raise ValueError(f"`gamma` must be non-negative. Received: gamma={gamma}")

    def call(self, y_true, y_pred):
        # Keras's per-user value is the mean over the items; VASP sums them.
        mean_over_items = super().call(y_true, y_pred)
        num_items = ops.cast(ops.shape(y_pred)[-1], mean_over_items.dtype)
        return mean_over_items * num_items

    def get_config(self):
        return {
            **loss_config(self),
            "alpha": self.alpha,
            "gamma": self.gamma,
            "from_logits": self.from_logits,
        }
