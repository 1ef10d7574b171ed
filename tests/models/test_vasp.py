import json

import keras
import numpy as np
import pytest
import scipy.sparse as sp

from keras_rec.export import testing
from keras_rec.losses.cosine_proximity import CosineProximityLoss
from keras_rec.losses.focal import FocalLoss
from keras_rec.models.flvae import FLVAE
from keras_rec.models.neural_ease import NeuralEASE
from keras_rec.models.vasp import VASP, split_brain_dataset, split_brain_halves

BATCH = 128
ARCHITECTURE = {
    "hidden_dim": 48,
    "latent_dim": 12,
    "encoder_layers": 3,
    "decoder_layers": 2,
}


@pytest.fixture(scope="module")
def fit(heldout_rows, epoch_losses):
    """`fit(model, epochs) -> losses` on the split-brain pairs of `heldout_rows`."""
    return lambda model, epochs: epoch_losses(
        model, lambda epoch: split_brain_dataset(heldout_rows, BATCH, 0, epoch), epochs
    )


@pytest.fixture(scope="module")
def trained(heldout_split, fit):
    model = VASP(heldout_split.num_items, **ARCHITECTURE, seed=0)
    model.compile(optimizer=keras.optimizers.Nadam(3e-3), loss=FocalLoss())
    return model, fit(model, 12)


def test_split_brain_halves_are_disjoint_and_cover_each_row():
    rng = np.random.default_rng(0)
    matrix = sp.random(30, 40, density=0.3, format="csr", random_state=1)
    matrix.data[:] = 1.0
    first, second = split_brain_halves(matrix, rng)
    assert first.multiply(second).nnz == 0
    np.testing.assert_array_equal((first + second).toarray(), matrix.toarray())
    lengths = np.diff(matrix.indptr)
    np.testing.assert_array_equal(np.diff(first.indptr), lengths // 2)
    np.testing.assert_array_equal(np.diff(second.indptr), lengths - lengths // 2)
    again, _ = split_brain_halves(matrix, rng)  # a fresh draw splits differently
    assert (again != first).nnz > 0


def test_split_brain_dataset_pairs_each_half_with_the_other(heldout_rows):
    batches = list(split_brain_dataset(heldout_rows, BATCH, seed=0, epoch=4))
    inputs = np.concatenate([x.numpy() for x, _ in batches])
    targets = np.concatenate([y.numpy() for _, y in batches])
    assert len(inputs) == 2 * heldout_rows.shape[0]
    assert not np.any(inputs * targets)  # input and target are disjoint
    rows_of_pairs = {
        tuple(np.flatnonzero(x + y)) for x, y in zip(inputs, targets, strict=True)
    }
    dense = heldout_rows.toarray()
    assert rows_of_pairs == {tuple(np.flatnonzero(r)) for r in dense}
    np.testing.assert_array_equal(inputs.sum(0), dense.sum(0))
    np.testing.assert_array_equal(targets.sum(0), dense.sum(0))


def test_vasp_loss_goes_down_and_beats_popularity(
    heldout_split, trained, beats_popularity
):
    model, losses = trained
    assert losses[-1] < 0.8 * losses[0], losses
    beats_popularity(
        model, heldout_split, "strong_generalization", "ndcg@100", margin=0.01
    )


def _numpy_residual_dense(block, x):
    outputs, hidden = [], x
    for dense, norm in zip(block.dense_layers, block.norm_layers, strict=True):
        kernel, bias = (w.numpy() for w in dense.weights)
        pre = hidden @ kernel + bias + sum(outputs, np.zeros_like(bias))
        activated = pre / (1.0 + np.exp(-pre))
        centred = activated - activated.mean(-1, keepdims=True)
        scale = np.sqrt(activated.var(-1, keepdims=True) + norm.epsilon)
        hidden = centred / scale * norm.gamma.numpy() + norm.beta.numpy()
        outputs.append(hidden)
    return hidden


def _numpy_dense(layer, x):
    kernel, bias = (w.numpy() for w in layer.weights)
    return x @ kernel + bias


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def test_vasp_scores_and_loss_match_numpy(trained, heldout_rows):
    model, _ = trained
    x = heldout_rows[:6].toarray().astype(np.float32)
    y = heldout_rows[6:12].toarray().astype(np.float32)
    hidden = _numpy_residual_dense(model.get_layer("encoder"), x)
    mu = _numpy_dense(model.get_layer("mean"), hidden)
    log_var = _numpy_dense(model.get_layer("log_var"), hidden)
    deep = _sigmoid(
        _numpy_dense(
            model.get_layer("deep_output"),
            _numpy_residual_dense(model.get_layer("decoder"), mu),
        )
    )
    latent = _sigmoid(_numpy_dense(model.get_layer("latent_output"), mu))
    ease = model.ease.kernel.numpy().copy()
    np.fill_diagonal(ease, 0.0)
    expected = deep * latent * _sigmoid(x @ ease)
    scores = model.score_rows(x).numpy()
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-6)
    # The loss: alpha-balanced focal loss summed over items, plus the KL
    # averaged over users and latent dimensions.
    p = np.clip(scores, 1e-7, 1 - 1e-7)
    p_t = np.where(y > 0, p, 1 - p)
    alpha_t = np.where(y > 0, 0.25, 0.75)
    focal = (alpha_t * (1 - p_t) ** 2 * -np.log(p_t)).sum(-1).mean()
    kl = -0.5 * np.mean(1 + log_var - mu**2 - np.exp(log_var))
    loss = model.compute_loss(x, y, model(x, training=False), training=False)
    np.testing.assert_allclose(float(loss), focal + model.beta * kl, rtol=1e-3)
    beta = model.beta
    try:  # the KL's weight counts
        model.beta = 0.3
        loss = model.compute_loss(x, y, model(x, training=False), training=False)
    finally:
        model.beta = beta
    np.testing.assert_allclose(float(loss), focal + 0.3 * kl, rtol=1e-3)


def test_vasp_save_load_gives_same_outputs(trained, reload):
    model, _ = trained
    restored = reload(model)
    inputs = {"item_history": np.array([[1, 2, 3], [4, 5, -1]])}
    np.testing.assert_allclose(
        restored.score_all(inputs), model.score_all(inputs), rtol=1e-6
    )


def test_vasp_export_parity(trained, tmp_path):
    model, _ = trained
    testing.check_saved_model(model, tmp_path, use_cli=False)
    testing.check_tflite(model, tmp_path)


@pytest.mark.parametrize("name", ["flvae", "neural_ease"])
def test_vasp_parts_train_save_and_convert(name, heldout_split, fit, reload, tmp_path):
    if name == "flvae":
        model = FLVAE(heldout_split.num_items, **ARCHITECTURE, seed=0)
        model.compile(optimizer=keras.optimizers.Nadam(3e-3), loss=FocalLoss())
    else:
        model = NeuralEASE(heldout_split.num_items, seed=0)
        model.compile(
            optimizer=keras.optimizers.Nadam(1e-2), loss=CosineProximityLoss()
        )
    losses = fit(model, 3)
    assert losses[-1] < losses[0], losses
    restored = reload(model)
    inputs = {"item_history": np.array([[1, 2, 3], [4, 5, -1]])}
    np.testing.assert_allclose(restored.score_all(inputs), model.score_all(inputs))
    testing.check_saved_model(model, tmp_path, use_cli=False)
    testing.check_tflite(model, tmp_path)


def test_neural_ease_item_never_predicts_itself():
    model = NeuralEASE(num_items=6, seed=0)
    scores = model.score_all({"item_history": np.arange(6)[:, None]}).numpy()
    np.testing.assert_array_equal(np.diag(scores), np.zeros(6))
    assert np.count_nonzero(scores) == 30


@pytest.mark.parametrize("cls", [VASP, FLVAE])
def test_deep_models_config_json_round_trip(cls):
    model = cls(num_items=9, hidden_dim=4, latent_dim=2, encoder_layers=2, beta=0.5)
    config = json.loads(json.dumps(model.get_config()))
    assert cls.from_config(config).get_config() == model.get_config()


def test_neural_ease_config_json_round_trip():
    model = NeuralEASE(num_items=9, l2=0.1, seed=2)
    config = json.loads(json.dumps(model.get_config()))
    assert NeuralEASE.from_config(config).get_config() == model.get_config()


@pytest.mark.parametrize(
    "cls, kwargs, message",
    [
        (VASP, {"num_items": 0}, "num_items"),
        (VASP, {"num_items": 5, "hidden_dim": 0}, "hidden_dim"),
        (VASP, {"num_items": 5, "latent_dim": 2.5}, "latent_dim"),
        (VASP, {"num_items": 5, "beta": -1.0}, "beta"),
        (FLVAE, {"num_items": 5, "encoder_layers": 0}, "encoder_layers"),
        (NeuralEASE, {"num_items": 0}, "num_items"),
        (NeuralEASE, {"num_items": 5, "l2": -1.0}, "l2"),
    ],
)
def test_vasp_family_invalid_arguments(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)


def test_item_kernel_memory_is_checked_before_building(monkeypatch):
    from types import SimpleNamespace

    from keras_rec.configs import autoencoders_recvae_vasp as vasp_configs
    from keras_rec.models import ease as ease_module
    from keras_rec.models.ease import InsufficientMemoryError

    split = SimpleNamespace(num_items=40_981)
    # Gowalla's items: 13 float32 copies of the kernel at the peak, 81.3 GiB.
    monkeypatch.setattr(ease_module, "available_memory", lambda: 24 * 2**30)
    monkeypatch.setattr(vasp_configs.tf.config, "list_physical_devices", lambda _: [])
    with pytest.raises(InsufficientMemoryError, match="40981 x 40981.*81.3 GiB"):
        vasp_configs.neural_ease(1e-3)(split, 0)
    # The top-50% entries' 20,490 items: 20.3 GiB, measured peaks 19.3 and
    # 20.4 GiB.
    vasp_configs.check_item_kernel_memory(20_490, "Neural EASE")
    monkeypatch.setattr(ease_module, "available_memory", lambda: 18 * 2**30)
    with pytest.raises(InsufficientMemoryError, match="20.3 GiB"):
        vasp_configs.check_item_kernel_memory(20_490, "Neural EASE")
    monkeypatch.setattr(ease_module, "available_memory", lambda: 24 * 2**30)
    build_vasp = vasp_configs.focal_model(VASP, 256, 1e-3, hidden_dim=8, latent_dim=4)
    with pytest.raises(ValueError, match="VASP's Neural EASE"):  # train_all goes on
        build_vasp(split, 0)
    # A GPU holds the kernel in its own memory: no host-memory check.
    monkeypatch.setattr(
        vasp_configs.tf.config, "list_physical_devices", lambda _: ["GPU:0"]
    )
    vasp_configs.check_item_kernel_memory(40_981, "Neural EASE")
    # ML-1M's 3,706 items need 0.6 GiB.
    monkeypatch.setattr(vasp_configs.tf.config, "list_physical_devices", lambda _: [])
    vasp_configs.check_item_kernel_memory(3_706, "Neural EASE")
