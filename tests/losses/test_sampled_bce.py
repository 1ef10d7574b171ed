import json

import keras
import numpy as np
import pytest

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
    infinite = np.array([[[-np.inf, np.inf], [1.0, -1.0]]], np.float32)
    for other in (huge, infinite):
        np.testing.assert_allclose(
            float(loss(positives, small)), float(loss(positives, other))
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
    loss = SampledBinaryCrossentropy(normalizer=12.5, name="sasrec_bce")
    config = json.loads(json.dumps(keras.losses.serialize(loss)))
    restored = keras.losses.deserialize(config)
    assert isinstance(restored, SampledBinaryCrossentropy)
    assert restored.name == "sasrec_bce"
    assert restored.normalizer == 12.5
    assert SampledBinaryCrossentropy().normalizer is None


def test_normalizer_divides_the_sum_over_non_padding_positions():
    rng = np.random.default_rng(1)
    logits = rng.normal(0.0, 2.0, size=(3, 4, 2)).astype(np.float32)
    positives = np.array([[-1, -1, 4, 7], [-1, 2, 3, 9], [-1, -1, -1, 8]])
    real = positives >= 0
    terms = -np.log(_sigmoid(logits[..., 0])) - np.log(1.0 - _sigmoid(logits[..., 1]))
    value = float(SampledBinaryCrossentropy(normalizer=6.5)(positives, logits))
    np.testing.assert_allclose(value, terms[real].sum() / 6.5, rtol=1e-5)
    # All padding: zero, not NaN.
    all_padding = SampledBinaryCrossentropy(normalizer=2.0)(
        -np.ones((1, 2)), logits[:1, :2]
    )
    assert float(all_padding) == 0.0


def test_normalized_loss_weighs_every_position_the_same_over_an_epoch():
    # Six users with 1..6 positions, a fixed loss term per position; batches
    # of 2. Bucketed batches (sorted by length) with the constant normalizer
    # (expected positions per random batch) add up over the epoch to what
    # random batches give in expectation; the per-batch mean does not.
    lengths = np.arange(1, 7)
    width = lengths.max()
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, width, 2)).astype(np.float32)
    positives = np.where(np.arange(width)[None] >= width - lengths[:, None], 1, -1)
    terms = -np.log(_sigmoid(logits[..., 0])) - np.log(1.0 - _sigmoid(logits[..., 1]))
    per_position = terms[positives >= 0].mean()
    normalizer = 2 * lengths.mean()  # expected positions in a random batch of 2
    bucketed = [[0, 1], [2, 3], [4, 5]]  # users sorted by length

    def epoch(loss, batches):
        return sum(float(loss(positives[b], logits[b])) for b in batches)

    constant = SampledBinaryCrossentropy(normalizer=normalizer)
    # E[sum of a random batch] / normalizer = the mean over all positions.
    np.testing.assert_allclose(
        epoch(constant, bucketed), len(bucketed) * per_position, rtol=1e-5
    )
    # The same for any partition into batches (the order does not matter).
    np.testing.assert_allclose(
        epoch(constant, [[0, 5], [1, 4], [2, 3]]), epoch(constant, bucketed), rtol=1e-5
    )
    mean = SampledBinaryCrossentropy()
    assert abs(epoch(mean, bucketed) - len(bucketed) * per_position) > 1e-3


@pytest.mark.parametrize("normalizer", [0, -1.0, float("nan"), float("inf"), True, "2"])
def test_invalid_normalizer(normalizer):
    with pytest.raises(ValueError, match="normalizer"):
        SampledBinaryCrossentropy(normalizer=normalizer)
