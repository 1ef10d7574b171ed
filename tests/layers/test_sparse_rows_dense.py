import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_rec.layers.sparse_rows_dense import SparseRowsDense


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
