import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_rec.losses import CosineProximityLoss
from keras_rec.models import NeuralEASE
from keras_rec.training.optimizers import FusedAdam, FusedNadam

PAIRS = [(keras.optimizers.Adam, FusedAdam), (keras.optimizers.Nadam, FusedNadam)]


def _run(optimizer, steps=4, shape=(64, 48)):
    rng = np.random.default_rng(0)
    variable = keras.Variable(rng.standard_normal(shape, dtype=np.float32))
    bias = keras.Variable(rng.standard_normal(shape[-1:], dtype=np.float32))
    optimizer.build([variable, bias])

    @tf.function
    def step(gradient, bias_gradient):
        optimizer.apply([gradient, bias_gradient], [variable, bias])

    for _ in range(steps):
        gradient = rng.standard_normal(shape, dtype=np.float32)
        step(tf.constant(gradient), tf.constant(gradient[0]))
    return variable.numpy(), bias.numpy()


@pytest.mark.parametrize("keras_class, fused_class", PAIRS)
def test_fused_update_equals_keras_update(keras_class, fused_class):
    # fuse_min_size=1000: the kernel (3,072 floats) takes the fused XLA
    # update, the bias (48) Keras' own.
    expected = _run(keras_class(learning_rate=0.01))
    fused = fused_class(learning_rate=0.01, fuse_min_size=1000)
    kernel, bias = _run(fused)
    assert len(fused._fused.updates) == 1  # the fused path ran
    np.testing.assert_allclose(kernel, expected[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bias, expected[1], rtol=1e-6, atol=1e-7)
    # Keras' result moved the weights: equality is not of unchanged values.
    assert np.abs(expected[0] - _run(keras_class(learning_rate=0.0))[0]).max() > 1e-3


@pytest.mark.parametrize("keras_class, fused_class", PAIRS)
def test_variables_of_one_shape_keep_their_own_moments(keras_class, fused_class):
    # Each fused variable has its own traced update: one trace per shape
    # would update the second variable with the first one's moments.
    rng = np.random.default_rng(3)
    starts = [rng.standard_normal((6, 5), dtype=np.float32) for _ in range(3)]
    gradients = [
        [rng.standard_normal((6, 5), dtype=np.float32) for _ in starts]
        for _ in range(3)
    ]

    def run(optimizer):
        variables = [keras.Variable(start) for start in starts]
        optimizer.build(variables)
        for step in gradients:
            optimizer.apply([tf.constant(g) for g in step], variables)
        return [v.numpy() for v in variables], optimizer

    expected, _ = run(keras_class(learning_rate=0.1))
    result, fused = run(fused_class(learning_rate=0.1, fuse_min_size=1))
    assert len(fused._fused.updates) == 3
    for value, reference in zip(result, expected, strict=True):
        np.testing.assert_allclose(value, reference, rtol=1e-5, atol=1e-6)


def test_small_variables_keep_the_keras_update():
    fused = FusedNadam(learning_rate=0.01)  # default threshold: 1M elements
    _run(fused)
    assert not fused._fused.updates


def test_a_schedule_as_learning_rate():
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([2], [0.05, 0.001])
    expected = _run(keras.optimizers.Nadam(schedule))
    fused = _run(FusedNadam(schedule, fuse_min_size=0))
    np.testing.assert_allclose(fused[0], expected[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("value", [-1, 1.5, True, "big"])
def test_fuse_min_size_is_checked(value):
    with pytest.raises(ValueError, match="`fuse_min_size` must be an integer >= 0"):
        FusedAdam(fuse_min_size=value)


def test_config_round_trip_and_clone():
    fused = FusedNadam(learning_rate=3e-4, beta_1=0.8, fuse_min_size=10)
    config = keras.optimizers.serialize(fused)
    clone = keras.optimizers.deserialize(config)
    assert type(clone) is FusedNadam
    assert clone.fuse_min_size == 10 and clone.beta_1 == 0.8
    assert float(clone.learning_rate) == pytest.approx(3e-4)


def test_a_model_trains_and_saves_with_its_fused_optimizer(tmp_path):
    # Neural EASE's item-item kernel is the variable the fusion is for; the
    # saved model reloads with the optimizer and its state.
    rows = (np.random.default_rng(1).random((32, 40)) < 0.2).astype("float32")
    model = NeuralEASE(num_items=40, seed=0)
    model.compile(
        optimizer=FusedNadam(1e-2, fuse_min_size=100), loss=CosineProximityLoss()
    )
    history = model.fit(rows, rows, batch_size=8, epochs=3, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    kernel = model.ease.kernel.numpy()
    assert np.isfinite(kernel).all()
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.optimizer) is FusedNadam
    assert loaded.optimizer.fuse_min_size == 100
    np.testing.assert_allclose(
        loaded.optimizer.variables[-1].numpy(), model.optimizer.variables[-1].numpy()
    )
    np.testing.assert_allclose(
        loaded.predict(rows, verbose=0), model.predict(rows, verbose=0), atol=1e-6
    )
