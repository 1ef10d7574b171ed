"""RecVAE (Shenbin et al., WSDM 2020): Mult-VAE with a composite prior,
a user-dependent KL weight and alternating encoder/decoder training."""

from __future__ import annotations

import math

import keras
import numpy as np
import scipy.sparse as sp
import tensorflow as tf
from keras import ops

from keras_rec.data.pipelines import user_rows_dataset
from keras_rec.layers.recvae_encoder import RecVAEEncoder
from keras_rec.layers.reparameterized_sampling import ReparameterizedSampling
from keras_rec.losses.multinomial import MultinomialLogLikelihood
from keras_rec.models.autoencoder_base import (
    LOGITS,
    ROWS,
    AutoencoderRecommender,
    rows_input,
)
from keras_rec.models.base import check_positive, serialize_config

PHASE = "phase"
ENCODER_PHASE = 0
DECODER_PHASE = 1


def alternating_rows_dataset(
    matrix: sp.csr_matrix,
    batch_size: int = 500,
    seed: int = 0,
    epoch: int = 0,
    encoder_epochs: int = 3,
    decoder_epochs: int = 1,
) -> tf.data.Dataset:
    """One RecVAE epoch: `encoder_epochs` passes, then `decoder_epochs` passes.

    Every pass is a freshly shuffled `user_rows_dataset` pass over `matrix`;
    each batch says which phase it belongs to. Yields
    `{"rows": float32 [B, num_items], "phase": int32 [B]}` with `phase`
    `ENCODER_PHASE` (0) or `DECODER_PHASE` (1), what `RecVAE.train_step` reads.
    """
    check_positive(batch_size=batch_size, encoder_epochs=encoder_epochs)
    if decoder_epochs < 1:
        raise ValueError(
            f"`decoder_epochs` must be positive. Received: decoder_epochs={decoder_epochs}"
        )
    passes = encoder_epochs + decoder_epochs
    dataset = None
    for index in range(passes):
        phase = ENCODER_PHASE if index < encoder_epochs else DECODER_PHASE
        part = user_rows_dataset(
            matrix, batch_size, seed=seed, epoch=epoch * passes + index
        ).map(
            lambda rows, _, phase=phase: {
                ROWS: rows,
                PHASE: tf.fill(tf.shape(rows)[:1], phase),
            }
        )
        dataset = part if dataset is None else dataset.concatenate(part)
    return dataset.prefetch(tf.data.AUTOTUNE)


def log_normal(z, mu, log_var):
    """Elementwise `log N(z; mu, exp(log_var))`."""
    return -0.5 * (
        log_var + math.log(2.0 * math.pi) + ops.square(z - mu) / ops.exp(log_var)
    )


@keras.saving.register_keras_serializable(package="keras_rec")
class CompositePrior(keras.layers.Layer):
    """RecVAE's prior `p(z | x) = sum_k w_k N(z; m_k, v_k)`, with `q_old` frozen.

    The three components are `N(0, I)`, the previous encoder's posterior
    `q_old(z | x)` (run without dropout) and a wide `N(0, e^10 I)`, weighted
    `(3/20, 3/4, 1/10)` as in the authors' code. The old encoder's weights,
    the number of refreshes and the phase of the last training step are
    non-trainable weights, so they survive saving and resuming.

    Args:
        encoder_config: dict. `RecVAEEncoder` arguments of the old encoder.
        mixture_weights: three floats summing to 1.
        uniform_log_var: float. Log-variance of the wide component.
    """

    def __init__(self, encoder_config, mixture_weights, uniform_log_var, **kwargs):
        super().__init__(**kwargs)
        self.encoder_config = dict(encoder_config)
        self.mixture_weights = tuple(float(w) for w in mixture_weights)
        self.uniform_log_var = float(uniform_log_var)
        self.old_encoder = RecVAEEncoder(**self.encoder_config, name="old_encoder")
        self.old_encoder.trainable = False
        self.refreshes = self.add_weight(
            shape=(),
            dtype="int64",
            initializer="zeros",
            trainable=False,
            name="refreshes",
        )
        self.last_phase = self.add_weight(
            shape=(),
            dtype="int32",
            initializer=keras.initializers.Constant(DECODER_PHASE),
            trainable=False,
            name="last_phase",
        )

    def build(self, input_shape):
        self.old_encoder.build(input_shape)

    def call(self, rows, z):
        # Only training steps evaluate the prior (scoring and the exports
        # never do), so it can always take the sparse product.
        old_mu, old_log_var = self.old_encoder(
            rows, training=False, sparse_product=True
        )
        zeros = ops.zeros_like(z)
        densities = [
            log_normal(z, zeros, zeros),
            log_normal(z, old_mu, old_log_var),
            log_normal(z, zeros, zeros + self.uniform_log_var),
        ]
        weighted = [
            d + math.log(w)
            for d, w in zip(densities, self.mixture_weights, strict=True)
        ]
        return ops.logsumexp(ops.stack(weighted, axis=-1), axis=-1)

    def enter_phase(self, phase, encoder: RecVAEEncoder):
        """Copies `encoder` into `q_old` when an encoder phase has just ended."""
        ended = tf.logical_and(
            tf.equal(phase, DECODER_PHASE), tf.equal(self.last_phase, ENCODER_PHASE)
        )

        def refresh():
            for old, new in zip(self.old_encoder.weights, encoder.weights, strict=True):
                old.assign(new)
            return self.refreshes.assign_add(1)

        tf.cond(ended, refresh, lambda: tf.identity(self.refreshes))
        self.last_phase.assign(phase)

    def get_config(self):
        return {
            **super().get_config(),
            "encoder_config": self.encoder_config,
            "mixture_weights": list(self.mixture_weights),
            "uniform_log_var": self.uniform_log_var,
        }


@keras.saving.register_keras_serializable(package="keras_rec")
class RecVAE(AutoencoderRecommender, keras.Model):
    """RecVAE: a denoising VAE of user rows with a composite prior.

    Encoder `q(z|x)` = `RecVAEEncoder` (dense connections, swish, layer
    norm, input dropout), decoder `pi(z) = softmax(W z + b)`. The loss of a
    user is `-sum_i x_i log pi_i + beta'(x) * [log q(z|x) - log p(z|x)]`
    (single-sample KL estimate, `z ~ q`), with `beta'(x) = gamma * sum_i x_i`
    and the composite prior `p(z|x)` of `CompositePrior`.

    Training alternates as in the paper: per epoch, `encoder_epochs` passes
    updating only the encoder (input dropout on), a copy of the encoder into
    the prior's frozen `q_old`, then `decoder_epochs` passes updating only
    the decoder (no dropout). This is a custom `train_step`: each batch of
    `alternating_rows_dataset` carries its phase, the step updates the
    encoder (with the compiled optimizer) or the decoder (with a clone of
    it, so each has its own Adam state as the two reference optimizers),
    and the first decoder batch after an encoder phase refreshes `q_old`
    (until the first refresh `q_old` is an encoder of its own, built from
    the same config: with a `seed`, the encoder's very starting weights;
    the reference draws it separately, which only changes the prior of
    the first epoch's encoder passes). Scores are `W mu(x) + b` (no dropout, `z = mu`).

    Args:
        num_items: int. Size of the item vocabulary.
        hidden_dim: int. Width of the encoder's layers.
        latent_dim: int. Dimension of `z`.
        num_layers: int. Number of encoder layers.
        dropout_rate: float. Input dropout of the encoder phase.
        gamma: float or None. `beta'(x) = gamma * |x|`; `None` uses `beta`.
        beta: float or None. Constant KL weight when `gamma` is `None`.
        mixture_weights: the prior's weights of `N(0, I)`, `q_old`, wide.
        uniform_log_var: float. Log-variance of the wide component.
        seed: int or None. Seed of the initial weights, the dropout and the
            sampling.
        sparse_rows: bool. The encoder's first layer trained on the rows'
            nonzeros only (`SparseRowsDense`; faster on very sparse rows).
        l2: float. L2 penalty `l2 * sum(W^2)` on the kernels each phase
            updates (the encoder's in the encoder phase, the decoder's in
            the decoder phase), added to that phase's loss. The paper and
            the authors' code use none (`0`); Mult-DAE's reference uses
            `0.01 / batch_size`.

    Example:
    >>> model = RecVAE(num_items=30, hidden_dim=16, latent_dim=8)
    >>> model.compile(optimizer=keras.optimizers.Adam(5e-4))
    >>> model.score_all({"item_history": [[3, 5, -1]]}).shape
    TensorShape([1, 30])

    References:
        Shenbin et al., RecVAE, WSDM 2020. https://arxiv.org/abs/1912.11160
    """

    def __init__(
        self,
        num_items: int,
        hidden_dim: int = 600,
        latent_dim: int = 200,
        num_layers: int = 5,
        dropout_rate: float = 0.5,
        gamma: float | None = 0.005,
        beta: float | None = None,
        mixture_weights: tuple[float, ...] = (3 / 20, 3 / 4, 1 / 10),
        uniform_log_var: float = 10.0,
        seed: int | None = None,
        sparse_rows: bool = False,
        l2: float = 0.0,
        **kwargs,
    ):
        check_positive(num_items=num_items)
        if not l2 >= 0:
            raise ValueError(f"`l2` must be non-negative. Received: l2={l2}")
        if (gamma is None) == (beta is None) or (gamma or beta) <= 0:
            raise ValueError(
                "Exactly one of `gamma` and `beta` must be given, and positive. "
                f"Received: gamma={gamma}, beta={beta}"
            )
        mixture_weights = [float(w) for w in mixture_weights]
        if len(mixture_weights) != 3 or min(mixture_weights) <= 0:
            raise ValueError(
                "`mixture_weights` must be three positive weights. Received: "
                f"mixture_weights={mixture_weights}"
            )
        if not np.isclose(sum(mixture_weights), 1.0):
            raise ValueError(
                f"`mixture_weights` must sum to 1. Received: {mixture_weights}"
            )
        encoder_config = dict(
            hidden_dim=hidden_dim,
            latent_dim=latent_dim,
            num_layers=num_layers,
            dropout_rate=dropout_rate,
            seed=seed,
            sparse_rows=sparse_rows,
        )
        # === Layers ===
        encoder = RecVAEEncoder(**encoder_config, name="encoder")
        prior = CompositePrior(
            encoder_config, mixture_weights, uniform_log_var, name="prior"
        )
        sampling = ReparameterizedSampling(
            seed=None if seed is None else seed + 1, name="sampling"
        )
        decoder = keras.layers.Dense(
            num_items,
            kernel_initializer=keras.initializers.GlorotUniform(
                None if seed is None else seed + 300
            ),
            name=LOGITS,
        )
        # === Functional model ===
        rows = rows_input(num_items)
        mu, log_var = encoder(rows)
        logits = decoder(sampling([mu, log_var]))
        super().__init__(inputs=rows, outputs=logits, **kwargs)
        prior.build((None, num_items))
        # === Config ===
        self.encoder = encoder
        self.prior = prior
        self.sampling = sampling
        self.decoder = decoder
        self.reconstruction = MultinomialLogLikelihood(reduction=None)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.kl_tracker = keras.metrics.Mean(name="kl")
        self.decoder_optimizer = None
        self.num_items = num_items
        self.hidden_dim = hidden_dim
        self.latent_dim = latent_dim
        self.num_layers = num_layers
        self.dropout_rate = dropout_rate
        self.gamma = gamma
        self.beta = beta
        self.mixture_weights = tuple(mixture_weights)
        self.uniform_log_var = uniform_log_var
        self.seed = seed
        self.sparse_rows = sparse_rows
        self.l2 = float(l2)

    def compile(self, optimizer="adam", **kwargs):
        """Compiles; `optimizer` updates the encoder and a clone the decoder."""
        super().compile(optimizer=optimizer, **kwargs)
        config = keras.optimizers.serialize(self.optimizer)
        config["config"]["name"] = f"decoder_{config['config']['name']}"
        self.decoder_optimizer = keras.optimizers.deserialize(config)
        # Built now, so a saved model's optimizer states load into them.
        self.optimizer.build(self.encoder.trainable_variables)
        self.decoder_optimizer.build(self.decoder.trainable_variables)

    def compile_from_config(self, config):
        self.compile(**keras.saving.deserialize_keras_object(config))

    @property
    def metrics(self):
        return [self.loss_tracker, self.kl_tracker]

    def negative_elbo(self, rows, logits, z, mu, log_var):
        """Per-user `(loss, kl)`: the negative ELBO and its KL estimate."""
        kl = ops.sum(log_normal(z, mu, log_var) - self.prior(rows, z), axis=-1)
        weight = self.beta if self.gamma is None else self.gamma * ops.sum(rows, -1)
        return self.reconstruction(rows, logits) + weight * kl, kl

    def train_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        if not isinstance(x, dict) or PHASE not in x:
            raise ValueError(
                "RecVAE trains on batches that carry their phase, "
                "`{'rows': [B, num_items], 'phase': [B]}`, as "
                "`alternating_rows_dataset` yields them."
            )
        rows = ops.cast(x[ROWS], "float32")
        phase = ops.cast(x[PHASE][0], "int32")
        self.prior.enter_phase(phase, self.encoder)
        loss, kl = tf.cond(
            tf.equal(phase, ENCODER_PHASE),
            lambda: self._phase_step(rows, encoder_phase=True),
            lambda: self._phase_step(rows, encoder_phase=False),
        )
        self.loss_tracker.update_state(loss)
        self.kl_tracker.update_state(kl)
        return {metric.name: metric.result() for metric in self.metrics}

    def _phase_step(self, rows, encoder_phase: bool):
        if encoder_phase:
            variables = self.encoder.trainable_variables
            optimizer = self.optimizer
        else:
            variables = self.decoder.trainable_variables
            optimizer = self.decoder_optimizer
        with tf.GradientTape() as tape:
            # Dropout (the denoising) only in the encoder phase.
            mu, log_var = self.encoder(
                rows, training=encoder_phase, sparse_product=True
            )
            z = self.sampling([mu, log_var], training=True)
            losses, kl = self.negative_elbo(rows, self.decoder(z), z, mu, log_var)
            loss = ops.mean(losses)
            if self.l2:
                loss = loss + self.l2 * sum(
                    ops.sum(ops.square(v)) for v in variables if v.name == "kernel"
                )
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled = loss / replicas
        optimizer.apply(tape.gradient(scaled, variables), variables)
        return loss, ops.mean(kl)

    def get_config(self):
        return serialize_config(
            self,
            num_items=self.num_items,
            hidden_dim=self.hidden_dim,
            latent_dim=self.latent_dim,
            num_layers=self.num_layers,
            dropout_rate=self.dropout_rate,
            gamma=self.gamma,
            beta=self.beta,
            mixture_weights=list(self.mixture_weights),
            uniform_log_var=self.uniform_log_var,
            seed=self.seed,
            sparse_rows=self.sparse_rows,
            l2=self.l2,
        )

    @classmethod
    def from_config(cls, config):
        return cls(**config)
