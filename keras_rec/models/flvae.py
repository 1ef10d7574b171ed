"""FLVAE (Vančura and Kordík, ICANN 2021): a deep residual VAE of user rows
trained with the focal loss; the deep path of VASP."""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from keras_rec.layers.item_subset import PlaceItems, SelectItems, check_item_ids
from keras_rec.layers.reparameterized_sampling import ReparameterizedSampling
from keras_rec.layers.residual_dense import ResidualDense
from keras_rec.models.autoencoder_base import (
    AutoencoderRecommender,
    rows_input,
)
from keras_rec.models.base import ArgumentsConfig, check_positive

PROBABILITIES = "probabilities"
KL = "kl"


def _seed(seed, offset):
    return None if seed is None else seed + offset


def flvae_layers(
    num_items: int,
    hidden_dim: int,
    latent_dim: int,
    encoder_layers: int,
    decoder_layers: int,
    seed: int | None,
    sparse_rows: bool = False,
) -> dict[str, keras.layers.Layer]:
    """The layers of FLVAE's deep path (shared by `FLVAE` and `VASP`); with
    `sparse_rows` the encoder's first layer is a `SparseRowsDense`."""

    def dense(units, activation, name, offset):
        initializer = keras.initializers.GlorotUniform(_seed(seed, offset))
        return keras.layers.Dense(
            units, activation, kernel_initializer=initializer, name=name
        )

    def block(layers, name, offset, sparse_inputs=False):
        initializer = keras.initializers.GlorotUniform(_seed(seed, offset))
        return ResidualDense(
            hidden_dim,
            layers,
            kernel_initializer=initializer,
            sparse_inputs=sparse_inputs,
            name=name,
        )

    # A block seeds its layer k with its offset + k (`ResidualDense`), so
    # the blocks start 100 apart: no two kernels share a seed (one seed
    # draws the same stream, whatever the shape).
    return {
        "encoder": block(encoder_layers, "encoder", 100, sparse_rows),
        "mean": dense(latent_dim, None, "mean", 1),
        "log_var": dense(latent_dim, None, "log_var", 2),
        "sampling": ReparameterizedSampling(_seed(seed, 3), name="sampling"),
        "decoder": block(decoder_layers, "decoder", 200),
        "deep_output": dense(num_items, "sigmoid", "deep_output", 5),
        "latent_output": dense(num_items, "sigmoid", "latent_output", 6),
    }


def flvae_outputs(layers: dict, rows, latent_dim: int):
    """`(p_vae [B, I], kl [B])` of the deep path on `rows`.

    `p_vae = sigmoid(W_d h(z) + b_d) * sigmoid(W_l z + b_l)` (the authors'
    code multiplies a residual decoder's output and a linear read-out of
    `z`); `kl` is `KL(q(z|x) || N(0, I))` averaged over the latent
    dimensions, as that code's `reduce_mean`.
    """
    hidden = layers["encoder"](rows)
    mu, log_var = layers["mean"](hidden), layers["log_var"](hidden)
    z = layers["sampling"]([mu, log_var])
    deep = layers["deep_output"](layers["decoder"](z))
    probabilities = deep * layers["latent_output"](z)
    kl = ReparameterizedSampling.kl_divergence(mu, log_var) / latent_dim
    return probabilities, kl


class FocalVAELoss:
    """Mixin of FLVAE and VASP: focal loss on the probabilities plus `beta * KL`.

    The functional outputs are `{"probabilities": [B, I], "kl": [B]}`;
    compile with `FocalLoss()` (probabilities, not logits), which
    `compute_loss` applies before adding `beta * mean(kl)`. Scores are the
    probabilities.
    """

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        loss = super().compute_loss(
            x, y, y_pred[PROBABILITIES], sample_weight, training=training
        )
        # Keras scales the compiled loss by 1/replicas inside each replica.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return loss + self.beta * ops.mean(y_pred[KL]) / replicas

    def score_rows(self, rows):
        return self(rows, training=False)[PROBABILITIES]


def check_architecture(**values) -> None:
    check_positive(**values)
    for label, value in values.items():
        if not isinstance(value, int):
            raise ValueError(f"`{label}` must be an integer. Received: {label}={value}")


class FLVAEBase(ArgumentsConfig, FocalVAELoss, AutoencoderRecommender, keras.Model):
    """What FLVAE and VASP share: the deep path, the arguments and the config.

    The functional model is FLVAE's deep path on the rows (`flvae_layers`,
    `flvae_outputs`); where a subclass's `_shallow_path` returns a layer
    (VASP's Neural EASE), the probabilities are multiplied by its output on
    the rows and the layer is kept as `self.ease`. The arguments are
    `FLVAE`'s.
    """

    config_keys = (
        "num_items",
        "hidden_dim",
        "latent_dim",
        "encoder_layers",
        "decoder_layers",
        "beta",
        "seed",
        "sparse_rows",
        "item_ids",
    )

    def __init__(
        self,
        num_items: int,
        hidden_dim: int = 4096,
        latent_dim: int = 2048,
        encoder_layers: int = 7,
        decoder_layers: int = 5,
        beta: float = 1.0,
        seed: int | None = None,
        sparse_rows: bool = False,
        item_ids: list[int] | None = None,
        **kwargs,
    ):
        check_architecture(
            num_items=num_items,
            hidden_dim=hidden_dim,
            latent_dim=latent_dim,
            encoder_layers=encoder_layers,
            decoder_layers=decoder_layers,
        )
        if beta < 0:
            raise ValueError(f"`beta` must be non-negative. Received: beta={beta}")
        if item_ids is not None:
            item_ids = check_item_ids(item_ids, num_items)
        width = num_items if item_ids is None else len(item_ids)
        # === Layers ===
        layers = flvae_layers(
            width,
            hidden_dim,
            latent_dim,
            encoder_layers,
            decoder_layers,
            seed,
            sparse_rows,
        )
        shallow = self._shallow_path(width, seed, sparse_rows)
        # === Functional model ===
        rows = rows_input(num_items)
        inputs = rows
        if item_ids is not None:
            inputs = SelectItems(item_ids, name="select_items")(rows)
        probabilities, kl = flvae_outputs(layers, inputs, latent_dim)
        if shallow is not None:
            probabilities = probabilities * shallow(inputs)
        if item_ids is not None:
            probabilities = PlaceItems(item_ids, num_items, name="place_items")(
                probabilities
            )
        super().__init__(
            inputs=rows, outputs={PROBABILITIES: probabilities, KL: kl}, **kwargs
        )
        # === Config ===
        if shallow is not None:
            self.ease = shallow
        self.num_items = num_items
        self.hidden_dim = hidden_dim
        self.latent_dim = latent_dim
        self.encoder_layers = encoder_layers
        self.decoder_layers = decoder_layers
        self.beta = beta
        self.seed = seed
        self.sparse_rows = sparse_rows
        self.item_ids = item_ids

    def _shallow_path(
        self, num_items: int, seed: int | None, sparse_rows: bool
    ) -> keras.layers.Layer | None:
        """The layer of the (selected) rows that multiplies the deep path
        (none here)."""
        return None


@keras.saving.register_keras_serializable(package="keras_rec")
class FLVAE(FLVAEBase):
    """A deep residual VAE with a focal-loss likelihood (VASP's deep path).

    Encoder: `ResidualDense` (each of `encoder_layers` swish + layer-norm
    layers receives the sum of all earlier outputs) on the row `x`, then
    `q(z|x) = N(mu, diag(exp(log_var)))`. Decoder: `p = sigmoid(W_d h(z) +
    b_d) * sigmoid(W_l z + b_l)` with `h` a `decoder_layers` residual dense
    block. Loss: `FocalLoss(alpha, gamma)(y, p) + beta * KL / latent_dim`
    (the KL averaged over the latent dimensions, as the authors' code). The
    paper trains it on split-brain pairs (`split_brain_dataset`): each
    user's items split at random into halves that predict each other.
    At inference `z = mu` and the scores are `p`.

    Args:
        num_items: int. Size of the item vocabulary.
        hidden_dim: int. Width of the residual blocks (paper: 4096).
        latent_dim: int. Dimension of `z` (paper: 2048).
        encoder_layers: int. Layers of the encoder block.
        decoder_layers: int. Layers of the decoder block.
        beta: float. Weight of the (per-dimension mean) KL term.
        seed: int or None. Seed of the initialisers and the sampling.
        sparse_rows: bool. The encoder's first layer trained on the rows'
            nonzeros only (`SparseRowsDense`; faster on very sparse rows).
        item_ids: list of int or None. The items the network reads and
            scores (VASP's `items_sampling`, see
            `keras_rec.layers.item_subset`). The others get probability 0
            in the model's outputs (what the loss sees) and, from
            `score_all`/`score_items` (and so the exports), the value just
            above the dtype's lowest (`keras_rec.models.base.unscored_score`;
            excluded items get the lowest), which ranks them after every
            covered item and before the excluded ones. `None`: all items.

    Example:
    >>> model = FLVAE(num_items=20, hidden_dim=8, latent_dim=4)
    >>> model.score_all({"item_history": [[3, 5, -1]]}).shape
    TensorShape([1, 20])

    References:
        Vančura and Kordík, VASP, ICANN 2021. https://arxiv.org/abs/2102.05774
    """
