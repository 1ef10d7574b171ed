"""LightGCN: linear propagation over the user-item graph, trained with BPR."""

from __future__ import annotations

import keras

from keras_rec.layers.graph_propagation import LightGCNPropagation
from keras_rec.models.graph_adjacency import resolve_num_edges
from keras_rec.models.graph_base import GraphEncoder, GraphRecommender


@keras.saving.register_keras_serializable(package="keras_rec")
class LightGCN(GraphRecommender, keras.Model):
    """LightGCN: embeddings smoothed over the user-item graph, averaged.

    `E^(k+1) = L E^(k)` with `L = D^-1/2 A D^-1/2` (no self-loops, no
    weights, no nonlinearity), `e = sum_k e^(k) / (K + 1)`, and
    `s(u, i) = <e_u, e_i>`. Trained on BPR triples `{"user_id": [B],
    "item_ids": [B, 2]}` -> scores `[B, 2]` with `BPRLoss`, plus
    `l2 * (|e_u^(0)|^2 + |e_i^(0)|^2 + |e_j^(0)|^2) / (2 B)` on the batch's
    ego (layer-0) embeddings, as the paper. Each training step propagates
    over the whole graph (one sparse product per layer); `score_all` reads
    final embeddings cached in the weights (see `keras_rec.models.graph_base`).

    Args:
        num_users: int. Number of users.
        num_items: int. Number of items.
        embedding_dim: int. Dimension of the embeddings.
        num_layers: int. Number of propagation layers `K` (0 gives MF).
        l2: float. Weight of the L2 penalty on the batch's ego embeddings.
        seed: int or None. Seed of the initialiser.
        interactions: `Interactions` or a `[num_users, num_items]` SciPy
            matrix: the training graph. Stored in the weights, not in the
            config; without it pass `num_edges` and call `set_graph`.
        num_edges: int or None. Distinct training (user, item) pairs (what
            `from_config` passes); derived from `interactions` when given.
        embeddings_initializer: str, config dict or initializer of the ego
            embeddings (see `GraphEncoder`). Default Glorot uniform, as the
            paper's code.

    Example:
    >>> import numpy as np
    >>> import scipy.sparse as sp
    >>> graph = sp.random(4, 5, density=0.5, format="csr", random_state=0)
    >>> model = LightGCN(4, 5, embedding_dim=8, interactions=graph)
    >>> batch = {"user_id": np.array([0, 1]), "item_ids": np.array([[1, 2], [3, 4]])}
    >>> model(batch).shape
    TensorShape([2, 2])

    References:
        He et al., LightGCN: Simplifying and Powering Graph Convolution
        Network for Recommendation, SIGIR 2020.
        https://arxiv.org/abs/2002.02126
    """

    config_keys = (*GraphRecommender.config_keys, "num_layers", "l2", "seed")

    def __init__(
        self,
        num_users: int,
        num_items: int,
        embedding_dim: int = 64,
        num_layers: int = 3,
        l2: float = 1e-4,
        seed: int | None = None,
        interactions=None,
        num_edges: int | None = None,
        embeddings_initializer="glorot_uniform",
        **kwargs,
    ):
        if num_layers < 0:
            raise ValueError(
                f"`num_layers` must be non-negative. Received num_layers={num_layers}"
            )
        if l2 < 0:
            raise ValueError(f"`l2` must be non-negative. Received l2={l2}")
        num_edges, matrix = resolve_num_edges(
            num_edges, interactions, num_users, num_items
        )
        # === Layers ===
        encoder = GraphEncoder(
            num_users,
            num_items,
            num_edges,
            embedding_dim,
            [LightGCNPropagation(name=f"propagation_{k}") for k in range(num_layers)],
            combination="mean",
            seed=seed,
            embeddings_initializer=embeddings_initializer,
            name="encoder",
        )
        super().__init__(encoder, matrix, l2, **kwargs)
        # === Config ===
        self.num_layers = num_layers
