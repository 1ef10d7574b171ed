"""Models of a subset of the items (VASP's `items_sampling`): the layers that
select and place the columns, the sparse training product of the item-item
kernel, and Neural EASE / VASP built on a subset."""

import json
import warnings

import keras
import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf

from keras_rec.export import export_saved_model, export_tflite, load_serving, testing
from keras_rec.layers.item_subset import (
    PlaceItems,
    SelectItems,
    check_item_ids,
    most_popular_items,
)
from keras_rec.layers.zero_diagonal_dense import ZeroDiagonalDense
from keras_rec.losses.cosine_proximity import CosineProximityLoss
from keras_rec.losses.focal import FocalLoss
from keras_rec.models.base import unscored_score
from keras_rec.models.neural_ease import NeuralEASE
from keras_rec.models.vasp import VASP

SUBSET = [1, 4, 5, 8, 10]
NUM_ITEMS = 12


def _rows(num_rows=32, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((num_rows, NUM_ITEMS)) < 0.3).astype("float32")


def test_select_and_place_round_trip():
    rows = np.arange(2 * NUM_ITEMS, dtype="float32").reshape(2, NUM_ITEMS) + 1
    selected = SelectItems(SUBSET)(rows).numpy()
    np.testing.assert_array_equal(selected, rows[:, SUBSET])
    placed = PlaceItems(SUBSET, NUM_ITEMS)(selected).numpy()
    expected = np.zeros_like(rows)
    expected[:, SUBSET] = rows[:, SUBSET]
    np.testing.assert_array_equal(placed, expected)
    filled = PlaceItems(SUBSET, NUM_ITEMS, fill_value=-2.0)(selected).numpy()
    outside = np.setdiff1d(np.arange(NUM_ITEMS), SUBSET)
    np.testing.assert_array_equal(filled[:, outside], -2.0)
    np.testing.assert_array_equal(filled[:, SUBSET], rows[:, SUBSET])
    layer = PlaceItems(SUBSET, NUM_ITEMS, fill_value=-2.0)
    config = json.loads(json.dumps(layer.get_config()))
    assert PlaceItems.from_config(config).get_config() == layer.get_config()


@pytest.mark.parametrize(
    "item_ids, message",
    [([], "non-empty"), ([1, 12], "outside"), ([-1, 2], "outside"), ([2, 2], "repeat")],
)
def test_bad_item_ids_are_named(item_ids, message):
    with pytest.raises(ValueError, match=message):
        check_item_ids(item_ids, NUM_ITEMS)
    with pytest.raises(ValueError, match=message):
        NeuralEASE(NUM_ITEMS, item_ids=item_ids)


def test_select_items_refuses_float_ids_and_ids_past_its_input():
    with pytest.raises(ValueError, match="integer item ids"):
        SelectItems([1.5, 2])
    with pytest.raises(ValueError, match="holds id 12, but the input has 12 items"):
        SelectItems([3, 12])(np.zeros((2, NUM_ITEMS), np.float32))


def test_most_popular_items():
    # Item counts 3, 1, 3, 0, 2: the top 60% (3 items) are 0, 2 (3 each) and
    # 4 (2); a tie is broken towards the lower id.
    matrix = sp.csr_matrix(
        np.array([[1, 1, 1, 0, 1], [1, 0, 1, 0, 1], [1, 0, 1, 0, 0]], dtype=np.float32)
    )
    assert most_popular_items(matrix, 0.6) == [0, 2, 4]
    assert most_popular_items(matrix, 0.2) == [0]
    assert most_popular_items(matrix, 1.0) == [0, 1, 2, 3, 4]
    for bad in (0.0, 1.5, 0.1):
        with pytest.raises(ValueError, match="fraction"):
            most_popular_items(matrix, bad)


def test_zero_diagonal_dense_sparse_training_product_matches_dense():
    rows = tf.constant(_rows())
    dense = ZeroDiagonalDense(kernel_initializer=keras.initializers.GlorotUniform(1))
    sparse = ZeroDiagonalDense(
        kernel_initializer=keras.initializers.GlorotUniform(1), sparse_inputs=True
    )
    dense.build(rows.shape)
    sparse.build(rows.shape)
    sparse.kernel.assign(dense.kernel)
    gradients = []
    for layer in (dense, sparse):
        with tf.GradientTape() as tape:
            outputs = layer(rows, training=True)
            loss = tf.reduce_sum(tf.sin(outputs))
        gradients.append(tape.gradient(loss, layer.kernel).numpy())
    np.testing.assert_allclose(
        sparse(rows, training=True), dense(rows, training=True), atol=1e-6
    )
    np.testing.assert_allclose(gradients[1], gradients[0], atol=1e-5)
    np.testing.assert_array_equal(np.diag(gradients[1]), 0.0)
    # A tf.SparseTensor takes the sparse product at inference too.
    np.testing.assert_allclose(
        sparse(tf.sparse.from_dense(rows)), dense(rows), atol=1e-6
    )
    assert sparse.get_config()["sparse_inputs"] and not sparse.supports_jit


def test_neural_ease_of_a_subset_scores_the_others_last():
    model = NeuralEASE(NUM_ITEMS, seed=0, item_ids=SUBSET)
    whole = NeuralEASE(len(SUBSET), seed=0)
    assert model.ease.kernel.shape == (len(SUBSET), len(SUBSET))
    whole.ease.kernel.assign(model.ease.kernel)
    rows = _rows(4)
    history = np.array([[1, 2, 4, -1], [0, 3, 5, 8], [10, -1, -1, -1], [6, 7, 9, 11]])
    scores = model.score_all({"item_history": history}).numpy()
    outside = np.setdiff1d(np.arange(NUM_ITEMS), SUBSET)
    # Just above the lowest value, which excluded items get when serving.
    assert (scores[:, outside] == unscored_score(np.float32)).all()
    assert (scores[:, outside] > np.finfo(np.float32).min).all()
    # Inside the subset: the smaller model's scores on the selected columns.
    rows = np.zeros((4, NUM_ITEMS), np.float32)
    for r, items in enumerate(history):
        rows[r, items[items >= 0]] = 1.0
    np.testing.assert_allclose(
        scores[:, SUBSET], whole(rows[:, SUBSET]).numpy(), atol=1e-6
    )
    # The user with no subset item in the history scores zero on the subset.
    np.testing.assert_array_equal(scores[3, SUBSET], 0.0)


def test_neural_ease_of_a_subset_trains_exports_and_round_trips(tmp_path):
    model = NeuralEASE(NUM_ITEMS, seed=0, item_ids=SUBSET, sparse_rows=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.compile(
            optimizer=keras.optimizers.Nadam(1e-2),
            loss=CosineProximityLoss(),
            jit_compile=True,
        )
    assert model.jit_compile is False  # the sparse product has no XLA kernel
    rows = _rows()
    losses = model.fit(rows, rows, epochs=5, batch_size=8, verbose=0).history["loss"]
    assert losses[-1] < losses[0], losses
    config = json.loads(json.dumps(model.get_config()))
    assert config["item_ids"] == SUBSET
    restored = NeuralEASE.from_config(config)
    restored.set_weights(model.get_weights())
    inputs = {"item_history": np.array([[1, 2, 4], [5, 8, -1]])}
    np.testing.assert_array_equal(restored.score_all(inputs), model.score_all(inputs))
    # k within the subset: beyond it the ties at the lowest score are
    # ordered by each runtime's top-k.
    testing.check_saved_model(model, tmp_path, k=3, inputs=inputs, use_cli=False)
    testing.check_tflite(model, tmp_path, k=3, inputs=inputs)


def test_subset_serving_ranks_unscored_items_above_the_seen_ones(tmp_path):
    # A history that holds all but one subset item: past that one, the
    # answers are items outside the subset (unseen), never the seen ones,
    # in the SavedModel and in TFLite alike.
    model = NeuralEASE(NUM_ITEMS, seed=0, item_ids=SUBSET)
    history = np.array([SUBSET[:-1]], np.int64)
    k = 1 + 3
    saved = export_saved_model(model, tmp_path / "1", k=k)
    lite = export_tflite(model, tmp_path / "m.tflite", k=k)
    outside = set(np.setdiff1d(np.arange(NUM_ITEMS), SUBSET).tolist())
    for out in (
        load_serving(saved)(item_history=history),
        testing.run_tflite(lite, "serving_default", {"item_history": history}),
    ):
        ids, scores = out["item_ids"][0], out["scores"][0]
        assert ids[0] == SUBSET[-1]
        assert set(ids[1:].tolist()) <= outside, ids
        np.testing.assert_array_equal(scores[1:], unscored_score(np.float32))


def test_vasp_of_a_subset():
    model = VASP(
        NUM_ITEMS,
        hidden_dim=8,
        latent_dim=4,
        encoder_layers=2,
        decoder_layers=2,
        seed=0,
        item_ids=SUBSET,
        sparse_rows=True,
    )
    assert model.ease.kernel.shape == (len(SUBSET), len(SUBSET))
    assert model.get_layer("deep_output").units == len(SUBSET)
    model.compile(optimizer=keras.optimizers.Nadam(1e-2), loss=FocalLoss())
    rows = _rows()
    losses = model.fit(rows, rows, epochs=4, batch_size=8, verbose=0).history["loss"]
    assert losses[-1] < losses[0], losses
    outside = np.setdiff1d(np.arange(NUM_ITEMS), SUBSET)
    probabilities = model(rows, training=False)["probabilities"].numpy()
    np.testing.assert_array_equal(probabilities[:, outside], 0.0)
    assert (probabilities[:, SUBSET] > 0).all()
    scores = model.score_all({"item_history": np.array([[1, 2, 4]])}).numpy()
    assert (scores[0, outside] == unscored_score(np.float32)).all()
    config = json.loads(json.dumps(model.get_config()))
    assert VASP.from_config(config).get_config() == model.get_config()


def test_configs_build_a_model_of_the_most_popular_items(monkeypatch):
    from keras_rec.configs import autoencoders_recvae_vasp as configs
    from keras_rec.data import Interactions
    from keras_rec.data.splits import Split

    # Item i has i + 1 users: the top half of 8 items is 4-7.
    users = np.concatenate([np.arange(i + 1) for i in range(8)])
    items = np.concatenate([np.full(i + 1, i) for i in range(8)])
    train = Interactions(users, items, 8, 8)
    split = Split(train=train, test=None, protocol="strong_generalization")
    model = configs.neural_ease(1e-3, items_fraction=0.5)(split, 0)
    assert model.item_ids == [4, 5, 6, 7]
    vasp = configs.focal_model(
        VASP, 64, 1e-3, items_fraction=0.5, hidden_dim=4, latent_dim=2
    )(split, 0)
    assert vasp.item_ids == [4, 5, 6, 7]
    assert configs.neural_ease(1e-3)(split, 0).item_ids is None
    # The memory check sizes the subset's kernel, not the catalogue's.
    sizes = []
    monkeypatch.setattr(
        configs, "check_memory", lambda needed, what: sizes.append(needed)
    )
    configs.neural_ease(1e-3, items_fraction=0.5)(split, 0)
    assert sizes == [configs.KERNEL_COPIES * 4 * 4 * 4]


def test_recommend_ranks_outside_items_before_seen_ones():
    # k above the unseen covered items: the rest of the list is the items
    # outside the subset, never the history.
    model = NeuralEASE(NUM_ITEMS, seed=0, item_ids=SUBSET)
    history = np.array([[1, 4, -1]])
    ids, _ = model.recommend({"item_history": history}, k=NUM_ITEMS - 2)
    ids = np.asarray(ids)[0]
    assert sorted(ids[:3]) == [5, 8, 10]
    assert sorted(ids[3:]) == sorted(np.setdiff1d(np.arange(NUM_ITEMS), SUBSET))
    assert not {1, 4} & set(ids.tolist())


def test_place_items_fills_with_minus_infinity():
    placed = PlaceItems([2, 0], 3, fill_value=-np.inf)(
        np.array([[5.0, 7.0]], "float32")
    )
    np.testing.assert_array_equal(placed.numpy(), [[7.0, -np.inf, 5.0]])
    with pytest.raises(ValueError, match="non-negative"):
        SelectItems([3, -1])
