"""NGCF: neural graph collaborative filtering, trained with BPR."""

from __future__ import annotations

import keras

from keras_rec.layers.graph_propagation import NGCFPropagation
from keras_rec.models.graph_adjacency import check_adjacency_kind, resolve_num_edges
from keras_rec.models.graph_base import GraphEncoder, GraphRecommender


@keras.saving.register_keras_serializable(package="keras_rec")
class NGCF(GraphRecommender, keras.Model):
    """NGCF: embeddings propagated by learned messages, concatenated.

    `E^(l+1) = LeakyReLU((L + I) E^(l) W1 + (L E^(l)) * E^(l) W2)` (plus the
    reference code's biases) with `L = D^-1/2 A D^-1/2` (`NGCFPropagation`),
    node dropout on `L` and message dropout on each layer in training;
    `e = e^(0) || norm(e^(1)) || ... || norm(e^(L))` with the row-wise L2
    normalisation of the reference code, and `s(u, i) = <e_u, e_i>`.
    Trained on BPR triples `{"user_id": [B], "item_ids": [B, 2]}` -> scores
    `[B, 2]` with `BPRLoss`, plus `l2 * (|e_u^(0)|^2 + |e_i^(0)|^2 +
    |e_j^(0)|^2) / (2 B)` on the batch's ego embeddings (the reference code
    penalises the final representations instead; at `l2=1e-5` either term
    is negligible). `score_all` reads final embeddings cached in the
    weights (see `keras_rec.models.graph_base`).

    Args:
        num_users: int. Number of users.
        num_items: int. Number of items.
        embedding_dim: int. Dimension of the ego embeddings.
        layer_sizes: list of int. Output size of each propagation layer.
        node_dropout: float. Fraction of the Laplacian's nonzeros dropped in
            each training step (rescaled, as the reference code).
        message_dropout: float. Dropout on each layer's output in training.
        l2: float. Weight of the L2 penalty on the batch's ego embeddings.
        seed: int or None. Seed of the initialisers and the dropouts.
        interactions: `Interactions` or a `[num_users, num_items]` SciPy
            matrix: the training graph. Stored in the weights, not in the
            config; without it pass `num_edges` and call `set_graph`.
        num_edges: int or None. Distinct training (user, item) pairs (what
            `from_config` passes); derived from `interactions` when given.
        embeddings_initializer: str, config dict or initializer of the ego
            embeddings (see `GraphEncoder`). Default Glorot uniform, as the
            paper's code.
        adjacency: str. `"symmetric"` (default): the paper's formula above,
            `L = D^-1/2 A D^-1/2` with the self-connection added in the
            first term. `"mean_self_loops"`: what the paper's code and its
            PyTorch port run by default, `P = D~^-1 (A + I)` (each row the
            mean over the node and its neighbours, `D~ = D + I`) in place
            of both `L + I` and `L`:
            `LeakyReLU(P E W1 + b1 + ((P E) * E) W2 + b2)`. There a node's
            own embedding weighs `1 / (|N| + 1)` of the first term; in the
            paper's form, 1 against its neighbours' `sum 1/sqrt(|N_u||N_i|)`.

    Example:
    >>> import numpy as np
    >>> import scipy.sparse as sp
    >>> graph = sp.random(4, 5, density=0.5, format="csr", random_state=0)
    >>> model = NGCF(4, 5, embedding_dim=8, layer_sizes=[8, 8], interactions=graph)
    >>> batch = {"user_id": np.array([0, 1]), "item_ids": np.array([[1, 2], [3, 4]])}
    >>> model(batch).shape
    TensorShape([2, 2])

    References:
        Wang et al., Neural Graph Collaborative Filtering, SIGIR 2019.
        https://arxiv.org/abs/1905.08108
    """

    config_keys = (
        *GraphRecommender.config_keys,
        "layer_sizes",
        "node_dropout",
        "message_dropout",
        "l2",
        "seed",
        "adjacency",
    )

    def __init__(
        self,
        num_users: int,
        num_items: int,
        embedding_dim: int = 64,
        layer_sizes: list[int] | tuple[int, ...] = (64, 64, 64),
        node_dropout: float = 0.1,
        message_dropout: float = 0.1,
        l2: float = 1e-5,
        seed: int | None = None,
        interactions=None,
        num_edges: int | None = None,
        embeddings_initializer="glorot_uniform",
        adjacency: str = "symmetric",
        **kwargs,
    ):
        layer_sizes = [int(size) for size in layer_sizes]
        if not layer_sizes:
            raise ValueError(
                f"`layer_sizes` must name at least one layer. Received {layer_sizes}"
            )
        for name, rate in (
            ("node_dropout", node_dropout),
            ("message_dropout", message_dropout),
        ):
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"`{name}` must be in [0, 1). Received {name}={rate}")
        if l2 < 0:
            raise ValueError(f"`l2` must be non-negative. Received l2={l2}")
        check_adjacency_kind(adjacency)
        num_edges, matrix = resolve_num_edges(
            num_edges, interactions, num_users, num_items
        )
        # === Layers ===
        propagation = [
            NGCFPropagation(
                size,
                dropout_rate=message_dropout,
                seed=None if seed is None else seed + 10 * (k + 1),
                self_connection=adjacency == "symmetric",
                name=f"propagation_{k}",
            )
            for k, size in enumerate(layer_sizes)
        ]
        encoder = GraphEncoder(
            num_users,
            num_items,
            num_edges,
            embedding_dim,
            propagation,
            combination="concat",
            normalize_layers=True,
            node_dropout=node_dropout,
            seed=seed,
            embeddings_initializer=embeddings_initializer,
            adjacency=adjacency,
            name="encoder",
        )
        super().__init__(encoder, matrix, l2, **kwargs)
        # === Config ===
        self.layer_sizes = layer_sizes
        self.node_dropout = node_dropout
        self.message_dropout = message_dropout
        self.adjacency = adjacency
