"""Eager scoring calls refuse ids the model cannot score (`check_inputs`)."""

import numpy as np
import pytest
import tensorflow as tf

from keras_rec.models import BPRMF, EASE, MultVAE, Popularity, SASRec
from keras_rec.models.ncf import GMF

NUM_USERS, NUM_ITEMS = 5, 6


def _user_models():
    return [
        BPRMF(NUM_USERS, NUM_ITEMS, 3, seed=0),
        GMF(NUM_USERS, NUM_ITEMS, 3, seed=0),
    ]


def _history_models():
    return [
        MultVAE(NUM_ITEMS, hidden_dims=[4], latent_dim=2, seed=0),
        EASE(NUM_ITEMS),
        Popularity(NUM_ITEMS),
        SASRec(NUM_ITEMS, maxlen=4, seed=0),
    ]


@pytest.mark.parametrize("model", _user_models(), ids=lambda m: type(m).__name__)
@pytest.mark.parametrize(
    "user_id, message",
    [
        ([-1], r"in \[0, num_users=5\).*e\.g\. -1"),  # was read as the last user
        ([5], r"in \[0, num_users=5\)"),
        ([1.7], "integer ids"),  # was truncated to user 1
        ([[1]], "rank 1"),
    ],
)
def test_user_id_models_refuse_bad_ids(model, user_id, message):
    with pytest.raises(ValueError, match=message):
        model.score_all({"user_id": np.array(user_id)})
    with pytest.raises(ValueError, match=message):
        model.recommend({"user_id": np.array(user_id)}, k=2)


@pytest.mark.parametrize("model", _user_models(), ids=lambda m: type(m).__name__)
def test_score_items_refuses_bad_item_ids(model):
    users = tf.constant([0], tf.int64)
    with pytest.raises(ValueError, match=r"`item_ids` ids must be in \[0, num_items"):
        model.score_items({"user_id": users}, tf.constant([[3, -1]], tf.int64))
    scores = model.score_items({"user_id": users}, tf.constant([[3, 5]], tf.int64))
    assert scores.shape == (1, 2)


@pytest.mark.parametrize("model", _history_models(), ids=lambda m: type(m).__name__)
@pytest.mark.parametrize(
    "history, message",
    [
        ([[1, 2, NUM_ITEMS]], r"in \[-1, num_items=6\)"),  # was read as padding
        ([[1, -2]], r"in \[-1, num_items=6\)"),
        ([[1.9, 2.2]], "integer ids"),
        ([1, 2], "rank 2"),
    ],
)
def test_history_models_refuse_bad_ids(model, history, message):
    with pytest.raises(ValueError, match=message):
        model.score_all({"item_history": np.array(history)})


def test_valid_inputs_and_exclude_are_checked_too():
    model = Popularity(NUM_ITEMS)
    history = {"item_history": np.array([[1, 2, -1]])}
    assert model.score_all(history).shape == (1, NUM_ITEMS)
    with pytest.raises(ValueError, match="`exclude` ids"):
        model.recommend(history, k=2, exclude=tf.constant([[NUM_ITEMS]], tf.int64))
    with pytest.raises(ValueError, match="scores from `item_history`"):
        model.score_all({"user_id": np.array([0])})


def test_nan_hyperparameters_are_refused():
    with pytest.raises(ValueError, match="`l2` must be positive"):
        EASE(NUM_ITEMS, l2=float("nan"))


@pytest.mark.parametrize("model", _history_models(), ids=lambda m: type(m).__name__)
def test_a_history_with_no_item_is_refused(model):
    # Was scored as if the user had no history (made-up recommendations).
    with pytest.raises(ValueError, match="rows with no item.*e.g. row 1"):
        model.score_all({"item_history": np.array([[1, 2], [-1, -1]])})
    with pytest.raises(ValueError, match="rows with no item"):
        model.recommend({"item_history": np.zeros((1, 0), np.int64)}, k=2)


def test_sasrec_refuses_a_history_ending_in_padding():
    # SASRec reads the last slot: a right-padded row gave all-zero scores.
    model = SASRec(NUM_ITEMS, maxlen=4, seed=0)
    with pytest.raises(ValueError, match="end with their most recent item.*row 0"):
        model.score_all({"item_history": np.array([[3, 5, -1, -1]])})
    with pytest.raises(ValueError, match="Pad on the left"):
        model.score_items(
            {"item_history": np.array([[3, -1]])}, np.array([[1, 2]], np.int64)
        )
    left = model.score_all({"item_history": np.array([[-1, -1, 3, 5]])}).numpy()
    assert np.abs(left).max() > 0
    # Other history models read the history as a set: padding anywhere.
    scores = MultVAE(NUM_ITEMS, hidden_dims=[4], latent_dim=2, seed=0).score_all(
        {"item_history": np.array([[3, 5, -1, -1]])}
    )
    assert scores.shape == (1, NUM_ITEMS)


@pytest.mark.parametrize(
    "model", [*_user_models(), Popularity(NUM_ITEMS)], ids=lambda m: type(m).__name__
)
def test_batch_sizes_must_agree(model):
    key = model.input_kind
    query = {key: np.array([0, 1]) if key == "user_id" else np.array([[1], [2]])}
    with pytest.raises(ValueError, match="`item_ids` must have one row per request"):
        model.score_items(query, np.array([[1, 2]], np.int64))
    # One `exclude` row for two users was broadcast to both.
    with pytest.raises(ValueError, match="`exclude` must have one row per request"):
        model.recommend(query, k=2, exclude=np.array([[3]], np.int64))
    ids, _ = model.recommend(query, k=2, exclude=np.array([[3], [4]], np.int64))
    assert not np.any(ids.numpy()[0] == 3) and not np.any(ids.numpy()[1] == 4)


@pytest.mark.parametrize("k", [0, -1, NUM_ITEMS + 1, 2.5, True])
def test_recommend_refuses_a_bad_k(k):
    model = BPRMF(NUM_USERS, NUM_ITEMS, 3, seed=0)
    with pytest.raises(ValueError, match="`k` must"):
        model.recommend({"user_id": np.array([0])}, k=k)
