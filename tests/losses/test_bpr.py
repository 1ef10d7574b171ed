import keras
import numpy as np
import pytest

from keras_rec.losses import (
    BPRLoss,
    CosineProximityLoss,
    FocalLoss,
    MultinomialLogLikelihood,
    SampledBinaryCrossentropy,
)


def test_matches_formula_on_a_batch():
    scores = np.array([[2.0, 0.0, 1.0], [-1.0, 3.0, -1.0]], np.float32)
    margins = scores[:, :1] - scores[:, 1:]
    expected = np.mean(-np.log(1.0 / (1.0 + np.exp(-margins))))
    value = float(BPRLoss()(np.zeros(2), scores))
    np.testing.assert_allclose(value, expected, rtol=1e-6)


def test_is_stable_for_large_margins():
    value = float(BPRLoss()(np.zeros(1), np.array([[-200.0, 200.0]], np.float32)))
    np.testing.assert_allclose(value, 400.0, rtol=1e-6)


def test_config_round_trip():
    loss = BPRLoss(name="my_bpr")
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(restored, BPRLoss) and restored.name == "my_bpr"


def test_scores_without_a_negative_are_refused():
    # The mean over an empty axis was NaN.
    with pytest.raises(ValueError, match=r"1 \+ negatives"):
        BPRLoss()(np.zeros(2), np.ones((2, 1), np.float32))


@pytest.mark.parametrize(
    "loss",
    [
        BPRLoss(dtype="float64"),
        CosineProximityLoss(dtype="float64"),
        FocalLoss(dtype="float64"),
        MultinomialLogLikelihood(dtype="float64"),
        SampledBinaryCrossentropy(dtype="float64"),
    ],
    ids=lambda loss: type(loss).__name__,
)
def test_every_loss_keeps_its_dtype_through_serialization(loss):
    # keras.losses.Loss.get_config leaves the dtype out.
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(restored) is type(loss) and restored.dtype == "float64"
