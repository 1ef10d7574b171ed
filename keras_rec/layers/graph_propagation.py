"""Graph propagation over the sparse user-item graph: NGCF and LightGCN layers.

Each layer maps the `[num_nodes, d]` node embeddings `E` (users first, then
items) and the normalised adjacency `L` to the next layer's embeddings with
one sparse-dense product `L E`; `L` is never densified. The adjacency is a
`tf.SparseTensor` in row-major order, or a `CSRAdjacency` made of it once
per step and shared by the layers. Called with `rows` (`[R]` node
indices), a layer returns only those rows of its output, `[R, d']`, and
computes only them: the sparse product multiplies by the `R` rows of `L`
(`CSRAdjacency.rows`), which still read every neighbour, and the rest of
the layer (NGCF's dense transforms, activation and dropout) runs on the
`R` rows alone. The encoder asks this of the last layer in training, where
only the batch's rows are used (on Gowalla, a batch's 2,951 distinct nodes
hold 9% of the nonzeros).

The product runs on TensorFlow's CSR kernel (`SparseMatrixMatMul`) rather
than `tf.sparse.sparse_dense_matmul`: on the Gowalla graph (1.6M nonzeros,
d=64) it costs 47 ms of CPU time against 288 ms (`benchmarks/graph.py`).
On a CPU the CSR kernel already spreads its rows over TensorFlow's intra-op
threads (`CSRMatMulCPUOp`; in `benchmarks/graph.py` its CPU time exceeds
its wall time), while `sparse_dense_matmul` runs on one thread.
"""

from __future__ import annotations

import functools

import keras
import tensorflow as tf


class CSRAdjacency:
    """A sparse adjacency converted once to TensorFlow's CSR format.

    Layers share it within a step instead of converting it each; it is a
    plain Python wrapper so that Keras passes the variant tensor through
    `Layer.__call__` untouched.

    Args:
        adjacency: `tf.SparseTensor`, `[n, n]`, indices in row-major order.
        symmetric: bool. Whether `adjacency` equals its transpose (the
            normalised adjacency without node dropout). The backward pass
            then multiplies by `adjacency` itself.

    Otherwise the backward pass multiplies by the transpose, converted once
    when a backward pass first asks for it (`transposed`) and shared by the
    layers: a plain CSR product, where TensorFlow's own gradient would run
    the kernel's transposed (`adjoint_a`) mode, which costs about twice as
    much per product. A forward-only use never converts it.
    """

    def __init__(self, adjacency: tf.SparseTensor, symmetric: bool = False):
        self.dense_shape = adjacency.dense_shape
        self.dtype = adjacency.values.dtype
        self.symmetric = symmetric
        self.matrix = tf.raw_ops.SparseTensorToCSRSparseMatrix(
            indices=adjacency.indices,
            values=adjacency.values,
            dense_shape=adjacency.dense_shape,
        )

    @functools.cached_property
    def transposed(self):
        """The CSR matrix of the adjacency's transpose."""
        if self.symmetric:
            return self.matrix
        return tf.raw_ops.SparseMatrixTranspose(input=self.matrix, type=self.dtype)

    def rows(self, rows) -> CSRAdjacency:
        """The `[R, n]` rows `rows` (`[R]` indices, any order) of the adjacency.

        Read from the CSR matrix's row pointers, so the cost is that of the
        rows' own nonzeros.
        """
        row_pointers, columns, values = tf.raw_ops.CSRSparseMatrixComponents(
            csr_sparse_matrix=self.matrix, index=0, type=self.dtype
        )
        rows = tf.cast(rows, row_pointers.dtype)
        starts = tf.gather(row_pointers, rows)
        lengths = tf.gather(row_pointers, rows + 1) - starts
        # The k-th chosen nonzero's new row is the number of rows that end
        # at or before k. (`tf.repeat`, which builds a rows x largest-degree
        # mask, and `RaggedTensor.value_rowids` each took about 0.075 s of
        # CPU on a Gowalla batch of 2,048; this whole method 0.02-0.03 s.)
        ends = tf.cumsum(lengths)
        chosen = tf.range(tf.reduce_sum(lengths))
        new_rows = tf.searchsorted(ends, chosen, "right", out_type=rows.dtype)
        positions = chosen + tf.gather(starts - (ends - lengths), new_rows)
        indices = tf.stack([new_rows, tf.gather(columns, positions)], axis=1)
        sliced = tf.SparseTensor(
            tf.cast(indices, tf.int64),
            tf.gather(values, positions),
            tf.stack([tf.size(rows, tf.int64), self.dense_shape[1]]),
        )
        return CSRAdjacency(sliced)


def sparse_matmul(adjacency, embeddings: tf.Tensor, rows=None) -> tf.Tensor:
    """`adjacency @ embeddings` for a `tf.SparseTensor` or a `CSRAdjacency`.

    With `rows` (`[R]` node indices), only those rows of the product,
    `[R, d]`, computed from those rows of the adjacency alone.
    Computed in the adjacency's dtype (float32) and returned in the
    embeddings' own (float16 under a mixed-precision policy).
    """
    if isinstance(adjacency, tf.SparseTensor):
        adjacency = CSRAdjacency(adjacency)
    if rows is not None:
        # TensorFlow's CSR kernel fails (SIGFPE) on a matrix of no rows, so
        # one more row (node 0's) is multiplied and dropped: empty `rows`
        # give an empty product.
        rows = tf.concat([tf.cast(rows, tf.int64), tf.zeros([1], tf.int64)], 0)
        return sparse_matmul(adjacency.rows(rows), embeddings)[:-1]
    if embeddings.dtype != adjacency.dtype:
        product = sparse_matmul(adjacency, tf.cast(embeddings, adjacency.dtype))
        return tf.cast(product, embeddings.dtype)
    matrix = adjacency.matrix

    @tf.custom_gradient
    def product(values):
        def gradient(upstream):
            return tf.raw_ops.SparseMatrixMatMul(a=adjacency.transposed, b=upstream)

        return tf.raw_ops.SparseMatrixMatMul(a=matrix, b=values), gradient

    return product(embeddings)


def _check_rate(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"`{name}` must be in [0, 1). Received {name}={value}")


@keras.saving.register_keras_serializable(package="keras_rec")
class LightGCNPropagation(keras.layers.Layer):
    """LightGCN's light graph convolution: `E^(l+1) = L E^(l)`.

    No feature transformation, no nonlinearity and no self-connection: each
    node's next embedding is the normalised sum of its neighbours'
    embeddings, `e_u = sum_i e_i / sqrt(|N_u| |N_i|)`.

    Example:
    >>> adjacency = tf.sparse.from_dense([[0.0, 0.5], [0.5, 0.0]])
    >>> LightGCNPropagation()(tf.ones([2, 3]), adjacency).shape
    TensorShape([2, 3])

    References:
        He et al., LightGCN: Simplifying and Powering Graph Convolution
        Network for Recommendation, SIGIR 2020.
        https://arxiv.org/abs/2002.02126
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_jit = False  # XLA has no CSR sparse-matrix kernels

    def call(self, embeddings, adjacency, rows=None):
        return sparse_matmul(adjacency, embeddings, rows)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="keras_rec")
class NGCFPropagation(keras.layers.Layer):
    """NGCF's embedding propagation layer (the paper's matrix form, eq. 7).

    `E^(l+1) = LeakyReLU((L + I) E W1 + b1 + ((L E) * E) W2 + b2)`, then
    message dropout. `(L + I) E` is computed as `L E + E` from the same
    single sparse product; `(L E) * E` (element-wise) carries the
    collaborative signal between a node and its neighbours. The biases are
    those of the reference code (initialised like its Xavier `[1, units]`
    biases). The output is not normalised: NGCF normalises each layer's
    embeddings with L2 only for the final concatenation.

    The reference code (`NGCF.py`) differs from the paper's formula: it
    builds the adjacency as `P = D~^-1 (A + I)` (each row the mean over the
    node and its neighbours) and propagates `LeakyReLU(P E W1 + b1) +
    LeakyReLU((P E * E) W2 + b2)`, the self-connection inside `P`. With
    `self_connection=False` and that adjacency this layer computes
    `LeakyReLU(P E W1 + b1 + (P E * E) W2 + b2)`, the propagation of the
    PyTorch port (`huangtinglin/NGCF-PyTorch`), which applies the LeakyReLU
    once to the sum as the paper does.

    Args:
        units: int. Output dimension (the paper's layer size).
        dropout_rate: float. Message dropout on the output, in training.
        negative_slope: float. Slope of the LeakyReLU (`tf.nn.leaky_relu`'s,
            as the reference code).
        seed: int or None. Seed of the initialisers and the dropout.
        self_connection: bool. Add the node's own embedding to the
            neighbours' in the first term, `(L + I) E W1` (the paper's
            formula over an adjacency without self-loops); `False` for an
            adjacency that holds them already, `P E W1`.

    Example:
    >>> adjacency = tf.sparse.from_dense([[0.0, 0.5], [0.5, 0.0]])
    >>> NGCFPropagation(4)(tf.ones([2, 3]), adjacency).shape
    TensorShape([2, 4])

    References:
        Wang et al., Neural Graph Collaborative Filtering, SIGIR 2019.
        https://arxiv.org/abs/1905.08108
    """

    def __init__(
        self,
        units: int,
        dropout_rate: float = 0.1,
        negative_slope: float = 0.2,
        seed: int | None = None,
        self_connection: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.supports_jit = False  # XLA has no CSR sparse-matrix kernels
        self.self_connection = bool(self_connection)
        self.units = units
        self.dropout_rate = dropout_rate
        self.negative_slope = negative_slope
        self.seed = seed
        if units <= 0:
            raise ValueError(f"`units` must be positive. Received units={units}")
        _check_rate("dropout_rate", dropout_rate)
        if negative_slope < 0:
            raise ValueError(
                "`negative_slope` must be non-negative. "
                f"Received negative_slope={negative_slope}"
            )
        self.dropout = keras.layers.Dropout(dropout_rate, seed=seed)

    def build(self, input_shape):
        dim = int(input_shape[-1])
        limit = (6.0 / (1.0 + self.units)) ** 0.5

        def seeded(offset):
            return None if self.seed is None else self.seed + offset

        self.sum_kernel = self.add_weight(
            shape=(dim, self.units),
            initializer=keras.initializers.GlorotUniform(seeded(0)),
            name="sum_kernel",
        )
        self.sum_bias = self.add_weight(
            shape=(self.units,),
            initializer=keras.initializers.RandomUniform(-limit, limit, seeded(1)),
            name="sum_bias",
        )
        self.bi_kernel = self.add_weight(
            shape=(dim, self.units),
            initializer=keras.initializers.GlorotUniform(seeded(2)),
            name="bi_kernel",
        )
        self.bi_bias = self.add_weight(
            shape=(self.units,),
            initializer=keras.initializers.RandomUniform(-limit, limit, seeded(3)),
            name="bi_bias",
        )

    def call(self, embeddings, adjacency, training=None, rows=None):
        side = sparse_matmul(adjacency, embeddings, rows)
        if rows is not None:
            embeddings = tf.gather(embeddings, rows)
        neighbourhood = side + embeddings if self.self_connection else side
        summed = tf.matmul(neighbourhood, self.sum_kernel) + self.sum_bias
        bi = tf.matmul(side * embeddings, self.bi_kernel) + self.bi_bias
        output = tf.nn.leaky_relu(summed + bi, alpha=self.negative_slope)
        return self.dropout(output, training=training)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "dropout_rate": self.dropout_rate,
            "negative_slope": self.negative_slope,
            "seed": self.seed,
            "self_connection": self.self_connection,
        }


@keras.saving.register_keras_serializable(package="keras_rec")
class NodeDropout(keras.layers.Layer):
    """NGCF's node dropout on a sparse adjacency, in training only.

    Each nonzero of the `tf.SparseTensor` is kept with probability
    `1 - rate` and the kept values are scaled by `1 / (1 - rate)`, exactly
    as the reference code's `_dropout_sparse` (which drops entries of the
    Laplacian, i.e. messages along single edges, under the paper's name
    "node dropout"). At inference the adjacency passes through unchanged.

    Args:
        rate: float. Fraction of nonzeros dropped.
        seed: int or None. Seed of the dropout mask.

    Example:
    >>> adjacency = tf.sparse.from_dense([[0.0, 0.5], [0.5, 0.0]])
    >>> NodeDropout(0.5, seed=1)(adjacency, training=True).values.shape[0] <= 2
    True

    References:
        Wang et al., Neural Graph Collaborative Filtering, SIGIR 2019,
        section 2.4.2. https://arxiv.org/abs/1905.08108
    """

    def __init__(self, rate: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.supports_jit = False  # XLA has no sparse-retain kernel
        self.rate = rate
        self.seed = seed
        _check_rate("rate", rate)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, adjacency: tf.SparseTensor, training=None) -> tf.SparseTensor:
        if not training or self.rate == 0:
            return adjacency
        noise = keras.random.uniform(
            tf.shape(adjacency.values), seed=self.seed_generator
        )
        kept = tf.sparse.retain(adjacency, noise >= self.rate)
        return tf.SparseTensor(
            kept.indices, kept.values / (1.0 - self.rate), kept.dense_shape
        )

    def compute_output_spec(self, adjacency, training=None):
        return adjacency

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}
