"""What NGCF and LightGCN share: the encoder that propagates embeddings over
the normalised user-item graph (built in `keras_rec.models.graph_adjacency`),
and the id-model around it with its serving path.

Design:

* **The graph lives in the weights.** `normalized_adjacency` builds
  `L = D^-1/2 A D^-1/2` over the `num_users + num_items` nodes once, in
  SciPy (or NGCF code's `D~^-1 (A + I)`, see `GraphEncoder`'s
  `adjacency`). The encoder stores its nonzeros (`[2 * num_edges, 2]` int32
  indices, `[2 * num_edges]` values, plus one per node with self-loops) as
  non-trainable weights whose shapes come from the constructor argument
  `num_edges`; `set_graph(interactions)` fills them. So `.keras` files and checkpoints carry the graph while the
  config stays small JSON.
* **Serving reads cached final embeddings.** The encoder also keeps the
  final (propagated, inference-mode) user and item embeddings as
  non-trainable weights, with a fingerprint of the weights and the graph
  they were computed from. `score_all` and `score_items` refresh the cache
  when the fingerprint no longer matches, then only gather and multiply;
  inside a `tf.function` the check runs eagerly (`tf.init_scope`) when the
  function is traced, so an exported SavedModel or TFLite model holds no
  sparse op, just a gather, an inner product and top-k. Evaluation after
  `fit`, `load_weights` or `set_weights` is therefore always up to date
  without a manual step; `cache_embeddings()` forces a refresh (do it
  before reusing a function traced before further training).
* **Training propagates over the whole graph every step**, as the papers
  do: one sparse product per layer (see `keras_rec.layers.graph_propagation`).
  Only the last layer, which no later layer reads, is computed at the
  batch's distinct users and items alone, its sparse product with their
  rows of `L` (the same numbers and gradients).
"""

from __future__ import annotations

import inspect

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_rec.layers.graph_propagation import CSRAdjacency, NodeDropout
from keras_rec.layers.initializers import seeded_initializer, serialize_initializer
from keras_rec.models.base import USER_ID, ArgumentsConfig, Recommender, check_inputs
from keras_rec.models.bpr_mf import BPRMF
from keras_rec.models.graph_adjacency import (
    adjacency_nonzeros,
    check_adjacency_kind,
    interaction_matrix,
    normalized_adjacency,
)
from keras_rec.models.graph_adjacency import resolve_num_edges as resolve_num_edges


@tf.function(reduce_retracing=True, autograph=False)
def _checksum(values: list[tf.Tensor]) -> tf.Tensor:
    """Exact checksum of `values`: `[3 * len(values)]` int64.

    The 32 bits of every entry are split into 16-bit halves, whose sums
    cannot overflow int64, so any changed entry shows. For a matrix the
    third term pairs its first and last columns (an edge list's users and
    items), so degree-preserving edge swaps show too.
    """
    parts = []
    for value in values:
        if value.dtype.is_floating:
            value = tf.bitcast(tf.cast(value, tf.float32), tf.int32)
        value = tf.cast(value, tf.int32)
        low = tf.cast(tf.bitwise.bitwise_and(value, 0xFFFF), tf.int64)
        high = tf.cast(tf.bitwise.right_shift(value, 16), tf.int64)
        paired = tf.constant(0, tf.int64)
        if value.shape.rank == 2:
            paired = tf.reduce_sum(low[:, 0] * low[:, -1])
        parts += [tf.reduce_sum(low), tf.reduce_sum(high), paired]
    return tf.stack(parts)


def _fingerprint(variables) -> tf.Tensor:
    return _checksum([tf.convert_to_tensor(variable) for variable in variables])


def _takes_rows(layer) -> bool:
    """Whether a propagation layer's `call` can compute chosen rows only."""
    return "rows" in inspect.signature(layer.call).parameters


@keras.saving.register_keras_serializable(package="keras_rec")
class GraphEncoder(keras.layers.Layer):
    """Ego embeddings propagated over the normalised user-item graph.

    `E^(0) = [E_users; E_items]`, `E^(l+1) = propagation[l](E^(l), L)`; the
    final embeddings are `mean_l E^(l)` (LightGCN, weights `1/(L+1)`) or
    `E^(0) || norm(E^(1)) || ... || norm(E^(L))` (NGCF, `norm` the row-wise
    L2 normalisation when `normalize_layers`). Called on
    `(user_id [B], item_ids [B, C])`, it propagates over the whole graph and
    returns the batch's final user `[B, d']` and item `[B, C, d']` rows.
    The graph and the serving cache are non-trainable weights (see the
    module docstring).

    Args:
        num_users: int. Number of users.
        num_items: int. Number of items.
        num_edges: int. Number of distinct training (user, item) pairs.
        embedding_dim: int. Dimension of the ego embeddings.
        propagation: list of layers `(embeddings, adjacency) -> embeddings`.
        combination: str. `"mean"` or `"concat"` of the layers' embeddings.
        normalize_layers: bool. L2-normalise each propagated layer's rows
            before the combination.
        node_dropout: float. `NodeDropout` rate on the adjacency in training.
        seed: int or None. Seed of the ego embeddings and the node dropout.
        embeddings_initializer: str, config dict or initializer of the ego
            embeddings, reseeded with `seed` (user rows `seed`, item rows
            `seed + 1`). The default, Glorot uniform, is the papers' own
            TensorFlow code; the LightGCN authors' PyTorch code draws
            `{"class_name": "RandomNormal", "config": {"stddev": 0.1}}`.
        adjacency: str. The normalised adjacency the layers propagate over
            (`normalized_adjacency`'s `kind`): `"symmetric"`,
            `D^-1/2 A D^-1/2`, or `"mean_self_loops"`, `D~^-1 (A + I)`.

    Example:
    >>> from keras_rec.layers.graph_propagation import LightGCNPropagation
    >>> encoder = GraphEncoder(3, 4, 5, 8, [LightGCNPropagation()])

    References:
        Wang et al., NGCF, SIGIR 2019. https://arxiv.org/abs/1905.08108
        He et al., LightGCN, SIGIR 2020. https://arxiv.org/abs/2002.02126
    """

    def __init__(
        self,
        num_users: int,
        num_items: int,
        num_edges: int,
        embedding_dim: int,
        propagation: list,
        combination: str = "mean",
        normalize_layers: bool = False,
        node_dropout: float = 0.0,
        seed: int | None = None,
        embeddings_initializer="glorot_uniform",
        adjacency: str = "symmetric",
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_adjacency_kind(adjacency)
        self.adjacency_kind = adjacency
        self.embeddings_initializer = serialize_initializer(embeddings_initializer)
        self.num_users = num_users
        self.num_items = num_items
        self.num_edges = num_edges
        self.embedding_dim = embedding_dim
        self.propagation = list(propagation)
        self.combination = combination
        self.normalize_layers = normalize_layers
        self.node_dropout = node_dropout
        self.seed = seed
        for name in ("num_users", "num_items", "num_edges", "embedding_dim"):
            if (value := getattr(self, name)) <= 0:
                raise ValueError(f"`{name}` must be positive. Received {name}={value}")
        if combination not in ("mean", "concat"):
            raise ValueError(
                "`combination` must be 'mean' or 'concat'. "
                f"Received combination={combination!r}"
            )
        self.dropout = NodeDropout(node_dropout, seed=seed)
        self.num_nodes = num_users + num_items

    @property
    def output_dim(self) -> int:
        dims = [self.embedding_dim]
        for layer in self.propagation:
            dims.append(getattr(layer, "units", dims[-1]))
        return sum(dims) if self.combination == "concat" else dims[-1]

    def build(self, input_shape=None):
        def ego(name, offset):
            seed = None if self.seed is None else self.seed + offset
            size = self.num_users if offset == 0 else self.num_items
            initializer = seeded_initializer(self.embeddings_initializer, seed)
            return self.add_weight(
                shape=(size, dim), initializer=initializer, name=name
            )

        def state(name, shape, dtype="float32", initializer="zeros"):
            return self.add_weight(
                shape=shape,
                initializer=initializer,
                dtype=dtype,
                trainable=False,
                name=name,
            )

        dim = self.embedding_dim
        nonzeros = adjacency_nonzeros(
            self.num_edges, self.num_nodes, self.adjacency_kind
        )
        self.user_embeddings = ego("user_embeddings", 0)
        self.item_embeddings = ego("item_embeddings", 1)
        self.adjacency_indices = state("adjacency_indices", (nonzeros, 2), "int32")
        self.adjacency_values = state("adjacency_values", (nonzeros,))
        for layer in self.propagation:
            layer.build((self.num_nodes, dim))
            dim = getattr(layer, "units", dim)
        self.user_cache = state("user_cache", (self.num_users, self.output_dim))
        self.item_cache = state("item_cache", (self.num_items, self.output_dim))
        size = 3 * len(self._fingerprinted())
        self.cache_fingerprint = state("cache_fingerprint", (size,), "int64", "ones")

    def _fingerprinted(self) -> list:
        """The variables the cached embeddings are computed from."""
        learned = [
            w for layer in self.propagation for w in layer.weights if w.trainable
        ]
        ego = [self.user_embeddings, self.item_embeddings]
        return [*ego, *learned, self.adjacency_indices, self.adjacency_values]

    def set_graph(self, interactions) -> None:
        """Stores the normalised adjacency of `interactions` (`[U, I]`)."""
        matrix = interaction_matrix(interactions, self.num_users, self.num_items)
        if matrix.nnz != self.num_edges:
            raise ValueError(
                f"`interactions` has {matrix.nnz} distinct (user, item) pairs but "
                f"the model was built for num_edges={self.num_edges}"
            )
        adjacency = normalized_adjacency(matrix, self.adjacency_kind).tocoo()
        self.adjacency_indices.assign(np.stack([adjacency.row, adjacency.col], 1))
        self.adjacency_values.assign(adjacency.data)
        self.cache_fingerprint.assign(tf.ones_like(self.cache_fingerprint))

    def adjacency(self) -> tf.SparseTensor:
        """The normalised adjacency `[num_nodes, num_nodes]`, row-major."""
        return tf.SparseTensor(
            tf.cast(self.adjacency_indices, tf.int64),
            tf.convert_to_tensor(self.adjacency_values),
            [self.num_nodes, self.num_nodes],
        )

    def layer_embeddings(self, training=False, rows=None) -> list[tf.Tensor]:
        """`[E^(0), ..., E^(L)]`, each `[num_nodes, d_l]`, before combination.

        With `rows` (`[R]` node indices), each layer's rows `E^(l)[rows]`,
        `[R, d_l]`: the last layer then computes only those rows (when its
        `call` takes `rows`, as `NGCFPropagation` and `LightGCNPropagation`
        do), the others are needed whole by the next layer's product.
        """
        dropped = bool(training) and self.node_dropout > 0
        symmetric = self.adjacency_kind == "symmetric" and not dropped
        adjacency = CSRAdjacency(
            self.dropout(self.adjacency(), training=training), symmetric=symmetric
        )
        embeddings = tf.concat([self.user_embeddings, self.item_embeddings], axis=0)
        layers, last, at_rows = [embeddings], len(self.propagation) - 1, False
        for k, layer in enumerate(self.propagation):
            options = {"training": training}
            at_rows = rows is not None and k == last and _takes_rows(layer)
            if at_rows:  # no later layer reads the other rows
                options["rows"] = rows
            embeddings = layer(embeddings, adjacency=adjacency, **options)
            layers.append(embeddings)
        if rows is None:
            return layers
        *whole, output = layers  # E^(0) is `output` when there is no layer
        return [tf.gather(x, rows) for x in whole] + [
            output if at_rows else tf.gather(output, rows)
        ]

    def combine(self, layers: list[tf.Tensor]) -> tf.Tensor:
        """Final embeddings from rows of each layer's: mean or concatenation,
        the propagated layers L2-normalised row by row first if asked."""
        if self.normalize_layers:
            layers = [layers[0]] + [tf.math.l2_normalize(x, -1) for x in layers[1:]]
        if self.combination == "mean":
            return tf.add_n(layers) / float(len(layers))
        return tf.concat(layers, axis=-1)

    def propagate(self, training=False) -> tuple[tf.Tensor, tf.Tensor]:
        """Final user `[U, d']` and item `[I, d']` embeddings of the whole graph."""
        final = self.combine(self.layer_embeddings(training=training))
        return final[: self.num_users], final[self.num_users :]

    def call(self, inputs, training=None):
        # The combination is row-wise, so it runs on the batch's rows only:
        # the same numbers as gathering from `propagate()`'s output, without
        # normalising, combining and splitting all `num_nodes` rows (and
        # their gradients) each training step. The last layer, which no
        # later layer reads, is computed at the batch's distinct nodes only
        # (each node once, so a repeated node keeps one dropout mask, as in
        # the whole graph). Users and items are gathered together, so each
        # layer's gradient arrives as one set of rows.
        user_id, item_ids = inputs
        item_nodes = tf.cast(item_ids, tf.int64) + self.num_users
        nodes = tf.concat([tf.cast(user_id, tf.int64), tf.reshape(item_nodes, [-1])], 0)
        distinct, position = tf.unique(nodes)
        layers = self.layer_embeddings(training=training, rows=distinct)
        rows = self.combine([tf.gather(x, position) for x in layers])
        batch = tf.shape(user_id)[0]
        items_shape = tf.concat([tf.shape(item_ids), [rows.shape[-1]]], 0)
        return rows[:batch], tf.reshape(rows[batch:], items_shape)

    def compute_output_shape(self, input_shape):
        user_shape, item_shape = input_shape
        return (*user_shape, self.output_dim), (*item_shape, self.output_dim)

    def cache_is_fresh(self) -> bool:
        """Whether the cached final embeddings match the current weights."""
        current = _fingerprint(self._fingerprinted())
        return bool(tf.reduce_all(current == self.cache_fingerprint))

    def cache_embeddings(self) -> None:
        """Recomputes the cached final embeddings (inference mode)."""
        users, items = self.propagate(training=False)
        self.user_cache.assign(users)
        self.item_cache.assign(items)
        self.cache_fingerprint.assign(_fingerprint(self._fingerprinted()))

    def final_embeddings(self) -> tuple[tf.Variable, tf.Variable]:
        """The cached final user and item embeddings, refreshed if stale."""
        with tf.init_scope():  # eager even while a tf.function is traced
            if not self.cache_is_fresh():
                self.cache_embeddings()
        return self.user_cache, self.item_cache

    def get_config(self):
        return {
            **super().get_config(),
            "num_users": self.num_users,
            "num_items": self.num_items,
            "num_edges": self.num_edges,
            "embedding_dim": self.embedding_dim,
            "propagation": [
                keras.saving.serialize_keras_object(layer) for layer in self.propagation
            ],
            "combination": self.combination,
            "normalize_layers": self.normalize_layers,
            "node_dropout": self.node_dropout,
            "seed": self.seed,
            "embeddings_initializer": self.embeddings_initializer,
            "adjacency": self.adjacency_kind,
        }

    @classmethod
    def from_config(cls, config):
        layers = [
            keras.saving.deserialize_keras_object(c) for c in config["propagation"]
        ]
        return cls(**{**config, "propagation": layers})


class GraphRecommender(ArgumentsConfig, Recommender):
    """Mixin of the graph models: the functional model around the encoder,
    scoring from the cached final embeddings, the graph setter, the BPR loss
    with L2 on the batch's ego embeddings, and the config.

    A subclass is also a `keras.Model`; its constructor checks its
    arguments, builds its `GraphEncoder` and passes it on to `__init__`,
    then stores the rest of its `config_keys`.
    """

    input_kind = USER_ID
    encoder: GraphEncoder

    config_keys = (
        "num_users",
        "num_items",
        "num_edges",
        "embedding_dim",
        "embeddings_initializer",
    )

    def __init__(self, encoder: GraphEncoder, matrix, l2: float, **kwargs):
        """Scores `{"user_id": [B], "item_ids": [B, C]}` -> `[B, C]`: the
        inner products of the encoder's user and item rows. Stores the
        encoder, `l2`, the arguments the encoder holds and, unless `matrix`
        is None (then `set_graph` later), the graph."""
        # === Functional model ===
        user_id = keras.Input(shape=(), dtype="int64", name="user_id")
        item_ids = keras.Input(shape=(None,), dtype="int64", name="item_ids")
        users, items = encoder((user_id, item_ids))
        scores = ops.einsum("bd,bcd->bc", users, items)
        super().__init__(
            inputs={"user_id": user_id, "item_ids": item_ids}, outputs=scores, **kwargs
        )
        # === Config ===
        self.encoder = encoder
        self.num_users = encoder.num_users
        self.num_items = encoder.num_items
        self.num_edges = encoder.num_edges
        self.embedding_dim = encoder.embedding_dim
        self.l2 = l2
        self.seed = encoder.seed
        self.embeddings_initializer = encoder.embeddings_initializer
        if matrix is not None:
            self.set_graph(matrix)

    def set_graph(self, interactions) -> None:
        """Stores the training graph (`Interactions` or a `[U, I]` matrix)."""
        self.encoder.set_graph(interactions)

    def cache_embeddings(self) -> None:
        """Recomputes the final embeddings that scoring and export read."""
        self.encoder.cache_embeddings()

    def load_pretrained(self, mf: BPRMF) -> GraphRecommender:
        """Starts the ego embeddings e^(0) from a trained BPR-MF.

        The NGCF reference code's `--pretrain -1`: the users' and items'
        MF embeddings become the ego embeddings, and the propagation
        weights keep their initialisation. The cached final embeddings
        are recomputed at their next read.

        Args:
            mf: a trained `BPRMF` over the same users and items, with this
                model's `embedding_dim`.

        Returns:
            This model.

        Raises:
            ValueError: `mf`'s users, items or dimension differ from this
                model's, or its embeddings hold a NaN or an infinity.
        """
        pairs = (
            ("user", mf.user_embedding.embeddings, self.encoder.user_embeddings),
            ("item", mf.item_embedding.embeddings, self.encoder.item_embeddings),
        )
        for name, source, target in pairs:
            if tuple(source.shape) != tuple(target.shape):
                raise ValueError(
                    f"The MF model's {name} embeddings have shape "
                    f"{tuple(source.shape)}; this model's ego {name} embeddings "
                    f"have shape {tuple(target.shape)} ({name}s, embedding_dim)"
                )
            if not np.isfinite(ops.convert_to_numpy(source)).all():
                raise ValueError(
                    f"The MF model's {name} embeddings hold a NaN or an infinity"
                )
        for _, source, target in pairs:
            target.assign(source)
        return self

    def score_all(self, inputs: dict) -> tf.Tensor:
        check_inputs(self, inputs)
        users, items = self.encoder.final_embeddings()
        user_rows = tf.gather(users, inputs[USER_ID])
        return tf.matmul(user_rows, items, transpose_b=True)

    def score_items(self, inputs: dict, item_ids: tf.Tensor) -> tf.Tensor:
        check_inputs(self, inputs, item_ids)
        users, items = self.encoder.final_embeddings()
        user_rows = tf.gather(users, inputs[USER_ID])
        item_rows = tf.gather(items, item_ids)
        return tf.einsum("bd,bcd->bc", user_rows, item_rows)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, **kwargs):
        loss = super().compute_loss(x, y, y_pred, sample_weight, **kwargs)
        if self.l2:
            users = tf.gather(self.encoder.user_embeddings, x["user_id"])
            items = tf.gather(self.encoder.item_embeddings, x["item_ids"])
            norm = tf.reduce_sum(tf.square(users)) + tf.reduce_sum(tf.square(items))
            batch = tf.cast(tf.shape(users)[0], tf.float32)
            # As BPRMF: Keras scales the loss by 1/replicas and sums the
            # replicas' gradients, so the penalty is scaled the same way.
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            loss = loss + self.l2 * norm / (2.0 * batch * replicas)
        return loss
