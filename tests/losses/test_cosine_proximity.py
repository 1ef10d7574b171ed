import json

import keras
import numpy as np

from keras_rec.losses.cosine_proximity import CosineProximityLoss


def test_value_against_numpy():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 4)).astype("float32")
    b = rng.normal(size=(5, 4)).astype("float32")
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    np.testing.assert_allclose(
        CosineProximityLoss(reduction=None)(a, b), -cosine, rtol=1e-5
    )
    np.testing.assert_allclose(float(CosineProximityLoss()(a, b)), -cosine.mean())
    np.testing.assert_allclose(
        float(CosineProximityLoss()(a, b)), float(keras.losses.CosineSimilarity()(a, b))
    )


def test_hand_examples():
    loss = CosineProximityLoss(reduction=None)
    values = loss(
        [[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]], [[3.0, 0.0], [0.0, 2.0], [1.0, 1.0]]
    )
    np.testing.assert_allclose(values, [-1.0, 0.0, 0.0], atol=1e-6)


def test_config_json_round_trip():
    loss = CosineProximityLoss(reduction="sum", name="cos")
    clone = CosineProximityLoss.from_config(json.loads(json.dumps(loss.get_config())))
    assert clone.get_config() == loss.get_config()
