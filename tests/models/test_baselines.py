import json

import keras
import numpy as np
import pytest

from keras_rec.models import BPRMF, Popularity


@pytest.fixture(scope="module")
def trained(loo_split, fit_bpr):
    model = BPRMF(loo_split.num_users, loo_split.num_items, 16, l2=1e-4, seed=0)
    return model, fit_bpr(model, loo_split.train, 12)


def test_bpr_mf_loss_goes_down_and_beats_popularity(
    loo_split, trained, beats_popularity
):
    model, losses = trained
    assert losses[-1] < 0.7 * losses[0]
    beats_popularity(model, loo_split, "loo_full", "ndcg@20")


def test_bpr_mf_score_all_matches_numpy(trained):
    model, _ = trained
    users = np.array([0, 5, 7])
    p = model.user_embedding.embeddings.numpy()
    q = model.item_embedding.embeddings.numpy()
    np.testing.assert_allclose(
        model.score_all({"user_id": users}).numpy(),
        p[users] @ q.T,
        rtol=1e-5,
        atol=1e-6,  # scores near 0: the summation order's rounding
    )


def test_bpr_mf_keras_save_load_gives_same_outputs(trained, reload):
    model, _ = trained
    restored = reload(model)
    inputs = {"user_id": np.array([1, 2]), "item_ids": np.array([[3, 4], [5, 6]])}
    np.testing.assert_allclose(model(inputs), restored(inputs), rtol=1e-6)


def test_bpr_mf_config_json_round_trip():
    model = BPRMF(num_users=7, num_items=9, embedding_dim=3, l2=0.5, seed=4)
    config = json.loads(json.dumps(model.get_config()))
    clone = BPRMF.from_config(config)
    assert clone.get_config() == model.get_config()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_users": 0, "num_items": 3}, "num_users"),
        ({"num_users": 3, "num_items": -1}, "num_items"),
        ({"num_users": 3, "num_items": 3, "embedding_dim": 0}, "embedding_dim"),
    ],
)
def test_bpr_mf_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BPRMF(**kwargs)


def test_popularity_scores_are_log_counts_and_survive_saving(loo_split, tmp_path):
    model = Popularity(loo_split.num_items).fit_closed_form(loo_split.train)
    counts = np.bincount(loo_split.train.item_ids, minlength=loo_split.num_items)
    scores = model.score_all({"item_history": np.array([[0, -1], [1, 2]])}).numpy()
    np.testing.assert_allclose(scores[0], np.log1p(counts), rtol=1e-6)
    np.testing.assert_allclose(scores[1], np.log1p(counts), rtol=1e-6)
    path = str(tmp_path / "pop.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(
        restored.score_all({"item_history": np.array([[0]])}).numpy()[0],
        np.log1p(counts),
        rtol=1e-6,
    )


def test_popularity_refuses_items_outside_its_vocabulary(loo_split):
    model = Popularity(loo_split.num_items - 1)
    with pytest.raises(ValueError, match=r"outside the model's .* items"):
        model.fit_closed_form(loo_split.train)


def test_recommend_excludes_history(loo_split):
    model = Popularity(loo_split.num_items).fit_closed_form(loo_split.train)
    top_item = int(np.argmax(np.bincount(loo_split.train.item_ids)))
    ids, _ = model.recommend({"item_history": np.array([[top_item, -1]])}, k=5)
    assert top_item not in ids.numpy()[0]
