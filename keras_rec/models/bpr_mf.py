"""BPR-MF: matrix factorisation trained with the BPR loss."""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from keras_rec.models.base import USER_ID, Recommender, check_inputs, serialize_config


@keras.saving.register_keras_serializable(package="keras_rec")
class BPRMF(Recommender, keras.Model):
    """Matrix factorisation scored by an inner product, trained with BPR.

    `s(u, i) = <p_u, q_i>`; the loss is BPR on (user, positive, negative)
    triples plus `l2 * (|p_u|^2 + |q_i|^2 + |q_j|^2) / (2 B)` on the batch's
    embeddings (as LightGCN's MF baseline regularises).

    Args:
        num_users: int. Size of the user vocabulary.
        num_items: int. Size of the item vocabulary.
        embedding_dim: int. Latent dimension.
        l2: float. Weight of the L2 penalty on the batch's embeddings.
        seed: int or None. Seed of the initialiser.

    Example:
    >>> import numpy as np
    >>> model = BPRMF(num_users=10, num_items=20, embedding_dim=4)
    >>> inputs = {"user_id": np.array([0, 1]), "item_ids": np.array([[1, 2], [3, 4]])}
    >>> model(inputs).shape
    TensorShape([2, 2])

    References:
        Rendle et al., UAI 2009. https://arxiv.org/abs/1205.2618
    """

    input_kind = USER_ID

    def __init__(
        self,
        num_users: int,
        num_items: int,
        embedding_dim: int = 64,
        l2: float = 1e-4,
        seed: int | None = None,
        **kwargs,
    ):
        for label, value in (
            ("num_users", num_users),
            ("num_items", num_items),
            ("embedding_dim", embedding_dim),
        ):
            if value <= 0:
                raise ValueError(
                    f"`{label}` must be positive. Received {label}={value}"
                )
        # === Layers ===
        user_embedding = keras.layers.Embedding(
            num_users,
            embedding_dim,
            embeddings_initializer=keras.initializers.RandomNormal(0.0, 0.1, seed),
            name="user_embedding",
        )
        item_embedding = keras.layers.Embedding(
            num_items,
            embedding_dim,
            embeddings_initializer=keras.initializers.RandomNormal(
                0.0, 0.1, None if seed is None else seed + 1
            ),
            name="item_embedding",
        )
        # === Functional model ===
        user_id = keras.Input(shape=(), dtype="int64", name="user_id")
        item_ids = keras.Input(shape=(None,), dtype="int64", name="item_ids")
        scores = ops.einsum(
            "bd,bcd->bc", user_embedding(user_id), item_embedding(item_ids)
        )
        super().__init__(
            inputs={"user_id": user_id, "item_ids": item_ids}, outputs=scores, **kwargs
        )
        # === Config ===
        self.user_embedding = user_embedding
        self.item_embedding = item_embedding
        self.num_users = num_users
        self.num_items = num_items
        self.embedding_dim = embedding_dim
        self.l2 = l2
        self.seed = seed

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, **kwargs):
        loss = super().compute_loss(x, y, y_pred, sample_weight, **kwargs)
        if self.l2:
            users = self.user_embedding(x["user_id"])
            items = self.item_embedding(x["item_ids"])
            norm = ops.sum(ops.square(users)) + ops.sum(ops.square(items))
            batch = ops.cast(ops.shape(users)[0], "float32")
            # Keras scales the loss by 1/replicas inside each replica and sums
            # the gradients over replicas: scale the penalty the same way.
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            loss = loss + self.l2 * norm / (2.0 * batch * replicas)
        return loss

    def score_all(self, inputs: dict) -> tf.Tensor:
        check_inputs(self, inputs)
        users = self.user_embedding(inputs[USER_ID])
        return ops.matmul(users, ops.transpose(self.item_embedding.embeddings))

    def get_config(self):
        return serialize_config(
            self,
            num_users=self.num_users,
            num_items=self.num_items,
            embedding_dim=self.embedding_dim,
            l2=self.l2,
            seed=self.seed,
        )

    @classmethod
    def from_config(cls, config):
        return cls(**config)
