"""What every keras_rec loss's `get_config` starts from."""

from __future__ import annotations

import keras


def loss_config(loss: keras.losses.Loss) -> dict:
    """`keras.losses.Loss.get_config` (name, reduction) and the loss's
    `dtype`, which Keras' own leaves out, so a float64 loss reloads as one."""
    return {**keras.losses.Loss.get_config(loss), "dtype": loss.dtype}
