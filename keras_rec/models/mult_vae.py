"""Mult-VAE and Mult-DAE (Liang et al., WWW 2018): autoencoders of user rows."""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from keras_rec.layers.reparameterized_sampling import ReparameterizedSampling
from keras_rec.layers.sparse_rows_dense import SparseRowsDense
from keras_rec.models.autoencoder_base import (
    LOGITS,
    AutoencoderRecommender,
    check_rate,
    rows_input,
)
from keras_rec.models.base import check_positive, serialize_config

KL = "kl"


def _dense(units, activation, l2, seed, name, sparse_rows=False):
    """A layer as the reference: Xavier kernels, N(0, 0.001) biases, L2 on
    kernels; `sparse_rows` for the first layer (`SparseRowsDense`)."""
    layer = SparseRowsDense if sparse_rows else keras.layers.Dense
    return layer(
        units,
        activation=activation,
        kernel_initializer=keras.initializers.GlorotUniform(seed),
        bias_initializer=keras.initializers.TruncatedNormal(stddev=0.001, seed=seed),
        kernel_regularizer=keras.regularizers.L2(l2) if l2 else None,
        name=name,
    )


def _seed(seed, offset):
    return None if seed is None else seed + offset


def _tanh_layers(widths, l2, seed, offset, prefix, sparse_rows=False):
    """tanh layers `prefix_0, prefix_1, ...` seeded from `seed + offset` on;
    with `sparse_rows` the first one is a `SparseRowsDense`."""
    return [
        _dense(
            width,
            "tanh",
            l2,
            _seed(seed, offset + i),
            f"{prefix}_{i}",
            sparse_rows=sparse_rows and i == 0,
        )
        for i, width in enumerate(widths)
    ]


@keras.saving.register_keras_serializable(package="keras_rec")
class MultVAE(AutoencoderRecommender, keras.Model):
    """Variational autoencoder with a multinomial likelihood over the items.

    `q(z|x) = N(mu(x), diag(sigma^2(x)))` from the L2-normalised row `x`
    (dropout on the input in training), `pi(z) = softmax(f(z))`, trained on
    `-sum_i x_i log pi_i + beta * KL(q(z|x) || N(0, I))` with `beta`
    annealed linearly, `beta = min(anneal_cap, step / total_anneal_steps)`
    (the paper's "partially regularised" objective, eq. 7). The step is a
    non-trainable weight (`anneal_step`) so a saved or resumed model keeps
    its place in the schedule; it advances once per training batch. At
    inference `z = mu` and the scores are the logits `f(mu(x))`.

    The functional model maps `"rows"` `[B, num_items]` to
    `{"logits": [B, num_items], "kl": [B]}`; compile it with
    `MultinomialLogLikelihood()`, which `compute_loss` applies to the logits
    before adding `beta * mean(kl)`.

    Args:
        num_items: int. Size of the item vocabulary.
        hidden_dims: list of int. Hidden widths of the encoder (mirrored in the
            decoder); the paper's `[600]` gives `I-600-200-600-I`.
        latent_dim: int. Dimension of `z`.
        dropout_rate: float. Dropout on the normalised input (training only).
        anneal_cap: float. Largest `beta`.
        total_anneal_steps: int. Steps over which `beta` would reach 1
            (`beta` reaches `anneal_cap` after `anneal_cap * total_anneal_steps`);
            `0` holds `beta = anneal_cap` from the start.
        l2: float. L2 penalty `l2 * sum(W^2)` on the kernels (the reference
            code's `2 * lam * l2_loss`; `0` for Mult-VAE).
        seed: int or None. Seed of the initialisers, dropout and sampling.
        sparse_rows: bool. Train the first layer on the rows' nonzeros only
            (`SparseRowsDense`: the same function, faster on rows under about
            0.3% nonzero, such as Gowalla's; slower on denser rows).

    Example:
    >>> model = MultVAE(num_items=20, hidden_dims=[8], latent_dim=4)
    >>> model.score_all({"item_history": [[3, 5, -1]]}).shape
    TensorShape([1, 20])

    References:
        Liang et al., Variational Autoencoders for Collaborative Filtering,
        WWW 2018. https://arxiv.org/abs/1802.05814
    """

    def __init__(
        self,
        num_items: int,
        hidden_dims: list[int] | tuple[int, ...] = (600,),
        latent_dim: int = 200,
        dropout_rate: float = 0.5,
        anneal_cap: float = 0.2,
        total_anneal_steps: int = 200_000,
        l2: float = 0.0,
        seed: int | None = None,
        sparse_rows: bool = False,
        **kwargs,
    ):
        hidden_dims = [int(d) for d in hidden_dims]
        check_positive(num_items=num_items, latent_dim=latent_dim)
        for width in hidden_dims:
            check_positive(hidden_dims=width)
        check_rate(dropout_rate=dropout_rate)
        if anneal_cap < 0 or total_anneal_steps < 0 or l2 < 0:
            raise ValueError(
                "`anneal_cap`, `total_anneal_steps` and `l2` must be non-negative. "
                f"Received: anneal_cap={anneal_cap}, "
                f"total_anneal_steps={total_anneal_steps}, l2={l2}"
            )
        # === Layers ===
        normalize = keras.layers.UnitNormalization(axis=-1, name="l2_normalize")
        dropout = keras.layers.Dropout(dropout_rate, seed=seed, name="input_dropout")
        encoder = _tanh_layers(hidden_dims, l2, seed, 1, "encoder", sparse_rows)
        posterior = _dense(
            2 * latent_dim,
            None,
            l2,
            _seed(seed, 1 + len(hidden_dims)),
            "posterior",
            sparse_rows=sparse_rows and not hidden_dims,
        )
        sampling = ReparameterizedSampling(seed=_seed(seed, 100), name="sampling")
        decoder = _tanh_layers(hidden_dims[::-1], l2, seed, 200, "decoder")
        decoder.append(
            _dense(num_items, None, l2, _seed(seed, 200 + len(hidden_dims)), LOGITS)
        )
        # === Functional model ===
        rows = rows_input(num_items)
        hidden = dropout(normalize(rows))
        for layer in encoder:
            hidden = layer(hidden)
        moments = posterior(hidden)
        mu, log_var = moments[:, :latent_dim], moments[:, latent_dim:]
        hidden = sampling([mu, log_var])
        for layer in decoder:
            hidden = layer(hidden)
        kl = ReparameterizedSampling.kl_divergence(mu, log_var)
        super().__init__(inputs=rows, outputs={LOGITS: hidden, KL: kl}, **kwargs)
        # === Config ===
        self.anneal_step = self.add_weight(
            shape=(),
            dtype="int64",
            initializer="zeros",
            trainable=False,
            aggregation="only_first_replica",
            name="anneal_step",
        )
        self.num_items = num_items
        self.hidden_dims = hidden_dims
        self.latent_dim = latent_dim
        self.dropout_rate = dropout_rate
        self.anneal_cap = anneal_cap
        self.total_anneal_steps = total_anneal_steps
        self.l2 = l2
        self.seed = seed
        self.sparse_rows = sparse_rows

    def beta(self) -> tf.Tensor:
        """The KL weight of the current step."""
        if self.total_anneal_steps == 0:
            return ops.convert_to_tensor(self.anneal_cap, "float32")
        progress = ops.cast(self.anneal_step, "float32") / self.total_anneal_steps
        return ops.minimum(ops.cast(self.anneal_cap, "float32"), progress)

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        # The compiled multinomial loss on the logits, plus the L2 penalties.
        loss = super().compute_loss(
            x, y, y_pred[LOGITS], sample_weight, training=training
        )
        # Keras scales the compiled loss by 1/replicas inside each replica
        # and sums the gradients: scale the KL term the same way.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        kl = ops.mean(y_pred[KL])
        loss = loss + self.beta() * kl / replicas
        if training:
            self.anneal_step.assign_add(1)
        return loss

    def get_config(self):
        return serialize_config(
            self,
            num_items=self.num_items,
            hidden_dims=self.hidden_dims,
            latent_dim=self.latent_dim,
            dropout_rate=self.dropout_rate,
            anneal_cap=self.anneal_cap,
            total_anneal_steps=self.total_anneal_steps,
            l2=self.l2,
            seed=self.seed,
            sparse_rows=self.sparse_rows,
        )

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_rec")
class MultDAE(AutoencoderRecommender, keras.Model):
    """Denoising autoencoder with a multinomial likelihood (Mult-DAE).

    Mult-VAE without the KL term and with a deterministic code:
    `pi(x) = softmax(f(g(dropout(x / |x|))))` with tanh layers, trained on
    `-sum_i x_i log pi_i + l2 * sum(W^2)`. The paper's model is
    `I-200-I` (`hidden_dims=[]`, `latent_dim=200`); the reference code
    regularises the kernels with `lam = 0.01 / batch_size` as
    `2 * lam * l2_loss(W) = lam * sum(W^2)`, i.e. `l2 = 2e-5` at batch 500.
    Compile with `MultinomialLogLikelihood()`; Keras's `compute_loss` adds
    the penalties.

    Args:
        num_items: int. Size of the item vocabulary.
        latent_dim: int. Width of the code layer (tanh).
        hidden_dims: list of int. Extra encoder widths before the code,
            mirrored in the decoder.
        dropout_rate: float. Dropout on the normalised input (training only).
        l2: float. L2 penalty `l2 * sum(W^2)` on the kernels.
        seed: int or None. Seed of the initialisers and dropout.
        sparse_rows: bool. As `MultVAE`'s: the first layer trained on the
            rows' nonzeros only.

    Example:
    >>> model = MultDAE(num_items=20, latent_dim=4)
    >>> model.score_all({"item_history": [[3, 5, -1]]}).shape
    TensorShape([1, 20])

    References:
        Liang et al., Variational Autoencoders for Collaborative Filtering,
        WWW 2018. https://arxiv.org/abs/1802.05814
    """

    def __init__(
        self,
        num_items: int,
        latent_dim: int = 200,
        hidden_dims: list[int] | tuple[int, ...] = (),
        dropout_rate: float = 0.5,
        l2: float = 2e-5,
        seed: int | None = None,
        sparse_rows: bool = False,
        **kwargs,
    ):
        hidden_dims = [int(d) for d in hidden_dims]
        check_positive(num_items=num_items, latent_dim=latent_dim)
        for width in hidden_dims:
            check_positive(hidden_dims=width)
        check_rate(dropout_rate=dropout_rate)
        if l2 < 0:
            raise ValueError(f"`l2` must be non-negative. Received: l2={l2}")
        widths = [*hidden_dims, latent_dim, *reversed(hidden_dims)]
        # === Layers ===
        normalize = keras.layers.UnitNormalization(axis=-1, name="l2_normalize")
        dropout = keras.layers.Dropout(dropout_rate, seed=seed, name="input_dropout")
        layers = _tanh_layers(widths, l2, seed, 1, "dense", sparse_rows)
        layers.append(_dense(num_items, None, l2, _seed(seed, 1 + len(widths)), LOGITS))
        # === Functional model ===
        rows = rows_input(num_items)
        hidden = dropout(normalize(rows))
        for layer in layers:
            hidden = layer(hidden)
        super().__init__(inputs=rows, outputs=hidden, **kwargs)
        # === Config ===
        self.num_items = num_items
        self.latent_dim = latent_dim
        self.hidden_dims = hidden_dims
        self.dropout_rate = dropout_rate
        self.l2 = l2
        self.seed = seed
        self.sparse_rows = sparse_rows

    def get_config(self):
        return serialize_config(
            self,
            num_items=self.num_items,
            latent_dim=self.latent_dim,
            hidden_dims=self.hidden_dims,
            dropout_rate=self.dropout_rate,
            l2=self.l2,
            seed=self.seed,
            sparse_rows=self.sparse_rows,
        )

    @classmethod
    def from_config(cls, config):
        return cls(**config)
