import json

import keras
import numpy as np
import pytest
import scipy.sparse as sp

from keras_rec.data import bpr_dataset, make_split, make_synthetic
from keras_rec.data.datasets import Dataset
from keras_rec.evaluation import evaluate
from keras_rec.export import testing
from keras_rec.losses import BPRLoss
from keras_rec.models import Popularity
from keras_rec.models.graph_base import normalized_adjacency
from keras_rec.models.ngcf import NGCF


@pytest.fixture(scope="module")
def split():
    data = make_synthetic(num_users=300, num_items=150, mean_length=20, seed=1)
    return make_split(Dataset("synthetic", data), "loo_full", seed=0)


@pytest.fixture(scope="module")
def trained(split):
    model = NGCF(
        split.num_users,
        split.num_items,
        16,
        [16, 8],
        node_dropout=0.1,
        message_dropout=0.1,
        seed=0,
        interactions=split.train,
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=BPRLoss())
    losses = [
        model.fit(bpr_dataset(split.train, 256, seed=0, epoch=e), verbose=0).history[
            "loss"
        ][0]
        for e in range(6)
    ]
    return model, losses


def numpy_ngcf(model, matrix) -> tuple[np.ndarray, np.ndarray]:
    """Final embeddings from the paper's formula, densely in NumPy."""
    laplacian = normalized_adjacency(matrix).toarray().astype(np.float64)
    encoder = model.encoder
    layer = np.concatenate(
        [encoder.user_embeddings.numpy(), encoder.item_embeddings.numpy()]
    ).astype(np.float64)
    parts = [layer]
    for propagation in encoder.propagation:
        w1, b1 = propagation.sum_kernel.numpy(), propagation.sum_bias.numpy()
        w2, b2 = propagation.bi_kernel.numpy(), propagation.bi_bias.numpy()
        side = laplacian @ layer
        out = (side + layer) @ w1 + b1 + (side * layer) @ w2 + b2
        layer = np.where(out > 0, out, 0.2 * out)
        parts.append(layer / np.linalg.norm(layer, axis=1, keepdims=True))
    final = np.concatenate(parts, axis=1)
    return final[: matrix.shape[0]], final[matrix.shape[0] :]


def test_loss_goes_down_and_beats_popularity(split, trained):
    model, losses = trained
    assert losses[-1] < 0.8 * losses[0]
    popularity = Popularity(split.num_items).fit_closed_form(split.train)
    ours = evaluate(model, split.test, "loo_full")
    theirs = evaluate(popularity, split.test, "loo_full")
    assert ours["ndcg@20"] > theirs["ndcg@20"], (ours, theirs)


def test_score_all_matches_numpy_forward(split, trained):
    model, _ = trained
    users, items = numpy_ngcf(model, split.train.to_csr())
    assert users.shape[1] == 16 + 16 + 8
    rows = np.array([0, 9, 299])
    np.testing.assert_allclose(
        model.score_all({"user_id": rows}).numpy(),
        users[rows] @ items.T,
        rtol=1e-4,
        atol=1e-5,
    )
    batch = {"user_id": rows, "item_ids": np.array([[1, 2], [3, 4], [5, 149]])}
    expected = np.einsum("bd,bcd->bc", users[rows], items[batch["item_ids"]])
    np.testing.assert_allclose(model(batch), expected, rtol=1e-4, atol=1e-5)


def test_dropout_only_in_training(trained):
    model, _ = trained
    batch = {"user_id": np.array([0, 1]), "item_ids": np.array([[1, 2], [3, 4]])}
    first = model(batch, training=True).numpy()
    second = model(batch, training=True).numpy()
    assert not np.allclose(first, second)
    np.testing.assert_array_equal(model(batch).numpy(), model(batch).numpy())


def test_keras_save_load_gives_same_outputs(trained, tmp_path):
    model, _ = trained
    path = str(tmp_path / "ngcf.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert restored.get_config() == model.get_config()
    inputs = {"user_id": np.array([1, 2]), "item_ids": np.array([[3, 4], [5, 6]])}
    np.testing.assert_allclose(model(inputs), restored(inputs), rtol=1e-6)
    restored.cache_embeddings()
    users = {"user_id": np.arange(10)}
    np.testing.assert_allclose(
        model.score_all(users), restored.score_all(users), rtol=1e-5, atol=1e-6
    )


def test_export_parity(split, trained, tmp_path):
    # The serving path is graph_base's, shared with LightGCN, whose test runs
    # the SavedModel through saved_model_cli; here tf.saved_model.load.
    model, _ = trained
    seen = split.train.to_csr()
    testing.check_saved_model(model, tmp_path, seen_items=seen, use_cli=False)
    testing.check_tflite(model, tmp_path, seen_items=seen)


def test_config_json_round_trip():
    graph = sp.random(7, 9, density=0.3, format="csr", random_state=0)
    model = NGCF(7, 9, 3, (4, 2), 0.2, 0.3, l2=0.5, seed=4, interactions=graph)
    config = json.loads(json.dumps(model.get_config()))
    assert config["layer_sizes"] == [4, 2]
    assert NGCF.from_config(config).get_config() == model.get_config()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"layer_sizes": []}, "layer_sizes"),
        ({"layer_sizes": [4, 0]}, "units"),
        ({"node_dropout": 1.0}, "node_dropout"),
        ({"message_dropout": -0.1}, "message_dropout"),
        ({"l2": -1.0}, "l2"),
        ({"embedding_dim": 0}, "embedding_dim"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NGCF(num_users=3, num_items=3, num_edges=2, **kwargs)
