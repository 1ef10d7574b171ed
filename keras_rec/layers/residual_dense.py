"""FLVAE's residual dense block: a stack of densely connected dense layers."""

from __future__ import annotations

from collections.abc import Callable

import keras

from keras_rec.layers.initializers import seeded_initializer
from keras_rec.layers.sparse_rows_dense import SparseRowsDense


@keras.saving.register_keras_serializable(package="keras_rec")
class ResidualDense(keras.layers.Layer):
    """A stack of dense layers, each with the sum of all earlier outputs added.

    `h_1 = LN(act(W_1 x + b_1))` and, for `k = 2..K`,
    `h_k = LN(act(W_k h_{k-1} + b_k + h_1 + ... + h_{k-1}))`; the output is
    `h_K`. This is the encoder/decoder body of FLVAE in VASP (7 encoder and 5
    decoder layers, swish, layer normalisation) and of RecVAE's encoder.

    Args:
        units: int. Width of every layer.
        num_layers: int. Number of dense layers `K`.
        activation: str or callable. Activation inside each layer.
        layer_norm_epsilon: float. Epsilon of the layer normalisations
            (RecVAE uses 0.1, VASP's Keras code the Keras default 1e-3).
        kernel_initializer: str or initializer. Initialiser of the kernels.
            One with an int seed `s` (Keras gives one to an initializer
            created without a seed too) seeds layer `k` with `s + k`, so
            that the layers start from different draws (an initializer
            with an int seed returns the same values at each call; and
            one seed gives one stream whatever the shape, so keep other
            layers' seeds clear of `s .. s + num_layers - 1`).
        sparse_inputs: bool. Make the first layer a `SparseRowsDense` (its
            product over the inputs' nonzeros in training), for multi-hot
            user rows of a large, sparse catalogue.

    Example:
    >>> block = ResidualDense(units=8, num_layers=3)
    >>> block(keras.ops.ones((2, 5))).shape
    TensorShape([2, 8])

    References:
        Vančura and Kordík, ICANN 2021. https://arxiv.org/abs/2102.05774
        Shenbin et al., WSDM 2020. https://arxiv.org/abs/1912.11160
    """

    def __init__(
        self,
        units: int,
        num_layers: int = 5,
        activation: str | Callable = "swish",
        layer_norm_epsilon: float = 1e-3,
        kernel_initializer="glorot_uniform",
        sparse_inputs: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = units
        self.num_layers = num_layers
        self.activation = keras.activations.get(activation)
        self.layer_norm_epsilon = layer_norm_epsilon
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.sparse_inputs = sparse_inputs
        for label, value in (("units", units), ("num_layers", num_layers)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(
                    f"`{label}` must be a positive integer. Received {label}={value}"
                )
        if layer_norm_epsilon <= 0:
            raise ValueError(
                "`layer_norm_epsilon` must be positive. Received "
                f"layer_norm_epsilon={layer_norm_epsilon}"
            )
        seed = getattr(self.kernel_initializer, "seed", None)
        seed = seed if isinstance(seed, int) else None

        def initializer(index):
            if seed is None:  # e.g. a SeedGenerator: draws anew each call
                return self.kernel_initializer
            return seeded_initializer(self.kernel_initializer, seed + index)

        self.dense_layers = [
            (SparseRowsDense if sparse_inputs and index == 0 else keras.layers.Dense)(
                units, kernel_initializer=initializer(index), name=f"dense_{index}"
            )
            for index in range(num_layers)
        ]
        self.norm_layers = [
            keras.layers.LayerNormalization(
                epsilon=layer_norm_epsilon, name=f"layer_norm_{index}"
            )
            for index in range(num_layers)
        ]

    def build(self, input_shape):
        shape = tuple(input_shape)
        for dense, norm in zip(self.dense_layers, self.norm_layers, strict=True):
            dense.build(shape)
            shape = shape[:-1] + (self.units,)
            norm.build(shape)

    def call(self, inputs):
        outputs = []
        hidden = inputs
        for dense, norm in zip(self.dense_layers, self.norm_layers, strict=True):
            pre_activation = dense(hidden)
            for earlier in outputs:
                pre_activation = pre_activation + earlier
            hidden = norm(self.activation(pre_activation))
            outputs.append(hidden)
        return hidden

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.units,)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "num_layers": self.num_layers,
            "activation": keras.activations.serialize(self.activation),
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "sparse_inputs": self.sparse_inputs,
        }
