"""The reparameterisation trick of a Gaussian VAE, and its KL term."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_rec")
class ReparameterizedSampling(keras.layers.Layer):
    """Draws `z ~ N(mu, diag(exp(log_var)))` differentiably (training only).

    `z = mu + exp(0.5 * log_var) * eps` with `eps ~ N(0, I)` when training;
    `z = mu` at inference (Mult-VAE scores with the posterior mean). The
    KL divergence to the standard normal prior is
    `KL = -0.5 * sum_k (1 + log_var_k - mu_k^2 - exp(log_var_k))`, per example
    (`kl_divergence`).

    Args:
        seed: int or None. Seed of the noise (`keras.random.SeedGenerator`).
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`).

    Call arguments:
        inputs: `[mu, log_var]`, two tensors of the same shape `[B, d]`.
        training: bool. Whether to sample (`True`) or return `mu`.

    Example:
    >>> sampling = ReparameterizedSampling(seed=0)
    >>> mu, log_var = keras.ops.zeros((2, 3)), keras.ops.zeros((2, 3))
    >>> sampling([mu, log_var], training=True).shape
    TensorShape([2, 3])
    >>> kl = ReparameterizedSampling.kl_divergence(mu, log_var)  # one per row
    >>> kl.shape, float(keras.ops.max(keras.ops.abs(kl)))  # zero at the prior
    (TensorShape([2]), 0.0)

    References:
        Kingma and Welling, Auto-Encoding Variational Bayes, ICLR 2014.
        https://arxiv.org/abs/1312.6114
        Liang et al., Variational Autoencoders for Collaborative Filtering,
        WWW 2018. https://arxiv.org/abs/1802.05814
    """

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"`seed` must be an int or None. Received: seed={seed!r}")
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        mu, log_var = inputs
        if not training:
            return mu
        noise = keras.random.normal(
            ops.shape(mu), dtype=mu.dtype, seed=self.seed_generator
        )
        return mu + ops.exp(0.5 * log_var) * noise

    @staticmethod
    def kl_divergence(mu, log_var):
        """`KL(N(mu, exp(log_var)) || N(0, I))` per example, summed over the last
        axis; computed in float32 (`exp(log_var)` overflows float16 at 11)."""
        mu = ops.cast(mu, "float32")
        log_var = ops.cast(log_var, "float32")
        return -0.5 * ops.sum(
            1.0 + log_var - ops.square(mu) - ops.exp(log_var), axis=-1
        )

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}
