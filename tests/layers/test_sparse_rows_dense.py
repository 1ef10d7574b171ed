import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_rec.layers.sparse_rows_dense import SparseRowsDense, normalized_sparse_rows


@pytest.fixture
def rows():
    rng = np.random.default_rng(0)
    values = (rng.random((6, 40)) < 0.1) * rng.random((6, 40))
    values[3] = 0.0  # an empty row
    return tf.constant(values, tf.float32)


def _pair(activation):
    ours = SparseRowsDense(7, activation=activation, bias_initializer="ones")
    plain = keras.layers.Dense(7, activation=activation, bias_initializer="ones")
    ours.build((None, 40))
    plain.build((None, 40))
    plain.set_weights(ours.get_weights())
    return ours, plain


@pytest.mark.parametrize("activation", [None, "tanh"])
def test_training_output_and_gradients_equal_dense(rows, activation):
    ours, plain = _pair(activation)
    results = []
    for layer in (ours, plain):
        with tf.GradientTape() as tape:
            outputs = layer(rows, training=True)
            total = tf.reduce_sum(outputs * tf.range(7, dtype=tf.float32))
        gradients = tape.gradient(total, [layer.kernel, layer.bias])
        results.append((outputs, *(tf.convert_to_tensor(g) for g in gradients)))
    for mine, theirs in zip(*results, strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-5, atol=1e-6)
    # The empty row is the bias alone.
    np.testing.assert_allclose(results[0][0][3], ours.activation(ours.bias), rtol=1e-6)


def test_training_path_is_the_sparse_product(rows):
    layer = SparseRowsDense(3)
    graph = tf.function(lambda x: layer(x, training=True)).get_concrete_function(rows)
    ops = {op.type for op in graph.graph.get_operations()}
    assert "SparseTensorDenseMatMul" in ops and "MatMul" not in ops
    graph = tf.function(lambda x: layer(x, training=False)).get_concrete_function(rows)
    ops = {op.type for op in graph.graph.get_operations()}
    assert "SparseTensorDenseMatMul" not in ops and "MatMul" in ops


def test_config_round_trip():
    layer = SparseRowsDense(4, activation="tanh", use_bias=False)
    clone = keras.layers.deserialize(
        json.loads(json.dumps(keras.layers.serialize(layer)))
    )
    assert isinstance(clone, SparseRowsDense)
    assert clone.get_config() == layer.get_config()


def test_sparse_tensor_input_takes_the_sparse_product_without_training(rows):
    ours, plain = _pair("tanh")
    graph = tf.function(lambda x: ours(x, training=False)).get_concrete_function(
        tf.sparse.from_dense(rows)
    )
    ops = {op.type for op in graph.graph.get_operations()}
    assert "SparseTensorDenseMatMul" in ops and "MatMul" not in ops
    np.testing.assert_allclose(
        ours(tf.sparse.from_dense(rows), training=False),
        plain(rows),
        rtol=1e-5,
        atol=1e-6,
    )


def test_normalized_sparse_rows_is_the_dense_transform(rows):
    expected = rows / (tf.norm(rows, axis=-1, keepdims=True) + 1e-10)
    sparse = normalized_sparse_rows(rows)
    assert isinstance(sparse, tf.SparseTensor)
    np.testing.assert_allclose(tf.sparse.to_dense(sparse), expected, rtol=1e-6)
    # No dropout unless training.
    dropout = keras.layers.Dropout(0.5, seed=0)
    for training in (None, False):
        unchanged = normalized_sparse_rows(rows, dropout, training)
        np.testing.assert_allclose(unchanged.values, sparse.values, rtol=1e-6)


def test_normalized_sparse_rows_drops_nonzeros_only():
    rng = np.random.default_rng(1)
    rows = tf.constant((rng.random((50, 400)) < 0.2).astype("float32"))
    clean = normalized_sparse_rows(rows)
    dropped = normalized_sparse_rows(
        rows, keras.layers.Dropout(0.5, seed=3), training=True
    )
    np.testing.assert_array_equal(dropped.indices, clean.indices)
    kept = dropped.values.numpy() != 0
    # Kept values are scaled by 1 / (1 - rate), the others are zero.
    np.testing.assert_allclose(
        dropped.values.numpy()[kept], 2 * clean.values.numpy()[kept], rtol=1e-6
    )
    assert 0.45 < kept.mean() < 0.55  # about 4,000 nonzeros
