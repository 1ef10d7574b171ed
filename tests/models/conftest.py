"""Shared fixtures of the model tests: small synthetic splits, and the
training and ranking checks that several models go through."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_rec.data import bpr_dataset, make_split, make_synthetic
from keras_rec.data.datasets import Dataset
from keras_rec.evaluation import evaluate
from keras_rec.losses import BPRLoss
from keras_rec.models.autoencoder_base import training_rows
from keras_rec.models.popularity import Popularity


@pytest.fixture(scope="module")
def loo_split():
    """300 users, 150 items, leave-one-out: the BPR-trained models' split."""
    data = make_synthetic(num_users=300, num_items=150, mean_length=20, seed=1)
    return make_split(Dataset("synthetic", data), "loo_full", seed=0)


@pytest.fixture(scope="module")
def heldout_split():
    """500 users of strong tastes, 60 of them held out (strong
    generalization): RecVAE's and VASP's split."""
    data = make_synthetic(
        num_users=500,
        num_items=150,
        mean_length=15,
        taste_strength=4.0,
        sequential_probability=0.0,
        seed=3,
    )
    return make_split(
        Dataset("synthetic", data), "strong_generalization", 0, num_heldout_users=60
    )


@pytest.fixture(scope="module")
def heldout_rows(heldout_split):
    """The training users' rows of `heldout_split`."""
    return training_rows(heldout_split.train)


@pytest.fixture(scope="session")
def epoch_losses():
    """`epoch_losses(model, dataset, epochs) -> losses`: fits `model` one
    epoch at a time on `dataset(epoch)`, and returns each epoch's loss."""

    def fit(model, dataset, epochs: int) -> list[float]:
        return [
            model.fit(dataset(epoch), verbose=0).history["loss"][0]
            for epoch in range(epochs)
        ]

    return fit


@pytest.fixture(scope="session")
def fit_bpr(epoch_losses):
    """`fit_bpr(model, train, epochs) -> losses`: compiles `model` with
    Adam(1e-2) and `BPRLoss`, then fits it on `bpr_dataset(train, 256)`."""

    def fit(model, train, epochs: int) -> list[float]:
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=BPRLoss())
        return epoch_losses(
            model, lambda epoch: bpr_dataset(train, 256, seed=0, epoch=epoch), epochs
        )

    return fit


@pytest.fixture(scope="session")
def beats_popularity():
    """`beats_popularity(model, split, protocol, metric, margin=0.0)`:
    asserts that `model`'s `metric` on `split.test` exceeds Popularity's by
    more than `margin`; returns both models' metrics."""

    def check(model, split, protocol: str, metric: str, margin: float = 0.0):
        popularity = Popularity(split.num_items).fit_closed_form(split.train)
        ours = evaluate(model, split.test, protocol)
        theirs = evaluate(popularity, split.test, protocol)
        assert ours[metric] > theirs[metric] + margin, (ours, theirs)
        return ours, theirs

    return check


@pytest.fixture(scope="session")
def check_inner_product_scores():
    """`check_inner_product_scores(model, users, items, rows, item_ids, atol)`:
    asserts that an id model's `score_all` of the users `rows [B]`, and its
    call and `score_items` on `item_ids [B, C]`, are the inner products of
    the final user `[U, d]` and item `[I, d]` embeddings `users`, `items`."""

    def check(model, users, items, rows, item_ids, atol: float) -> None:
        np.testing.assert_allclose(
            model.score_all({"user_id": rows}).numpy(),
            users[rows] @ items.T,
            rtol=1e-4,
            atol=atol,
        )
        expected = np.einsum("bd,bcd->bc", users[rows], items[item_ids])
        batch = {"user_id": rows, "item_ids": item_ids}
        np.testing.assert_allclose(model(batch), expected, rtol=1e-4, atol=atol)
        picked = model.score_items({"user_id": rows}, item_ids)
        np.testing.assert_allclose(picked, expected, rtol=1e-4, atol=atol)

    return check


@pytest.fixture
def reload(tmp_path):
    """`reload(model) -> restored`: `model` saved to a `.keras` file under
    `tmp_path` and loaded back; asserts that the configs are equal."""

    def save_and_load(model):
        path = str(tmp_path / "model.keras")
        model.save(path)
        restored = keras.saving.load_model(path)
        assert restored.get_config() == model.get_config()
        return restored

    return save_and_load
