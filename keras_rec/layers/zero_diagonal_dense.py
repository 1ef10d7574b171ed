"""A square item-to-item linear map whose diagonal is held at zero."""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

#: `ZeroDiagonalDense(zeroing=...)` values.
ZEROINGS = ("set_diag", "subtract")


@keras.saving.register_keras_serializable(package="keras_rec")
class ZeroDiagonalDense(keras.layers.Layer):
    """Square, bias-free `Dense` with `diag(W) = 0`: `y = activation(x (W * (1 - I)))`.

    EASE's constraint `diag(B) = 0` (no item may predict itself), as a layer:
    the kernel `W` is `[n, n]` for inputs `[..., n]` and its diagonal is
    zeroed in the forward pass, so the diagonal never reaches the output and
    its gradient is exactly zero. The zeroing is `tf.linalg.set_diag(W, 0)`,
    which gives the values and gradients of `W * (1 - I)` without building
    the `[n, n]` mask (a 1.6 GB constant at ML-20M's 20,108 items), but
    still writes a zero-diagonal copy of `W` on every call.

    A kernel that is not trained by gradients (EASE's closed-form `B`, whose
    diagonal is written as zero) can use `zeroing="subtract"`:
    `y = x W - x * diag(W)`, which needs no copy of `W` (6.3 GiB saved per
    call at Gowalla's 40,981 items). It equals the masked product exactly
    when `diag(W)` is zero and up to float rounding otherwise; for training,
    keep `"set_diag"`, whose diagonal gradient is exactly zero.

    Args:
        units: int or None. Output width; must equal the input width (the
            layer is square). `None` takes the input width.
        activation: activation applied to the output. Defaults to none.
        kernel_initializer: initializer of `W`.
        kernel_regularizer: optional regularizer of `W` (on all of `W`;
            the diagonal is unused, so it only decays towards zero).
        zeroing: `"set_diag"` (default) or `"subtract"`: how the diagonal
            is kept out of the output (see above).
        sparse_inputs: bool. In training (`training=True`), multiply only
            the inputs' nonzeros (`tf.sparse.sparse_dense_matmul`), as
            `SparseRowsDense` does: on multi-hot rows with a few dozen of
            20,000 items the dense product is almost all zeros. At
            inference the product is dense (builtin ops for TFLite). A
            `tf.SparseTensor` input always takes the sparse product. The
            sparse product takes rank-2 inputs only, and zeroes the
            diagonal with a copy of `W` whatever `zeroing` says.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `trainable`).

    Example:
    >>> layer = ZeroDiagonalDense(kernel_initializer="ones")
    >>> layer(keras.ops.convert_to_tensor([[1.0, 2.0, 3.0]]))  # each sums the others
    <tf.Tensor: shape=(1, 3), dtype=float32, numpy=array([[5., 4., 3.]], ...)>

    References:
        Steck, Embarrassingly Shallow Autoencoders for Sparse Data, WWW 2019.
        https://arxiv.org/abs/1905.03375
        Vančura and Kordík, Deep Variational Autoencoder with Shallow
        Parallel Path for Top-N Recommendation (VASP), ICANN 2021.
        https://arxiv.org/abs/2102.05774
    """

    def __init__(
        self,
        units: int | None = None,
        activation=None,
        kernel_initializer="glorot_uniform",
        kernel_regularizer=None,
        zeroing: str = "set_diag",
        sparse_inputs: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.sparse_inputs = bool(sparse_inputs)
        # XLA has no kernels for the sparse ops.
        self.supports_jit = not self.sparse_inputs
        if zeroing not in ZEROINGS:
            raise ValueError(
                f"`zeroing` must be one of {ZEROINGS}. Received zeroing={zeroing!r}"
            )
        self.zeroing = zeroing
        self.units = units
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        if units is not None and (
            isinstance(units, bool) or not isinstance(units, int) or units <= 0
        ):
            raise ValueError(
                f"`units` must be a positive int or None. Received: units={units!r}"
            )

    def build(self, input_shape):
        width = input_shape[-1]
        if width is None:
            raise ValueError(
                "ZeroDiagonalDense needs a known input width. Received input_shape="
                f"{input_shape}"
            )
        if self.units is not None and self.units != width:
            raise ValueError(
                "`units` must equal the input width (the layer is square). "
                f"Received: units={self.units}, input width={width}"
            )
        self.units = int(width)
        self.kernel = self.add_weight(
            shape=(width, width),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            name="kernel",
        )

    def call(self, inputs, training=None):
        kernel = ops.convert_to_tensor(self.kernel)
        if isinstance(inputs, tf.SparseTensor) or (self.sparse_inputs and training):
            if not isinstance(inputs, tf.SparseTensor):
                inputs = tf.sparse.from_dense(inputs)
            kernel = tf.linalg.set_diag(kernel, tf.zeros([self.units], kernel.dtype))
            return self.activation(tf.sparse.sparse_dense_matmul(inputs, kernel))
        if self.zeroing == "subtract":
            outputs = ops.matmul(inputs, kernel) - inputs * ops.diagonal(kernel)
        else:
            kernel = tf.linalg.set_diag(kernel, tf.zeros([self.units], kernel.dtype))
            outputs = ops.matmul(inputs, kernel)
        return self.activation(outputs)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "activation": keras.activations.serialize(self.activation),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "zeroing": self.zeroing,
            "sparse_inputs": self.sparse_inputs,
        }
