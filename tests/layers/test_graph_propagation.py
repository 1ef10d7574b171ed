import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_rec.layers.graph_propagation import (
    CSRAdjacency,
    LightGCNPropagation,
    NGCFPropagation,
    NodeDropout,
    sparse_matmul,
)


def _laplacian() -> np.ndarray:
    """D^-1/2 A D^-1/2 of 2 users x 3 items: u0-{i0, i1}, u1-{i1, i2}."""
    interactions = np.array([[1, 1, 0], [0, 1, 1]], np.float32)
    adjacency = np.block(
        [[np.zeros((2, 2)), interactions], [interactions.T, np.zeros((3, 3))]]
    )
    scale = adjacency.sum(1) ** -0.5
    return (scale[:, None] * adjacency * scale[None, :]).astype(np.float32)


def _embeddings(dim: int = 3) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(5, dim)).astype(np.float32)


def test_lightgcn_propagation_is_the_sparse_product():
    laplacian, embeddings = _laplacian(), _embeddings()
    # By hand: user 0 (degree 2) and item 0 (degree 1) share weight 1/sqrt(2).
    assert laplacian[0, 2] == pytest.approx(1 / np.sqrt(2))
    assert laplacian[3, 1] == pytest.approx(1 / 2)
    output = LightGCNPropagation()(embeddings, tf.sparse.from_dense(laplacian))
    assert output.shape == (5, 3)
    np.testing.assert_allclose(output, laplacian @ embeddings, rtol=1e-6)


def _ngcf_numpy(layer, laplacian, embeddings) -> np.ndarray:
    w1, b1, w2, b2 = (w.numpy() for w in layer.weights[:4])
    side = laplacian @ embeddings
    out = (side + embeddings) @ w1 + b1 + (side * embeddings) @ w2 + b2
    return np.where(out > 0, out, layer.negative_slope * out)


def test_ngcf_propagation_matches_the_paper_formula():
    laplacian, embeddings = _laplacian(), _embeddings()
    layer = NGCFPropagation(4, dropout_rate=0.5, seed=1)
    output = layer(embeddings, tf.sparse.from_dense(laplacian))
    assert output.shape == (5, 4)
    assert [w.name for w in layer.weights[:4]] == [
        "sum_kernel",
        "sum_bias",
        "bi_kernel",
        "bi_bias",
    ]
    # Message dropout is off at inference.
    np.testing.assert_allclose(
        output, _ngcf_numpy(layer, laplacian, embeddings), rtol=1e-5, atol=1e-6
    )
    dropped = layer(embeddings, tf.sparse.from_dense(laplacian), training=True)
    assert np.mean(dropped.numpy() == 0) > 0.2


@pytest.mark.parametrize(
    "layer", [LightGCNPropagation(), NGCFPropagation(4, dropout_rate=0.5, seed=1)]
)
def test_rows_are_those_rows_of_the_whole_output(layer):
    # What the encoder asks of the last layer in training: the same rows,
    # computed without the others (message dropout off at inference).
    adjacency = tf.sparse.from_dense(_laplacian())
    whole = layer(_embeddings(), adjacency).numpy()
    rows = np.array([4, 0, 2])
    chosen = layer(_embeddings(), adjacency, rows=rows).numpy()
    assert chosen.shape == (3, whole.shape[1])
    np.testing.assert_allclose(chosen, whole[rows], rtol=1e-6)
    # In training NGCF's message dropout masks only the chosen rows.
    if isinstance(layer, NGCFPropagation):
        dropped = layer(_embeddings(), adjacency, rows=rows, training=True).numpy()
        assert dropped.shape == (3, 4)
        kept = dropped != 0
        np.testing.assert_allclose(dropped[kept], 2.0 * chosen[kept], rtol=1e-6)


@pytest.mark.parametrize("symmetric", [False, True])
def test_product_at_rows_and_its_gradient_are_those_of_the_whole(symmetric):
    # The last layer multiplies by the chosen rows of L only; its value and
    # its gradient must be those of the whole product's rows, including for
    # an asymmetric L (node dropout) and rows out of order.
    laplacian = _laplacian()
    if not symmetric:
        laplacian[0, 2] = laplacian[4, 1] = 0.0
    adjacency = CSRAdjacency(tf.sparse.from_dense(laplacian), symmetric)
    embeddings = tf.constant(_embeddings())
    rows = tf.constant([4, 1, 2], tf.int64)
    upstream = tf.constant(np.random.default_rng(4).normal(size=(3, 3)), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(embeddings)
        chosen = sparse_matmul(adjacency, embeddings, rows)
        whole = tf.gather(sparse_matmul(adjacency, embeddings), rows)
        losses = [tf.reduce_sum(x * upstream) for x in (chosen, whole)]
    np.testing.assert_allclose(chosen, laplacian[[4, 1, 2]] @ _embeddings(), rtol=1e-6)
    np.testing.assert_allclose(chosen, whole, rtol=1e-6)
    expected = laplacian[[4, 1, 2]].T @ upstream.numpy()
    for loss in losses:
        np.testing.assert_allclose(
            tape.gradient(loss, embeddings), expected, rtol=1e-5, atol=1e-6
        )
    # A row without neighbours gives zeros; no rows gives an empty product.
    isolated = np.zeros((3, 3), np.float32)
    isolated[0, 1] = 1.0
    np.testing.assert_array_equal(
        sparse_matmul(tf.sparse.from_dense(isolated), tf.ones([3, 2]), [1, 0]),
        [[0.0, 0.0], [1.0, 1.0]],
    )
    assert sparse_matmul(adjacency, embeddings, tf.zeros([0], tf.int64)).shape == (0, 3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"units": 0}, "units"),
        ({"units": 4, "dropout_rate": 1.0}, "dropout_rate"),
        ({"units": 4, "negative_slope": -0.1}, "negative_slope"),
    ],
)
def test_ngcf_propagation_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NGCFPropagation(**kwargs)


@pytest.mark.parametrize(
    "layer",
    [LightGCNPropagation(), NGCFPropagation(4, 0.2, 0.1, seed=3), NodeDropout(0.3, 2)],
)
def test_config_json_round_trip(layer):
    config = json.loads(json.dumps(layer.get_config()))
    assert type(layer).from_config(config).get_config() == layer.get_config()


def test_ngcf_propagation_one_training_step_lowers_the_loss():
    laplacian = tf.sparse.from_dense(_laplacian())
    embeddings = tf.constant(_embeddings())
    target = tf.constant(np.random.default_rng(1).normal(size=(5, 4)), tf.float32)
    layer = NGCFPropagation(4, dropout_rate=0.0, seed=0)
    optimizer = keras.optimizers.SGD(0.05)

    def loss():
        return tf.reduce_mean(tf.square(layer(embeddings, laplacian) - target))

    before = float(loss())
    with tf.GradientTape() as tape:
        value = loss()
    gradients = tape.gradient(value, layer.trainable_weights)
    assert all(g is not None for g in gradients)
    optimizer.apply(gradients, layer.trainable_weights)
    assert float(loss()) < before


def test_symmetric_backward_equals_tensorflow_gradient():
    laplacian = tf.sparse.from_dense(_laplacian())
    embeddings = tf.Variable(_embeddings())
    upstream = tf.constant(np.random.default_rng(2).normal(size=(5, 3)), tf.float32)
    gradients = []
    for symmetric in (False, True):
        with tf.GradientTape() as tape:
            output = embeddings
            for _ in range(2):
                output = sparse_matmul(CSRAdjacency(laplacian, symmetric), output)
            loss = tf.reduce_sum(output * upstream)
        gradients.append(tape.gradient(loss, embeddings).numpy())
    expected = np.linalg.matrix_power(_laplacian(), 2).T @ upstream.numpy()
    np.testing.assert_allclose(gradients[0], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gradients[1], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("compiled", [False, True])
def test_asymmetric_backward_multiplies_by_the_transpose(compiled):
    # Node dropout makes the adjacency asymmetric: the backward pass must
    # multiply by the converted transpose, not by the matrix itself.
    laplacian = _laplacian()
    laplacian[0, 2] = laplacian[4, 1] = 0.0
    sparse = tf.sparse.from_dense(laplacian)
    embeddings = tf.constant(_embeddings())
    upstream = tf.constant(np.random.default_rng(3).normal(size=(5, 3)), tf.float32)

    def gradient():
        with tf.GradientTape() as tape:
            tape.watch(embeddings)
            adjacency = CSRAdjacency(sparse, symmetric=False)
            output = sparse_matmul(adjacency, sparse_matmul(adjacency, embeddings))
            loss = tf.reduce_sum(output * upstream)
        return tape.gradient(loss, embeddings)

    result = tf.function(gradient)() if compiled else gradient()
    expected = np.linalg.matrix_power(laplacian, 2).T @ upstream.numpy()
    assert not np.allclose(expected, np.linalg.matrix_power(laplacian, 2) @ upstream)
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-6)


def test_node_dropout_keeps_the_expected_fraction_rescaled_and_is_off_at_inference():
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(200 * 200, size=20_000, replace=False))
    adjacency = tf.SparseTensor(
        np.stack([rows // 200, rows % 200], 1).astype(np.int64),
        np.full(len(rows), 0.5, np.float32),
        [200, 200],
    )
    layer = NodeDropout(0.1, seed=0)
    kept = layer(adjacency, training=True)
    fraction = kept.values.shape[0] / len(rows)
    # 20,000 draws: the standard deviation of the fraction is 0.002.
    assert 0.89 < fraction < 0.91
    np.testing.assert_allclose(kept.values, 0.5 / 0.9, rtol=1e-6)
    again = layer(adjacency, training=True)
    assert not np.array_equal(kept.indices.numpy(), again.indices.numpy())
    inference = layer(adjacency, training=False)
    np.testing.assert_array_equal(inference.indices, adjacency.indices)
    np.testing.assert_array_equal(inference.values, adjacency.values)
    with pytest.raises(ValueError, match="rate"):
        NodeDropout(1.5)


def test_float16_embeddings_propagate_in_float32():
    # Under a mixed-precision policy the embeddings are float16 and the
    # adjacency float32: the product is taken in float32, returned in float16.
    laplacian = _laplacian()
    adjacency = CSRAdjacency(tf.sparse.from_dense(laplacian))
    embeddings = _embeddings()
    product = sparse_matmul(adjacency, tf.constant(embeddings, tf.float16))
    assert product.dtype == tf.float16
    np.testing.assert_allclose(
        product.numpy().astype(np.float32), laplacian @ embeddings, atol=2e-3
    )
