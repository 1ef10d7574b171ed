import json

import keras
import numpy as np
import pytest

from keras_rec.layers.residual_dense import ResidualDense


def _layer_norm(x, gamma, beta, epsilon):
    mean = x.mean(-1, keepdims=True)
    variance = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + epsilon) * gamma + beta


def _swish(x):
    return x / (1.0 + np.exp(-x))


def numpy_residual_dense(layer: ResidualDense, x: np.ndarray) -> np.ndarray:
    outputs, hidden = [], x
    for dense, norm in zip(layer.dense_layers, layer.norm_layers, strict=True):
        kernel, bias = (w.numpy() for w in dense.weights)
        pre = hidden @ kernel + bias + sum(outputs, np.zeros_like(bias))
        gamma, beta = (w.numpy() for w in norm.weights)
        hidden = _layer_norm(_swish(pre), gamma, beta, layer.layer_norm_epsilon)
        outputs.append(hidden)
    return hidden


def test_residual_dense_output_shape():
    layer = ResidualDense(units=6, num_layers=3)
    assert layer(np.ones((4, 9), np.float32)).shape == (4, 6)
    assert layer.compute_output_shape((None, 9)) == (None, 6)
    assert len(layer.trainable_weights) == 3 * 4


def test_residual_dense_matches_numpy():
    rng = np.random.default_rng(0)
    layer = ResidualDense(units=5, num_layers=3, layer_norm_epsilon=0.1)
    x = rng.normal(size=(4, 7)).astype(np.float32)
    layer.build(x.shape)
    # Non-trivial layer-norm parameters, so the check covers them too.
    for weight in layer.weights:
        weight.assign(rng.normal(size=weight.shape).astype(np.float32))
    np.testing.assert_allclose(
        layer(x).numpy(), numpy_residual_dense(layer, x), rtol=1e-4, atol=1e-5
    )


def test_residual_dense_adds_every_earlier_output():
    # With zero kernels and biases each pre-activation is exactly the sum of
    # the earlier outputs: h_1 = LN(0) = beta, h_2 = LN(swish(h_1)), ...
    layer = ResidualDense(units=3, num_layers=2)
    layer.build((1, 2))
    for weight in layer.weights:
        weight.assign(np.zeros(weight.shape, np.float32))
    beta = np.array([0.5, -1.0, 2.0], np.float32)
    layer.norm_layers[0].beta.assign(beta)
    layer.norm_layers[1].gamma.assign(np.ones(3, np.float32))
    out = layer(np.ones((1, 2), np.float32)).numpy()[0]
    expected = _layer_norm(_swish(beta), 1.0, 0.0, layer.layer_norm_epsilon)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"units": 0}, "units"),
        ({"units": 4, "num_layers": 0}, "num_layers"),
        ({"units": 4, "layer_norm_epsilon": 0.0}, "layer_norm_epsilon"),
    ],
)
def test_residual_dense_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ResidualDense(**kwargs)


def test_residual_dense_config_json_round_trip():
    layer = ResidualDense(units=4, num_layers=2, layer_norm_epsilon=0.1, name="r")
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
    clone = keras.saving.deserialize_keras_object(config)
    assert isinstance(clone, ResidualDense)
    assert clone.get_config() == layer.get_config()


def test_residual_dense_one_training_step_changes_every_layer():
    rng = np.random.default_rng(1)
    inputs = keras.Input((6,))
    block = ResidualDense(units=4, num_layers=2)
    model = keras.Model(inputs, keras.layers.Dense(1)(block(inputs)))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = [w.numpy().copy() for w in block.weights]
    x = rng.normal(size=(8, 6)).astype(np.float32)
    y = rng.normal(size=(8, 1)).astype(np.float32)
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    for old, new in zip(before, block.weights, strict=True):
        assert not np.allclose(old, new.numpy()), new.path
