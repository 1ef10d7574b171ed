"""The synthetic dataset: seeded, valid, and with the structure it promises."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_rec.data import bpr_dataset, leave_one_out, make_synthetic
from keras_rec.evaluation import evaluate
from keras_rec.losses.bpr import BPRLoss
from keras_rec.models.bpr_mf import BPRMF
from keras_rec.models.popularity import Popularity


@pytest.fixture(scope="module")
def data():
    return make_synthetic(num_users=300, num_items=200, seed=0)


def test_deterministic_for_a_seed(data):
    again = make_synthetic(num_users=300, num_items=200, seed=0)
    other = make_synthetic(num_users=300, num_items=200, seed=1)
    assert data.checksum() == again.checksum()
    np.testing.assert_array_equal(data.timestamps, again.timestamps)
    assert data.checksum() != other.checksum()


def test_shape_and_validity(data):
    assert data.name == "synthetic"
    assert (data.num_users, data.num_items) == (300, 200)
    lengths = data.user_counts()
    assert lengths.min() >= 5 and lengths.max() <= 100  # min_length, num_items // 2
    assert 15 < lengths.mean() < 35  # mean_length=25
    for sequence in data.sequences():
        assert len(set(sequence.tolist())) == len(sequence)  # no repeats
    # Timestamps are the draw order.
    np.testing.assert_array_equal(data.timestamps, np.arange(len(data)))


def test_popularity_is_skewed(data):
    counts = np.sort(data.item_counts())[::-1]
    top_share = counts[: len(counts) // 10].sum() / counts.sum()
    assert top_share > 0.17  # clearly more than the uniform 10% (0.21 here)
    flat = make_synthetic(num_users=300, num_items=200, popularity_exponent=0.0, seed=0)
    flat_counts = np.sort(flat.item_counts())[::-1]
    assert flat_counts[:20].sum() / flat_counts.sum() < top_share


def test_transitions_are_followed():
    def follow_rate(probability):
        data = make_synthetic(
            num_users=200, num_items=100, sequential_probability=probability, seed=2
        )
        pairs = {}
        for sequence in data.sequences():
            for a, b in zip(sequence[:-1].tolist(), sequence[1:].tolist(), strict=True):
                pairs[(a, b)] = pairs.get((a, b), 0) + 1
        # Share of transitions that repeat across users: high with follow-ups.
        return sum(c for c in pairs.values() if c >= 3) / sum(pairs.values())

    assert follow_rate(0.6) > follow_rate(0.0) + 0.2


@pytest.mark.parametrize(
    "kwargs", [dict(num_items=8, min_length=5), dict(num_items=100, min_length=2)]
)
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError, match="min_length"):
        make_synthetic(num_users=10, **kwargs)


class RandomScores:
    """Uniform random scores: the floor every model must clear."""

    input_kind = "user_id"
    history_length = None

    def __init__(self, num_users, num_items, seed=0):
        self.num_items = num_items
        self.table = np.random.default_rng(seed).random((num_users, num_items))

    def score_all(self, inputs):
        return tf.constant(self.table[inputs["user_id"].numpy()], tf.float32)


def test_popularity_beats_random_and_bpr_mf_beats_popularity():
    # The promise of the synthetic data, on a quick scale (a few seconds).
    data = make_synthetic(num_users=800, num_items=200, seed=0)
    split = leave_one_out(data)
    ks = (10,)
    random = evaluate(RandomScores(800, 200), split.test, "loo_full", ks=ks)
    popularity = Popularity(data.num_items).fit_closed_form(split.train)
    popular = evaluate(popularity, split.test, "loo_full", ks=ks)

    keras.utils.set_random_seed(0)
    model = BPRMF(data.num_users, data.num_items, embedding_dim=16, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=BPRLoss())
    losses = []
    for epoch in range(25):
        history = model.fit(
            bpr_dataset(split.train, 256, 0, epoch), verbose=0, shuffle=False
        )
        losses.append(history.history["loss"][-1])
    factors = evaluate(model, split.test, "loo_full", ks=ks)

    assert losses[-1] < 0.5 * losses[0]
    assert popular["hr@10"] > 1.5 * random["hr@10"]
    assert popular["ndcg@10"] > 1.5 * random["ndcg@10"]
    assert factors["hr@10"] > popular["hr@10"] + 0.02
    assert factors["ndcg@10"] > popular["ndcg@10"] + 0.01
