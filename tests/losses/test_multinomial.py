import json

import numpy as np
import pytest

from keras_rec.losses.multinomial import MultinomialLogLikelihood


def _numpy(rows, logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -(rows * log_softmax).sum(axis=1)


def test_value_against_numpy():
    rng = np.random.default_rng(0)
    rows = (rng.random((4, 7)) < 0.4).astype("float32")
    logits = rng.normal(scale=3.0, size=(4, 7)).astype("float32")
    expected = _numpy(rows.astype(np.float64), logits.astype(np.float64))
    loss = MultinomialLogLikelihood()
    np.testing.assert_allclose(float(loss(rows, logits)), expected.mean(), rtol=1e-5)
    per_user = MultinomialLogLikelihood(reduction=None)(rows, logits)
    np.testing.assert_allclose(per_user, expected, rtol=1e-5)


def test_stable_for_large_logits():
    loss = MultinomialLogLikelihood()
    value = float(loss([[1.0, 0.0]], [[1000.0, -1000.0]]))
    assert value == pytest.approx(0.0, abs=1e-6)
    assert float(loss([[0.0, 1.0]], [[1000.0, -1000.0]])) == pytest.approx(2000.0)


def test_config_json_round_trip():
    loss = MultinomialLogLikelihood(reduction="sum", name="nll")
    clone = MultinomialLogLikelihood.from_config(
        json.loads(json.dumps(loss.get_config()))
    )
    assert clone.get_config() == loss.get_config()
