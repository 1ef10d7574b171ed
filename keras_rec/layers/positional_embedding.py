"""A learnable positional embedding, added to a sequence of vectors."""

from __future__ import annotations

import keras
from keras import ops

from keras_rec.layers.initializers import seeded_initializer


@keras.saving.register_keras_serializable(package="keras_rec")
class PositionalEmbedding(keras.layers.Layer):
    """Adds a learned vector per position: `E_hat_t = E_t + P_t` (SASRec eq. 1).

    The table `P` has one row per position of the longest sequence,
    `sequence_length`. Sequences in keras_rec are left padded with the most
    recent item last, so positions are aligned to the end: an input of length
    `L <= sequence_length` uses the last `L` rows of `P`, and the most recent
    item always gets row `sequence_length - 1` (at `L = sequence_length`, the
    SASRec model's case, this is the usual `P_0 .. P_{L-1}`). A batch of
    left-padded sequences cropped to its longest member (`L` < `n`) thus
    gets the same vectors at its items as the full-width batch. `L` may be
    unknown when traced (`[B, None, d]`); a longer input is an error: a
    `ValueError` when `L` is static, else an `InvalidArgumentError` when run
    (TensorFlow backend).

    Args:
        sequence_length: int. Number of positions (SASRec's `n`, `maxlen`).
        embeddings_initializer: str or initializer. Initialiser of `P`
            (the reference code uses TensorFlow's default, Glorot uniform).
        seed: int or None. Seed of the initialiser.

    Example:
    >>> layer = PositionalEmbedding(sequence_length=5)
    >>> layer(keras.ops.zeros((2, 5, 3))).shape
    TensorShape([2, 5, 3])

    References:
        Kang and McAuley, Self-Attentive Sequential Recommendation, ICDM 2018.
        https://arxiv.org/abs/1808.09781
    """

    def __init__(
        self,
        sequence_length: int,
        embeddings_initializer="glorot_uniform",
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.sequence_length = sequence_length
        self.embeddings_initializer = seeded_initializer(embeddings_initializer, seed)
        self.seed = seed
        if not isinstance(sequence_length, int) or sequence_length <= 0:
            raise ValueError(
                "`sequence_length` must be a positive integer. "
                f"Received sequence_length={sequence_length}"
            )

    def _too_long(self, length: int | None) -> str:
        count = "more" if length is None else f"{length}"
        return (
            f"Inputs have {count} positions but `sequence_length` is "
            f"{self.sequence_length}: crop them to their latest "
            f"{self.sequence_length} items"
        )

    def build(self, input_shape):
        length, dim = input_shape[-2], input_shape[-1]
        if length is not None and length > self.sequence_length:
            raise ValueError(self._too_long(length))
        self.embeddings = self.add_weight(
            shape=(self.sequence_length, dim),
            initializer=self.embeddings_initializer,
            name="embeddings",
        )

    def call(self, inputs):
        length = inputs.shape[-2]
        if length is not None:
            if length > self.sequence_length:
                raise ValueError(self._too_long(length))
        else:
            length = ops.shape(inputs)[-2]
            if keras.backend.backend() == "tensorflow":
                # A width unknown until run time (width-cropped batches):
                # without the check, a negative start would silently slice
                # from the end. Under XLA the assert is a no-op.
                import tensorflow as tf

                check = tf.debugging.assert_less_equal(
                    length,
                    self.sequence_length,
                    message=self._too_long(None),
                )
                with tf.control_dependencies([check]):
                    length = tf.identity(length)
        positions = self.embeddings[self.sequence_length - length :]
        return inputs + ops.cast(positions, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "sequence_length": self.sequence_length,
            "embeddings_initializer": keras.initializers.serialize(
                self.embeddings_initializer
            ),
            "seed": self.seed,
        }
