import json
import math

import keras
import numpy as np
import pytest

from keras_rec.data import user_rows_dataset
from keras_rec.export import testing
from keras_rec.models.recvae import (
    DECODER_PHASE,
    ENCODER_PHASE,
    RecVAE,
    alternating_rows_dataset,
)

BATCH = 64


def small_model(split, seed=0):
    model = RecVAE(
        split.num_items, hidden_dim=48, latent_dim=12, num_layers=2, seed=seed
    )
    model.compile(optimizer=keras.optimizers.Adam(5e-3))
    return model


@pytest.fixture(scope="module")
def trained(heldout_split, heldout_rows, epoch_losses):
    model = small_model(heldout_split)
    return model, epoch_losses(
        model, lambda epoch: alternating_rows_dataset(heldout_rows, BATCH, 0, epoch), 6
    )


def weights(layer):
    return [w.numpy().copy() for w in layer.weights]


def same(first, second):
    return all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


def test_recvae_loss_goes_down_and_beats_popularity(
    heldout_split, trained, beats_popularity
):
    model, losses = trained
    assert losses[-1] < losses[0], losses
    ours, theirs = beats_popularity(
        model, heldout_split, "strong_generalization", "ndcg@100", margin=0.01
    )
    assert ours["recall@20"] > theirs["recall@20"], (ours, theirs)


def test_alternating_rows_dataset_marks_three_encoder_passes_then_one(heldout_rows):
    steps = math.ceil(heldout_rows.shape[0] / BATCH)
    batches = list(alternating_rows_dataset(heldout_rows, BATCH, seed=1, epoch=2))
    assert len(batches) == 4 * steps
    phases = [int(b["phase"][0]) for b in batches]
    assert phases == [ENCODER_PHASE] * 3 * steps + [DECODER_PHASE] * steps
    for start in range(0, 4 * steps, steps):  # each pass is every row once
        total = sum(b["rows"].numpy().sum(0) for b in batches[start : start + steps])
        np.testing.assert_array_equal(total, np.asarray(heldout_rows.sum(0))[0])


def test_an_entry_passes_its_phase_lengths_to_the_data(heldout_split):
    # The recorded passes per epoch are the ones trained, and are options
    # of the entry, not of the model.
    from keras_rec.configs.autoencoders_recvae_vasp import _recvae_entry

    entry = _recvae_entry("synthetic", 1, encoder_epochs=2, decoder_epochs=2)
    assert entry.hyperparameters["encoder_epochs"] == 2
    batches = list(entry.make_dataset(heldout_split, 0, 0))
    phases = [int(b["phase"][0]) for b in batches]
    steps = phases.count(ENCODER_PHASE) // 2  # batches per pass
    assert steps > 0
    assert phases == [ENCODER_PHASE] * 2 * steps + [DECODER_PHASE] * 2 * steps


def test_recvae_old_encoder_is_frozen_and_refreshed_only_between_phases(
    heldout_split, heldout_rows
):
    model = small_model(heldout_split, seed=1)
    trainable = {id(w) for w in model.trainable_weights}
    assert not trainable & {id(w) for w in model.prior.old_encoder.weights}
    steps = math.ceil(heldout_rows.shape[0] / BATCH)
    dataset = alternating_rows_dataset(heldout_rows, BATCH, seed=0, epoch=0)
    old_before = weights(model.prior.old_encoder)
    decoder_before = weights(model.decoder)
    model.fit(dataset.take(3 * steps), verbose=0)  # the encoder phase
    encoder_after = weights(model.encoder)
    assert same(weights(model.prior.old_encoder), old_before)
    assert same(weights(model.decoder), decoder_before)
    assert int(model.prior.refreshes.numpy()) == 0
    model.fit(dataset.skip(3 * steps), verbose=0)  # the decoder phase
    assert int(model.prior.refreshes.numpy()) == 1
    assert same(weights(model.prior.old_encoder), encoder_after)
    assert same(weights(model.encoder), encoder_after)
    assert not same(weights(model.decoder), decoder_before)
    # A second epoch refreshes once more, with that epoch's encoder.
    model.fit(alternating_rows_dataset(heldout_rows, BATCH, seed=0, epoch=1), verbose=0)
    assert int(model.prior.refreshes.numpy()) == 2
    assert int(model.optimizer.iterations.numpy()) == 6 * steps
    assert int(model.decoder_optimizer.iterations.numpy()) == 2 * steps


def test_recvae_negative_elbo_matches_numpy(trained, heldout_rows):
    model, _ = trained
    x = heldout_rows[:5].toarray().astype(np.float32)
    rng = np.random.default_rng(0)
    mu, log_var = (t.numpy() for t in model.encoder(x))
    z = (mu + np.exp(0.5 * log_var) * rng.normal(size=mu.shape)).astype(np.float32)
    logits = model.decoder(z).numpy()
    loss, kl = (t.numpy() for t in model.negative_elbo(x, logits, z, mu, log_var))

    def log_normal(value, mean, log_variance):
        return -0.5 * (
            log_variance
            + np.log(2 * np.pi)
            + (value - mean) ** 2 / np.exp(log_variance)
        )

    old_mu, old_log_var = (t.numpy() for t in model.prior.old_encoder(x))
    components = np.stack(
        [
            np.log(3 / 20) + log_normal(z, 0.0, 0.0),
            np.log(3 / 4) + log_normal(z, old_mu, old_log_var),
            np.log(1 / 10) + log_normal(z, 0.0, 10.0),
        ]
    )
    top = components.max(0)
    log_prior = top + np.log(np.exp(components - top).sum(0))
    expected_kl = (log_normal(z, mu, log_var) - log_prior).sum(-1)
    shifted = logits - logits.max(-1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    expected = -(x * log_softmax).sum(-1) + 0.005 * x.sum(-1) * expected_kl
    np.testing.assert_allclose(kl, expected_kl, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(loss, expected, rtol=1e-4, atol=1e-3)


def test_recvae_save_load_keeps_outputs_and_training_state(
    trained, heldout_rows, reload
):
    model, _ = trained
    restored = reload(model)
    inputs = {"item_history": np.array([[1, 2, 3], [4, 5, -1]])}
    np.testing.assert_allclose(
        restored.score_all(inputs), model.score_all(inputs), rtol=1e-6
    )
    assert same(weights(restored.prior), weights(model.prior))
    assert int(restored.prior.refreshes.numpy()) == 6
    assert int(restored.prior.last_phase.numpy()) == DECODER_PHASE
    for optimizer in ("optimizer", "decoder_optimizer"):
        restored_state = getattr(restored, optimizer).variables
        state = getattr(model, optimizer).variables
        assert same([v.numpy() for v in restored_state], [v.numpy() for v in state])
        assert len(state) > 2  # iterations, learning rate and the Adam slots


def test_recvae_export_parity(trained, tmp_path):
    model, _ = trained
    testing.check_saved_model(model, tmp_path, use_cli=False)
    testing.check_tflite(model, tmp_path)


def test_recvae_l2_adds_its_gradient_to_the_phase_it_updates(
    heldout_split, heldout_rows
):
    """With SGD, one step with `l2` moves each updated kernel `W` by exactly
    `-lr * 2 * l2 * W` more than the same step without it."""
    lr, l2 = 0.1, 0.05
    models = []
    for penalty in (0.0, l2):
        model = RecVAE(
            heldout_split.num_items,
            hidden_dim=16,
            latent_dim=4,
            num_layers=2,
            seed=3,
            l2=penalty,
        )
        model.compile(optimizer=keras.optimizers.SGD(lr))
        models.append(model)
    models[1].set_weights(models[0].get_weights())
    steps = math.ceil(heldout_rows.shape[0] / BATCH)
    dataset = alternating_rows_dataset(heldout_rows, BATCH, seed=0, epoch=0)
    for part, layer in (
        (dataset.take(1), models[0].encoder),
        (dataset.skip(3 * steps), models[0].decoder),
    ):
        updated = {v.path for v in layer.trainable_variables if v.name == "kernel"}
        before = {v.path: v.numpy().copy() for v in models[0].trainable_variables}
        after = []
        for model in models:
            model.fit(part.take(1), verbose=0)
            after.append({v.path: v.numpy() for v in model.trainable_variables})
        for path, start in before.items():
            extra = after[1][path] - after[0][path]
            if path in updated:
                np.testing.assert_allclose(extra, -lr * 2 * l2 * start, atol=1e-6)
                assert np.abs(extra).max() > 1e-4, path
            else:
                np.testing.assert_allclose(extra, 0.0, atol=1e-6, err_msg=path)
        models[1].set_weights(models[0].get_weights())


def test_recvae_needs_phase_marked_batches(heldout_split, heldout_rows):
    model = small_model(heldout_split)
    with pytest.raises(ValueError, match="alternating_rows_dataset"):
        model.fit(user_rows_dataset(heldout_rows, BATCH), verbose=0)


def test_recvae_config_json_round_trip():
    model = RecVAE(
        12, hidden_dim=5, latent_dim=3, num_layers=2, gamma=None, beta=0.3, l2=1e-4
    )
    config = json.loads(json.dumps(model.get_config()))
    assert RecVAE.from_config(config).get_config() == model.get_config()
    assert RecVAE(12, hidden_dim=5, latent_dim=3).get_config()["l2"] == 0.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_items": 0}, "num_items"),
        ({"num_items": 5, "gamma": None}, "gamma"),
        ({"num_items": 5, "beta": 0.2}, "beta"),
        ({"num_items": 5, "mixture_weights": (0.5, 0.5)}, "mixture_weights"),
        ({"num_items": 5, "mixture_weights": (0.5, 0.5, 0.5)}, "sum to 1"),
        ({"num_items": 5, "dropout_rate": 1.5}, "dropout_rate"),
        ({"num_items": 5, "l2": -1e-5}, "l2"),
        ({"num_items": 5, "l2": float("nan")}, "l2"),
    ],
)
def test_recvae_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RecVAE(**kwargs)
