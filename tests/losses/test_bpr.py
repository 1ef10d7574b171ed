import keras
import numpy as np

from keras_rec.losses import BPRLoss


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
