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

    A `tf.SparseTensor` input (see `normalized_sparse_rows`) takes the sparse
    product whatever `training` is: that is how a training step runs a
    layer without dropout (RecVAE's decoder phase and composite prior) and
    still skips the zeros.

    Example:
    >>> layer = SparseRowsDense(3)
    >>> rows = tf.constant([[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 1.0]])
    >>> dense = layer(rows, training=False)
    >>> bool(tf.reduce_all(tf.abs(layer(rows, training=True) - dense) < 1e-6))
    True
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # XLA has no kernels for the sparse ops: a model holding this layer
        # is not jit-compiled, even where Keras' "auto" would (on a GPU).
        self.supports_jit = False

    def call(self, inputs, training=None):
        if isinstance(inputs, tf.SparseTensor):
            sparse = inputs
        elif training:
            sparse = tf.sparse.from_dense(inputs)
        else:
            return super().call(inputs, training=training)
        outputs = tf.sparse.sparse_dense_matmul(sparse, self.kernel)
        if self.bias is not None:
            outputs = tf.nn.bias_add(outputs, self.bias)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs


def normalized_sparse_rows(
    rows, dropout: keras.layers.Layer | None = None, training=None
) -> tf.SparseTensor:
    """`dropout(rows / |rows|_2)` of dense user rows, computed on their nonzeros.

    The autoencoders' input transform, `x / (|x|_2 + 1e-10)` followed by
    input dropout, leaves zeros at zero, so on a row with a few dozen items
    of a 40,981-item catalogue nearly all of its dense work (the norm, the
    division, a random number per entry for the dropout mask) is spent on
    zeros. Here the nonzeros are taken once (`tf.sparse.from_dense`) and
    the rest runs on them; the result feeds a `SparseRowsDense`. The
    function is the dense one's; the dropout masks are drawn from the same
    kind of seeded generator but over the nonzeros, so a seeded run's masks
    (not their distribution) differ from the dense path's.

    Args:
        rows: float `[B, num_items]` dense rows.
        dropout: a `keras.layers.Dropout` applied to the normalised values,
            or `None`.
        training: bool. Passed to `dropout` (no dropout unless `True`).

    Returns:
        A `tf.SparseTensor` of shape `[B, num_items]` holding the normalised
        (and possibly dropped-out) nonzeros of `rows`.
    """
    sparse = tf.sparse.from_dense(rows)
    row_ids = sparse.indices[:, 0]
    squares = tf.math.unsorted_segment_sum(
        tf.square(sparse.values), row_ids, sparse.dense_shape[0]
    )
    values = sparse.values / (tf.sqrt(tf.gather(squares, row_ids)) + 1e-10)
    if dropout is not None:
        values = dropout(values, training=training)
    return tf.SparseTensor(sparse.indices, values, sparse.dense_shape)
