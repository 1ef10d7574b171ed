import json

import keras
import numpy as np
import pytest

from keras_rec.losses.focal import FocalLoss


def _numpy(y, p, alpha, gamma):
    p_t = np.where(y == 1, p, 1 - p)
    alpha_t = np.where(y == 1, alpha, 1 - alpha)
    return (alpha_t * (1 - p_t) ** gamma * -np.log(p_t)).sum(axis=1)


@pytest.mark.parametrize("alpha, gamma", [(0.25, 2.0), (0.6, 0.0), (0.5, 1.5)])
def test_value_against_numpy_sums_over_items(alpha, gamma):
    rng = np.random.default_rng(1)
    y = (rng.random((3, 6)) < 0.5).astype("float32")
    p = rng.uniform(0.05, 0.95, size=(3, 6)).astype("float32")
    expected = _numpy(y, p.astype(np.float64), alpha, gamma)
    loss = FocalLoss(alpha=alpha, gamma=gamma)
    np.testing.assert_allclose(float(loss(y, p)), expected.mean(), rtol=1e-5)
    per_user = FocalLoss(alpha=alpha, gamma=gamma, reduction=None)(y, p)
    np.testing.assert_allclose(per_user, expected, rtol=1e-5)


def test_from_logits_and_keras_equivalence():
    rng = np.random.default_rng(2)
    y = (rng.random((4, 5)) < 0.3).astype("float32")
    logits = rng.normal(size=(4, 5)).astype("float32")
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    np.testing.assert_allclose(
        float(FocalLoss(from_logits=True)(y, logits)),
        _numpy(y, p, 0.25, 2.0).mean(),
        rtol=1e-4,
    )
    keras_loss = keras.losses.BinaryFocalCrossentropy(
        apply_class_balancing=True, alpha=0.25, gamma=2.0, from_logits=True
    )
    np.testing.assert_allclose(
        float(FocalLoss(from_logits=True)(y, logits)),
        5 * float(keras_loss(y, logits)),
        rtol=1e-6,
    )


@pytest.mark.parametrize(
    "kwargs, message", [({"alpha": 1.5}, "alpha"), ({"gamma": -1.0}, "gamma")]
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FocalLoss(**kwargs)


def test_config_json_round_trip():
    loss = FocalLoss(alpha=0.3, gamma=1.0, from_logits=True, name="fl")
    clone = FocalLoss.from_config(json.loads(json.dumps(loss.get_config())))
    assert clone.get_config() == loss.get_config()
    assert (clone.alpha, clone.gamma, clone.from_logits) == (0.3, 1.0, True)
