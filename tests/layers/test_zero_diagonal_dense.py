import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_rec.layers.zero_diagonal_dense import ZeroDiagonalDense


def _layer(kernel):
    layer = ZeroDiagonalDense()
    layer.build((None, len(kernel)))
    layer.kernel.assign(np.asarray(kernel, "float32"))
    return layer


def test_output_shape():
    layer = ZeroDiagonalDense(units=5)
    assert layer(np.ones((3, 5), "float32")).shape == (3, 5)
    assert layer.kernel.shape == (5, 5)


def test_hand_example_ignores_the_diagonal():
    layer = _layer([[1.0, 2.0], [3.0, 4.0]])
    # x (W * (1 - I)) = [1, 10] @ [[0, 2], [3, 0]] = [30, 2]
    np.testing.assert_allclose(layer(np.array([[1.0, 10.0]], "float32")), [[30, 2]])


def test_gradient_on_the_diagonal_is_exactly_zero():
    layer = _layer(np.arange(9.0).reshape(3, 3))
    x = tf.constant([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(layer(x) * tf.constant([[1.0, 2.0, 3.0]]))
    gradient = tape.gradient(total, layer.kernel.value).numpy()
    expected = x.numpy().T @ np.tile([[1.0, 2.0, 3.0]], (2, 1))
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_array_equal(np.diag(gradient), 0.0)
    np.testing.assert_allclose(gradient, expected, rtol=1e-6)


def test_units_must_match_the_input_width():
    with pytest.raises(ValueError, match="units"):
        ZeroDiagonalDense(units=3)(np.ones((1, 4), "float32"))


@pytest.mark.parametrize("units", [0, -2, 2.5, True])
def test_invalid_units(units):
    with pytest.raises(ValueError, match="units"):
        ZeroDiagonalDense(units=units)


def test_config_json_round_trip():
    layer = ZeroDiagonalDense(
        units=4,
        activation="sigmoid",
        kernel_initializer="zeros",
        kernel_regularizer=keras.regularizers.L2(0.5),
    )
    config = json.loads(json.dumps(layer.get_config()))
    clone = ZeroDiagonalDense.from_config(config)
    assert clone.get_config() == layer.get_config()
    assert clone(np.ones((1, 4), "float32")).shape == (1, 4)


def test_one_training_step_leaves_the_diagonal_untouched():
    inputs = keras.Input((4,))
    layer = ZeroDiagonalDense(kernel_initializer=keras.initializers.Ones())
    model = keras.Model(inputs, layer(inputs))
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss="mse")
    x = np.random.default_rng(0).random((16, 4)).astype("float32")
    model.fit(x, x, epochs=1, verbose=0)
    kernel = layer.kernel.numpy()
    np.testing.assert_array_equal(np.diag(kernel), 1.0)
    assert np.all(kernel[~np.eye(4, dtype=bool)] != 1.0)


def test_subtract_zeroing_matches_set_diag():
    kernel = np.arange(16.0).reshape(4, 4) - 5.0
    x = np.random.default_rng(1).random((3, 4)).astype("float32")
    masked = _layer(kernel)(x).numpy()
    subtract = ZeroDiagonalDense(zeroing="subtract")
    subtract.build((None, 4))
    subtract.kernel.assign(np.asarray(kernel, "float32"))
    np.testing.assert_allclose(subtract(x), masked, rtol=1e-5, atol=1e-5)
    # With the diagonal already zero (EASE's B) both are the same product.
    np.fill_diagonal(kernel, 0.0)
    subtract.kernel.assign(np.asarray(kernel, "float32"))
    np.testing.assert_allclose(subtract(x), x @ kernel.astype("float32"), rtol=1e-6)


def test_invalid_zeroing():
    with pytest.raises(ValueError, match="zeroing"):
        ZeroDiagonalDense(zeroing="mask")


def test_zeroing_survives_the_config():
    layer = ZeroDiagonalDense(units=3, zeroing="subtract")
    assert ZeroDiagonalDense.from_config(layer.get_config()).zeroing == "subtract"
