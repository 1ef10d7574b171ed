import json

import keras
import numpy as np

from keras_rec.losses.sampled_bce import SampledBinaryCrossentropy


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def test_matches_the_paper_formula_with_padding_ignored():
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 2.0, size=(3, 4, 2)).astype(np.float32)
    positives = np.array([[-1, -1, 4, 7], [-1, 2, 3, 9], [5, 6, 1, 8]])
    real = positives >= 0
    terms = -np.log(_sigmoid(logits[..., 0])) - np.log(1.0 - _sigmoid(logits[..., 1]))
    expected = terms[real].sum() / real.sum()  # the reference's mean
    value = float(SampledBinaryCrossentropy()(positives, logits))
    np.testing.assert_allclose(value, expected, rtol=1e-5)


def test_padding_positions_do_not_matter():
    positives = np.array([[-1, 3]])
    loss = SampledBinaryCrossentropy()
    small = np.array([[[0.0, 0.0], [1.0, -1.0]]], np.float32)
    huge = np.array([[[-500.0, 500.0], [1.0, -1.0]]], np.float32)
    np.testing.assert_allclose(
        float(loss(positives, small)), float(loss(positives, huge))
    )
    np.testing.assert_allclose(
        float(loss(positives, small)), 2 * np.log1p(np.exp(-1.0))
    )


def test_stable_for_large_logits_and_all_padding():
    loss = SampledBinaryCrossentropy()
    value = float(loss(np.array([[1]]), np.array([[[-200.0, 300.0]]], np.float32)))
    np.testing.assert_allclose(value, 500.0, rtol=1e-6)
    assert float(loss(np.array([[-1, -1]]), np.ones((1, 2, 2), np.float32))) == 0.0


def test_gradient_is_zero_at_padding():
    import tensorflow as tf

    logits = tf.Variable(np.ones((1, 3, 2), np.float32))
    with tf.GradientTape() as tape:
        value = SampledBinaryCrossentropy()(np.array([[-1, 2, 3]]), logits)
    gradient = tape.gradient(value, logits).numpy()
    assert np.all(gradient[0, 0] == 0.0) and np.all(gradient[0, 1:] != 0.0)


def test_config_round_trip():
    loss = SampledBinaryCrossentropy(name="sasrec_bce")
    config = json.loads(json.dumps(keras.losses.serialize(loss)))
    restored = keras.losses.deserialize(config)
    assert isinstance(restored, SampledBinaryCrossentropy)
    assert restored.name == "sasrec_bce"
