import json

import keras
import numpy as np
import pytest

from keras_rec.layers.recvae_encoder import RecVAEEncoder


def numpy_residual_dense(block, x):
    outputs, hidden = [], x
    for dense, norm in zip(block.dense_layers, block.norm_layers, strict=True):
        kernel, bias = (w.numpy() for w in dense.weights)
        pre = hidden @ kernel + bias + sum(outputs, np.zeros_like(bias))
        activated = pre / (1.0 + np.exp(-pre))
        mean = activated.mean(-1, keepdims=True)
        variance = activated.var(-1, keepdims=True)
        gamma, beta = (w.numpy() for w in norm.weights)
        normalised = (activated - mean) / np.sqrt(variance + block.layer_norm_epsilon)
        hidden = normalised * gamma + beta
        outputs.append(hidden)
    return hidden


def _rows(rng, batch=4, items=12):
    rows = (rng.random((batch, items)) < 0.4).astype(np.float32)
    rows[:, 0] = 1.0  # no empty row
    return rows


def test_recvae_encoder_output_shapes():
    encoder = RecVAEEncoder(hidden_dim=8, latent_dim=3, num_layers=2)
    mu, log_var = encoder(np.ones((5, 11), np.float32))
    assert mu.shape == (5, 3) and log_var.shape == (5, 3)
    assert encoder.compute_output_shape((None, 11)) == ((None, 3), (None, 3))


def test_recvae_encoder_matches_numpy():
    rng = np.random.default_rng(0)
    encoder = RecVAEEncoder(hidden_dim=6, latent_dim=3, num_layers=3)
    x = _rows(rng)
    encoder.build(x.shape)
    for weight in encoder.weights:
        weight.assign(rng.normal(size=weight.shape).astype(np.float32) * 0.5)
    mu, log_var = encoder(x, training=False)
    normalised = x / (np.sqrt((x**2).sum(-1, keepdims=True)) + 1e-10)
    hidden = numpy_residual_dense(encoder.body, normalised)
    mean_kernel, mean_bias = (w.numpy() for w in encoder.mean_dense.weights)
    var_kernel, var_bias = (w.numpy() for w in encoder.log_var_dense.weights)
    np.testing.assert_allclose(mu, hidden @ mean_kernel + mean_bias, atol=1e-4)
    np.testing.assert_allclose(log_var, hidden @ var_kernel + var_bias, atol=1e-4)
    # The input is L2-normalised: scaling a row does not change its code.
    np.testing.assert_allclose(encoder(3.0 * x)[0], mu, atol=1e-5)


def test_recvae_encoder_dropout_only_in_training():
    rng = np.random.default_rng(2)
    x = _rows(rng, batch=16, items=40)
    encoder = RecVAEEncoder(hidden_dim=8, latent_dim=4, num_layers=2, seed=3)
    clean = encoder(x, training=False)[0].numpy()
    np.testing.assert_allclose(encoder(x)[0], clean)
    assert not np.allclose(encoder(x, training=True)[0], clean)
    no_dropout = RecVAEEncoder(8, 4, 2, dropout_rate=0.0)
    np.testing.assert_allclose(
        no_dropout(x, training=True)[0], no_dropout(x, training=False)[0]
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"hidden_dim": 0}, "hidden_dim"),
        ({"latent_dim": -2}, "latent_dim"),
        ({"num_layers": 0}, "num_layers"),
        ({"dropout_rate": 1.0}, "dropout_rate"),
        ({"layer_norm_epsilon": -1.0}, "layer_norm_epsilon"),
    ],
)
def test_recvae_encoder_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RecVAEEncoder(**kwargs)


def test_recvae_encoder_config_json_round_trip():
    encoder = RecVAEEncoder(7, 3, num_layers=4, dropout_rate=0.2, seed=5, name="e")
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(encoder)))
    clone = keras.saving.deserialize_keras_object(config)
    assert isinstance(clone, RecVAEEncoder)
    assert clone.get_config() == encoder.get_config()


def test_recvae_encoder_empty_row_is_finite_under_mixed_precision():
    # In float16 the 1e-10 of the normalisation is 0: it runs in float32.
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        encoder = RecVAEEncoder(8, 4, 2, seed=0)
        mu, log_var = encoder(np.zeros((2, 6), np.float32), training=False)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert np.isfinite(keras.ops.convert_to_numpy(mu)).all()
    assert np.isfinite(keras.ops.convert_to_numpy(log_var)).all()


def test_recvae_encoder_one_training_step():
    rng = np.random.default_rng(4)
    x = _rows(rng, batch=8, items=10)
    inputs = keras.Input((10,))
    mu, log_var = RecVAEEncoder(6, 2, num_layers=2, dropout_rate=0.0)(inputs)
    model = keras.Model(inputs, keras.layers.Concatenate()([mu, log_var]))
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    target = rng.normal(size=(8, 4)).astype(np.float32)
    first = model.evaluate(x, target, verbose=0)
    model.train_on_batch(x, target)
    assert model.evaluate(x, target, verbose=0) < first
