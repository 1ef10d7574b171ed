"""RecVAE's encoder: normalised, denoised input -> densely connected swish/LN
stack -> Gaussian posterior parameters."""

from __future__ import annotations

import keras
from keras import ops

from keras_rec.layers.residual_dense import ResidualDense
from keras_rec.layers.sparse_rows_dense import normalized_sparse_rows


@keras.saving.register_keras_serializable(package="keras_rec")
class RecVAEEncoder(keras.layers.Layer):
    """The RecVAE encoder `q(z | x) = N(mu(x), diag(exp(log_var(x))))`.

    `x' = dropout(x / |x|_2)`, then `K` densely connected layers
    `h_k = LN(swish(W_k h_{k-1} + b_k + h_1 + ... + h_{k-1}))` (see
    `ResidualDense`), then `mu = W_mu h_K + b_mu`, `log_var = W_v h_K + b_v`.
    Dropout is applied only with `training=True`: RecVAE trains a denoising
    encoder, and its decoder phase and composite prior run it without noise.

    Args:
        hidden_dim: int. Width of the hidden layers.
        latent_dim: int. Dimension of `z`.
        num_layers: int. Number of hidden layers.
        dropout_rate: float. Input dropout rate in `[0, 1)`.
        layer_norm_epsilon: float. Epsilon of the layer normalisations (the
            authors' code uses 0.1).
        seed: int or None. Seed of the initial kernels and the dropout.
        sparse_rows: bool. The first layer's product over the rows'
            nonzeros only in training (`SparseRowsDense`; for sparse data).

    Call arguments:
        inputs: float `[B, num_items]` rows (binary interactions).
        training: bool. Whether to apply the input dropout.
        sparse_product: bool or None. With `sparse_rows`, whether the input
            transform and the first product run on the rows' nonzeros
            (`normalized_sparse_rows`); `None` means `training`. A training
            step passes `True` where it runs the encoder without dropout.

    Returns:
        `(mu, log_var)`, each `[B, latent_dim]`.

    Example:
    >>> encoder = RecVAEEncoder(hidden_dim=8, latent_dim=4, num_layers=2)
    >>> mu, log_var = encoder(keras.ops.ones((3, 10)))
    >>> mu.shape, log_var.shape
    (TensorShape([3, 4]), TensorShape([3, 4]))

    References:
        Shenbin et al., RecVAE, WSDM 2020. https://arxiv.org/abs/1912.11160
    """

    def __init__(
        self,
        hidden_dim: int = 600,
        latent_dim: int = 200,
        num_layers: int = 5,
        dropout_rate: float = 0.5,
        layer_norm_epsilon: float = 0.1,
        seed: int | None = None,
        sparse_rows: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_dim = hidden_dim
        self.latent_dim = latent_dim
        self.num_layers = num_layers
        self.dropout_rate = dropout_rate
        self.layer_norm_epsilon = layer_norm_epsilon
        self.seed = seed
        self.sparse_rows = sparse_rows
        for label, value in (
            ("hidden_dim", hidden_dim),
            ("latent_dim", latent_dim),
            ("num_layers", num_layers),
        ):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(
                    f"`{label}` must be a positive integer. Received {label}={value}"
                )
        if not 0.0 <= dropout_rate < 1.0:
            raise ValueError(
                f"`dropout_rate` must be in [0, 1). Received dropout_rate={dropout_rate}"
            )
        self.dropout = keras.layers.Dropout(dropout_rate, seed=seed, name="dropout")

        def glorot(offset):  # Keras' default kernels, seeded
            return keras.initializers.GlorotUniform(
                None if seed is None else seed + offset
            )

        self.body = ResidualDense(
            hidden_dim,
            num_layers,
            activation="swish",
            layer_norm_epsilon=layer_norm_epsilon,
            kernel_initializer=glorot(100),
            sparse_inputs=sparse_rows,
            name="body",
        )
        self.mean_dense = keras.layers.Dense(
            latent_dim, kernel_initializer=glorot(200), name="mean"
        )
        self.log_var_dense = keras.layers.Dense(
            latent_dim, kernel_initializer=glorot(201), name="log_var"
        )

    def build(self, input_shape):
        shape = tuple(input_shape)
        self.body.build(shape)
        hidden = shape[:-1] + (self.hidden_dim,)
        self.mean_dense.build(hidden)
        self.log_var_dense.build(hidden)

    def call(self, inputs, training=None, sparse_product=None):
        inputs = ops.cast(inputs, self.compute_dtype)
        if sparse_product is None:
            sparse_product = training
        if self.sparse_rows and sparse_product:
            # The same function on the nonzeros only (see `SparseRowsDense`).
            hidden = normalized_sparse_rows(inputs, self.dropout, training)
        else:
            # In float32: under mixed precision 1e-10 is 0 in float16, and an
            # empty row would give 0/0.
            rows = ops.cast(inputs, "float32")
            norm = ops.sqrt(ops.sum(ops.square(rows), axis=-1, keepdims=True))
            normalized = ops.cast(rows / (norm + 1e-10), self.compute_dtype)
            hidden = self.dropout(normalized, training=training)
        hidden = self.body(hidden)
        return self.mean_dense(hidden), self.log_var_dense(hidden)

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)[:-1] + (self.latent_dim,)
        return shape, shape

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_dim": self.hidden_dim,
            "latent_dim": self.latent_dim,
            "num_layers": self.num_layers,
            "dropout_rate": self.dropout_rate,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "seed": self.seed,
            "sparse_rows": self.sparse_rows,
        }
