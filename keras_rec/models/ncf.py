"""Neural Collaborative Filtering: GMF, MLP and NeuMF (He et al., WWW 2017)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import keras
import numpy as np
from keras import ops

from keras_rec.models.base import (
    USER_ID,
    ArgumentsConfig,
    Recommender,
    check_inputs,
    check_non_negative,
    check_positive,
)

if TYPE_CHECKING:
    import tensorflow as tf

ITEM_ID = "item_id"


_SEED_OFFSETS = {"gmf_user": 0, "gmf_item": 1, "mlp_user": 2, "mlp_item": 3}


def _embedding(
    count: int, dim: int, name: str, seed: int | None, l2: float = 0.0
) -> keras.layers.Layer:
    """N(0, 0.01) embeddings as the paper's code; a distinct seed per table.

    `l2` penalises the whole table (`l2 * sum(E**2)` added to every batch's
    loss), as the reference code's `W_regularizer=l2(reg)` on its Embedding.
    """
    seed = None if seed is None else seed + _SEED_OFFSETS[name]
    return keras.layers.Embedding(
        count,
        dim,
        embeddings_initializer=keras.initializers.RandomNormal(0.0, 0.01, seed),
        embeddings_regularizer=keras.regularizers.L2(l2) if l2 else None,
        name=name,
    )


def _tower_widths(predictive_factors: int, num_layers: int) -> list[int]:
    """MLP widths halving per layer and ending at `predictive_factors`."""
    return [predictive_factors * 2 ** (num_layers - 1 - i) for i in range(num_layers)]


def _pair_inputs() -> tuple[keras.KerasTensor, keras.KerasTensor]:
    return (
        keras.Input(shape=(), dtype="int64", name=USER_ID),
        keras.Input(shape=(), dtype="int64", name=ITEM_ID),
    )


def _glorot(seed: int | None, offset: int) -> keras.initializers.Initializer:
    """Keras' default kernel initializer, seeded `seed + offset`."""
    return keras.initializers.GlorotUniform(None if seed is None else seed + offset)


def _mlp_tower(widths: list[int], seed: int | None) -> list[keras.layers.Layer]:
    return [
        keras.layers.Dense(
            w,
            activation="relu",
            kernel_initializer=_glorot(seed, 10 + i),
            name=f"mlp_layer_{i}",
        )
        for i, w in enumerate(widths)
    ]


def _apply(layers: list[keras.layers.Layer], vector):
    for layer in layers:
        vector = layer(vector)
    return vector


def _gmf_path(
    num_users: int,
    num_items: int,
    predictive_factors: int,
    seed: int | None,
    l2: float = 0.0,
) -> Callable:
    """GMF's embeddings; returns `(user_id, item_id) -> p_u * q_i`."""
    user_embedding = _embedding(num_users, predictive_factors, "gmf_user", seed, l2)
    item_embedding = _embedding(num_items, predictive_factors, "gmf_item", seed, l2)
    return lambda user_id, item_id: user_embedding(user_id) * item_embedding(item_id)


def _mlp_path(
    num_users: int,
    num_items: int,
    predictive_factors: int,
    num_layers: int,
    embedding_dim: int | None,
    seed: int | None,
    l2: float = 0.0,
) -> Callable:
    """MLP's embeddings and tower; returns `(user_id, item_id) -> a_L(...)`."""
    widths = _tower_widths(predictive_factors, num_layers)
    width = embedding_dim or widths[0] // 2
    user_embedding = _embedding(num_users, width, "mlp_user", seed, l2)
    item_embedding = _embedding(num_items, width, "mlp_item", seed, l2)
    tower = _mlp_tower(widths, seed)

    def apply(user_id, item_id):
        vector = ops.concatenate(
            [user_embedding(user_id), item_embedding(item_id)], axis=-1
        )
        return _apply(tower, vector)

    return apply


class _NCFBase(ArgumentsConfig, Recommender, keras.Model):
    """Scores `(user_id [B], item_id [B])` pairs with a sigmoid; `score_all`
    evaluates every item for each user by tiling the pair inputs."""

    input_kind = USER_ID
    #: Pairs one `score_all` call should score at most (about 260 MB per
    #: 256-wide layer): full-ranking evaluation asks for this many users'
    #: rows at a time (`scoring_batch_size`), as 1,024 users x 3,706 items
    #: through MLP's tower took over 20 GB.
    max_scored_pairs = 1 << 18

    def __init__(self, paths: list[Callable], seed: int | None = None, **kwargs):
        """`sigmoid(h^T [path(u, i) for path in paths] + b)`, the paths'
        vectors (`_gmf_path`, `_mlp_path`) concatenated in order, `h`
        LeCun uniform (the reference code's `init='lecun_uniform'`; Glorot
        uniform before 2026-12-07) seeded with `seed`. A subclass then
        stores its arguments (`_store_config`)."""
        # === Layers ===
        prediction = keras.layers.Dense(
            1,
            kernel_initializer=keras.initializers.LecunUniform(
                None if seed is None else seed + 30
            ),
            name="prediction",
        )
        # === Functional model ===
        user_id, item_id = _pair_inputs()
        vectors = [path(user_id, item_id) for path in paths]
        vector = vectors[0] if len(vectors) == 1 else ops.concatenate(vectors, axis=-1)
        score = ops.sigmoid(ops.squeeze(prediction(vector), -1))
        super().__init__(
            inputs={USER_ID: user_id, ITEM_ID: item_id}, outputs=score, **kwargs
        )
        # === Config ===
        self.prediction = prediction

    @property
    def scoring_batch_size(self) -> int:
        """Users per `score_all` call that keep it within `max_scored_pairs`."""
        return max(1, self.max_scored_pairs // self.num_items)

    def score_all(self, inputs: dict) -> tf.Tensor:
        check_inputs(self, inputs)
        users = ops.convert_to_tensor(inputs[USER_ID], "int64")
        items = ops.arange(self.num_items, dtype="int64")
        batch = ops.shape(users)[0]
        scores = self(
            {
                USER_ID: ops.reshape(
                    ops.repeat(users[:, None], self.num_items, axis=1), (-1,)
                ),
                ITEM_ID: ops.tile(items, (batch,)),
            }
        )
        return ops.reshape(scores, (batch, self.num_items))

    def score_items(self, inputs: dict, item_ids: tf.Tensor) -> tf.Tensor:
        check_inputs(self, inputs, item_ids)
        users = ops.convert_to_tensor(inputs[USER_ID], "int64")
        item_ids = ops.convert_to_tensor(item_ids, "int64")
        shape = ops.shape(item_ids)
        scores = self(
            {
                USER_ID: ops.reshape(
                    ops.repeat(users[:, None], shape[1], axis=1), (-1,)
                ),
                ITEM_ID: ops.reshape(item_ids, (-1,)),
            }
        )
        return ops.reshape(scores, shape)

    config_keys = (
        "num_users",
        "num_items",
        "predictive_factors",
        "l2",
        "seed",
    )

    def _store_config(self, **arguments) -> None:
        for key in self.config_keys:
            setattr(self, key, arguments[key])


@keras.saving.register_keras_serializable(package="keras_rec")
class GMF(_NCFBase):
    """Generalized Matrix Factorization.

    `y(u, i) = sigmoid(h^T (p_u * q_i) + b)`: the element-wise product of the
    user and item embeddings, weighted by a learned output layer.

    Args:
        num_users: int. Size of the user vocabulary.
        num_items: int. Size of the item vocabulary.
        predictive_factors: int. Embedding dimension (the paper's factors).
        l2: float. L2 penalty on the embedding tables (0: none, as the
            paper's ML-1M runs).
        seed: int or None. Seed of the initialisers.

    Example:
    >>> model = GMF(num_users=4, num_items=6, predictive_factors=8)
    >>> model({"user_id": np.array([0, 1]), "item_id": np.array([2, 3])}).shape
    TensorShape([2])

    References:
        He et al., Neural Collaborative Filtering, WWW 2017.
        https://arxiv.org/abs/1708.05031
    """

    def __init__(
        self,
        num_users: int,
        num_items: int,
        predictive_factors: int = 8,
        seed: int | None = None,
        l2: float = 0.0,
        **kwargs,
    ):
        check_positive(
            num_users=num_users,
            num_items=num_items,
            predictive_factors=predictive_factors,
        )
        check_non_negative(l2=l2)
        # === Layers ===
        gmf = _gmf_path(num_users, num_items, predictive_factors, seed, l2)
        super().__init__([gmf], seed=seed, **kwargs)
        # === Config ===
        self._store_config(
            num_users=num_users,
            num_items=num_items,
            predictive_factors=predictive_factors,
            l2=l2,
            seed=seed,
        )


class _TowerBase(_NCFBase):
    """What MLP and NeuMF share: the arguments, their check and the MLP path,
    after the GMF path where `with_gmf` (NeuMF). The arguments are `MLP`'s."""

    config_keys = (*_NCFBase.config_keys, "num_layers", "embedding_dim")
    #: Whether GMF's vector joins the MLP tower's (NeuMF).
    with_gmf: bool = False

    def __init__(
        self,
        num_users: int,
        num_items: int,
        predictive_factors: int = 8,
        num_layers: int = 3,
        embedding_dim: int | None = None,
        seed: int | None = None,
        l2: float = 0.0,
        **kwargs,
    ):
        check_positive(
            num_users=num_users,
            num_items=num_items,
            predictive_factors=predictive_factors,
            num_layers=num_layers,
        )
        check_non_negative(l2=l2)
        # === Layers ===
        paths = []
        if self.with_gmf:
            paths.append(_gmf_path(num_users, num_items, predictive_factors, seed, l2))
        mlp = _mlp_path(
            num_users,
            num_items,
            predictive_factors,
            num_layers,
            embedding_dim,
            seed,
            l2,
        )
        paths.append(mlp)
        super().__init__(paths, seed=seed, **kwargs)
        # === Config ===
        self._store_config(
            num_users=num_users,
            num_items=num_items,
            predictive_factors=predictive_factors,
            num_layers=num_layers,
            embedding_dim=embedding_dim,
            l2=l2,
            seed=seed,
        )


@keras.saving.register_keras_serializable(package="keras_rec")
class MLP(_TowerBase):
    """The NCF multi-layer perceptron.

    `y(u, i) = sigmoid(h^T a_L(... a_1([p_u, q_i])))`: user and item
    embeddings, each half as wide as the first hidden layer, concatenated and
    sent through a ReLU tower whose width halves per layer down to
    `predictive_factors`. As the paper's §4.1 states it: with 8 predictive
    factors the layers are 32 -> 16 -> 8 and the embedding size is 16. (The
    authors' script `--layers [64,32,16,8]` used 32-wide embeddings instead;
    `embedding_dim` overrides the width to reproduce that.)

    Args:
        num_users: int. Size of the user vocabulary.
        num_items: int. Size of the item vocabulary.
        predictive_factors: int. Width of the last hidden layer.
        num_layers: int. Number of hidden layers.
        embedding_dim: int. Width of each MLP embedding (default: half the
            first hidden layer, as the paper).
        l2: float. L2 penalty on the embedding tables (0: none).
        seed: int or None. Seed of the initialisers.

    Example:
    >>> model = MLP(num_users=4, num_items=6, predictive_factors=8)
    >>> model({"user_id": np.array([0, 1]), "item_id": np.array([2, 3])}).shape
    TensorShape([2])

    References:
        He et al., WWW 2017. https://arxiv.org/abs/1708.05031
    """


@keras.saving.register_keras_serializable(package="keras_rec")
class NeuMF(_TowerBase):
    """Neural Matrix Factorization: GMF and MLP with separate embeddings.

    `y(u, i) = sigmoid(h^T [phi_GMF, phi_MLP] + b)`. With pre-training
    (`load_pretrained`), the embeddings and tower come from trained GMF and
    MLP models and `h = [alpha h_GMF, (1 - alpha) h_MLP]`,
    `b = alpha b_GMF + (1 - alpha) b_MLP` (paper §3.4.1, alpha = 0.5), so the
    fresh NeuMF's logit is the alpha-combination of the two models' logits.

    Args:
        num_users: int. Size of the user vocabulary.
        num_items: int. Size of the item vocabulary.
        predictive_factors: int. GMF embedding size and last MLP width.
        num_layers: int. Number of MLP hidden layers.
        embedding_dim: int. Width of each MLP embedding (default: half the
            first hidden layer, as the paper).
        l2: float. L2 penalty on the embedding tables (0: none).
        seed: int or None. Seed of the initialisers.

    Example:
    >>> model = NeuMF(num_users=4, num_items=6, predictive_factors=8)
    >>> model({"user_id": np.array([0, 1]), "item_id": np.array([2, 3])}).shape
    TensorShape([2])

    References:
        He et al., WWW 2017. https://arxiv.org/abs/1708.05031
    """

    with_gmf = True

    def load_pretrained(self, gmf: GMF, mlp: MLP, alpha: float = 0.5) -> NeuMF:
        """Initialises from trained GMF and MLP models (paper §3.4.1)."""
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"`alpha` must be in [0, 1]. Received alpha={alpha}")
        if (
            gmf.predictive_factors,
            mlp.predictive_factors,
            mlp.num_layers,
            mlp.embedding_dim,
        ) != (
            self.predictive_factors,
            self.predictive_factors,
            self.num_layers,
            self.embedding_dim,
        ):
            raise ValueError(
                "GMF and MLP must have this NeuMF's predictive_factors "
                f"({self.predictive_factors}), num_layers ({self.num_layers}) and "
                f"embedding_dim ({self.embedding_dim})"
            )
        for name in ("gmf_user", "gmf_item"):
            self.get_layer(name).set_weights(gmf.get_layer(name).get_weights())
        for name in ["mlp_user", "mlp_item"] + [
            f"mlp_layer_{i}" for i in range(self.num_layers)
        ]:
            self.get_layer(name).set_weights(mlp.get_layer(name).get_weights())
        gmf_kernel, gmf_bias = gmf.prediction.get_weights()
        mlp_kernel, mlp_bias = mlp.prediction.get_weights()
        self.prediction.set_weights(
            [
                np.concatenate([alpha * gmf_kernel, (1.0 - alpha) * mlp_kernel]),
                alpha * gmf_bias + (1.0 - alpha) * mlp_bias,
            ]
        )
        return self
