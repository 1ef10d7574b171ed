"""A Dense layer that multiplies only the nonzeros of mostly-zero input rows."""

from __future__ import annotations

import keras
import tensorflow as tf

#: Training-matrix density below which the autoencoder configs turn
#: `sparse_rows` on. `benchmarks/autoencoders.py --sparse-rows` times the
#: first layer both ways (batch 500, 600 units, forward and kernel gradient,
#: 2-core CPU shared with other jobs): on ML-1M's rows (4.55% nonzero) the
#: sparse product took 3.7x as long as the dense one (340 against 92 ms); on
#: Gowalla's (0.084%) about half as long (534 against 1057 ms; 394 against
#: 761 in a second run). Interpolating the ratio log-linearly between the
#: two datasets puts the crossing near 0.3%.
SPARSE_ROWS_DENSITY = 0.003


@keras.saving.register_keras_serializable(package="keras_rec")
class SparseRowsDense(keras.layers.Dense):
    """`Dense` for multi-hot user rows: in training, the product skips zeros.

    `outputs = activation(inputs @ kernel + bias)`, the same function as
    `keras.layers.Dense`, with the same weights. In training (`training=True`)
    the product is taken over the nonzero entries only
    (`tf.sparse.from_dense`, then `tf.sparse.sparse_dense_matmul`), and so is
    the kernel's gradient: for a row of a 40,981-item catalogue with a few
    dozen items that is a small fraction of the dense product's work. At
    inference it is the dense product, so an exported SavedModel or TFLite
    model holds only builtin ops. Worth it only on sparse rows (see
    `SPARSE_ROWS_DENSITY`); on denser rows the dense product is faster.

    Example:
    >>> layer = SparseRowsDense(3)
    >>> rows = tf.constant([[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 1.0]])
    >>> dense = layer(rows, training=False)
    >>> bool(tf.reduce_all(tf.abs(layer(rows, training=True) - dense) < 1e-6))
    True
    """

    def call(self, inputs, training=None):
        if not training:
            return super().call(inputs, training=training)
        outputs = tf.sparse.sparse_dense_matmul(
            tf.sparse.from_dense(inputs), self.kernel
        )
        if self.bias is not None:
            outputs = tf.nn.bias_add(outputs, self.bias)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs
