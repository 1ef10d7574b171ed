import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_rec.data import make_split, make_synthetic
from keras_rec.data.datasets import Dataset
from keras_rec.data.pipelines import user_rows_dataset
from keras_rec.evaluation import evaluate
from keras_rec.export import testing
from keras_rec.layers.sparse_rows_dense import SparseRowsDense
from keras_rec.losses.multinomial import MultinomialLogLikelihood
from keras_rec.models.autoencoder_base import history_to_rows, training_rows
from keras_rec.models.mult_vae import MultDAE, MultVAE
from keras_rec.models.popularity import Popularity

HISTORY = {"item_history": np.array([[-1, 3, 7, 3], [0, 1, 2, 4]])}


@pytest.fixture(scope="module")
def split():
    data = make_synthetic(num_users=500, num_items=120, mean_length=20, seed=3)
    return make_split(
        Dataset("synthetic", data), "strong_generalization", num_heldout_users=60
    )


def _compiled(model, learning_rate=5e-3):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate), loss=MultinomialLogLikelihood()
    )
    return model


def _train(model, split, epochs):
    rows = training_rows(split.train)
    return [
        model.fit(user_rows_dataset(rows, 64, seed=0, epoch=e), verbose=0).history[
            "loss"
        ][0]
        for e in range(epochs)
    ]


@pytest.fixture(scope="module")
def trained(split):
    vae = _compiled(
        MultVAE(
            split.num_items, [64], 16, total_anneal_steps=40, anneal_cap=0.2, seed=0
        )
    )
    dae = _compiled(MultDAE(split.num_items, latent_dim=32, seed=0))
    return {"vae": (vae, _train(vae, split, 10)), "dae": (dae, _train(dae, split, 10))}


@pytest.mark.parametrize("name", ["vae", "dae"])
def test_loss_goes_down_and_ranking_beats_popularity(split, trained, name):
    model, losses = trained[name]
    assert losses[-1] < 0.97 * losses[0], losses
    popularity = Popularity(split.num_items).fit_closed_form(split.train)
    ours = evaluate(model, split.test, "strong_generalization")
    theirs = evaluate(popularity, split.test, "strong_generalization")
    assert ours["ndcg@100"] > theirs["ndcg@100"], (ours, theirs)
    assert ours["recall@20"] > theirs["recall@20"], (ours, theirs)


def test_training_rows_drop_the_held_out_users(split):
    rows = training_rows(split.train)
    assert rows.shape == (split.num_users - 120, split.num_items)
    assert np.all(np.diff(rows.indptr) > 0)


def test_anneal_step_counts_training_batches_and_caps_beta(split, trained):
    model, losses = trained["vae"]
    steps = len(losses) * int(np.ceil(training_rows(split.train).shape[0] / 64))
    assert int(model.anneal_step.numpy()) == steps
    assert float(model.beta()) == pytest.approx(min(0.2, steps / 40))
    fresh = MultVAE(10, [4], 2, total_anneal_steps=100, anneal_cap=0.5)
    fresh.anneal_step.assign(30)
    assert float(fresh.beta()) == pytest.approx(0.3)
    # Evaluation does not advance the schedule.
    rows = np.eye(10, dtype="float32")
    _compiled(fresh).evaluate(rows, rows, verbose=0)
    assert int(fresh.anneal_step.numpy()) == 30


def test_vae_loss_is_the_annealed_negative_elbo_in_numpy():
    model = MultVAE(6, [5], 3, total_anneal_steps=10, anneal_cap=0.9, seed=1)
    _compiled(model)
    model.anneal_step.assign(4)
    x = np.array([[1, 0, 1, 1, 0, 0], [0, 1, 0, 0, 0, 1]], "float32")
    outputs = model(x, training=False)
    loss = model.compute_loss(x, x, outputs, training=False)

    weights = {w.path: w.numpy().astype(np.float64) for w in model.weights}
    h = x / np.linalg.norm(x, axis=1, keepdims=True)
    h = np.tanh(h @ weights["encoder_0/kernel"] + weights["encoder_0/bias"])
    moments = h @ weights["posterior/kernel"] + weights["posterior/bias"]
    mu, log_var = moments[:, :3], moments[:, 3:]
    h = np.tanh(mu @ weights["decoder_0/kernel"] + weights["decoder_0/bias"])
    logits = h @ weights["logits/kernel"] + weights["logits/bias"]
    log_softmax = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    nll = -(x * log_softmax).sum(1).mean()
    kl = (-0.5 * (1 + log_var - mu**2 - np.exp(log_var)).sum(1)).mean()
    np.testing.assert_allclose(outputs["logits"], logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(loss), nll + 0.4 * kl, rtol=1e-5)


def test_dae_forward_is_tanh_layers_then_logits_in_numpy():
    model = MultDAE(6, latent_dim=3, hidden_dims=[5], seed=4)
    x = np.array([[1, 0, 1, 1, 0, 0], [0, 1, 0, 0, 0, 1]], "float32")
    dense = [
        layer for layer in model.layers if getattr(layer, "kernel", None) is not None
    ]
    assert [int(layer.kernel.shape[1]) for layer in dense] == [5, 3, 5, 6]
    h = x.astype(np.float64) / np.linalg.norm(x, axis=1, keepdims=True)
    for index, layer in enumerate(dense):
        h = h @ layer.kernel.numpy() + layer.bias.numpy()
        if index < len(dense) - 1:
            h = np.tanh(h)
    np.testing.assert_allclose(model(x, training=False), h, rtol=1e-5, atol=1e-6)
    # Training applies the input dropout: the output differs.
    assert not np.allclose(model(x, training=True), h, atol=1e-6)


def test_dae_loss_adds_the_reference_weight_decay():
    model = _compiled(MultDAE(6, latent_dim=3, l2=0.5, seed=2))
    x = np.array([[1, 0, 1, 1, 0, 0]], "float32")
    outputs = model(x, training=False)
    loss = float(model.compute_loss(x, x, outputs, training=False))
    nll = float(MultinomialLogLikelihood()(x, outputs))
    decay = sum(
        0.5 * np.sum(w.numpy().astype(np.float64) ** 2)
        for w in model.weights
        if w.path.endswith("kernel")
    )
    assert loss == pytest.approx(nll + decay, rel=1e-5)


@pytest.mark.parametrize("name", ["vae", "dae"])
def test_score_all_is_the_network_on_the_multi_hot_history(trained, name):
    model, _ = trained[name]
    rows = history_to_rows(HISTORY["item_history"], model.num_items).numpy()
    assert rows.sum() == 6 and rows[0, 3] == 1 and rows[1, 4] == 1
    outputs = model(rows, training=False)
    logits = outputs["logits"] if name == "vae" else outputs
    np.testing.assert_allclose(model.score_all(HISTORY), logits, rtol=1e-6)
    # Inference is deterministic (no dropout, z = mu); training is not
    # (input dropout, and the VAE samples z).
    np.testing.assert_array_equal(model.score_all(HISTORY), model.score_all(HISTORY))
    first, second = (model(rows, training=True) for _ in range(2))
    if name == "vae":
        first, second = first["logits"], second["logits"]
    assert not np.allclose(first, second)


@pytest.mark.parametrize("name", ["vae", "dae"])
def test_keras_save_load_keeps_outputs_and_anneal_step(trained, name, tmp_path):
    model, _ = trained[name]
    path = str(tmp_path / f"{name}.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(
        restored.score_all(HISTORY), model.score_all(HISTORY), rtol=1e-6
    )
    assert restored.get_config() == model.get_config()
    if name == "vae":
        assert int(restored.anneal_step.numpy()) == int(model.anneal_step.numpy())
        assert float(restored.beta()) == float(model.beta())


@pytest.mark.parametrize("cls", [MultVAE, MultDAE])
def test_sparse_rows_trains_the_same_model(split, cls):
    # The first layer on the rows' nonzeros is the same function: one epoch
    # from the same weights ends at the same weights (summation order aside).
    models = [
        cls(split.num_items, latent_dim=8, seed=1, sparse_rows=sparse)
        for sparse in (False, True)
    ]
    assert isinstance(models[1].layers[3], SparseRowsDense)
    assert not isinstance(models[0].layers[3], SparseRowsDense)
    losses = [_train(_compiled(m), split, 1)[0] for m in models]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
    for mine, theirs in zip(models[1].weights, models[0].weights, strict=True):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), atol=2e-5)


def test_configs_turn_sparse_rows_on_for_sparse_data_only(split, monkeypatch):
    from keras_rec.configs import autoencoders

    # The synthetic split's rows are far denser than 0.3%.
    assert not autoencoders.sparse_rows(split)
    assert not autoencoders.mult_dae()(split, 0).sparse_rows
    monkeypatch.setattr(autoencoders, "SPARSE_ROWS_DENSITY", 1.0)
    assert autoencoders.mult_vae()(split, 0).sparse_rows
    assert autoencoders.mult_dae()(split, 0).sparse_rows
    # Where a GPU is visible, the dense product (and XLA) is used instead.
    real = tf.config.list_physical_devices
    monkeypatch.setattr(
        tf.config,
        "list_physical_devices",
        lambda kind=None: ["gpu:0"] if kind == "GPU" else real(kind),
    )
    assert not autoencoders.sparse_rows(split)
    assert not autoencoders.mult_vae()(split, 0).sparse_rows


@pytest.mark.parametrize("cls", [MultVAE, MultDAE])
def test_config_json_round_trip(cls):
    model = cls(num_items=9, latent_dim=3, hidden_dims=[5, 4], seed=4, sparse_rows=True)
    clone = cls.from_config(json.loads(json.dumps(model.get_config())))
    assert clone.get_config() == model.get_config()


@pytest.mark.parametrize("cls", [MultVAE, MultDAE])
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_items": 0}, "num_items"),
        ({"num_items": 5, "latent_dim": 0}, "latent_dim"),
        ({"num_items": 5, "hidden_dims": [4, -1]}, "hidden_dims"),
        ({"num_items": 5, "dropout_rate": 1.0}, "dropout_rate"),
        ({"num_items": 5, "l2": -1.0}, "l2"),
    ],
)
def test_invalid_arguments(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)


def test_vae_exports_match_the_model(trained, tmp_path):
    model, _ = trained["vae"]
    testing.check_saved_model(model, tmp_path, use_cli=True)
    testing.check_tflite(model, tmp_path)


def test_dae_exports_match_the_model(trained, tmp_path):
    model, _ = trained["dae"]
    testing.check_saved_model(model, tmp_path, use_cli=False)
    testing.check_tflite(model, tmp_path)
