import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_rec.layers.reparameterized_sampling import ReparameterizedSampling


def test_output_shape_and_inference_returns_the_mean():
    layer = ReparameterizedSampling(seed=0)
    mu = np.arange(6, dtype="float32").reshape(2, 3)
    log_var = np.ones((2, 3), "float32")
    assert layer([mu, log_var], training=True).shape == (2, 3)
    np.testing.assert_array_equal(layer([mu, log_var], training=False), mu)
    np.testing.assert_array_equal(layer([mu, log_var]), mu)


def test_samples_have_the_posterior_moments():
    layer = ReparameterizedSampling(seed=3)
    mu = np.full((20_000, 1), 2.0, "float32")
    log_var = np.full((20_000, 1), math.log(4.0), "float32")
    z = layer([mu, log_var], training=True).numpy()
    assert abs(z.mean() - 2.0) < 0.05 and abs(z.std() - 2.0) < 0.05


def test_same_seed_same_noise_and_gradients_follow_the_trick():
    mu = tf.Variable([[0.5, -1.0]])
    log_var = tf.Variable([[0.2, -0.4]])
    first = ReparameterizedSampling(seed=7)([mu, log_var], training=True)
    with tf.GradientTape() as tape:
        z = ReparameterizedSampling(seed=7)([mu, log_var], training=True)
        total = tf.reduce_sum(z)
    np.testing.assert_array_equal(first, z)
    grad_mu, grad_log_var = tape.gradient(total, [mu, log_var])
    np.testing.assert_allclose(grad_mu, [[1.0, 1.0]])
    # dz/dlog_var = 0.5 * sigma * eps = 0.5 * (z - mu)
    np.testing.assert_allclose(grad_log_var, 0.5 * (z - mu), rtol=1e-6)


def test_kl_divergence_hand_example():
    mu = np.array([[1.0, 0.0], [0.0, 0.0]], "float32")
    log_var = np.array([[0.0, math.log(2.0)], [0.0, 0.0]], "float32")
    kl = ReparameterizedSampling.kl_divergence(mu, log_var).numpy()
    # 0.5 * (mu^2 + sigma^2 - 1 - log sigma^2) summed: 0.5 + 0.5 * (1 - log 2)
    np.testing.assert_allclose(kl, [1.0 - 0.5 * math.log(2.0), 0.0], rtol=1e-6)


@pytest.mark.parametrize("seed", [1.5, "3", True])
def test_invalid_seed(seed):
    with pytest.raises(ValueError, match="seed"):
        ReparameterizedSampling(seed=seed)


def test_config_json_round_trip():
    layer = ReparameterizedSampling(seed=11, name="z")
    config = json.loads(json.dumps(layer.get_config()))
    clone = ReparameterizedSampling.from_config(config)
    assert clone.get_config() == layer.get_config()
    assert clone.seed == 11


def test_one_training_step_moves_the_encoder():
    inputs = keras.Input((4,))
    mu = keras.layers.Dense(2)(inputs)
    log_var = keras.layers.Dense(2)(inputs)
    z = ReparameterizedSampling(seed=0)([mu, log_var])
    model = keras.Model(inputs, keras.layers.Dense(1)(z))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = [w.numpy().copy() for w in model.trainable_weights]
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    model.fit(x, np.ones((8, 1), "float32"), epochs=1, verbose=0)
    after = [w.numpy() for w in model.trainable_weights]
    assert all(np.any(a != b) for a, b in zip(after, before, strict=True))


def test_kl_divergence_of_float16_inputs_is_finite():
    # exp(12) overflows float16 (max 65504): the KL is computed in float32.
    mu = tf.constant([[300.0]], tf.float16)
    log_var = tf.constant([[12.0]], tf.float16)
    kl = ReparameterizedSampling.kl_divergence(mu, log_var)
    expected = -0.5 * (1.0 + 12.0 - 300.0**2 - math.exp(12.0))
    assert kl.dtype == tf.float32
    np.testing.assert_allclose(kl.numpy(), [expected], rtol=1e-3)
