import json

import keras
import numpy as np
import pytest

from keras_rec.configs import ncf as ncf_configs
from keras_rec.configs import select
from keras_rec.configs.ncf import adam
from keras_rec.data import make_split, make_synthetic, pointwise_dataset
from keras_rec.data.datasets import Dataset
from keras_rec.data.pipelines import pointwise_steps
from keras_rec.evaluation import evaluate
from keras_rec.export import testing
from keras_rec.models import Popularity
from keras_rec.models.ncf import GMF, MLP, NeuMF


def _pairs():
    return {"user_id": np.array([0, 1, 2, 3]), "item_id": np.array([4, 3, 2, 1])}


def _logit(p):
    return np.log(p) - np.log1p(-p)


@pytest.mark.parametrize("cls", [GMF, MLP, NeuMF])
def test_output_shape_range_and_config_round_trip(cls, tmp_path):
    model = cls(num_users=5, num_items=6, predictive_factors=4, seed=1)
    scores = model(_pairs()).numpy()
    assert scores.shape == (4,)
    assert np.all((scores > 0) & (scores < 1))
    clone = cls.from_config(json.loads(json.dumps(model.get_config())))
    assert clone.get_config() == model.get_config()
    path = str(tmp_path / "m.keras")
    model.save(path)
    np.testing.assert_allclose(
        keras.saving.load_model(path)(_pairs()), scores, rtol=1e-6
    )


@pytest.mark.parametrize("cls", [GMF, MLP, NeuMF])
def test_score_all_and_score_items_agree_with_pair_scores(cls):
    model = cls(num_users=5, num_items=6, predictive_factors=4, seed=1)
    users = np.array([2, 4])
    full = model.score_all({"user_id": users}).numpy()
    for row, user in enumerate(users):
        pairs = {"user_id": np.full(6, user), "item_id": np.arange(6)}
        np.testing.assert_allclose(full[row], model(pairs).numpy(), rtol=1e-6)
    picked = model.score_items({"user_id": users}, np.array([[5, 0], [1, 1]]))
    np.testing.assert_allclose(
        picked, full[[[0, 0], [1, 1]], [[5, 0], [1, 1]]], rtol=1e-6
    )


def test_gmf_matches_numpy():
    model = GMF(num_users=5, num_items=6, predictive_factors=4, seed=1)
    p = model.get_layer("gmf_user").get_weights()[0]
    q = model.get_layer("gmf_item").get_weights()[0]
    h, b = model.prediction.get_weights()
    pairs = _pairs()
    expected = 1 / (
        1 + np.exp(-((p[pairs["user_id"]] * q[pairs["item_id"]]) @ h[:, 0] + b[0]))
    )
    np.testing.assert_allclose(model(pairs).numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize("cls", [GMF, MLP])
def test_prediction_layer_starts_lecun_uniform_as_the_reference(cls):
    # NCF's code: Dense(1, init='lecun_uniform'); limit sqrt(3 / fan_in),
    # where Glorot's would be sqrt(6 / (fan_in + 1)).
    model = cls(num_users=5, num_items=6, predictive_factors=64, seed=3)
    layer = model.prediction
    assert isinstance(layer.kernel_initializer, keras.initializers.LecunUniform)
    kernel = layer.get_weights()[0]
    fan_in = kernel.shape[0]
    expected = keras.initializers.LecunUniform(seed=33)((fan_in, 1)).numpy()
    np.testing.assert_array_equal(kernel, expected)
    assert np.abs(kernel).max() <= np.sqrt(3.0 / fan_in)


def test_mlp_tower_halves_to_predictive_factors():
    model = MLP(num_users=5, num_items=6, predictive_factors=8, num_layers=3)
    widths = [model.get_layer(f"mlp_layer_{i}").units for i in range(3)]
    assert widths == [32, 16, 8]
    assert model.get_layer("mlp_user").output_dim == 16  # the paper's §4.1
    wide = MLP(num_users=5, num_items=6, predictive_factors=8, embedding_dim=32)
    assert wide.get_layer("mlp_user").output_dim == 32  # the authors' script


def test_pretrained_neumf_gives_alpha_combined_predictions():
    gmf = GMF(num_users=5, num_items=6, predictive_factors=4, seed=1)
    mlp = MLP(num_users=5, num_items=6, predictive_factors=4, seed=2)
    # Make the output layers non-trivial, as after training.
    rng = np.random.default_rng(0)
    for model in (gmf, mlp):
        kernel, bias = model.prediction.get_weights()
        model.prediction.set_weights(
            [rng.normal(size=kernel.shape), rng.normal(size=bias.shape)]
        )
    neumf = NeuMF(num_users=5, num_items=6, predictive_factors=4, seed=3)
    neumf.load_pretrained(gmf, mlp, alpha=0.3)
    pairs = _pairs()
    expected_logit = 0.3 * _logit(gmf(pairs).numpy()) + 0.7 * _logit(mlp(pairs).numpy())
    np.testing.assert_allclose(
        _logit(neumf(pairs).numpy()), expected_logit, rtol=1e-4, atol=1e-5
    )


def test_load_pretrained_rejects_mismatched_sizes():
    neumf = NeuMF(num_users=5, num_items=6, predictive_factors=4)
    with pytest.raises(ValueError, match="predictive_factors"):
        neumf.load_pretrained(GMF(5, 6, 8), MLP(5, 6, 4))
    with pytest.raises(ValueError, match="alpha"):
        neumf.load_pretrained(GMF(5, 6, 4), MLP(5, 6, 4), alpha=1.5)


@pytest.mark.parametrize("cls", [GMF, MLP, NeuMF])
def test_invalid_arguments(cls):
    with pytest.raises(ValueError, match="predictive_factors"):
        cls(num_users=5, num_items=6, predictive_factors=0)
    with pytest.raises(ValueError, match="num_users"):
        cls(num_users=0, num_items=6)
    for l2 in (-1e-3, float("nan")):
        with pytest.raises(ValueError, match="l2"):
            cls(num_users=5, num_items=6, l2=l2)


@pytest.mark.parametrize("cls", [GMF, MLP, NeuMF])
def test_l2_penalises_every_embedding_table(cls):
    model = cls(num_users=5, num_items=6, predictive_factors=4, seed=1, l2=0.5)
    model(_pairs())
    tables = [w for w in model.weights if w.path.endswith("embeddings")]
    assert len(tables) == (4 if cls is NeuMF else 2)
    expected = sum(0.5 * np.sum(np.square(w.numpy())) for w in tables)
    np.testing.assert_allclose(float(sum(model.losses)), expected, rtol=1e-5)
    assert cls.from_config(model.get_config()).l2 == 0.5
    assert not cls(num_users=5, num_items=6, predictive_factors=4).losses


def test_neumf_smoke_fit_beats_popularity():
    data = make_synthetic(num_users=200, num_items=100, mean_length=15, seed=2)
    split = make_split(
        Dataset("synthetic", data), "loo_sampled", seed=0, num_negatives=50
    )
    model = NeuMF(split.num_users, split.num_items, predictive_factors=8, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(5e-3), loss="binary_crossentropy")
    losses = [
        model.fit(
            pointwise_dataset(split.train, 4, 256, seed=0, epoch=e), verbose=0
        ).history["loss"][0]
        for e in range(6)
    ]
    assert losses[-1] < losses[0]
    popularity = Popularity(split.num_items).fit_closed_form(split.train)
    ours = evaluate(model, split.test, "loo_sampled")
    theirs = evaluate(popularity, split.test, "loo_sampled")
    assert ours["ndcg@10"] > theirs["ndcg@10"], (ours, theirs)


def test_scoring_batch_size_bounds_the_pairs_per_call():
    model = MLP(num_users=5, num_items=3000, factors=8, seed=0)
    assert model.scoring_batch_size * 3000 <= model.max_scored_pairs
    assert MLP(num_users=5, num_items=300_000, factors=8).scoring_batch_size == 1


def _small_split():
    data = make_synthetic(num_users=60, num_items=40, mean_length=8, seed=3)
    return make_split(
        Dataset("synthetic", data), "loo_sampled", seed=0, num_negatives=10
    )


def test_decayed_adam_falls_from_the_rate_to_zero_over_its_epochs():
    split = _small_split()
    steps = 3 * pointwise_steps(split.train, 4, 32)
    decayed = adam(split, 1e-3, decay_epochs=3, num_negatives=4, batch_size=32)
    schedule = keras.optimizers.schedules.deserialize(
        decayed.get_config()["learning_rate"]
    )
    assert isinstance(schedule, keras.optimizers.schedules.CosineDecay)
    assert float(schedule(0)) == pytest.approx(1e-3)
    assert float(schedule(steps // 2)) == pytest.approx(5e-4, rel=0.02)
    assert float(schedule(steps)) == pytest.approx(0.0, abs=1e-12)
    constant = adam(split, 1e-3)
    assert float(constant.learning_rate) == pytest.approx(1e-3)


@pytest.mark.parametrize("builder", [ncf_configs.gmf, ncf_configs.mlp])
def test_a_resumed_part_continues_its_decay(builder, tmp_path):
    # The trainer checkpoints the model (optimizer included): the
    # reloaded optimizer must be at the same point of the schedule.
    split = _small_split()
    model = builder(8, 1e-3, decay_epochs=2, num_negatives=4, batch_size=32)(split, 0)
    model.fit(pointwise_dataset(split.train, 4, 32, seed=0, epoch=0), verbose=0)
    rate = float(model.optimizer.learning_rate)
    assert 0.0 < rate < 1e-3 * 0.75  # past the first half of a 2-epoch decay
    model.save(tmp_path / "part.keras")
    loaded = keras.models.load_model(tmp_path / "part.keras")
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations)
    assert float(loaded.optimizer.learning_rate) == pytest.approx(rate)


def test_adam_averages_the_weights_over_ema_epochs():
    split = _small_split()
    steps = pointwise_steps(split.train, 4, 32)
    averaged = adam(split, 1e-3, num_negatives=4, batch_size=32, ema_epochs=2)
    assert averaged.use_ema
    assert averaged.ema_momentum == pytest.approx(1 - 1 / (2 * steps))
    assert not adam(split, 1e-3).use_ema


@pytest.mark.parametrize("name", ["gmf", "mlp"])
def test_the_parts_average_over_a_quarter_of_their_epochs(name):
    (entry,) = select([name], ["synthetic"])
    split = make_split(Dataset("synthetic", make_synthetic(seed=0)), entry.protocol, 0)
    optimizer = entry.build(split, 0).optimizer
    steps = pointwise_steps(split.train, 4, 256)
    assert entry.hyperparameters["ema_epochs"] == entry.epochs / 4
    assert optimizer.use_ema
    assert optimizer.ema_momentum == pytest.approx(1 - 1 / (entry.epochs / 4 * steps))


@pytest.mark.parametrize("cls", [GMF, MLP, NeuMF])
def test_saved_model_and_tflite_match_the_model(cls, tmp_path):
    # Parity needs no training: an untrained model's scores are as distinct.
    data = make_synthetic(num_users=30, num_items=25, mean_length=6, seed=5)
    model = cls(num_users=30, num_items=25, predictive_factors=8, seed=1)
    seen = data.to_csr()
    testing.check_saved_model(model, tmp_path, seen_items=seen, k=5, use_cli=False)
    testing.check_tflite(model, tmp_path, seen_items=seen, k=5)
